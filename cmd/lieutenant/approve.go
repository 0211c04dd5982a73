package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

// yesApprover approves every gate: --yes.
type yesApprover struct{ by string }

func (y yesApprover) Approve(context.Context, playbook.GateRequest) (bool, string, error) {
	return true, y.by, nil
}

// promptApprover asks the operator on the terminal.
type promptApprover struct {
	flush func() // discards what was typed before the question
	out   io.Writer
	by    string

	// One goroutine reads the terminal for the life of the process, so a
	// question that was answered elsewhere leaves no reader behind to
	// swallow the answer to the next one.
	start sync.Once
	in    *bufio.Reader
	lines chan line
}

// line is an answer and when it was read: one read before the question
// (typed during a batch, or for a gate decided elsewhere) answers nothing.
type line struct {
	text string
	at   time.Time
}

func newPromptApprover(in *os.File, out io.Writer, by string) *promptApprover {
	return &promptApprover{in: bufio.NewReader(in), flush: func() { discardTypeahead(in) }, out: out, by: by, lines: make(chan line)}
}

func (p *promptApprover) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	// An Enter pressed while the batch ran must not answer this question:
	// what the terminal holds is dropped, and what the reader took before
	// the question is ignored below.
	p.flush()
	p.start.Do(func() {
		go func() {
			for {
				text, err := p.in.ReadString('\n')
				if err != nil {
					close(p.lines)
					return
				}
				p.lines <- line{strings.TrimSpace(strings.ToLower(text)), time.Now()}
			}
		}()
	})
	asked := time.Now()
	fmt.Fprintf(p.out, "\nBatch %d of %d done; at %s: %s.\nContinue with batch %d (%s)? [yes/no] ",
		req.AfterBatch, req.Batches, req.Release, strings.Join(req.Done, ", "), req.AfterBatch+1, strings.Join(req.Next, ", "))
	for {
		select {
		case <-ctx.Done():
			return false, p.by, ctx.Err()
		case a, ok := <-p.lines:
			if !ok {
				// No answer from here: a decision in Git, or the timeout, ends the wait.
				return false, p.by, fmt.Errorf("the terminal closed")
			}
			if a.at.Before(asked) {
				continue
			}
			// Only an explicit answer decides: a stray Enter must not abort
			// a release half done, nor anything but yes continue it.
			switch a.text {
			case "y", "yes":
				return true, p.by, nil
			case "n", "no":
				return false, p.by, nil
			}
			fmt.Fprintf(p.out, "Please answer yes or no: continue with batch %d? [yes/no] ", req.AfterBatch+1)
		}
	}
}

// discardTypeahead drops input typed but not yet read from a terminal.
func discardTypeahead(f *os.File) {
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCFLSH, unix.TCIFLUSH)
}

// announcingApprover says how to decide from elsewhere before it waits.
type announcingApprover struct {
	playbook.Approver
	out io.Writer
}

func (a *announcingApprover) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	fmt.Fprintf(a.out, "Waiting for a decision on run %s after batch %d of %d, until %s:\n"+
		"  lieutenant approve %s    or    lieutenant abort %s\n",
		req.Run, req.AfterBatch, req.Batches, req.Until.Local().Format(time.RFC3339), req.Run, req.Run)
	return a.Approver.Approve(ctx, req)
}

// firstApprover asks all its approvers at once and takes the first
// answer; the others are cancelled.
type firstApprover []playbook.Approver

func (f firstApprover) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		ok  bool
		by  string
		err error
	}
	answers := make(chan answer, len(f))
	for _, a := range f {
		go func() {
			ok, by, err := a.Approve(ctx, req)
			answers <- answer{ok, by, err}
		}()
	}
	var last answer
	for range f {
		last = <-answers
		// One approver failing (a closed terminal) leaves the others.
		if last.err == nil || ctx.Err() != nil {
			return last.ok, last.by, last.err
		}
	}
	return last.ok, last.by, last.err
}

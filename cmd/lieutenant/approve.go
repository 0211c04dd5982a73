package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

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
	in    *bufio.Reader
	flush func() // discards what was typed before the question
	out   io.Writer
	by    string
}

func newPromptApprover(in *os.File, out io.Writer, by string) *promptApprover {
	return &promptApprover{in: bufio.NewReader(in), flush: func() { discardTypeahead(in) }, out: out, by: by}
}

func (p *promptApprover) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	// An Enter pressed while the batch ran must not answer this question.
	p.flush()
	fmt.Fprintf(p.out, "\nBatch %d of %d done; at %s: %s.\nContinue with batch %d (%s)? [y/N] ",
		req.AfterBatch, req.Batches, req.Release, strings.Join(req.Done, ", "), req.AfterBatch+1, strings.Join(req.Next, ", "))
	answer := make(chan string, 1)
	go func() {
		line, _ := p.in.ReadString('\n')
		answer <- strings.TrimSpace(strings.ToLower(line))
	}()
	select {
	case <-ctx.Done():
		return false, p.by, ctx.Err()
	case a := <-answer:
		return a == "y" || a == "yes", p.by, nil
	}
}

// discardTypeahead drops input typed but not yet read from a terminal.
func discardTypeahead(f *os.File) {
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCFLSH, unix.TCIFLUSH)
}

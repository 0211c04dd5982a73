package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// An answer typed while no question was asked (during a batch, or after a
// gate was decided elsewhere) does not answer the next question.
func TestPromptIgnoresAnswersTypedBeforeTheQuestion(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	p := newPromptApprover(r, io.Discard, "ann")
	req := playbook.GateRequest{AfterBatch: 1, Batches: 3}
	ask := func(d time.Duration) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		ok, _, err := p.Approve(ctx, req)
		return ok, err
	}
	// Gate 1 is decided elsewhere: the question goes unanswered.
	if _, err := ask(10 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("gate 1: %v", err)
	}
	// The operator types y during batch 2, late for gate 1.
	if _, err := w.Write([]byte("y\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if ok, err := ask(200 * time.Millisecond); ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("gate 2 was answered by a line typed before it was asked: %v, %v", ok, err)
	}
	// An answer to the question itself counts.
	go func() {
		time.Sleep(50 * time.Millisecond)
		w.Write([]byte("yes\n"))
	}()
	if ok, err := ask(5 * time.Second); !ok || err != nil {
		t.Fatalf("gate 3: %v, %v", ok, err)
	}
}

// At the gate, only an explicit answer decides: Enter or anything else
// asks again, "no" aborts, "yes" continues.
func TestPromptAsksAgainUntilYesOrNo(t *testing.T) {
	for _, c := range []struct {
		answer string
		want   bool
	}{{"no", false}, {"N", false}, {"yes", true}, {"y", true}} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		var out testenv.SafeBuffer
		p := newPromptApprover(r, &out, "ann")
		type result struct {
			ok  bool
			err error
		}
		done := make(chan result, 1)
		go func() {
			ok, _, err := p.Approve(context.Background(), playbook.GateRequest{AfterBatch: 1, Batches: 2})
			done <- result{ok, err}
		}()
		testenv.WaitFor(t, 5*time.Second, "the question", func() bool { return strings.Contains(out.String(), "Continue with batch 2") })
		for i, stray := range []string{"\n", "maybe\n", "  \n"} {
			if _, err := io.WriteString(w, stray); err != nil {
				t.Fatal(err)
			}
			testenv.WaitFor(t, 5*time.Second, "the question asked again", func() bool {
				select {
				case res := <-done:
					t.Fatalf("%q answered the gate: approved %v, %v\n%s", stray, res.ok, res.err, out.String())
				default:
				}
				return strings.Count(out.String(), "Please answer yes or no") == i+1
			})
		}
		if _, err := io.WriteString(w, c.answer+"\n"); err != nil {
			t.Fatal(err)
		}
		if res := <-done; res.ok != c.want || res.err != nil {
			t.Errorf("answer %q: approved %v, %v; want %v", c.answer, res.ok, res.err, c.want)
		}
		w.Close()
		r.Close()
	}
}

// A terminal that closes (EOF) answers nothing: the run keeps waiting for
// a decision in Git, as without a terminal.
func TestPromptEOFLeavesTheDecisionToGit(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out testenv.SafeBuffer
	prompt := &returning{Approver: newPromptApprover(r, &out, "ann"), err: make(chan error, 1)}
	git := &laterApprover{decided: make(chan struct{})}
	done := make(chan bool, 1)
	go func() {
		ok, _, _ := firstApprover{prompt, git}.Approve(context.Background(), playbook.GateRequest{AfterBatch: 1, Batches: 2})
		done <- ok
	}()
	testenv.WaitFor(t, 5*time.Second, "the question", func() bool { return strings.Contains(out.String(), "Continue with batch 2") })
	w.Close()
	if err := <-prompt.err; err == nil {
		t.Fatal("the prompt answered at EOF")
	}
	select {
	case ok := <-done:
		t.Fatalf("the closed terminal decided the gate: approved %v", ok)
	default:
	}
	close(git.decided)
	if ok := <-done; !ok {
		t.Error("the approval recorded in Git was not taken")
	}
}

// returning passes on what its Approver returned.
type returning struct {
	playbook.Approver
	err chan error
}

func (a *returning) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	ok, by, err := a.Approver.Approve(ctx, req)
	a.err <- err
	return ok, by, err
}

// laterApprover approves once decided is closed, as an approval that
// reaches Git later.
type laterApprover struct{ decided chan struct{} }

func (a *laterApprover) Approve(ctx context.Context, _ playbook.GateRequest) (bool, string, error) {
	select {
	case <-a.decided:
		return true, "bob", nil
	case <-ctx.Done():
		return false, "", ctx.Err()
	}
}

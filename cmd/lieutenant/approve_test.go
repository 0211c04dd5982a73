package main

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
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

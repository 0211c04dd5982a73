package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

// yesApprover approves every gate: --yes.
type yesApprover struct{ by string }

func (y yesApprover) Approve(context.Context, playbook.GateRequest) (bool, string, error) {
	return true, y.by, nil
}

// promptApprover asks the operator on the terminal.
type promptApprover struct {
	in  io.Reader
	out io.Writer
	by  string
}

func (p *promptApprover) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	fmt.Fprintf(p.out, "\nBatch %d of %d done; at %s: %s.\nContinue with batch %d (%s)? [y/N] ",
		req.AfterBatch, req.Batches, req.Release, strings.Join(req.Done, ", "), req.AfterBatch+1, strings.Join(req.Next, ", "))
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(p.in).ReadString('\n')
		answer <- strings.TrimSpace(strings.ToLower(line))
	}()
	select {
	case <-ctx.Done():
		return false, p.by, ctx.Err()
	case a := <-answer:
		return a == "y" || a == "yes", p.by, nil
	}
}

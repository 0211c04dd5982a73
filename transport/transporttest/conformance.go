// Package transporttest holds the conformance suite of the transport.Runner
// contract, run against every Runner: the SSH and local adapters and the
// fakes that stand in for hosts in unit tests.
package transporttest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// StderrScript, run as `sh -c StderrScript sh MSG N`, writes MSG and a
// newline to stderr and exits with status N.
const StderrScript = `printf '%s\n' "$1" >&2; exit "$2"`

// Slack is how long after its context ends a Run may take to return.
const Slack = 1500 * time.Millisecond

// RunConformance checks that the Runners newRunner returns keep the
// transport.Runner contract. newRunner is called in every subtest, with the
// subtest's t; it may hand out the same Runner each time.
//
// The suite sends only these commands, so that a fake host can implement
// exactly this vocabulary (argument vectors, not shell lines):
//
//	true                          exit 0, no output
//	false                         exit 1, no output
//	echo ARG...                   the ARGs joined by spaces, then "\n", on stdout (no options)
//	printf '%s\n' ARG...          each ARG followed by "\n" on stdout (only this format)
//	sh -c 'exit N'                exit N
//	sh -c StderrScript sh MSG N   MSG and "\n" on stderr, then exit N
//	sleep N                       wait N seconds (or until the context ends)
//
// Anything else, an empty argument vector or a program name such as
// "echo hello" (one argument holding a space), must fail with an error that
// is not a context error: a Runner must never split or reinterpret an
// argument. Nothing reads stdin.
func RunConformance(t *testing.T, newRunner func(t *testing.T) transport.Runner) {
	t.Run("Stdout", func(t *testing.T) {
		r := newRunner(t)
		res, err := r.Run(ctxFor(t), cmd("echo", "hello", "world"))
		if err != nil {
			t.Fatalf("echo: %v", err)
		}
		if got := string(res.Stdout); got != "hello world\n" {
			t.Errorf("stdout = %q, want %q", got, "hello world\n")
		}
		if len(res.Stderr) != 0 {
			t.Errorf("stderr = %q, want none", res.Stderr)
		}
		if res.ExitStatus != 0 {
			t.Errorf("exit status = %d, want 0", res.ExitStatus)
		}
		if res.Duration <= 0 {
			t.Errorf("duration = %v, want > 0", res.Duration)
		}
	})

	t.Run("StderrAndStatus", func(t *testing.T) {
		r := newRunner(t)
		res, err := r.Run(ctxFor(t), cmd("sh", "-c", StderrScript, "sh", "disk full", "2"))
		var exitErr *transport.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("err = %v, want one wrapping *transport.ExitError", err)
		}
		if exitErr.Status != 2 || res.ExitStatus != 2 {
			t.Errorf("status = %d, result status = %d, want 2 and 2", exitErr.Status, res.ExitStatus)
		}
		if got := string(res.Stderr); got != "disk full\n" {
			t.Errorf("stderr = %q, want %q", got, "disk full\n")
		}
		if len(res.Stdout) != 0 {
			t.Errorf("stdout = %q, want none", res.Stdout)
		}
		if !strings.Contains(exitErr.Stderr, "disk full") || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("error %q (ExitError.Stderr %q) does not show the stderr tail", err, exitErr.Stderr)
		}
	})

	t.Run("MaxOutput", func(t *testing.T) {
		r := newRunner(t)
		res, err := r.Run(ctxFor(t), transport.Command{Args: []string{"echo", "hello"}, MaxOutput: 6})
		if err != nil || string(res.Stdout) != "hello\n" {
			t.Errorf("stdout of exactly MaxOutput: %q, err %v; want %q, nil", res.Stdout, err, "hello\n")
		}
		res, err = r.Run(ctxFor(t), transport.Command{Args: []string{"echo", "hello", "world"}, MaxOutput: 6})
		if !errors.Is(err, transport.ErrOutputLimit) {
			t.Errorf("stdout over MaxOutput: err = %v, want one wrapping ErrOutputLimit", err)
		}
		if len(res.Stdout) > 6 {
			t.Errorf("stdout over MaxOutput: kept %q, more than MaxOutput", res.Stdout)
		}
	})

	t.Run("ExitStatus", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want int
		}{
			{[]string{"true"}, 0},
			{[]string{"false"}, 1},
			{[]string{"sh", "-c", "exit 0"}, 0},
			{[]string{"sh", "-c", "exit 3"}, 3},
			{[]string{"sh", "-c", "exit 127"}, 127},
		} {
			r := newRunner(t)
			res, err := r.Run(ctxFor(t), cmd(tc.args...))
			if res.ExitStatus != tc.want {
				t.Errorf("%q: exit status = %d, want %d", tc.args, res.ExitStatus, tc.want)
			}
			if tc.want == 0 {
				if err != nil {
					t.Errorf("%q: err = %v, want nil", tc.args, err)
				}
				continue
			}
			var exitErr *transport.ExitError
			if !errors.As(err, &exitErr) || exitErr.Status != tc.want {
				t.Errorf("%q: err = %v, want one wrapping *transport.ExitError with status %d", tc.args, err, tc.want)
			}
		}
	})

	t.Run("ArgumentsVerbatim", func(t *testing.T) {
		args := []string{
			"hello; rm -rf /",
			"it's",
			`"double"`,
			`$(id)`,
			"`id`",
			"${HOME}",
			"$HOME",
			"line one\nline two",
			"",
			"  padded  ",
			"tab\there",
			`back\slash\n`,
			"*",
			"~",
			"~root",
			"a=b",
			"-n",
			"--",
			"semi;colon&amp|pipe>out<in",
			"#not a comment",
			"glob?[ab]{c,d}",
			"!bang",
			"héllo wörld ✓",
			"'",
			`'\''`,
		}
		r := newRunner(t)
		res, err := r.Run(ctxFor(t), cmd(append([]string{"printf", `%s\n`}, args...)...))
		if err != nil {
			t.Fatalf("printf: %v", err)
		}
		want := strings.Join(args, "\n") + "\n"
		if got := string(res.Stdout); got != want {
			t.Errorf("arguments did not arrive verbatim:\n got %q\nwant %q", got, want)
		}
	})

	t.Run("ProgramNameIsOneWord", func(t *testing.T) {
		for _, name := range []string{"echo hello", "true; echo injected"} {
			r := newRunner(t)
			res, err := r.Run(ctxFor(t), cmd(name))
			if err == nil {
				t.Errorf("program %q: err = nil, want an error: the name must not be split by a shell", name)
			}
			if isContextErr(err) {
				t.Errorf("program %q: err = %v, want a non-context error", name, err)
			}
			if out := string(res.Stdout); strings.Contains(out, "hello") || strings.Contains(out, "injected") {
				t.Errorf("program %q: stdout = %q: the name was split by a shell", name, out)
			}
		}
	})

	t.Run("EmptyCommand", func(t *testing.T) {
		r := newRunner(t)
		if _, err := r.Run(ctxFor(t), transport.Command{}); err == nil {
			t.Error("empty command: err = nil, want an error")
		}
	})

	t.Run("DeadlineStopsCommand", func(t *testing.T) {
		r := newRunner(t)
		const timeout = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		_, err := r.Run(ctx, cmd("sleep", "30"))
		elapsed := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want one wrapping context.DeadlineExceeded", err)
		}
		if elapsed > timeout+Slack {
			t.Errorf("Run returned %v after the deadline, want within %v", elapsed-timeout, Slack)
		}
		// The Runner is still usable after a command was stopped.
		res, err := r.Run(ctxFor(t), cmd("echo", "after"))
		if err != nil || string(res.Stdout) != "after\n" {
			t.Errorf("echo after a stopped command: stdout %q, err %v; want %q, nil", res.Stdout, err, "after\n")
		}
	})

	t.Run("CancelStopsCommand", func(t *testing.T) {
		r := newRunner(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const after = 300 * time.Millisecond
		time.AfterFunc(after, cancel)
		start := time.Now()
		_, err := r.Run(ctx, cmd("sleep", "30"))
		elapsed := time.Since(start)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want one wrapping context.Canceled", err)
		}
		if elapsed > after+Slack {
			t.Errorf("Run returned %v after cancel, want within %v", elapsed-after, Slack)
		}
	})

	t.Run("DoneContext", func(t *testing.T) {
		r := newRunner(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		_, err := r.Run(ctx, cmd("sleep", "30"))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want one wrapping context.Canceled", err)
		}
		if elapsed := time.Since(start); elapsed > Slack {
			t.Errorf("Run with a done context took %v, want within %v", elapsed, Slack)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		r := newRunner(t)
		const n = 16
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				word := fmt.Sprintf("run-%d", i)
				res, err := r.Run(ctx, cmd("printf", `%s\n`, word, "x"))
				switch {
				case err != nil:
					errs[i] = err
				case string(res.Stdout) != word+"\nx\n":
					errs[i] = fmt.Errorf("stdout = %q, want %q", res.Stdout, word+"\nx\n")
				}
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent run %d: %v", i, err)
			}
		}
	})
}

func cmd(args ...string) transport.Command { return transport.Command{Args: args} }

// ctxFor bounds a command that should finish at once, so that a broken Runner
// fails the test instead of hanging it.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

//go:build unix

package transport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Local is a Connector whose Runners run commands on the machine lieutenant
// runs on, whatever the host's address: for a host that is this machine, for
// tests and for the demo. Commands run without a shell (os/exec), so each
// argument arrives verbatim; Sudo prefixes `sudo -n --`. Each command gets
// its own process group, which is killed when ctx ends, and lieutenant's
// environment without the variables of SecretEnv. It is safe for
// concurrent use.
type Local struct {
	secrets Secrets // redacted from output
	closed  atomic.Bool
}

var _ Connector = (*Local)(nil)

// NewLocal returns a Local Connector. The values of SecretEnv are read now,
// to be redacted from the output of its commands.
func NewLocal() *Local { return &Local{secrets: SecretsFromEnv()} }

// Connect returns a Runner named after h.Name ("localhost" when empty); it
// opens nothing, so it fails only when ctx is done or l is closed.
func (l *Local) Connect(ctx context.Context, h Host) (Runner, error) {
	name := h.Name
	if name == "" {
		name = "localhost"
	}
	if l.closed.Load() {
		return nil, fmt.Errorf("connect to %s (local): %w", name, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to %s (local): %w", name, err)
	}
	return &localRunner{l: l, name: name}, nil
}

// Close makes the Runners unusable. Commands already running go on.
func (l *Local) Close() error {
	l.closed.Store(true)
	return nil
}

// localWaitDelay bounds how long Run waits for the output pipes once the
// process has exited or been killed: a child left running in the background
// may hold them open for ever.
const localWaitDelay = 500 * time.Millisecond

type localRunner struct {
	l    *Local
	name string
}

func (r *localRunner) Run(ctx context.Context, cmd Command) (Result, error) {
	res, err := r.run(ctx, cmd)
	if err != nil {
		return res, fmt.Errorf("run on %s: %s: %w", r.name, brief(cmd), err)
	}
	return res, nil
}

func (r *localRunner) run(parent context.Context, cmd Command) (Result, error) {
	if err := cmd.check(); err != nil {
		return Result{ExitStatus: -1}, err
	}
	if r.l.closed.Load() {
		return Result{ExitStatus: -1}, ErrClosed
	}
	if err := parent.Err(); err != nil {
		return Result{ExitStatus: -1}, err
	}
	ctx, cancel, out := newCapture(parent, cmd, r.l.secrets)
	defer cancel()
	args := cmd.Args
	if cmd.Sudo {
		args = append([]string{"sudo", "-n", "--"}, args...)
	}
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.Stdout, c.Stderr = out.stdout, out.stderr
	c.Env = ScrubEnv(os.Environ())
	// A process group of its own lets ctx kill the command's children too,
	// and keeps a Ctrl-C at lieutenant's terminal from reaching commands
	// directly: lieutenant decides how to stop them.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = localWaitDelay

	start := time.Now()
	err := c.Run()
	res := Result{Duration: time.Since(start), ExitStatus: -1}
	out.fill(&res)
	if c.ProcessState != nil {
		res.ExitStatus = c.ProcessState.ExitCode()
	}
	if err := out.limitErr(parent); err != nil {
		res.ExitStatus = -1
		return res, err
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return res, nil
	case parent.Err() != nil:
		res.ExitStatus = -1
		return res, parent.Err()
	case errors.Is(err, exec.ErrWaitDelay):
		// The command exited 0; a child it left behind holds its output.
		return res, nil
	case errors.As(err, &exitErr):
		e := &ExitError{Status: exitErr.ExitCode(), Stderr: stderrTail(res.Stderr)}
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Status = 128 + int(ws.Signal())
			e.Signal = strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
			if e.Signal == "" {
				e.Signal = strconv.Itoa(int(ws.Signal()))
			}
		}
		res.ExitStatus = e.Status
		return res, e
	}
	return res, err
}

package lb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// ServerArg is the argument of a command adapter argv that is replaced by the
// server name. Only an argument that is exactly ServerArg is replaced.
const ServerArg = "{server}"

// ExitTimedOut is the exit status by which a drain or enable program says
// "the wait ran out and I put the server back" (EX_TEMPFAIL from sysexits.h).
const ExitTimedOut = 75

// Command drives a balancer lieutenant has no adapter for (F5, ELB, nginx...)
// through three programs the user provides. They run on the orchestrator's
// machine with os/exec, without a shell: each argv element reaches the program
// as one argument, and an element that is exactly "{server}" is replaced by
// the server name. A shell script that needs the name takes it as "$1" or from
// $LIEUTENANT_SERVER; "{server}" inside a longer argument is refused, because
// in "sh -c 'drain {server}'" it would be pasted into shell code.
//
// The state program lists the backend, one server a line:
//
//	NAME ADMIN HEALTH [SESSIONS [QUEUED]]
//
// ADMIN is ready, drain or maint; HEALTH is up, down or no-check (the
// balancer does not check this server); SESSIONS and QUEUED are counts and
// default to 0. Fields are separated by blanks; empty lines and lines starting
// with '#' are ignored. For example:
//
//	web1 ready up 12
//	web2 drain up 3 0
//	web3 maint down
//
// The drain program gets the server as {server} and these variables:
// LIEUTENANT_SERVER, LIEUTENANT_TIMEOUT (seconds, may have a fraction, e.g.
// "0.5") and LIEUTENANT_KILL_SESSIONS ("1" or "0"). It stops new traffic to
// the server, waits until it has no sessions, puts it in maintenance and exits
// 0. When LIEUTENANT_TIMEOUT runs out it either ends the remaining sessions,
// puts the server in maintenance and exits 0 (LIEUTENANT_KILL_SESSIONS=1), or
// puts the server back in the state it had and exits 75 (ExitTimedOut).
//
// The enable program gets the server as {server}, LIEUTENANT_SERVER,
// LIEUTENANT_TIMEOUT and LIEUTENANT_VERIFIED ("1" when lieutenant checked
// the server's health itself just before, see EnableOptions.Verified; "0"
// otherwise). It puts the server in service, waits until the balancer's
// health check passes (with LIEUTENANT_VERIFIED=1 it may skip that wait) and
// exits 0; when LIEUTENANT_TIMEOUT runs out first it puts the server in
// maintenance and exits 75.
//
// The programs get lieutenant's environment without its secrets
// (transport.SecretEnv), and the values of those secrets are replaced in what
// is kept of their output. The state program's output is read whole and may
// be up to 1 MiB; more is an error.
//
// Any other exit status is a failure whose error holds the end of the
// program's stderr. When ctx ends, or a program is still running Grace after
// its timeout, it gets SIGTERM (its whole process group does); it should put
// the server back as on a timeout and exit. Grace later it gets SIGKILL.
//
// lieutenant checks the programs' work with the state program: before a drain
// or an enable (an unknown server is ErrUnknownServer, a drain of a server in
// maintenance and an enable of a serving one do nothing), and after one (a
// drain that exited 0 must show maint, an enable that exited 0 must show the
// server serving). When an enable fails and the state program does not show
// the server in maintenance, lieutenant runs the drain program with
// LIEUTENANT_TIMEOUT=0 and LIEUTENANT_KILL_SESSIONS=1 to take it out.
type Command struct {
	cfg     CommandConfig
	secrets transport.Secrets // redacted from output
}

// CommandConfig configures a Command adapter.
type CommandConfig struct {
	Drain  []string // argv of the drain program
	Enable []string // argv of the enable program
	State  []string // argv of the state program; no {server}
	Dir    string   // working directory; "" is the current one
	Env    []string // added to the environment ("NAME=value")
	// Grace is how long a program may overrun its timeout, and how long it
	// has after SIGTERM before SIGKILL (default 5s). It also bounds the state
	// program.
	Grace time.Duration
}

// NewCommand checks cfg and returns the adapter. The values of
// transport.SecretEnv are read now, to be redacted from the programs' output.
func NewCommand(cfg CommandConfig) (*Command, error) {
	for _, p := range []struct {
		name       string
		argv       []string
		serverArgs bool
	}{{"drain", cfg.Drain, true}, {"enable", cfg.Enable, true}, {"state", cfg.State, false}} {
		if len(p.argv) == 0 || p.argv[0] == "" {
			return nil, fmt.Errorf("command balancer: no %s command", p.name)
		}
		for i, a := range p.argv {
			switch {
			case a == ServerArg && !p.serverArgs:
				return nil, fmt.Errorf("command balancer: %s command: %s has no server to stand for; the state command lists them all", p.name, ServerArg)
			case a != ServerArg && strings.Contains(a, ServerArg):
				return nil, fmt.Errorf("command balancer: %s command argument %d %q: %s must be a whole argument (a script gets it as \"$1\" or $LIEUTENANT_SERVER), never part of one", p.name, i, a, ServerArg)
			}
		}
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Second
	}
	// Keep the caller's slices out of reach of later changes.
	cfg.Drain = append([]string(nil), cfg.Drain...)
	cfg.Enable = append([]string(nil), cfg.Enable...)
	cfg.State = append([]string(nil), cfg.State...)
	cfg.Env = append([]string(nil), cfg.Env...)
	return &Command{cfg: cfg, secrets: transport.SecretsFromEnv()}, nil
}

// String names the adapter in logs.
func (c *Command) String() string { return "command " + strings.Join(c.cfg.State, " ") }

// ParseStateOutput reads the state program's output (see Command).
func ParseStateOutput(out []byte) ([]Server, error) {
	var servers []Server
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 || len(f) > 5 {
			return nil, fmt.Errorf("state line %d %q: want NAME ADMIN HEALTH [SESSIONS [QUEUED]]", n, line)
		}
		s := Server{Name: f[0], Admin: Admin(f[1]), Health: Health(f[2])}
		switch s.Admin {
		case AdminReady, AdminDrain, AdminMaint:
		default:
			return nil, fmt.Errorf("state line %d %q: admin %q is not ready, drain or maint", n, line, f[1])
		}
		switch s.Health {
		case HealthUp, HealthDown, HealthNoCheck:
		default:
			return nil, fmt.Errorf("state line %d %q: health %q is not up, down or no-check", n, line, f[2])
		}
		for i, dst := range []*int{&s.Sessions, &s.Queued} {
			if len(f) > 3+i {
				v, err := strconv.Atoi(f[3+i])
				if err != nil || v < 0 {
					return nil, fmt.Errorf("state line %d %q: %q is not a count", n, line, f[3+i])
				}
				*dst = v
			}
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("state line %d: server %q listed twice", n, s.Name)
		}
		seen[s.Name] = true
		servers = append(servers, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if servers == nil {
		servers = []Server{}
	}
	return servers, nil
}

// Servers runs the state program.
func (c *Command) Servers(ctx context.Context) ([]Server, error) {
	s, err := c.servers(ctx)
	if err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	return s, nil
}

func (c *Command) servers(ctx context.Context) ([]Server, error) {
	res, err := c.run(ctx, c.cfg.State, "", nil, c.cfg.Grace, maxStateOutput)
	if err != nil {
		return nil, err
	}
	s, err := ParseStateOutput(res.stdout)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.cfg.State[0], err)
	}
	return s, nil
}

func (c *Command) find(ctx context.Context, server string) (Server, error) {
	all, err := c.servers(ctx)
	if err != nil {
		return Server{}, err
	}
	s, ok := Find(all, server)
	if !ok {
		return Server{}, unknownServer(all)
	}
	return s, nil
}

// Drain implements Balancer.Drain with the drain program.
func (c *Command) Drain(ctx context.Context, server string, opts DrainOptions) error {
	if err := c.drain(ctx, server, opts); err != nil {
		return fmt.Errorf("drain %s: %w", server, err)
	}
	return nil
}

func (c *Command) drain(ctx context.Context, server string, opts DrainOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := c.find(ctx, server)
	if err != nil {
		return err
	}
	if s.Admin == AdminMaint {
		return nil
	}
	timeout := opts.EffectiveTimeout()
	env := []string{"LIEUTENANT_TIMEOUT=" + seconds(timeout), "LIEUTENANT_KILL_SESSIONS=" + flag(opts.KillSessions)}
	res, err := c.run(ctx, c.cfg.Drain, server, env, timeout+c.cfg.Grace, 0)
	switch {
	case err == nil:
	case ctx.Err() == nil && res.exitStatus == ExitTimedOut:
		return fmt.Errorf("%s reports sessions left after %s and the server put back: %w", c.cfg.Drain[0], timeout, ErrDrainTimeout)
	default:
		return err
	}
	after, err := c.find(ctx, server)
	if err != nil {
		return fmt.Errorf("after %s: %w", c.cfg.Drain[0], err)
	}
	if after.Admin != AdminMaint {
		return fmt.Errorf("%s exited 0 but the state program shows %s, not maint", c.cfg.Drain[0], after.Admin)
	}
	return nil
}

// Enable implements Balancer.Enable with the enable program.
func (c *Command) Enable(ctx context.Context, server string, opts EnableOptions) error {
	if err := c.enable(ctx, server, opts); err != nil {
		return fmt.Errorf("enable %s: %w", server, err)
	}
	return nil
}

func (c *Command) enable(ctx context.Context, server string, opts EnableOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := c.find(ctx, server)
	if err != nil {
		return err
	}
	if s.Serving() {
		return nil
	}
	timeout := opts.EffectiveTimeout()
	verified := "0"
	if opts.Verified {
		verified = "1"
	}
	env := []string{"LIEUTENANT_TIMEOUT=" + seconds(timeout), "LIEUTENANT_VERIFIED=" + verified}
	res, err := c.run(ctx, c.cfg.Enable, server, env, timeout+c.cfg.Grace, 0)
	switch {
	case err == nil:
		after, ferr := c.find(ctx, server)
		if ferr != nil {
			return errors.Join(fmt.Errorf("after %s: %w", c.cfg.Enable[0], ferr), c.ensureMaint(ctx, server))
		}
		if !after.Serving() {
			return errors.Join(
				fmt.Errorf("%s exited 0 but the state program shows %s/%s: %w", c.cfg.Enable[0], after.Admin, after.Health, ErrNotHealthy),
				c.ensureMaint(ctx, server))
		}
		return nil
	case ctx.Err() == nil && res.exitStatus == ExitTimedOut:
		err = fmt.Errorf("%s reports no passing health check within %s: %w", c.cfg.Enable[0], timeout, ErrNotHealthy)
	}
	return errors.Join(err, c.ensureMaint(ctx, server))
}

// ensureMaint makes sure a server whose enable failed is out of service, with
// a grace period of its own because ctx may be what failed.
func (c *Command) ensureMaint(ctx context.Context, server string) error {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*c.cfg.Grace)
	defer cancel()
	if s, err := c.find(gctx, server); err == nil && s.Admin == AdminMaint {
		return nil
	}
	env := []string{"LIEUTENANT_TIMEOUT=0", "LIEUTENANT_KILL_SESSIONS=1"}
	if _, err := c.run(gctx, c.cfg.Drain, server, env, c.cfg.Grace, 0); err != nil {
		return fmt.Errorf("taking it back out of service failed: %w", err)
	}
	return nil
}

type runResult struct {
	stdout     []byte
	exitStatus int // -1 when it did not exit by itself
}

// maxStateOutput bounds the state program's output: a line per server.
const maxStateOutput = 1 << 20

// maxStderr is how much of a program's stderr its error shows.
const maxStderr = 4096

// run starts argv with {server} replaced, bounded by ctx and limit. Its
// stdout is read when maxStdout > 0, and more than that stops it.
func (c *Command) run(ctx context.Context, argv []string, server string, env []string, limit time.Duration, maxStdout int) (runResult, error) {
	res := runResult{exitStatus: -1}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	args := make([]string, len(argv))
	for i, a := range argv {
		if a == ServerArg {
			a = server
		}
		args[i] = a
	}
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(rctx, args[0], args[1:]...)
	cmd.Dir = c.cfg.Dir
	cmd.Env = append(transport.ScrubEnv(os.Environ()), c.cfg.Env...)
	if server != "" {
		cmd.Env = append(cmd.Env, "LIEUTENANT_SERVER="+server)
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout *transport.Tail
	if maxStdout > 0 {
		stdout = transport.NewLimit(maxStdout, c.secrets, cancel)
		cmd.Stdout = stdout
	}
	stderr := transport.NewTail(maxStderr, c.secrets)
	cmd.Stderr = stderr
	setProcessGroup(cmd)
	// SIGTERM first so the program can put the server back; SIGKILL after
	// Grace (WaitDelay).
	cmd.Cancel = func() error { return terminate(cmd) }
	cmd.WaitDelay = c.cfg.Grace
	start := time.Now()
	err := cmd.Run()
	if rctx.Err() != nil {
		killGroup(cmd)
	}
	name := args[0]
	if stdout != nil {
		res.stdout = stdout.Bytes()
		if stdout.Over() && ctx.Err() == nil {
			return runResult{exitStatus: -1}, fmt.Errorf("%s: %w", name, transport.OutputLimitError(maxStdout))
		}
	}
	if err == nil {
		res.exitStatus = 0
		return res, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		res.exitStatus = ee.ExitCode()
	}
	tail := strings.TrimSpace(string(stderr.Bytes()))
	if tail != "" && stderr.Total() > maxStderr {
		tail = "..." + tail
	}
	if tail != "" {
		tail = ": " + tail
	}
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s stopped after %s%s: %w", name, time.Since(start).Round(time.Millisecond), tail, ctx.Err())
	case rctx.Err() != nil:
		return res, fmt.Errorf("%s still running after %s, stopped%s: %w", name, limit, tail, rctx.Err())
	case res.exitStatus > 0:
		return res, fmt.Errorf("%s exited with status %d%s", name, res.exitStatus, tail)
	}
	return res, fmt.Errorf("%s: %w%s", name, err, tail)
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/transport"
	"github.com/lieutenant-deploy/lieutenant/transport/transporttest"
)

// FakeFleet is an in-process transport.Connector whose hosts simulate the
// commands a rollout sends: rpm -q, dnf/yum install, systemctl/service, and
// the small vocabulary of transporttest.RunConformance (echo, printf, true,
// false, sleep, sh -c 'exit N'). Shell scripts of command steps are answered
// by handlers the test registers.
type FakeFleet struct {
	mu          sync.Mutex
	hosts       map[string]*FakeHost
	available   map[string]playbook.Package // NEVRA -> package the "repository" serves
	unreachable map[string]error
	dials       int
	closed      bool
}

// NewFakeFleet returns a fleet whose repository serves the given packages
// (NEVRA strings such as "hello-web-1.1.0-1.x86_64").
func NewFakeFleet(available ...string) *FakeFleet {
	f := &FakeFleet{hosts: map[string]*FakeHost{}, available: map[string]playbook.Package{}, unreachable: map[string]error{}}
	for _, a := range available {
		p := mustPackage(a)
		f.available[p.NEVRA()] = p
		// dnf also takes the spec without arch.
		f.available[p.Name+"-"+p.EVR()] = p
	}
	return f
}

func mustPackage(nevra string) playbook.Package {
	p, err := playbook.ParseNEVRA(nevra)
	if err != nil {
		panic(err)
	}
	return p
}

// AddHost adds a host with packages installed (NEVRA strings).
func (f *FakeFleet) AddHost(name string, installed ...string) *FakeHost {
	h := &FakeHost{Name: name, fleet: f, packages: map[string]playbook.Package{}, scripts: map[string]ScriptHandler{}}
	for _, i := range installed {
		p := mustPackage(i)
		h.packages[p.Name] = p
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[name] = h
	return h
}

// Host returns a host added with AddHost.
func (f *FakeFleet) Host(name string) *FakeHost {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hosts[name]
}

// SetUnreachable makes Connect to the host fail (nil: reachable again) as
// the SSH connector fails when its dial does: err, wrapped as
// "connect to NAME (ADDRESS:PORT): err". err stands for what the dial
// returned, so the test chooses the text after the address, e.g.
// errors.New("connection refused").
func (f *FakeFleet) SetUnreachable(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.unreachable, name)
		return
	}
	f.unreachable[name] = err
}

// Dials is how many connections Connect attempted, successful or not, as
// transport.SSH counts them: one per host, plus one per failed attempt to
// reach an unreachable host.
func (f *FakeFleet) Dials() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dials
}

// Connect implements transport.Connector; like the SSH connector it counts
// one dial per host however often it is asked, and its errors read like the
// SSH connector's: "connect to NAME (ADDRESS:PORT): ...".
func (f *FakeFleet) Connect(ctx context.Context, th transport.Host) (transport.Runner, error) {
	port := th.Port
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(th.Address, strconv.Itoa(port))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("connect to %s (%s): %w", th.Name, addr, transport.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to %s (%s): %w", th.Name, addr, err)
	}
	if err := f.unreachable[th.Name]; err != nil {
		f.dials++
		return nil, fmt.Errorf("connect to %s (%s): %w", th.Name, addr, err)
	}
	h, ok := f.hosts[th.Name]
	if !ok {
		// A mistake in the test's setup, not a simulated network failure.
		return nil, fmt.Errorf("connect to %s (%s): the FakeFleet has no such host (AddHost it)", th.Name, addr)
	}
	if !h.connected {
		h.connected = true
		f.dials++
	}
	return h, nil
}

func (f *FakeFleet) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Close implements transport.Connector: afterwards Connect, and Run on every
// host, fail with an error wrapping transport.ErrClosed.
func (f *FakeFleet) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// ScriptHandler answers a `sh -c SCRIPT` command on a fake host.
type ScriptHandler func(ctx context.Context, h *FakeHost) (stdout string, status int)

// FakeHost is one simulated host. It is safe for concurrent use.
type FakeHost struct {
	Name  string
	fleet *FakeFleet

	mu        sync.Mutex
	connected bool
	packages  map[string]playbook.Package
	commands  []transport.Command
	scripts   map[string]ScriptHandler
	// OnService is called for systemctl/service commands; a non-nil error
	// makes the command exit 1 with the error as stderr.
	onService func(action, name string) error
	failNext  map[string]string // argv[0] -> stderr of a forced failure
	// installDelay and serviceDelay: see SetDelays.
	installDelay, serviceDelay time.Duration
}

// Installed returns the host's packages as NEVRA strings by name.
func (h *FakeHost) Installed() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for n, p := range h.packages {
		out[n] = p.NEVRA()
	}
	return out
}

// Commands returns every command the host received, in order.
func (h *FakeHost) Commands() []transport.Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]transport.Command(nil), h.commands...)
}

// SetDelays makes every install and every service command take that
// long (or until the command's ctx ends), as real ones do.
func (h *FakeHost) SetDelays(install, service time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.installDelay, h.serviceDelay = install, service
}

// HandleScript registers the answer to `sh -c script`.
func (h *FakeHost) HandleScript(script string, fn ScriptHandler) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scripts[script] = fn
}

// OnService sets the hook called for service commands.
func (h *FakeHost) OnService(fn func(action, name string) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onService = fn
}

// FailCommand makes the next command whose argv[0] is program exit 1 with
// stderr.
func (h *FakeHost) FailCommand(program, stderr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failNext == nil {
		h.failNext = map[string]string{}
	}
	h.failNext[program] = stderr
}

// Run implements transport.Runner. A command sent after the fleet was closed
// fails without reaching the host (nor Commands).
func (h *FakeHost) Run(ctx context.Context, cmd transport.Command) (transport.Result, error) {
	start := time.Now()
	if h.fleet.isClosed() {
		return transport.Result{ExitStatus: -1}, fmt.Errorf("run on %s: %w", h.Name, transport.ErrClosed)
	}
	h.mu.Lock()
	h.commands = append(h.commands, cmd)
	h.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return transport.Result{ExitStatus: -1}, fmt.Errorf("run on %s: %w", h.Name, err)
	}
	stdout, stderr, status, err := h.exec(ctx, cmd.Args)
	if cerr := ctx.Err(); cerr != nil && err == nil {
		// Like a real transport: a command still running when ctx ended
		// was stopped, whatever status it then reported.
		err = cerr
	}
	res := transport.Result{Stdout: []byte(stdout), Stderr: []byte(stderr), ExitStatus: status, Duration: time.Since(start)}
	if cmd.MaxOutput > 0 && len(stdout) > cmd.MaxOutput {
		res.Stdout, res.ExitStatus = res.Stdout[:cmd.MaxOutput], -1
		return res, fmt.Errorf("run on %s: %s: %w", h.Name, cmd, transport.OutputLimitError(cmd.MaxOutput))
	}
	if err != nil {
		res.ExitStatus = -1 // its end was not seen, as the contract has it
		return res, fmt.Errorf("run on %s: %w", h.Name, err)
	}
	if status != 0 {
		return res, fmt.Errorf("run on %s: %s: %w", h.Name, cmd, &transport.ExitError{Status: status, Stderr: strings.TrimSpace(stderr)})
	}
	return res, nil
}

func (h *FakeHost) exec(ctx context.Context, args []string) (stdout, stderr string, status int, err error) {
	if len(args) == 0 {
		return "", "", 0, errors.New("empty command")
	}
	h.mu.Lock()
	forced, fail := h.failNext[args[0]]
	delete(h.failNext, args[0])
	h.mu.Unlock()
	if fail {
		return "", forced, 1, nil
	}
	switch args[0] {
	case "true":
		return "", "", 0, nil
	case "false":
		return "", "", 1, nil
	case "echo":
		return strings.Join(args[1:], " ") + "\n", "", 0, nil
	case "printf":
		if len(args) < 2 {
			return "", "printf: usage: printf format [arguments]\n", 2, nil
		}
		return printf(args[1], args[2:]), "", 0, nil
	case "sleep":
		d, perr := strconv.ParseFloat(argAt(args, 1), 64)
		if perr != nil {
			return "", "sleep: invalid time interval\n", 1, nil
		}
		if err := pause(ctx, time.Duration(d*float64(time.Second))); err != nil {
			return "", "", -1, err
		}
		return "", "", 0, nil
	case "sh":
		return h.shell(ctx, args)
	case "rpm":
		return h.rpm(args)
	case "dnf", "yum":
		if err := h.wait(ctx, func() time.Duration { return h.installDelay }); err != nil {
			return "", "", -1, err
		}
		return h.install(args)
	case "systemctl", "service":
		if err := h.wait(ctx, func() time.Duration { return h.serviceDelay }); err != nil {
			return "", "", -1, err
		}
		if args[0] == "service" {
			return h.service(argAt(args, 2), argAt(args, 1))
		}
		return h.service(argAt(args, 1), argAt(args, 2))
	}
	return "", "sh: 1: " + args[0] + ": not found\n", 127, nil
}

// wait sleeps for the delay delay reads under the host's lock, or until
// ctx ends.
func (h *FakeHost) wait(ctx context.Context, delay func() time.Duration) error {
	h.mu.Lock()
	d := delay()
	h.mu.Unlock()
	return pause(ctx, d)
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func argAt(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

func (h *FakeHost) shell(ctx context.Context, args []string) (string, string, int, error) {
	if len(args) < 3 || args[1] != "-c" {
		return "", "fake sh: only `sh -c SCRIPT` is simulated\n", 2, nil
	}
	script := args[2]
	if script == transporttest.StderrScript && len(args) == 6 {
		n, err := strconv.Atoi(args[5])
		if err != nil {
			return "", "sh: exit: Illegal number\n", 2, nil
		}
		return "", args[4] + "\n", n, nil
	}
	if rest, ok := strings.CutPrefix(script, "exit "); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(rest)); err == nil {
			return "", "", n, nil
		}
	}
	h.mu.Lock()
	fn, ok := h.scripts[script]
	h.mu.Unlock()
	if !ok {
		return "", fmt.Sprintf("fake sh: no handler for script %q\n", script), 127, nil
	}
	out, status := fn(ctx, h)
	return out, "", status, nil
}

// rpm answers `rpm -q --qf FORMAT NAME...` in the tab-separated format the
// runner asks for.
func (h *FakeHost) rpm(args []string) (string, string, int, error) {
	if len(args) < 5 || args[1] != "-q" || args[2] != "--qf" {
		return "", "fake rpm: only `rpm -q --qf FORMAT NAME...` is simulated\n", 1, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	missing := 0
	for _, name := range args[4:] {
		p, ok := h.packages[name]
		if !ok {
			fmt.Fprintf(&b, "package %s is not installed\n", name)
			missing++
			continue
		}
		epoch := p.Epoch
		if epoch == "" {
			epoch = "0"
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\t%s\n", p.Name, epoch, p.Version, p.Release, p.Arch)
	}
	return b.String(), "", missing, nil
}

// install answers `dnf install -y NEVRA...`: all or nothing, like a dnf
// transaction; an unknown NEVRA fails the whole command.
func (h *FakeHost) install(args []string) (string, string, int, error) {
	if len(args) < 4 || args[1] != "install" || args[2] != "-y" {
		return "", "fake dnf: only `dnf install -y NEVRA...` is simulated\n", 1, nil
	}
	var want []playbook.Package
	for _, spec := range args[3:] {
		p, ok := h.fleet.lookup(spec)
		if !ok {
			return "", "No match for argument: " + spec + "\nError: Unable to find a match: " + spec + "\n", 1, nil
		}
		want = append(want, p)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var out strings.Builder
	for _, p := range want {
		h.packages[p.Name] = p
		fmt.Fprintf(&out, "Installed: %s\n", p.NEVRA())
	}
	out.WriteString("Complete!\n")
	return out.String(), "", 0, nil
}

func (f *FakeFleet) lookup(spec string) (playbook.Package, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.available[spec]
	return p, ok
}

func (h *FakeHost) service(action, name string) (string, string, int, error) {
	h.mu.Lock()
	fn := h.onService
	h.mu.Unlock()
	if fn != nil {
		if err := fn(action, name); err != nil {
			return "", err.Error() + "\n", 1, nil
		}
	}
	return "", "", 0, nil
}

// printf implements the subset of printf(1) the conformance suite uses:
// %s, %%, \n and \t, with the format reused for extra arguments.
func printf(format string, args []string) string {
	var b strings.Builder
	for {
		used := 0
		for i := 0; i < len(format); i++ {
			c := format[i]
			switch {
			case c == '\\' && i+1 < len(format):
				i++
				switch format[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				case '\\':
					b.WriteByte('\\')
				default:
					b.WriteByte('\\')
					b.WriteByte(format[i])
				}
			case c == '%' && i+1 < len(format):
				i++
				switch format[i] {
				case 's':
					if used < len(args) {
						b.WriteString(args[used])
					}
					used++
				case '%':
					b.WriteByte('%')
				default:
					b.WriteByte('%')
					b.WriteByte(format[i])
				}
			default:
				b.WriteByte(c)
			}
		}
		if used == 0 || used >= len(args) {
			return b.String()
		}
		args = args[used:]
	}
}

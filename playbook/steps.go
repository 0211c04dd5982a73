package playbook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// Step is one action of a playbook. The vocabulary is closed: only this
// package implements Step, so every step a plan shows is one the runner
// knows how to run, record and undo.
type Step interface {
	// Kind is the step's name in playbooks, such as "balancer.drain".
	Kind() string
	// Describe says what the step does, for plans.
	Describe() string
	// changesHost reports whether the step may change the host (and so
	// disrupt what it serves): a failure after it leaves the host out of
	// the balancer, and between drain and enable the runner first confirms
	// that the balancer still has the host out (see Runner.keepOut).
	changesHost() bool
	run(ctx context.Context, env *stepEnv) (output string, err error)
}

// stepEnv is what a step can reach while it runs on one host (or, for gate
// checks, on the machine lieutenant runs on).
type stepEnv struct {
	host           Host
	conn           transport.Runner
	balancer       lb.Balancer
	sudo           bool
	commandTimeout time.Duration
	http           *http.Client
	data           TemplateData
	packages       []Package
	// installed is what rpm reported after packages.install, for the record.
	installed map[string][]Package
	// verified: a check step passed since the host's last change.
	verified bool
}

// Where a step may appear.
type stepPlace int

const (
	placeHost      stepPlace = iota // playbook steps, run on each host
	placePreflight                  // run on every host before anything changes
	placeGate                       // run between batches, from the orchestrator
)

func (p stepPlace) allows(kind string) bool {
	switch p {
	case placePreflight:
		return kind == "command.check" || kind == "http.check"
	case placeGate:
		return kind == "command.check" || kind == "http.check"
	}
	return true
}

func stepKinds() []string {
	return []string{"balancer.drain", "balancer.enable", "packages.install", "service.restart", "service.start",
		"service.stop", "command.run", "command.check", "http.check", "sleep"}
}

// step parses one list item: "kind" alone or {kind: arguments}.
func (d decoder) step(n *yaml.Node, p string, place stepPlace) Step {
	var kind string
	var arg *yaml.Node
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag != "!!null":
		kind = n.Value
	case n.Kind == yaml.MappingNode && len(n.Content) == 2:
		kind, arg = n.Content[0].Value, n.Content[1]
		if arg.Tag == "!!null" {
			arg = nil
		}
	default:
		d.errorf(n, p, "a step is its name, optionally with arguments, such as `service.restart: hello-web`; got %s", describeNode(n))
		return nil
	}
	known := stepKinds()
	if !contains(known, kind) {
		d.errorf(n, p, "unknown step %q%s (known: %s)", kind, suggest(kind, known), strings.Join(known, ", "))
		return nil
	}
	if !place.allows(kind) {
		where := map[stepPlace]string{placePreflight: "preflight (which must not change hosts)", placeGate: "the gate"}[place]
		d.errorf(n, p, "%s cannot be used in %s; use command.check or http.check", kind, where)
		return nil
	}
	p = join(p, kind)
	line := n
	if arg != nil {
		line = arg
	}
	switch kind {
	case "balancer.drain":
		s := &drainStep{opts: lb.DrainOptions{Timeout: time.Minute}}
		d.args(arg, p, map[string]func(k, v *yaml.Node){
			"timeout":       func(_, v *yaml.Node) { s.opts.Timeout = d.positiveDuration(v, join(p, "timeout")) },
			"kill_sessions": func(_, v *yaml.Node) { s.opts.KillSessions = d.boolean(v, join(p, "kill_sessions")) },
		})
		return s
	case "balancer.enable":
		s := &enableStep{opts: lb.EnableOptions{Timeout: time.Minute}}
		d.args(arg, p, map[string]func(k, v *yaml.Node){
			"timeout":        func(_, v *yaml.Node) { s.opts.Timeout = d.positiveDuration(v, join(p, "timeout")) },
			"wait_for_check": func(_, v *yaml.Node) { s.waitForCheck = d.boolean(v, join(p, "wait_for_check")) },
		})
		return s
	case "packages.install":
		s := &installStep{manager: "dnf"}
		d.args(arg, p, map[string]func(k, v *yaml.Node){
			"manager": func(_, v *yaml.Node) { s.manager = d.str(v, join(p, "manager")) },
			"base_url": func(_, v *yaml.Node) {
				s.baseURL = d.str(v, join(p, "base_url"))
				if u, err := url.Parse(s.baseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || strings.ContainsAny(s.baseURL, " '\"\\`$") {
					d.errorf(v, join(p, "base_url"), "%q is not an http, https or file URL", s.baseURL)
				}
			},
			"timeout": func(_, v *yaml.Node) { s.timeout = d.positiveDuration(v, join(p, "timeout")) },
		})
		switch s.manager {
		case "dnf", "yum":
			if s.baseURL != "" {
				d.errorf(line, join(p, "base_url"), "is only used with manager: rpm")
			}
		case "rpm":
			if s.baseURL == "" {
				d.errorf(line, join(p, "base_url"), "is required with manager: rpm (rpm -U needs the package files' location)")
			}
		default:
			d.errorf(line, join(p, "manager"), "unknown package manager %q (known: dnf, yum, rpm)", s.manager)
		}
		return s
	case "service.restart", "service.start", "service.stop":
		s := &serviceStep{action: strings.TrimPrefix(kind, "service."), manager: "systemctl"}
		if arg != nil && arg.Kind == yaml.ScalarNode {
			s.name = arg.Value
		} else {
			seen := d.args(arg, p, map[string]func(k, v *yaml.Node){
				"name":    func(_, v *yaml.Node) { s.name = d.str(v, join(p, "name")) },
				"manager": func(_, v *yaml.Node) { s.manager = d.str(v, join(p, "manager")) },
				"timeout": func(_, v *yaml.Node) { s.timeout = d.positiveDuration(v, join(p, "timeout")) },
			})
			if arg != nil && !seen["name"] {
				d.errorf(line, join(p, "name"), "is required")
			}
		}
		if s.name == "" && arg == nil {
			d.errorf(line, p, "needs the service's name, such as `%s: hello-web`", kind)
		} else if s.name != "" && !serviceRe.MatchString(s.name) {
			d.errorf(line, p, "%q is not a service name", s.name)
		}
		if s.manager != "systemctl" && s.manager != "service" {
			d.errorf(line, join(p, "manager"), "unknown service manager %q (known: systemctl, service)", s.manager)
		}
		return s
	case "command.run", "command.check":
		s := &commandStep{check: kind == "command.check"}
		var src string
		if arg != nil && arg.Kind == yaml.ScalarNode {
			src = arg.Value
		} else {
			fields := map[string]func(k, v *yaml.Node){
				"run":     func(_, v *yaml.Node) { src = d.str(v, join(p, "run")) },
				"timeout": func(_, v *yaml.Node) { s.timeout = d.positiveDuration(v, join(p, "timeout")) },
				"sudo": func(_, v *yaml.Node) {
					b := d.boolean(v, join(p, "sudo"))
					s.sudo = &b
				},
			}
			if s.check {
				d.retryFields(fields, p, &s.retry)
			}
			d.args(arg, p, fields)
		}
		if strings.TrimSpace(src) == "" {
			d.errorf(line, p, "needs a command, such as `%s: \"test -d /srv/app\"`", kind)
			return nil
		}
		t, err := parseTemplate(src, place != placeGate)
		if err != nil {
			d.errorf(line, p, "%v", err)
			return nil
		}
		s.script = t
		return s
	case "http.check":
		s := &httpCheckStep{status: http.StatusOK, timeout: 5 * time.Second}
		var rawURL, contains string
		fields := map[string]func(k, v *yaml.Node){
			"url": func(_, v *yaml.Node) { rawURL = d.str(v, join(p, "url")) },
			"status": func(_, v *yaml.Node) {
				if st, ok := d.integer(v, join(p, "status")); ok {
					if st < 100 || st > 599 {
						d.errorf(v, join(p, "status"), "%d is not an HTTP status", st)
					}
					s.status = st
				}
			},
			"contains": func(_, v *yaml.Node) { contains = d.str(v, join(p, "contains")) },
			"timeout":  func(_, v *yaml.Node) { s.timeout = d.positiveDuration(v, join(p, "timeout")) },
		}
		d.retryFields(fields, p, &s.retry)
		if arg != nil && arg.Kind == yaml.ScalarNode {
			rawURL = arg.Value
		} else {
			seen := d.args(arg, p, fields)
			if arg != nil && !seen["url"] {
				d.errorf(line, join(p, "url"), "is required")
			}
		}
		if rawURL == "" {
			if arg == nil {
				d.errorf(line, p, "needs a url, such as `http.check: {url: \"http://{{ .Host.Address }}:8080/health\"}`")
			}
			return nil
		}
		t, err := parseTemplate(rawURL, place != placeGate)
		if err != nil {
			d.errorf(line, join(p, "url"), "%v", err)
			return nil
		}
		if u, _ := t.render(sampleData()); !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			d.errorf(line, join(p, "url"), "%q must start with http:// or https://", rawURL)
		}
		s.url = t
		if contains != "" {
			if s.contains, err = parseTemplate(contains, place != placeGate); err != nil {
				d.errorf(line, join(p, "contains"), "%v", err)
			}
		}
		return s
	case "sleep":
		s := &sleepStep{}
		if arg == nil {
			d.errorf(line, p, "needs a duration, such as `sleep: 5s`")
		} else {
			s.d = d.positiveDuration(arg, p)
		}
		return s
	}
	return nil
}

var serviceRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9@._:-]*$`)

// args decodes a step's mapping of arguments; a step without arguments is
// fine when every field has a default.
func (d decoder) args(n *yaml.Node, p string, fields map[string]func(k, v *yaml.Node)) map[string]bool {
	if n == nil {
		return map[string]bool{}
	}
	return d.mapping(n, p, fields)
}

func (d decoder) retryFields(fields map[string]func(k, v *yaml.Node), p string, r *retry) {
	r.interval = time.Second
	fields["retries"] = func(_, v *yaml.Node) {
		if n, ok := d.integer(v, join(p, "retries")); ok {
			if n < 0 {
				d.errorf(v, join(p, "retries"), "must be 0 or more")
			}
			r.retries = n
		}
	}
	fields["interval"] = func(_, v *yaml.Node) { r.interval = d.duration(v, join(p, "interval")) }
	fields["deadline"] = func(_, v *yaml.Node) { r.deadline = d.positiveDuration(v, join(p, "deadline")) }
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// --- balancer ---

type drainStep struct{ opts lb.DrainOptions }

func (*drainStep) Kind() string      { return "balancer.drain" }
func (*drainStep) changesHost() bool { return false }
func (s *drainStep) Describe() string {
	d := fmt.Sprintf("drain from the balancer (sessions to 0 within %s", s.opts.Timeout)
	if s.opts.KillSessions {
		d += ", then kill the rest"
	}
	return d + ")"
}
func (s *drainStep) run(ctx context.Context, env *stepEnv) (string, error) {
	return "", env.balancer.Drain(ctx, env.host.BalancerServer, s.opts)
}

// enableStep puts the host back in service. Right after a check step that
// passed since the host's last change, the check stands for the balancer's
// first one and the host takes traffic at once (lb.EnableOptions.Verified);
// otherwise, or with wait_for_check, the balancer's own check must pass
// first.
type enableStep struct {
	opts         lb.EnableOptions
	waitForCheck bool
}

func (*enableStep) Kind() string      { return "balancer.enable" }
func (*enableStep) changesHost() bool { return false }
func (s *enableStep) Describe() string {
	if s.waitForCheck {
		return fmt.Sprintf("enable in the balancer once its own health check passes (within %s)", s.opts.Timeout)
	}
	return fmt.Sprintf("enable in the balancer within %s (at once after a passing check step)", s.opts.Timeout)
}
func (s *enableStep) run(ctx context.Context, env *stepEnv) (string, error) {
	opts := s.opts
	opts.Verified = env.verified && !s.waitForCheck
	if err := env.balancer.Enable(ctx, env.host.BalancerServer, opts); err != nil {
		return "", err
	}
	if opts.Verified {
		return "verified by the check before", nil
	}
	return "after the balancer's own check", nil
}

// verifiesHost reports whether s, when it passes, shows the host healthy:
// a check of what its last change did.
func verifiesHost(s Step) bool {
	switch s := s.(type) {
	case *httpCheckStep:
		return true
	case *commandStep:
		return s.check
	}
	return false
}

// --- packages ---

type installStep struct {
	manager string
	baseURL string
	timeout time.Duration
}

func (*installStep) Kind() string      { return "packages.install" }
func (*installStep) changesHost() bool { return true }
func (s *installStep) Describe() string {
	return strings.Join(s.argv(nil), " ") + " <manifest packages>"
}

func (s *installStep) argv(pkgs []Package) []string {
	var args []string
	switch s.manager {
	case "rpm":
		// --oldpackage lets a rollback install an older version;
		// --replacepkgs makes a repeated run a no-op instead of an error.
		args = []string{"rpm", "-U", "--oldpackage", "--replacepkgs"}
		for _, p := range pkgs {
			args = append(args, strings.TrimSuffix(s.baseURL, "/")+"/"+p.NEVRA()+".rpm")
		}
		return args
	default:
		// dnf installs an exact NEVRA whatever is installed, so the same
		// command upgrades and downgrades.
		args = []string{s.manager, "install", "-y"}
	}
	for _, p := range pkgs {
		args = append(args, p.NEVRA())
	}
	return args
}

func (s *installStep) run(ctx context.Context, env *stepEnv) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp(s.timeout, env.commandTimeout))
	defer cancel()
	res, err := env.conn.Run(ctx, transport.Command{Args: s.argv(env.packages), Sudo: env.sudo})
	out := outputTail(res)
	if err != nil {
		return out, fmt.Errorf("%s install: %w", s.manager, err)
	}
	installed, err := QueryInstalled(ctx, env.conn, env.sudo, env.packages)
	if err != nil {
		return out, err
	}
	env.installed = installed
	if missing := notAtWanted(env.packages, installed); len(missing) > 0 {
		return out, fmt.Errorf("%s install finished but the host does not have %s", s.manager, strings.Join(missing, ", "))
	}
	return out, nil
}

// notAtWanted lists the wanted packages a host does not have at exactly the
// wanted version.
func notAtWanted(wanted []Package, installed map[string][]Package) []string {
	var out []string
	for _, w := range wanted {
		if !hasExact(installed[w.Name], w) {
			out = append(out, w.NEVRA())
		}
	}
	return out
}

func hasExact(have []Package, w Package) bool {
	if len(have) != 1 {
		return false
	}
	h := have[0]
	return CompareEVR(h, w) == 0 && (w.Arch == "" || w.Arch == h.Arch)
}

// --- services ---

type serviceStep struct {
	action, name, manager string
	timeout               time.Duration
}

func (s *serviceStep) Kind() string     { return "service." + s.action }
func (*serviceStep) changesHost() bool  { return true }
func (s *serviceStep) Describe() string { return strings.Join(s.argv(), " ") }
func (s *serviceStep) argv() []string {
	if s.manager == "service" {
		return []string{"service", s.name, s.action}
	}
	return []string{"systemctl", s.action, s.name}
}
func (s *serviceStep) run(ctx context.Context, env *stepEnv) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp(s.timeout, env.commandTimeout))
	defer cancel()
	res, err := env.conn.Run(ctx, transport.Command{Args: s.argv(), Sudo: env.sudo})
	return outputTail(res), err
}

// --- commands ---

type commandStep struct {
	script  tmpl
	check   bool
	sudo    *bool
	timeout time.Duration
	retry   retry
}

func (s *commandStep) Kind() string {
	if s.check {
		return "command.check"
	}
	return "command.run"
}
func (s *commandStep) changesHost() bool { return !s.check }
func (s *commandStep) Describe() string {
	d := "sh -c " + transport.Quote(s.script.src)
	if s.check {
		d += s.retry.describe()
	}
	return d
}

func (s *commandStep) run(ctx context.Context, env *stepEnv) (string, error) {
	// Values from the inventory are quoted before they reach the script.
	script, err := s.script.render(env.data.shellQuoted())
	if err != nil {
		return "", err
	}
	sudo := env.sudo
	if s.sudo != nil {
		sudo = *s.sudo
	}
	attempt := func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, cmp(s.timeout, env.commandTimeout))
		defer cancel()
		res, err := env.conn.Run(ctx, transport.Command{Args: []string{"sh", "-c", script}, Sudo: sudo})
		return outputTail(res), err
	}
	if !s.check {
		return attempt(ctx)
	}
	return s.retry.do(ctx, attempt)
}

// --- HTTP ---

type httpCheckStep struct {
	url, contains tmpl
	status        int
	timeout       time.Duration
	retry         retry
}

func (*httpCheckStep) Kind() string      { return "http.check" }
func (*httpCheckStep) changesHost() bool { return false }
func (s *httpCheckStep) Describe() string {
	d := fmt.Sprintf("GET %s expect %d", s.url.src, s.status)
	if s.contains.src != "" {
		d += fmt.Sprintf(" containing %q", s.contains.src)
	}
	return d + s.retry.describe()
}

func (s *httpCheckStep) run(ctx context.Context, env *stepEnv) (string, error) {
	target, err := s.url.render(env.data)
	if err != nil {
		return "", err
	}
	want, err := s.contains.render(env.data)
	if err != nil {
		return "", err
	}
	return s.retry.do(ctx, func(ctx context.Context) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return "", fmt.Errorf("GET %s: %w", target, err)
		}
		resp, err := env.http.Do(req)
		if err != nil {
			return "", fmt.Errorf("GET %s: %w", target, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return "", fmt.Errorf("GET %s: read body: %w", target, err)
		}
		out := fmt.Sprintf("%s %d: %s", target, resp.StatusCode, tail(string(body), 5, 500))
		if resp.StatusCode != s.status {
			return out, fmt.Errorf("GET %s: status %d, want %d", target, resp.StatusCode, s.status)
		}
		if want != "" && !strings.Contains(string(body), want) {
			return out, fmt.Errorf("GET %s: body does not contain %q", target, want)
		}
		return out, nil
	})
}

// --- sleep ---

type sleepStep struct{ d time.Duration }

func (*sleepStep) Kind() string       { return "sleep" }
func (*sleepStep) changesHost() bool  { return false }
func (s *sleepStep) Describe() string { return "sleep " + s.d.String() }
func (s *sleepStep) run(ctx context.Context, _ *stepEnv) (string, error) {
	return "", sleep(ctx, s.d)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// --- retries, shared by the checks ---

type retry struct {
	retries  int
	interval time.Duration
	deadline time.Duration // over all attempts; 0: none beyond retries
}

func (r retry) describe() string {
	var parts []string
	if r.retries > 0 {
		parts = append(parts, fmt.Sprintf("%d retries %s apart", r.retries, r.interval))
	}
	if r.deadline > 0 {
		parts = append(parts, "deadline "+r.deadline.String())
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// do runs attempt until it succeeds, the retries are used up, or the
// deadline passes; the error of the last attempt is returned.
func (r retry) do(ctx context.Context, attempt func(context.Context) (string, error)) (string, error) {
	if r.deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.deadline)
		defer cancel()
	}
	var out string
	var err error
	for i := 0; ; i++ {
		out, err = attempt(ctx)
		if err == nil {
			return out, nil
		}
		if i >= r.retries {
			break
		}
		if serr := sleep(ctx, r.interval); serr != nil {
			break
		}
	}
	if r.retries > 0 {
		err = fmt.Errorf("%w (after %d attempts)", err, r.retries+1)
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return out, err
}

// cmp returns the first non-zero duration.
func cmp(ds ...time.Duration) time.Duration {
	for _, d := range ds {
		if d > 0 {
			return d
		}
	}
	return 0
}

// outputTail keeps the end of a command's output for the record: enough to
// see why it failed without storing megabytes of dnf progress in Git. When
// that drops anything, its first line says how much there was.
func outputTail(r transport.Result) string {
	const maxLines, maxBytes = 20, 2000
	out := strings.TrimRight(string(r.Stdout), "\n")
	if errOut := strings.TrimRight(string(r.Stderr), "\n"); errOut != "" {
		if out != "" {
			out += "\n"
		}
		out += errOut
	}
	kept := tail(out, maxLines, maxBytes)
	// The transport may have dropped the start of a stream already.
	total := max(r.StdoutBytes, int64(len(r.Stdout))) + max(r.StderrBytes, int64(len(r.Stderr)))
	if total > int64(len(r.Stdout)+len(r.Stderr)) || strings.Count(out, "\n") >= maxLines || len(out) > maxBytes {
		kept = fmt.Sprintf("[%d bytes of output, the last %d kept]\n%s", total, len(kept), kept)
	}
	return kept
}

func tail(s string, maxLines, maxBytes int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > maxLines {
		s = strings.Join(lines[len(lines)-maxLines:], "\n")
	}
	if len(s) > maxBytes {
		s = s[len(s)-maxBytes:]
	}
	// A cut inside a UTF-8 sequence, or binary output, would make YAML store
	// the record's text as base64, which git show cannot be read in.
	return strings.ToValidUTF8(s, "\uFFFD")
}

// Package fleet brings the docker-compose test fleet up and down: app hosts
// with OpenSSH, rpm/dnf and hello-web behind a real HAProxy, and a package
// repository, on a private network. `make demo` and the end-to-end tests use
// it; it needs the images `make images` builds.
//
// Invariants:
//   - Everything runs under one compose project name; Down removes exactly
//     that project's containers, network and volumes, never anything else.
//   - Host keys are never skipped: known_hosts is written from each host's
//     real key, read through `docker exec`, not by trusting the network.
//   - Only loopback ports are published.
package fleet

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// imageNames are the images the fleet runs, built by testenv/fleet/build-images.
func imageNames() []string {
	return []string{"lieutenant-fleet/app", "lieutenant-fleet/lb", "lieutenant-fleet/repo"}
}

// Options configure a fleet.
type Options struct {
	// Project is the compose project name; it must be unique per fleet.
	Project string
	// Dir holds the fleet's state: keys, known_hosts, HAProxy's config.
	Dir string
	// Apps is the number of app hosts; 0 means 4.
	Apps int
	// HelloWebVersion is the hello-web every host starts with; "" means 1.0.0-1.
	HelloWebVersion string
	// Tag is the images' tag; "" means dev.
	Tag string
	// Check is HAProxy's health check timing; zero means FastChecks.
	Check CheckTiming
}

// CheckTiming is HAProxy's health check timing: default-server inter,
// fall and rise.
type CheckTiming struct {
	Inter      time.Duration
	Fall, Rise int
}

var (
	// FastChecks is what the tests use: a server is judged within 200ms.
	FastChecks = CheckTiming{Inter: 200 * time.Millisecond, Fall: 2, Rise: 1}
	// DefaultChecks is HAProxy's own default timing, what users run.
	DefaultChecks = CheckTiming{Inter: 2 * time.Second, Fall: 3, Rise: 2}
)

func (c CheckTiming) String() string {
	return fmt.Sprintf("inter %s fall %d rise %d", c.Inter, c.Fall, c.Rise)
}

// Host is one app host.
type Host struct {
	Name      string // web-1, web-2, ... (inventory name)
	Server    string // web1, web2, ... (HAProxy server name)
	Container string // compose container name
	Address   string // IP address on the fleet's network, reachable from this machine
}

// Fleet is a running fleet.
type Fleet struct {
	Project    string
	Dir        string
	Hosts      []Host
	User       string // the deploy user, with passwordless sudo
	Identity   string // private key authorized for User on every host
	KnownHosts string // every host's real key, the Git server's too
	// GitURL is the bare deploy repository on the fleet's Git server,
	// ssh://deploy@ADDRESS/srv/git/deploy.git, empty at first. Identity
	// logs in there too; GitSSHCommand is how the git CLI does.
	GitURL      string
	git         Host
	LBAPI       string // HAProxy runtime API, 127.0.0.1:PORT
	FrontendURL string // HAProxy frontend, http://127.0.0.1:PORT
	StatsURL    string
	Backend     string      // HAProxy backend name
	Check       CheckTiming // HAProxy's health check timing
	compose     []string
	env         []string
	network     string // the compose network's name, for Disconnect
	apiClosed   bool   // HAProxy's configuration has no TCP runtime API
}

// ComposeFile is the fleet's compose file, found next to this source file.
func ComposeFile() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "docker-compose.yml")
}

// composeCommand prefers `docker compose`, else Debian's docker-compose 1.29.
func composeCommand(ctx context.Context) ([]string, error) {
	if err := exec.CommandContext(ctx, "docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}, nil
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	return nil, errors.New("neither `docker compose` nor docker-compose is installed")
}

// CheckImages says which of the fleet's images are missing.
func CheckImages(ctx context.Context, tag string) error {
	if tag == "" {
		tag = "dev"
	}
	var missing []string
	for _, img := range imageNames() {
		if err := exec.CommandContext(ctx, "docker", "image", "inspect", img+":"+tag).Run(); err != nil {
			missing = append(missing, img+":"+tag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("fleet images missing: %s (build them with `make images`)", strings.Join(missing, ", "))
	}
	return nil
}

// Up starts a fleet and returns once every host answers SSH with its
// service installed and HAProxy sees every server up. On error it removes
// what it started.
func Up(ctx context.Context, o Options) (_ *Fleet, err error) {
	if o.Apps == 0 {
		o.Apps = 4
	}
	if o.HelloWebVersion == "" {
		o.HelloWebVersion = "1.0.0-1"
	}
	if o.Tag == "" {
		o.Tag = "dev"
	}
	if o.Check == (CheckTiming{}) {
		o.Check = FastChecks
	}
	if o.Project == "" || o.Dir == "" {
		return nil, errors.New("fleet up: Project and Dir are required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("fleet up: %w", err)
	}
	if err := CheckImages(ctx, o.Tag); err != nil {
		return nil, err
	}
	compose, err := composeCommand(ctx)
	if err != nil {
		return nil, fmt.Errorf("fleet up: %w", err)
	}
	f := &Fleet{
		Project: o.Project, Dir: dir, User: "deploy", Backend: "web", Check: o.Check,
		Identity:   filepath.Join(dir, "id_ed25519"),
		KnownHosts: filepath.Join(dir, "known_hosts"),
		compose:    append(compose, "-f", ComposeFile(), "-p", o.Project),
		env: append(os.Environ(), "FLEET_DIR="+dir, "FLEET_TAG="+o.Tag,
			"HELLO_WEB_VERSION="+o.HelloWebVersion),
	}
	if err := f.writeKeys(); err != nil {
		return nil, err
	}
	// haproxy.cfg must exist for compose to mount it; the real one is
	// written once the app hosts' addresses are known.
	if err := os.WriteFile(filepath.Join(dir, "haproxy.cfg"), nil, 0o644); err != nil {
		return nil, fmt.Errorf("fleet up: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Down(context.WithoutCancel(ctx))
		}
	}()
	if _, err := f.run(ctx, "up", "-d", "--scale", "app="+strconv.Itoa(o.Apps), "repo", "app", "git"); err != nil {
		return nil, err
	}
	if err := f.findHosts(ctx, o.Apps); err != nil {
		return nil, err
	}
	if err := f.findGit(ctx); err != nil {
		return nil, err
	}
	if err := f.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := f.writeKnownHosts(ctx); err != nil {
		return nil, err
	}
	if err := f.writeHAProxyConfig(); err != nil {
		return nil, err
	}
	if _, err := f.run(ctx, "up", "-d", "--no-deps", "lb"); err != nil {
		return nil, err
	}
	if err := f.findPorts(ctx); err != nil {
		return nil, err
	}
	if err := f.waitBalanced(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// DownProject removes a fleet known only by its project and state
// directory, such as one a previous `make demo` left up.
func DownProject(ctx context.Context, project, dir string) error {
	compose, err := composeCommand(ctx)
	if err != nil {
		return fmt.Errorf("fleet down: %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("fleet down: %w", err)
	}
	f := &Fleet{Project: project, compose: append(compose, "-f", ComposeFile(), "-p", project),
		env: append(os.Environ(), "FLEET_DIR="+dir)}
	return f.Down(ctx)
}

// Down removes the fleet's containers, network and volumes.
func (f *Fleet) Down(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err := f.run(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "1")
	return err
}

func (f *Fleet) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, f.compose[0], append(f.compose[1:], args...)...)
	cmd.Env = f.env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", strings.Join(f.compose[:1], " "), strings.Join(args, " "), err, strings.TrimSpace(lastLines(errOut.String(), 10)))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeKeys makes the fleet's own key pair and authorizes it for the
// deploy user on every host.
func (f *Fleet) writeKeys() error {
	if err := os.MkdirAll(filepath.Join(f.Dir, "authorized_keys"), 0o755); err != nil {
		return fmt.Errorf("fleet keys: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("fleet keys: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "lieutenant test fleet")
	if err != nil {
		return fmt.Errorf("fleet keys: %w", err)
	}
	if err := os.WriteFile(f.Identity, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("fleet keys: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("fleet keys: %w", err)
	}
	authorized := ssh.MarshalAuthorizedKey(sshPub)
	if err := os.WriteFile(f.Identity+".pub", authorized, 0o644); err != nil {
		return fmt.Errorf("fleet keys: %w", err)
	}
	return os.WriteFile(filepath.Join(f.Dir, "authorized_keys", f.User), authorized, 0o644)
}

type containerInfo struct {
	Name            string
	NetworkSettings struct {
		Networks map[string]struct{ IPAddress string }
	}
	Config struct {
		Labels map[string]string
	}
	State struct{ Running bool }
}

func (f *Fleet) inspect(ctx context.Context, service string) ([]containerInfo, error) {
	ids, err := f.run(ctx, "ps", "-q", service)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(ids)
	if len(fields) == 0 {
		return nil, fmt.Errorf("fleet %s: no %s container", f.Project, service)
	}
	out, err := exec.CommandContext(ctx, "docker", append([]string{"inspect"}, fields...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("docker inspect %s: %w", service, err)
	}
	var infos []containerInfo
	if err := json.Unmarshal(out, &infos); err != nil {
		return nil, fmt.Errorf("docker inspect %s: %w", service, err)
	}
	return infos, nil
}

// findHosts names the app containers web-1... by their compose number.
func (f *Fleet) findHosts(ctx context.Context, n int) error {
	infos, err := f.inspect(ctx, "app")
	if err != nil {
		return err
	}
	numbers := map[string]int{}
	for _, c := range infos {
		num, err := strconv.Atoi(c.Config.Labels["com.docker.compose.container-number"])
		if err != nil {
			return fmt.Errorf("fleet %s: container %s has no compose number", f.Project, c.Name)
		}
		numbers[fmt.Sprintf("web-%d", num)] = num
		var addr string
		for name, nw := range c.NetworkSettings.Networks {
			addr, f.network = nw.IPAddress, name
		}
		f.Hosts = append(f.Hosts, Host{
			Name: fmt.Sprintf("web-%d", num), Server: fmt.Sprintf("web%d", num),
			Container: strings.TrimPrefix(c.Name, "/"), Address: addr,
		})
	}
	sort.Slice(f.Hosts, func(i, j int) bool { return numbers[f.Hosts[i].Name] < numbers[f.Hosts[j].Name] })
	if len(f.Hosts) != n {
		return fmt.Errorf("fleet %s: %d app hosts, want %d", f.Project, len(f.Hosts), n)
	}
	return nil
}

// GitSSHCommand is a GIT_SSH_COMMAND for the fleet's Git server: its key,
// its known_hosts, strict host key checking.
func (f *Fleet) GitSSHCommand() string {
	return fmt.Sprintf("ssh -i %s -o IdentitiesOnly=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes", f.Identity, f.KnownHosts)
}

// findGit finds the Git server.
func (f *Fleet) findGit(ctx context.Context) error {
	infos, err := f.inspect(ctx, "git")
	if err != nil {
		return err
	}
	f.git = Host{Name: "git", Container: strings.TrimPrefix(infos[0].Name, "/")}
	for _, nw := range infos[0].NetworkSettings.Networks {
		f.git.Address = nw.IPAddress
	}
	f.GitURL = fmt.Sprintf("ssh://%s@%s/srv/git/deploy.git", f.User, f.git.Address)
	return nil
}

// waitReady waits until every host has installed hello-web and sshd
// listens, and the Git server answers; a host whose entrypoint failed is
// reported with its log.
func (f *Fleet) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(3 * time.Minute)
	for _, h := range append(f.Hosts, f.git) {
		if err := f.waitHostReady(ctx, h, deadline); err != nil {
			return err
		}
	}
	return nil
}

func (f *Fleet) waitHostReady(ctx context.Context, h Host, deadline time.Time) error {
	for {
		if err := exec.CommandContext(ctx, "docker", "exec", h.Container, "test", "-e", "/run/fleet-ready").Run(); err == nil && sshAnswers(h.Address) {
			return nil
		}
		if running, _ := f.running(ctx, h.Container); !running {
			logs, _ := exec.CommandContext(ctx, "docker", "logs", "--tail", "20", h.Container).CombinedOutput()
			return fmt.Errorf("fleet %s: %s stopped while starting:\n%s", f.Project, h.Name, logs)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleet %s: %s not ready by %s", f.Project, h.Name, deadline.Format(time.TimeOnly))
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func (f *Fleet) running(ctx context.Context, container string) (bool, error) {
	out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{.State.Running}}", container).Output()
	return strings.TrimSpace(string(out)) == "true", err
}

func sshAnswers(addr string) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 8)
	n, _ := c.Read(buf)
	return strings.HasPrefix(string(buf[:n]), "SSH-")
}

// writeKnownHosts reads each host's real key over docker exec.
func (f *Fleet) writeKnownHosts(ctx context.Context) error {
	var b strings.Builder
	for _, h := range append(f.Hosts, f.git) {
		key, err := exec.CommandContext(ctx, "docker", "exec", h.Container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").Output()
		if err != nil {
			return fmt.Errorf("fleet %s: host key of %s: %w", f.Project, h.Name, err)
		}
		fields := strings.Fields(string(key))
		if len(fields) < 2 {
			return fmt.Errorf("fleet %s: host key of %s: %q", f.Project, h.Name, key)
		}
		fmt.Fprintf(&b, "%s %s %s\n", h.Address, fields[0], fields[1])
	}
	return os.WriteFile(f.KnownHosts, []byte(b.String()), 0o644)
}

var haproxyConfig = template.Must(template.New("").Parse(`# Generated by testenv/fleet for fleet {{.Project}}.
global
    stats socket /run/haproxy/admin.sock mode 600 level admin
{{- if not .APIClosed}}
    stats socket ipv4@0.0.0.0:9999 level admin
{{- end}}
    # A reload (haproxy-reload) keeps drained and disabled servers so.
    server-state-file /var/lib/haproxy/server-state

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    # hello-web answers at once: a server silent for 5s is gone (a
    # partition), and its sessions should not hold a drain for longer.
    timeout server 5s
    # No retry and no redispatch: a request sent to a server that is going
    # away must fail visibly, or a bad drain would be hidden.
    retries 0
    option httpchk GET /health
    load-server-state-from-file global
    default-server inter {{.Check.Inter.Milliseconds}}ms fall {{.Check.Fall}} rise {{.Check.Rise}}

frontend http-in
    bind :80
    default_backend {{.Backend}}

backend {{.Backend}}
    balance roundrobin
{{- range .Hosts}}
    server {{.Server}} {{.Address}}:8080 check
{{- end}}

listen stats
    bind :8404
    stats enable
    stats uri /stats
    stats refresh 2s
`))

func (f *Fleet) writeHAProxyConfig() error {
	var b bytes.Buffer
	data := struct {
		*Fleet
		APIClosed bool
	}{f, f.apiClosed}
	if err := haproxyConfig.Execute(&b, data); err != nil {
		return fmt.Errorf("fleet %s: haproxy.cfg: %w", f.Project, err)
	}
	return os.WriteFile(filepath.Join(f.Dir, "haproxy.cfg"), b.Bytes(), 0o644)
}

// SetCheckTiming changes HAProxy's health check timing: the configuration
// is written again and HAProxy reloaded, keeping the servers' states. It
// returns once every server is up again.
func (f *Fleet) SetCheckTiming(ctx context.Context, c CheckTiming) error {
	f.Check = c
	if err := f.writeHAProxyConfig(); err != nil {
		return err
	}
	if out, err := f.LB(ctx, "haproxy-reload"); err != nil {
		return fmt.Errorf("fleet %s: reload HAProxy: %w: %s", f.Project, err, out)
	}
	// The old process finishes while the new one starts checking.
	if err := sleep(ctx, time.Second+2*c.Inter); err != nil {
		return err
	}
	return f.waitBalanced(ctx)
}

// SetGitDelay makes every conversation with the fleet's Git server (each
// git-upload-pack and git-receive-pack it runs) d slower, as a distant or
// busy hosted remote is; 0 takes the delay away.
func (f *Fleet) SetGitDelay(ctx context.Context, d time.Duration) error {
	script := "rm -f /usr/local/bin/git-upload-pack /usr/local/bin/git-receive-pack"
	if d > 0 {
		script = fmt.Sprintf(`for p in git-upload-pack git-receive-pack; do
printf '#!/bin/sh\n# a slow remote, for benchmarks\nsleep %.3f\nexec /usr/bin/%%s "$@"\n' $p > /usr/local/bin/$p
chmod 755 /usr/local/bin/$p
done`, d.Seconds())
	}
	if out, err := exec.CommandContext(ctx, "docker", "exec", f.git.Container, "sh", "-c", script).CombinedOutput(); err != nil {
		return fmt.Errorf("fleet %s: git delay: %w: %s", f.Project, err, out)
	}
	return nil
}

func (f *Fleet) findPorts(ctx context.Context) error {
	port := func(inner string) (string, error) {
		out, err := f.run(ctx, "port", "lb", inner)
		if err != nil {
			return "", err
		}
		addr := strings.TrimSpace(out)
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			return "", fmt.Errorf("fleet %s: lb port %s published on %q, not loopback", f.Project, inner, addr)
		}
		return addr, nil
	}
	front, err := port("80")
	if err != nil {
		return err
	}
	stats, err := port("8404")
	if err != nil {
		return err
	}
	api, err := port("9999")
	if err != nil {
		return err
	}
	f.FrontendURL, f.StatsURL, f.LBAPI = "http://"+front, "http://"+stats+"/stats", api
	return nil
}

// waitBalanced waits until HAProxy sees every server up.
func (f *Fleet) waitBalanced(ctx context.Context) error {
	bal, err := lb.NewHAProxy(f.LBAPI, f.Backend)
	if err != nil {
		return fmt.Errorf("fleet %s: %w", f.Project, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		up := 0
		servers, err := bal.Servers(ctx)
		for _, s := range servers {
			if s.Serving() {
				up++
			}
		}
		if err == nil && up == len(f.Hosts) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fleet %s: HAProxy sees %d of %d servers up after a minute (%v)", f.Project, up, len(f.Hosts), err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// Exec runs a command in a host's container, as root, and returns its
// output; for checks a person would make with docker exec.
func (f *Fleet) Exec(ctx context.Context, host string, args ...string) (string, error) {
	h, err := f.host(host)
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", h.Container}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker exec %s %s: %w: %s", h.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Stop stops a host's container, as a host that went down would.
func (f *Fleet) Stop(ctx context.Context, host string) error {
	h, err := f.host(host)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "docker", "stop", "-t", "1", h.Container).CombinedOutput(); err != nil {
		return fmt.Errorf("docker stop %s: %w: %s", h.Name, err, out)
	}
	return nil
}

// LB runs a command in the load balancer's container.
func (f *Fleet) LB(ctx context.Context, args ...string) (string, error) {
	out, err := f.run(ctx, append([]string{"exec", "-T", "lb"}, args...)...)
	return out, err
}

// host is an app host by name, or the Git server as "git".
func (f *Fleet) host(name string) (Host, error) {
	for _, h := range append(f.Hosts, f.git) {
		if h.Name == name {
			return h, nil
		}
	}
	return Host{}, fmt.Errorf("fleet %s has no host %s", f.Project, name)
}

// Inventory is the fleet as a lieutenant inventory.
func (f *Fleet) Inventory() string {
	var b strings.Builder
	b.WriteString("hosts:\n")
	for _, h := range f.Hosts {
		fmt.Fprintf(&b, "  %s: {address: %s, balancer_server: %s}\n", h.Name, h.Address, h.Server)
	}
	b.WriteString("groups:\n  web: [\"web-*\"]\n")
	return b.String()
}

// Environment is a lieutenant.yaml environment block for the fleet.
func (f *Fleet) Environment(name string) string {
	return fmt.Sprintf(`  %s:
    manifest: releases/%s.yaml
    inventory: inventory/%s.yaml
    playbook: playbooks/web.yaml
    balancer: {type: haproxy, api: %q, backend: %s, min_up: %d}
    ssh: {user: %s, sudo: true, known_hosts: %s, identity_files: [%s], agent: false}
`, name, name, name, f.LBAPI, f.Backend, max(1, len(f.Hosts)/2), f.User, f.KnownHosts, f.Identity)
}

// Playbook is the fleet's release script: drain, install, restart, check
// through the host, enable; between the halves a check through HAProxy.
func (f *Fleet) Playbook() string {
	return `hosts: web
strategy: {batches: halves}
steps:
  - balancer.drain: {timeout: 30s}
  - packages.install
  - service.restart: {name: hello-web, manager: service}
  - http.check: {url: "http://{{ .Host.Address }}:8080/health", retries: 100, interval: 50ms}
  - balancer.enable: {timeout: 30s}
gate:
  checks:
    - http.check: {url: "` + f.FrontendURL + `/health"}
`
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

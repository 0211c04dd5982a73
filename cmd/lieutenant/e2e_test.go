package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/testenv"
)

const (
	web100 = "hello-web-1.0.0-1.x86_64"
	web110 = "hello-web-1.1.0-1.x86_64"
	web120 = "hello-web-1.2.0-1.x86_64"
)

// sshScene is the real binary's whole path over real parts: a Git deploy
// repository, four hosts behind OpenSSH (host keys checked), a real HAProxy
// in front of their hello-web. Only rpm/dnf/systemctl are shims.
type sshScene struct {
	fleet  *testenv.SSHFleet
	ha     *testenv.HAProxy
	repo   string
	port   int // hello-web's
	logins int // SSH logins seen by checkConnections so far
}

func newSSHScene(t *testing.T) *sshScene {
	fleet := testenv.StartSSHFleet(t, 4, 31, web100, web100, web110, web120)
	port, addrs := fleet.ServeHelloWeb(t, "1.2.0")
	ha := testenv.StartHAProxy(t, addrs)
	s := &sshScene{fleet: fleet, ha: ha, port: port}
	s.repo = testenv.NewGitRepo(t, map[string]string{
		"lieutenant.yaml":           s.config(ha.APIAddr),
		"releases/production.yaml":  "release: 2026.11.3\npackages: [" + web110 + "]\n",
		"inventory/production.yaml": fleet.Inventory(),
		"playbooks/web.yaml": fmt.Sprintf(`
hosts: "web-*"
steps:
  - balancer.drain: {timeout: 10s}
  - packages.install
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:%d/health", retries: 20, interval: 100ms}
  - balancer.enable: {timeout: 10s}
gate:
  checks:
    - http.check: {url: "%s/version", contains: "1."}
`, port, ha.FrontendURL),
	})
	return s
}

func (s *sshScene) config(api string) string {
	return fmt.Sprintf(`
environments:
  production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
    balancer: {type: haproxy, api: %q, backend: %s, min_up: 2}
    ssh: {user: %s, known_hosts: %s, identity_files: [%s], agent: false}
`, api, s.ha.Backend, s.fleet.User, s.fleet.KnownHosts, s.fleet.Identity)
}

func (s *sshScene) versions(t *testing.T) string {
	var out []string
	for _, h := range s.fleet.Hosts {
		out = append(out, h.Name+"="+s.fleet.Installed(t, h.Name, "hello-web"))
	}
	return strings.Join(out, " ")
}

func TestRunOverSSH(t *testing.T) {
	s := newSSHScene(t)

	stdout, stderr, code := lieutenant(t, s.repo, "plan", "--env", "production")
	if code != exitOK {
		t.Fatalf("plan: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"1      web-1  127.0.0.31  ready/up  hello-web  1.0.0-1    1.1.0-1  upgrade", "2      web-4  127.0.0.34  ready/up  hello-web  1.0.0-1    1.1.0-1  upgrade"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, stdout)
		}
	}
	s.checkConnections(t, 4)

	load := testenv.StartLoad(t, s.ha.FrontendURL+"/", 200)
	stdout, stderr, code = lieutenant(t, s.repo, "run", "--env", "production")
	res := load.Stop()
	if code != exitOK {
		t.Fatalf("run: exit %d\n%s%s", code, stdout, stderr)
	}
	// One SSH connection per host for the whole run, inspection included.
	s.checkConnections(t, 4)
	t.Logf("lieutenant run:\n%s%s", stderr, stdout)
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	t.Logf("load during the rollout: %s", res)
	if res.Failed != 0 || res.Rate() < 150 {
		t.Errorf("want zero failed requests at >= 150/s during the rollout: %s", res)
	}
	for _, want := range []string{"web-1  1      succeeded  1.0.0-1  1.1.0-1  ready/up", "succeeded in", "Record: git show lieutenant/runs:runs/production/"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("run output lacks %q:\n%s", want, stdout)
		}
	}
	recordPath := stdout[strings.Index(stdout, "lieutenant/runs:")+len("lieutenant/runs:"):]
	recordPath = strings.TrimSpace(recordPath)
	shown := testenv.Git(t, s.repo, "show", "lieutenant/runs:"+recordPath)
	if !strings.Contains(shown, "outcome: succeeded") || !strings.Contains(shown, "started_from: ") {
		t.Errorf("record:\n%s", shown)
	}
	testenv.Git(t, s.repo, "fsck", "--strict")

	// Run again: nothing to do, nothing recorded.
	before := testenv.Git(t, s.repo, "rev-parse", "lieutenant/runs")
	stdout, _, code = lieutenant(t, s.repo, "run", "--env", "production")
	if code != exitOK || !strings.Contains(stdout, "Nothing to do: all 4 hosts of production have release 2026.11.3") {
		t.Errorf("second run: exit %d\n%s", code, stdout)
	}
	if after := testenv.Git(t, s.repo, "rev-parse", "lieutenant/runs"); after != before {
		t.Errorf("a run with nothing to do wrote history")
	}

	// The broken release fails its check on the first half, which stays out.
	testenv.GitCommit(t, s.repo, map[string]string{"releases/production.yaml": "release: 2026.11.4\npackages: [" + web120 + "]\n"}, "release 2026.11.4")
	stdout, stderr, code = lieutenant(t, s.repo, "run", "--env", "production")
	if code != exitFailed {
		t.Fatalf("broken release: exit %d, want %d\n%s%s", code, exitFailed, stdout, stderr)
	}
	t.Logf("lieutenant run (broken release):\n%s%s", stderr, stdout)
	if got, want := s.versions(t), "web-1=1.2.0-1 web-2=1.2.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	for _, want := range []string{"web-1  1      failed", "maint/down", "web-3  2      untouched  1.1.0-1", "Not touched, still on the previous release: web-3, web-4."} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if got, want := s.ha.Statuses(t), "web1=MAINT web2=MAINT web3=UP web4=UP"; got != want {
		t.Errorf("HAProxy's show stat: %s, want %s", got, want)
	}
}

// checkConnections asserts how many SSH logins the last command made.
func (s *sshScene) checkConnections(t *testing.T, want int) {
	t.Helper()
	got := s.fleet.Connections() - s.logins
	s.logins += got
	if got != want {
		t.Errorf("%d SSH connections, want %d (one per host)", got, want)
	}
}

// TestRunWithoutDrainLosesRequests is the control for TestRunOverSSH's
// zero-failure check: the shim's restart leaves the service down for a
// moment, and without a drain the load must see it.
func TestRunWithoutDrainLosesRequests(t *testing.T) {
	s := newSSHScene(t)
	testenv.GitCommit(t, s.repo, map[string]string{"playbooks/web.yaml": `
hosts: "web-*"
steps:
  - packages.install
  - service.restart: hello-web
`}, "no drain")
	load := testenv.StartLoad(t, s.ha.FrontendURL+"/", 200)
	stdout, stderr, code := lieutenant(t, s.repo, "run", "--env", "production")
	res := load.Stop()
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("load during a rollout without drain: %s", res)
	if res.Failed == 0 {
		t.Errorf("no request failed although services restarted in service: the check cannot see a bad drain (%s)", res)
	}
}

// TestRunRefusesBadInput: each problem is reported and no host is touched;
// nothing is written to the history branch.
func TestRunRefusesBadInput(t *testing.T) {
	s := newSSHScene(t)
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"invalid YAML", map[string]string{"playbooks/web.yaml": "hosts: [web\n"}, "playbooks/web.yaml:1: invalid YAML"},
		{"unknown step", map[string]string{"playbooks/web.yaml": "hosts: \"web-*\"\nsteps:\n  - servce.restart: hello-web\n"}, `unknown step "servce.restart"`},
		{"shell metacharacter in a package", map[string]string{"releases/production.yaml": "release: x\npackages: [\"hello; rm -rf /\"]\n"}, `"hello; rm -rf /" is not name-version-release`},
		{"host without address", map[string]string{"inventory/production.yaml": "hosts:\n  web-1: {port: 22}\n"}, "hosts.web-1.address: is required"},
		{"playbook selects no hosts", map[string]string{"playbooks/web.yaml": "hosts: \"app-*\"\nsteps:\n  - service.restart: hello-web\n"}, `"app-*" matches no host`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good := testenv.Git(t, s.repo, "rev-parse", "HEAD")
			testenv.GitCommit(t, s.repo, tc.files, tc.name)
			defer testenv.Git(t, s.repo, "reset", "-q", "--hard", good)
			stdout, stderr, code := lieutenant(t, s.repo, "run", "--env", "production", "--yes")
			if code != exitInvalid || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, want %d with %q\n%s%s", code, exitInvalid, tc.want, stdout, stderr)
			}
			s.checkConnections(t, 0)
			if got, want := s.versions(t), "web-1=1.0.0-1 web-2=1.0.0-1 web-3=1.0.0-1 web-4=1.0.0-1"; got != want {
				t.Errorf("hosts changed: %s", got)
			}
			if got, want := s.ha.Statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
				t.Errorf("balancer changed: %s", got)
			}
			if out, err := testenv.GitCommand(s.repo, "rev-parse", "--verify", "-q", "lieutenant/runs").Output(); err == nil {
				t.Errorf("a refused run wrote history: %s", out)
			}
		})
	}
}

func TestRunRefusesBeforeTouchingHosts(t *testing.T) {
	s := newSSHScene(t)
	empty := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(otherKey, []byte("[127.0.0.33]:"+fmt.Sprint(s.fleet.Hosts[2].Port)+" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, config, flag string
		want               []string
	}{
		{name: "unknown host key", flag: "--known-hosts=" + empty,
			want: []string{"web-1", "web-4", "SHA256:", "ssh-keyscan", "verify a key out of band"}},
		{name: "missing known_hosts file", flag: "--known-hosts=" + filepath.Join(t.TempDir(), "nope"),
			want: []string{"nope"}},
		{name: "changed host key", flag: "--known-hosts=" + otherKey,
			want: []string{"web-3", "HOST KEY", "127.0.0.33"}},
		{name: "unreachable balancer", config: s.config("127.0.0.1:1"),
			want: []string{"balancer:", "127.0.0.1:1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.config != "" {
				testenv.GitCommit(t, s.repo, map[string]string{"lieutenant.yaml": tc.config}, tc.name)
				defer testenv.GitCommit(t, s.repo, map[string]string{"lieutenant.yaml": s.config(s.ha.APIAddr)}, "restore")
			}
			args := []string{"run", "--env", "production", "--yes"}
			if tc.flag != "" {
				args = append(args, tc.flag)
			}
			stdout, stderr, code := lieutenant(t, s.repo, args...)
			if code != exitRefused {
				t.Errorf("exit %d, want %d\n%s%s", code, exitRefused, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if got, want := s.versions(t), "web-1=1.0.0-1 web-2=1.0.0-1 web-3=1.0.0-1 web-4=1.0.0-1"; got != want {
				t.Errorf("hosts changed: %s", got)
			}
			if got, want := s.ha.Statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
				t.Errorf("balancer changed: %s", got)
			}
		})
	}
}

package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// simScene is a fleet that needs no daemon installed: simulated hosts in
// this process reached over real SSH (testenv.SimFleet), a balancer driven
// by a script through the command adapter, whose state is a directory of
// files, and the deploy repository behind a bare remote. lieutenant runs
// as a process of its own (see TestMain), to be signalled.
type simScene struct {
	sim  *testenv.SimFleet
	lb   string // the balancer: SERVER.state holds ready or maint
	bare string
}

// lbScript is a balancer as the command adapter drives one (see
// lb.Command): `lbctl DIR state|drain SERVER|enable SERVER`.
const lbScript = `#!/bin/sh
dir=$1
put() { printf '%s\n' "$2" > "$dir/$1.tmp.$$" && mv -f "$dir/$1.tmp.$$" "$dir/$1.state"; }
case $2 in
state)
	for f in "$dir"/*.state; do
		admin=$(cat "$f"); health=up
		[ "$admin" = maint ] && health=down
		echo "$(basename "$f" .state) $admin $health 0"
	done ;;
drain) put "$3" maint ;;
enable) put "$3" ready ;;
*) exit 64 ;;
esac
`

const simV100, simV110 = "hello-web-1.0.0-1.x86_64", "hello-web-1.1.0-1.x86_64"

// newSimScene starts 4 hosts at simV100 and a manifest of simV110 rolled
// out in halves with steps (the playbook's step list).
func newSimScene(t *testing.T, steps string) *simScene {
	t.Helper()
	testenv.RequireBinaries(t, "sh", "git")
	s := &simScene{sim: testenv.StartSimFleet(t, 4, testenv.SimDelays{Install: 50 * time.Millisecond}, simV100, simV100, simV110), lb: t.TempDir()}
	script := filepath.Join(t.TempDir(), "lbctl")
	if err := os.WriteFile(script, []byte(lbScript), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, h := range s.sim.Hosts {
		if err := os.WriteFile(filepath.Join(s.lb, h.Server+".state"), []byte("ready\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	argv := func(args ...string) string {
		return fmt.Sprintf("[%q, %q, %s]", script, s.lb, strings.Join(args, ", "))
	}
	repo := testenv.NewGitRepo(t, map[string]string{
		"lieutenant.yaml": fmt.Sprintf(`
environments:
  production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
    balancer: {type: command, drain: %s, enable: %s, state: %s, min_up: 1}
    ssh: {user: %s, known_hosts: %s, identity_files: [%s], agent: false}
`, argv("drain", `"{server}"`), argv("enable", `"{server}"`), argv("state"), s.sim.User, s.sim.KnownHosts, s.sim.Identity),
		"releases/production.yaml":  "release: r1\npackages: [" + simV110 + "]\n",
		"inventory/production.yaml": s.sim.Inventory(),
		"playbooks/web.yaml":        "hosts: \"web-*\"\nsteps:\n" + steps,
	})
	s.bare = filepath.Join(t.TempDir(), "deploy.git")
	testenv.Git(t, "", "clone", "-q", "--bare", repo, s.bare)
	return s
}

// balancer is every server's state: "web1=ready web2=maint ...".
func (s *simScene) balancer(t *testing.T) string {
	t.Helper()
	var out []string
	for _, h := range s.sim.Hosts {
		b, err := os.ReadFile(filepath.Join(s.lb, h.Server+".state"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Server+"="+strings.TrimSpace(string(b)))
	}
	return strings.Join(out, " ")
}

func (s *simScene) versions() string {
	var out []string
	for _, h := range s.sim.Hosts {
		out = append(out, h.Name+"="+s.sim.Fleet.Host(h.Name).Installed()["hello-web"])
	}
	return strings.Join(out, " ")
}

// onlyRun is the record of the one run on the remote, as `git show`
// reads it.
func (s *simScene) onlyRun(t *testing.T) string {
	t.Helper()
	ids := testenv.RunIDs(s.bare, "lieutenant/runs", "production")
	if len(ids) != 1 {
		t.Fatalf("runs recorded: %v, want one", ids)
	}
	rec, err := testenv.RunRecord(s.bare, "lieutenant/runs", "production", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func (s *simScene) checkUnlocked(t *testing.T) {
	t.Helper()
	if files := testenv.Git(t, s.bare, "ls-tree", "-r", "--name-only", "lieutenant/runs"); strings.Contains(files, "locks/") {
		t.Errorf("the lock was left:\n%s", files)
	}
}

// A closed terminal or a dropped SSH session sends SIGHUP (twice: from
// the shell and from the kernel): the run stops as on SIGTERM (exit 5),
// with the hosts it drained back in the balancer, its record saying
// interrupted and the environment unlocked.
func TestSIGHUPStopsTheRunGracefully(t *testing.T) {
	s := newSimScene(t, "  - balancer.drain: {timeout: 10s}\n  - sleep: 1m\n  - packages.install\n  - balancer.enable: {timeout: 10s}\n")
	p := killPoint{name: "SIGHUP with batch 1 drained", line: `balancer\.drain\s+ok`, nth: 2, signal: syscall.SIGHUP, twice: true}
	out, code := signalRun(t, []string{"--repo", "file://" + s.bare, "run", "--env", "production", "--yes"}, p, s.bare)
	if code != exitInterrupted {
		t.Fatalf("exit %d, want %d (interrupted):\n%s", code, exitInterrupted, out)
	}
	if got, want := s.balancer(t), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s (the drained hosts put back)\n%s", got, want, out)
	}
	if got, want := s.versions(), "web-1="+simV100+" web-2="+simV100+" web-3="+simV100+" web-4="+simV100; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	if rec := s.onlyRun(t); !strings.Contains(rec, "outcome: interrupted") {
		t.Errorf("the record does not say interrupted:\n%s", rec)
	}
	s.checkUnlocked(t)
}

// `lieutenant run ... 2>&1 | head -6`: once head has its lines, stdout and
// stderr are a closed pipe. The run goes on to its end (exit 0), and its
// record says that the operator's output was lost.
func TestClosedOutputDoesNotStopTheRun(t *testing.T) {
	s := newSimScene(t, "  - balancer.drain: {timeout: 10s}\n  - sleep: 300ms\n  - packages.install\n  - service.restart: hello-web\n  - balancer.enable: {timeout: 10s}\n")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "--repo", "file://"+s.bare, "run", "--env", "production", "--yes")
	cmd.Env = append(os.Environ(), "LIEUTENANT_TEST_AS_CLI=1")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var head []string
	for sc := bufio.NewScanner(r); len(head) < 6 && sc.Scan(); {
		head = append(head, sc.Text())
	}
	r.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("the run did not end")
	}
	head6 := strings.Join(head, "\n")
	if code := cmd.ProcessState.ExitCode(); code != exitOK {
		t.Fatalf("exit %d (%v), want 0; it printed:\n%s", code, cmd.ProcessState, head6)
	}
	if got, want := s.versions(), "web-1="+simV110+" web-2="+simV110+" web-3="+simV110+" web-4="+simV110; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	if got, want := s.balancer(t), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	rec := s.onlyRun(t)
	// The progress on stderr was lost first; stdout, written at the end
	// only, after the record.
	for _, want := range []string{"outcome: succeeded", "the output to standard error was lost at "} {
		if !strings.Contains(rec, want) {
			t.Errorf("the record lacks %q:\n%s", want, rec)
		}
	}
	s.checkUnlocked(t)
}

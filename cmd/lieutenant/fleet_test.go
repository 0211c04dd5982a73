package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/testenv/fleet"
)

// The end-to-end tests on the docker-compose fleet: real RPM hosts (rpm,
// dnf, sudo, sshd), a real HAProxy with retries 0 and no redispatch, a real
// package repository, and the real CLI. Load runs through HAProxy at more
// than 200 requests a second; a control run without drain shows the load
// sees a bad one.

const fleetRate = 250

type fleetScene struct {
	f    *fleet.Fleet
	repo string
}

func newFleetScene(t *testing.T, version string) *fleetScene {
	f := testenv.StartDockerFleet(t, fleet.Options{HelloWebVersion: version})
	s := &fleetScene{f: f}
	s.repo = testenv.NewGitRepo(t, map[string]string{
		"lieutenant.yaml":           "environments:\n" + f.Environment("production"),
		"releases/production.yaml":  manifest(version),
		"inventory/production.yaml": f.Inventory(),
		"playbooks/web.yaml":        f.Playbook(),
	})
	return s
}

func manifest(version string) string {
	return fmt.Sprintf("release: hello-%s\npackages: [hello-web-%s.x86_64]\n", version, version)
}

func (s *fleetScene) release(t *testing.T, version string) {
	testenv.GitCommit(t, s.repo, map[string]string{"releases/production.yaml": manifest(version)}, "release "+version)
}

// installed is what rpm says on every host, asked as root in the container.
func (s *fleetScene) installed(t *testing.T) string {
	var out []string
	for _, h := range s.f.Hosts {
		v, err := s.f.Exec(t.Context(), h.Name, "rpm", "-q", "hello-web")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name+"="+strings.TrimPrefix(strings.TrimSpace(v), "hello-web-"))
	}
	return strings.Join(out, " ")
}

// serving is what each host's hello-web answers on /version.
func (s *fleetScene) serving(t *testing.T) string {
	var out []string
	for _, h := range s.f.Hosts {
		out = append(out, h.Name+"="+get(t, "http://"+h.Address+":8080/version"))
	}
	return strings.Join(out, " ")
}

func get(t *testing.T, url string) string {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "unreachable"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}

// statuses is HAProxy's own view, from its stats page.
func (s *fleetScene) statuses(t *testing.T) string {
	servers, err := testenv.ParseStat(get(t, s.f.StatsURL+";csv"), s.f.Backend)
	if err != nil {
		t.Fatal(err)
	}
	return testenv.StatusLine(servers)
}

// rollout runs `lieutenant run` under load and returns what it printed.
func (s *fleetScene) rollout(t *testing.T, wantCode int) (stdout, stderr string, res testenv.LoadResult) {
	load := testenv.StartLoad(t, s.f.FrontendURL+"/", fleetRate)
	stdout, stderr, code := lieutenant(t, s.repo, "run", "--env", "production", "--yes")
	res = load.Stop()
	t.Logf("lieutenant run (exit %d):\n%s%s\nload: %s", code, stderr, stdout, res)
	if code != wantCode {
		t.Fatalf("exit %d, want %d", code, wantCode)
	}
	return stdout, stderr, res
}

// record reads, with the git CLI, the run record the summary names.
func (s *fleetScene) record(t *testing.T, stdout string) string {
	i := strings.LastIndex(stdout, "lieutenant/runs:")
	if i < 0 {
		t.Fatalf("the summary names no record:\n%s", stdout)
	}
	return testenv.Git(t, s.repo, "show", strings.TrimSpace(stdout[i:]))
}

func checkFleetLoad(t *testing.T, res testenv.LoadResult) {
	t.Helper()
	if res.Failed != 0 {
		t.Errorf("requests failed through HAProxy: %s", res)
	}
	if res.Rate() < 200 {
		t.Errorf("load below 200 requests/s, too thin to prove a drain: %s", res)
	}
}

func TestFleetRolloutUpgradeDowngradeAndControl(t *testing.T) {
	s := newFleetScene(t, "1.0.0-1")
	const all4 = "web1=UP web2=UP web3=UP web4=UP"

	// 1.0.0 -> 1.1.0, drained: every host upgraded and back, nothing lost.
	s.release(t, "1.1.0-1")
	stdout, _, res := s.rollout(t, exitOK)
	checkFleetLoad(t, res)
	if got, want := s.installed(t), "web-1=1.1.0-1.x86_64 web-2=1.1.0-1.x86_64 web-3=1.1.0-1.x86_64 web-4=1.1.0-1.x86_64"; got != want {
		t.Errorf("rpm -q: %s, want %s", got, want)
	}
	if got, want := s.serving(t), "web-1=1.1.0 web-2=1.1.0 web-3=1.1.0 web-4=1.1.0"; got != want {
		t.Errorf("/version: %s, want %s", got, want)
	}
	if got := s.statuses(t); got != all4 {
		t.Errorf("HAProxy: %s, want %s", got, all4)
	}
	if shown := s.record(t, stdout); !strings.Contains(shown, "outcome: succeeded") {
		t.Errorf("record:\n%s", shown)
	}

	// 1.1.0 -> 1.0.0: dnf installs the exact older version.
	s.release(t, "1.0.0-1")
	_, _, res = s.rollout(t, exitOK)
	checkFleetLoad(t, res)
	if got, want := s.installed(t), "web-1=1.0.0-1.x86_64 web-2=1.0.0-1.x86_64 web-3=1.0.0-1.x86_64 web-4=1.0.0-1.x86_64"; got != want {
		t.Errorf("after the downgrade, rpm -q: %s, want %s", got, want)
	}
	if got := s.statuses(t); got != all4 {
		t.Errorf("HAProxy: %s, want %s", got, all4)
	}

	// Control: the same rollout without drain must lose requests, or the
	// zero above proves nothing.
	testenv.GitCommit(t, s.repo, map[string]string{"playbooks/web.yaml": strings.NewReplacer(
		"  - balancer.drain: {timeout: 30s}\n", "", "  - balancer.enable: {timeout: 30s}\n", "").Replace(s.f.Playbook())}, "no drain")
	s.release(t, "1.1.0-1")
	_, _, res = s.rollout(t, exitOK)
	if res.Failed == 0 {
		t.Errorf("a rollout without drain lost no request: the load cannot see a bad drain (%s)", res)
	}
}

func TestFleetBrokenRelease(t *testing.T) {
	s := newFleetScene(t, "1.1.0-1")
	s.release(t, "1.2.0-1")
	stdout, stderr, res := s.rollout(t, exitFailed)
	checkFleetLoad(t, res)
	if got, want := s.statuses(t), "web1=MAINT web2=MAINT web3=UP web4=UP"; got != want {
		t.Errorf("HAProxy: %s, want %s", got, want)
	}
	if got, want := s.serving(t), "web-1=1.2.0 web-2=1.2.0 web-3=1.1.0 web-4=1.1.0"; got != want {
		t.Errorf("/version: %s, want %s", got, want)
	}
	for _, want := range []string{"web-1  1      failed", "web-3  2      untouched", "Not touched, still on the previous release: web-3, web-4."} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if !strings.Contains(stderr, "run failed: batch 1:") {
		t.Errorf("stderr lacks where the run stopped:\n%s", stderr)
	}
	if shown := s.record(t, stdout); !strings.Contains(shown, "outcome: failed") || !strings.Contains(shown, "status 503") {
		t.Errorf("record:\n%s", shown)
	}
}

func TestFleetStoppedHost(t *testing.T) {
	s := newFleetScene(t, "1.0.0-1")
	if err := s.f.Stop(t.Context(), "web-3"); err != nil {
		t.Fatal(err)
	}
	s.release(t, "1.1.0-1")
	stdout, stderr, code := lieutenant(t, s.repo, "run", "--env", "production", "--yes")
	if code != exitRefused || !strings.Contains(stderr, "web-3: connect to web-3") {
		t.Fatalf("exit %d, want %d naming web-3:\n%s%s", code, exitRefused, stdout, stderr)
	}
	// Nothing was drained: HAProxy only marks web3 down by its own check.
	deadline := time.Now().Add(10 * time.Second)
	for got := s.statuses(t); got != "web1=UP web2=UP web3=DOWN web4=UP"; got = s.statuses(t) {
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy: %s, want web3 DOWN by its health check and no server in MAINT", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, h := range []string{"web-1", "web-2", "web-4"} {
		if v, _ := s.f.Exec(t.Context(), h, "rpm", "-q", "hello-web"); strings.TrimSpace(v) != "hello-web-1.0.0-1.x86_64" {
			t.Errorf("%s changed: %s", h, v)
		}
	}
}

// A reload of HAProxy keeps a drained server out (server-state file).
func TestFleetReloadKeepsDrain(t *testing.T) {
	s := newFleetScene(t, "1.0.0-1")
	ctx := t.Context()
	pidBefore, err := s.f.LB(ctx, "sh", "-c", `echo "show info" | socat stdio unix:/run/haproxy/admin.sock | grep ^Pid:`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.LB(ctx, "sh", "-c", `echo "set server web/web2 state maint" | socat stdio unix:/run/haproxy/admin.sock`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.LB(ctx, "haproxy-reload"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pid, err := s.f.LB(ctx, "sh", "-c", `echo "show info" | socat stdio unix:/run/haproxy/admin.sock | grep ^Pid:`)
		if err == nil && pid != pidBefore && strings.HasPrefix(pid, "Pid:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("HAProxy did not reload")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := s.statuses(t), "web1=UP web2=MAINT web3=UP web4=UP"; got != want {
		t.Errorf("after a reload: %s, want %s", got, want)
	}
}

// TestFleetGitOpsOverSSH is the whole Git-driven story on real RPM hosts,
// with the deploy repository on the fleet's Git server over SSH: a merged
// manifest change is deployed by sync; the sync process is killed with
// SIGKILL in the middle of its first batch; run refuses the dead run's lock
// and says to resume; resume finishes it. No request fails through HAProxy
// over the whole episode, and a second sync does nothing. Then the same at
// more moments of a rollout (mid-install with real dnf, after the second
// half's drains, at the gate, after the last host), each resumed from the
// remote's URL, again with no failed request.
func TestFleetGitOpsOverSSH(t *testing.T) {
	s := newFleetScene(t, "1.0.0-1")
	remote := []string{"--git-known-hosts", s.f.KnownHosts, "--git-identity", s.f.Identity}
	push := func() {
		cmd := testenv.GitCommand(s.repo, "push", "-q", s.f.GitURL, "HEAD:refs/heads/main")
		cmd.Env = append(cmd.Env, "GIT_SSH_COMMAND="+s.f.GitSSHCommand())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git push to the fleet's Git server: %v\n%s", err, out)
		}
	}
	push()
	sync := func(args ...string) (string, string, int) {
		return lieutenant(t, s.f.GitURL, append(append(append([]string{}, remote...), "sync", "--env", "production", "--yes"), args...)...)
	}
	// The fleet already runs the manifest: sync changes nothing, and records
	// that the release is out there, which a rollback can go back to.
	if stdout, stderr, code := sync(); code != exitOK || !strings.Contains(stdout, "in sync at hello-1.0.0-1") || !strings.Contains(stderr, "Recorded as run ") {
		t.Fatalf("first sync of a fleet at the manifest: exit %d\n%s%s", code, stdout, stderr)
	}

	// The merge.
	s.release(t, "1.1.0-1")
	push()
	load := testenv.StartLoad(t, s.f.FrontendURL+"/", fleetRate)
	var out strings.Builder
	first := exec.Command(os.Args[0], append(append([]string{"--repo", s.f.GitURL}, remote...), "sync", "--env", "production", "--yes")...)
	first.Env = append(os.Environ(), "LIEUTENANT_TEST_AS_CLI=1")
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	readRemote := func(args ...string) (string, error) {
		cmd := testenv.GitCommand(s.repo, args...)
		cmd.Env = append(cmd.Env, "GIT_SSH_COMMAND="+s.f.GitSSHCommand())
		b, err := cmd.Output()
		return string(b), err
	}
	var id string
	for deadline := time.Now().Add(time.Minute); id == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := readRemote("fetch", "-q", s.f.GitURL, "+lieutenant/runs:refs/remotes/fleet/runs"); err != nil {
			continue
		}
		for _, run := range testenv.RunIDs(s.repo, "fleet/runs", "production") {
			if rec, _ := testenv.RunRecord(s.repo, "fleet/runs", "production", run); strings.Contains(rec, "step: balancer.drain") {
				id = run
			}
		}
	}
	if id == "" {
		first.Process.Kill()
		first.Wait()
		t.Fatalf("the sync's record never showed a drain:\n%s", out.String())
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	t.Logf("killed sync, run %s:\n%s\nHAProxy: %s", id, out.String(), s.statuses(t))

	_, stderr, code := lieutenant(t, s.f.GitURL, append(remote, "run", "--env", "production", "--yes")...)
	if code != exitLocked || !strings.Contains(stderr, "lieutenant resume "+id) {
		t.Errorf("run on the dead run's lock: exit %d\n%s", code, stderr)
	}
	stdout, stderr, code := lieutenant(t, s.f.GitURL, append(remote, "resume", "--yes", id)...)
	res := load.Stop()
	t.Logf("resume (exit %d):\n%s%s\nload over kill and resume: %s", code, stderr, stdout, res)
	if code != exitOK {
		t.Fatalf("resume: exit %d", code)
	}
	checkFleetLoad(t, res)
	if got, want := s.installed(t), "web-1=1.1.0-1.x86_64 web-2=1.1.0-1.x86_64 web-3=1.1.0-1.x86_64 web-4=1.1.0-1.x86_64"; got != want {
		t.Errorf("rpm -q: %s, want %s", got, want)
	}
	if got, want := s.statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
		t.Errorf("HAProxy: %s, want %s", got, want)
	}
	if stdout, stderr, code := sync(); code != exitOK || !strings.Contains(stdout, "in sync at hello-1.1.0-1") {
		t.Errorf("sync after the resume: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := readRemote("fetch", "-q", s.f.GitURL, "+lieutenant/runs:refs/remotes/fleet/runs"); err != nil {
		t.Fatal(err)
	}
	rec, _ := readRemote("show", "fleet/runs:runs/production/"+id+".yaml")
	for _, want := range []string{"kind: sync", "outcome: succeeded", "resumed:"} {
		if !strings.Contains(rec, want) {
			t.Errorf("record lacks %q:\n%s", want, rec)
		}
	}

	// More moments to die at, with real dnf and restarts.
	load = testenv.StartLoad(t, s.f.FrontendURL+"/", fleetRate)
	version := "1.1.0-1"
	for _, p := range []killPoint{
		{name: "mid-install", line: `balancer\.drain\s+ok`, after: 300 * time.Millisecond},
		{name: "after batch 2's drains", line: `balancer\.drain\s+ok`, nth: 4},
		{name: "at the gate's check", line: `gate after batch 1: check`},
		{name: "all hosts done, before the end", line: `done in`, nth: 4},
	} {
		version = map[string]string{"1.0.0-1": "1.1.0-1", "1.1.0-1": "1.0.0-1"}[version]
		s.release(t, version)
		push()
		if _, err := readRemote("fetch", "-q", s.f.GitURL, "+lieutenant/runs:refs/remotes/fleet/runs"); err != nil {
			t.Fatal(err)
		}
		before := testenv.RunIDs(s.repo, "fleet/runs", "production")
		out := killRun(t, append(append([]string{"--repo", s.f.GitURL}, remote...), "sync", "--env", "production", "--yes"), p, "")
		if _, err := readRemote("fetch", "-q", s.f.GitURL, "+lieutenant/runs:refs/remotes/fleet/runs"); err != nil {
			t.Fatal(err)
		}
		id := newRun(before, testenv.RunIDs(s.repo, "fleet/runs", "production"))
		stdout, stderr, code := lieutenant(t, s.f.GitURL, append(remote, "resume", "--yes", id)...)
		if code != exitOK {
			t.Fatalf("%s: resume %s: exit %d\nkilled run:\n%s\nresume:\n%s%s", p.name, id, code, out, stderr, stdout)
		}
		var want []string
		for i := 1; i <= 4; i++ {
			want = append(want, fmt.Sprintf("web-%d=%s.x86_64", i, version))
		}
		if got := s.installed(t); got != strings.Join(want, " ") {
			t.Errorf("%s: rpm -q: %s, want %s", p.name, got, strings.Join(want, " "))
		}
		if got, want := s.statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
			t.Errorf("%s: HAProxy: %s, want %s", p.name, got, want)
		}
	}
	res = load.Stop()
	t.Logf("load over the kills and resumes: %s", res)
	checkFleetLoad(t, res)
}

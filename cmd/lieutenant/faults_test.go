package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/testenv/fleet"
)

// The fault matrix: faults injected into a rollout on the docker-compose
// fleet under load (250 requests/s through HAProxy, retries 0), each with
// its specified outcome. Each case is a row of README.md's "What happens
// when..." table, under the same name and with the same exit code
// (TestReadmeFaultTable keeps the two in step).

// faultCase is one fault and what must follow from it.
type faultCase struct {
	// name is the README row's first column, word for word.
	name string
	// exit is the exit code of the run the fault hits.
	exit int
	// playbook, when set, changes the fleet's playbook for the case.
	playbook func(string) string
	// before injects a fault before the run starts.
	before func(t *testing.T, s *faultScene)
	// during waits for its moment in the live run and injects the fault;
	// it runs alongside the test, so it reports with t.Error, not t.Fatal.
	during func(t *testing.T, s *faultScene, r *liveRun)
	// check checks what the run left (the balancer, the record) and undoes
	// the fault; it returns the command that finishes the job ("" when the
	// run finished it itself).
	check func(t *testing.T, s *faultScene, r *faultRun) []string
	// lossy: requests may fail until during calls s.lossless, the fault
	// having cut off a server in service, which HAProxy sends requests to
	// until its checks notice; lieutenant can do nothing about those.
	lossy bool
}

const allUp = "web1=UP web2=UP web3=UP web4=UP"

var faultCases = []faultCase{
	{
		name:   "A host is killed mid-install",
		exit:   exitFailed,
		during: midInstall("web-2", (*fleet.Fleet).Kill),
		check:  hostKeptOut("web-2", batch1Failed, "packages.install", (*fleet.Fleet).Start),
	},
	{
		name:   "sshd stops on a host mid-step",
		exit:   exitFailed,
		during: midInstall("web-2", (*fleet.Fleet).StopSSHD),
		check:  hostKeptOut("web-2", batch1Failed, "packages.install", (*fleet.Fleet).StartSSHD),
	},
	{
		name:  "A host is cut off the network before its batch",
		exit:  exitFailed,
		lossy: true,
		during: func(t *testing.T, s *faultScene, r *liveRun) {
			r.waitLine(t, `gate after batch 1: gate ok`, 1)
			if err := s.f.Disconnect(t.Context(), "web-3"); err != nil {
				t.Error(err)
			}
			// HAProxy sends requests to web3 until its checks see it down:
			// those fail whatever lieutenant does. From then on, none may.
			waitUntil(t, 10*time.Second, "HAProxy to take web3 out", func() bool { return !strings.Contains(s.statuses(t), "web3=UP") })
			s.lossless(t)
		},
		check: hostKeptOut("web-3", batch2Failed, "packages.install", (*fleet.Fleet).Connect),
	},
	{
		name:   "A host is cut off the network during its batch",
		exit:   exitFailed,
		during: midInstall("web-3", (*fleet.Fleet).Disconnect),
		check:  hostKeptOut("web-3", batch2Failed, "packages.install", (*fleet.Fleet).Connect),
	},
	{
		name: "HAProxy restarts mid-drain",
		exit: exitOK,
		// The hosts wait after their drain until the test has restarted
		// HAProxy, so that the restart falls between drain and install.
		playbook: holdAfter("balancer.drain"),
		during: func(t *testing.T, s *faultScene, r *liveRun) {
			r.waitLine(t, `balancer\.drain\s+ok`, 2)
			if err := s.f.RestartLB(t.Context()); err != nil {
				t.Error(err)
				return
			}
			// The new HAProxy has forgotten the drains: web1 and web2 are
			// in service again, running the old release, until lieutenant
			// sees it before the install.
			s.waitBalancer(t, allUp)
			s.letGo(t)
		},
		check: func(t *testing.T, s *faultScene, r *faultRun) []string {
			r.hosts(t, "web-1=succeeded web-2=succeeded web-3=succeeded web-4=succeeded")
			for _, h := range []string{"web-1", "web-2"} {
				if out := r.stepOutput(h, "balancer.drain"); !strings.Contains(out, "drained again before packages.install") {
					t.Errorf("%s's record does not say it was drained again after the restart: %q", h, out)
				}
			}
			return nil
		},
	},
	{
		name: "HAProxy's runtime API closes mid-run",
		exit: exitFailed,
		// The hosts wait after their install until the API is closed.
		playbook: holdAfter("packages.install"),
		during: func(t *testing.T, s *faultScene, r *liveRun) {
			r.waitLine(t, `packages\.install\s+ok`, 2)
			if err := s.f.SetAPIOpen(t.Context(), false); err != nil {
				t.Error(err)
			}
			s.letGo(t)
		},
		check: func(t *testing.T, s *faultScene, r *faultRun) []string {
			s.waitBalancer(t, "web1=MAINT web2=MAINT web3=UP web4=UP")
			r.hosts(t, "web-1=failed web-2=failed web-3=untouched web-4=untouched")
			r.hostError(t, "web-1", "before service.restart: confirm web1 is out of service")
			if err := s.f.SetAPIOpen(t.Context(), true); err != nil {
				t.Fatal(err)
			}
			return s.runArgs()
		},
	},
	{
		name: "The Git remote is unreachable mid-run, then back",
		exit: exitOK,
		during: func(t *testing.T, s *faultScene, r *liveRun) {
			r.waitLine(t, `balancer\.drain\s+ok`, 1)
			if err := s.f.Disconnect(t.Context(), "git"); err != nil {
				t.Error(err)
			}
			// Batch 1 finishes; batch 2 waits for its intent to reach Git.
			r.waitLine(t, `gate after batch 1: gate ok`, 1)
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if st := s.statuses(t); r.seen(`web-[34] +balancer\.drain`) > 0 || regexp.MustCompile(`web[34]=(MAINT|DRAIN)`).MatchString(st) {
					t.Errorf("batch 2 started while the remote was unreachable (HAProxy: %s)", st)
					break
				}
			}
			if err := s.f.Connect(t.Context(), "git"); err != nil {
				t.Error(err)
				return
			}
		},
		check: func(t *testing.T, s *faultScene, r *faultRun) []string {
			r.hosts(t, "web-1=succeeded web-2=succeeded web-3=succeeded web-4=succeeded")
			return nil
		},
	},
	{
		name: "The Git remote rejects pushes mid-run",
		exit: exitFailed,
		during: func(t *testing.T, s *faultScene, r *liveRun) {
			r.waitLine(t, `balancer\.drain\s+ok`, 1)
			if err := s.f.RejectPushes(t.Context(), "deploy.git is frozen for maintenance"); err != nil {
				t.Error(err)
				return
			}
		},
		check: func(t *testing.T, s *faultScene, r *faultRun) []string {
			// Batch 1 finished and is in service; batch 2 never started,
			// as its intent could not be recorded.
			s.waitBalancer(t, allUp)
			if !strings.Contains(r.stderr, "deploy.git is frozen for maintenance") {
				t.Errorf("the run does not show what the remote said:\n%s", r.stderr)
			}
			if err := s.f.RejectPushes(t.Context(), ""); err != nil {
				t.Fatal(err)
			}
			// The end was not recorded either: the remote still has the
			// run's lock, and a new run says to resume it.
			_, stderr, code := s.lieutenant(t, s.runArgs()...)
			if code != exitLocked || !strings.Contains(stderr, "lieutenant resume "+r.id) {
				t.Errorf("run after the rejected pushes: exit %d, want %d naming `lieutenant resume %s`:\n%s", code, exitLocked, r.id, stderr)
			}
			return []string{"resume", "--yes", r.id}
		},
	},
	{
		name: "A host's disk is full during the install",
		exit: exitFailed,
		before: func(t *testing.T, s *faultScene) {
			if err := s.f.FillDisk(t.Context(), "web-2"); err != nil {
				t.Fatal(err)
			}
		},
		check: hostKeptOut("web-2", batch1Failed, "space", (*fleet.Fleet).FreeDisk),
	},
}

const (
	batch1Failed = "web-1=succeeded web-2=failed web-3=untouched web-4=untouched"
	batch2Failed = "web-1=succeeded web-2=succeeded web-3=failed web-4=succeeded"
)

// midInstall injects fault into host once its install runs (dnf does).
func midInstall(host string, fault func(*fleet.Fleet, context.Context, string) error) func(*testing.T, *faultScene, *liveRun) {
	return func(t *testing.T, s *faultScene, r *liveRun) {
		s.waitProcess(t, r, host, "dnf")
		if err := fault(s.f, t.Context(), host); err != nil {
			t.Error(err)
		}
	}
}

// hostKeptOut checks what a fault that made host fail left: the host out
// of the balancer, the others in service, the record's hosts as hosts
// and host's error saying why; then heal undoes the fault, and the next
// run finishes the job.
func hostKeptOut(host, hosts, why string, heal func(*fleet.Fleet, context.Context, string) error) func(*testing.T, *faultScene, *faultRun) []string {
	return func(t *testing.T, s *faultScene, r *faultRun) []string {
		server := strings.ReplaceAll(host, "-", "")
		s.waitBalancer(t, strings.Replace(allUp, server+"=UP", server+"=MAINT", 1))
		r.hosts(t, hosts)
		r.hostError(t, host, why)
		if err := heal(s.f, t.Context(), host); err != nil {
			t.Fatal(err)
		}
		return s.runArgs()
	}
}

// holdAfter makes the playbook's hosts wait after step until the test
// lets them go (letGo), for a fault that must fall between two steps.
func holdAfter(step string) func(string) string {
	return func(pb string) string {
		i := strings.Index(pb, "  - "+step)
		i += strings.Index(pb[i:], "\n") + 1
		return pb[:i] + "  - command.check: {run: \"test -e /tmp/fleet-go\", retries: 1200, interval: 50ms}\n" + pb[i:]
	}
}

// letGo lets the hosts held by holdAfter go on.
func (s *faultScene) letGo(t *testing.T) {
	for _, h := range s.f.Hosts {
		if _, err := s.f.Exec(t.Context(), h.Name, "touch", "/tmp/fleet-go"); err != nil {
			t.Error(err)
		}
	}
}

// TestFleetFaults runs the fault matrix on one fleet, a case after the
// other: each releases the other version, runs it under load with the
// fault, checks what the run left, undoes the fault and finishes the job
// (the next run, or resume); then every host is at the release and in
// service, no request failed (but while a cut-off server was still in
// HAProxy's rotation), and the history branch on the Git server is whole:
// `git fsck` clean, every commit the test saw on it still reachable.
func TestFleetFaults(t *testing.T) {
	s := newFaultScene(t)
	for _, c := range faultCases {
		if !t.Run(c.name, func(t *testing.T) { s.run(t, c) }) {
			// A failed case may leave its fault in place; the next ones
			// would fail for it.
			t.FailNow()
		}
	}
}

// faultScene is the fleet with its deploy repository on the fleet's Git
// server, as in production: lieutenant works from the remote's URL.
type faultScene struct {
	*fleetScene
	version string
	tips    []string // every tip of the history branch the test saw
	ids     []string // every run recorded

	mu      sync.Mutex
	load    *testenv.Load        // the case's load, in its current window
	results []testenv.LoadResult // the windows before
	lossy   bool                 // the first window may have failures
}

func newFaultScene(t *testing.T) *faultScene {
	s := &faultScene{fleetScene: newFleetScene(t, "1.0.0-1"), version: "1.0.0-1"}
	s.push(t)
	return s
}

func (s *faultScene) push(t *testing.T) {
	t.Helper()
	cmd := testenv.GitCommand(s.repo, "push", "-q", s.f.GitURL, "HEAD:refs/heads/main")
	cmd.Env = append(cmd.Env, "GIT_SSH_COMMAND="+s.f.GitSSHCommand())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git push to the fleet's Git server: %v\n%s", err, out)
	}
}

// args is how lieutenant reaches the deploy repository.
func (s *faultScene) args() []string {
	return []string{"--repo", s.f.GitURL, "--git-known-hosts", s.f.KnownHosts, "--git-identity", s.f.Identity}
}

func (s *faultScene) runArgs() []string { return []string{"run", "--env", "production", "--yes"} }

// lieutenant runs a command in this process, against the remote.
func (s *faultScene) lieutenant(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return lieutenant(t, s.f.GitURL, append(s.args()[2:], args...)...)
}

// history fetches the remote's history branch and notes its tip and runs.
func (s *faultScene) history(t *testing.T) {
	t.Helper()
	cmd := testenv.GitCommand(s.repo, "fetch", "-q", s.f.GitURL, "+lieutenant/runs:refs/remotes/fleet/runs")
	cmd.Env = append(cmd.Env, "GIT_SSH_COMMAND="+s.f.GitSSHCommand())
	if out, err := cmd.CombinedOutput(); err != nil {
		if strings.Contains(string(out), "couldn't find remote ref") && len(s.tips) == 0 {
			return // no run recorded yet
		}
		t.Fatalf("fetch the history from the fleet's Git server: %v\n%s", err, out)
	}
	s.tips = append(s.tips, testenv.Git(t, s.repo, "rev-parse", "fleet/runs"))
	for _, id := range testenv.RunIDs(s.repo, "fleet/runs", "production") {
		if !slices.Contains(s.ids, id) {
			s.ids = append(s.ids, id)
		}
	}
}

// checkHistory checks, as the remote's owner would, that nothing was lost:
// `git fsck` clean on the Git server, no unreachable commit there, every
// tip seen before an ancestor of today's, every run seen still recorded.
func (s *faultScene) checkHistory(t *testing.T) {
	t.Helper()
	if out, err := s.f.GitFsck(t.Context()); err != nil || strings.Contains(out, "unreachable commit") {
		t.Errorf("git fsck on the Git server: %v\n%s", err, out)
	}
	before := slices.Clone(s.ids)
	s.history(t)
	tip := s.tips[len(s.tips)-1]
	for _, old := range s.tips {
		if err := testenv.GitCommand(s.repo, "merge-base", "--is-ancestor", old, tip).Run(); err != nil {
			t.Errorf("history commit %s is no longer reachable from lieutenant/runs (%s)", old, tip)
		}
	}
	now := testenv.RunIDs(s.repo, "fleet/runs", "production")
	for _, id := range before {
		if !slices.Contains(now, id) {
			t.Errorf("run %s is no longer on the history branch", id)
		}
	}
}

// run plays one case.
func (s *faultScene) run(t *testing.T, c faultCase) {
	start := time.Now()
	s.history(t)
	if got := s.statuses(t); got != allUp {
		t.Fatalf("before the case, HAProxy: %s, want %s", got, allUp)
	}
	for _, h := range s.f.Hosts {
		if _, err := s.f.Exec(t.Context(), h.Name, "rm", "-f", "/tmp/fleet-go"); err != nil {
			t.Fatal(err)
		}
	}
	s.version = map[string]string{"1.0.0-1": "1.1.0-1", "1.1.0-1": "1.0.0-1"}[s.version]
	pb := s.f.Playbook()
	if c.playbook != nil {
		pb = c.playbook(pb)
	}
	testenv.GitCommit(t, s.repo, map[string]string{"releases/production.yaml": manifest(s.version), "playbooks/web.yaml": pb}, "release "+s.version)
	s.push(t)
	if c.before != nil {
		c.before(t, s)
	}
	s.load, s.results, s.lossy = nil, nil, c.lossy
	s.lossless(t)
	before := testenv.RunIDs(s.repo, "fleet/runs", "production")
	live := s.start(t, append(s.args(), s.runArgs()...)...)
	injected := make(chan struct{})
	go func() {
		defer close(injected)
		if c.during != nil {
			c.during(t, s, live)
		}
	}()
	r := live.wait(t)
	<-injected
	t.Logf("%s: lieutenant run (exit %d, %s):\n%s%s", c.name, r.code, time.Since(start).Round(time.Millisecond), r.stderr, r.stdout)
	if r.code != c.exit {
		t.Fatalf("exit %d, want %d", r.code, c.exit)
	}
	s.history(t)
	r.id = newRun(before, testenv.RunIDs(s.repo, "fleet/runs", "production"))
	if r.id == "" {
		t.Fatal("the run recorded nothing on the Git server")
	}
	r.show(t, s)
	finish := c.check(t, s, r)
	if finish != nil {
		stdout, stderr, code := s.lieutenant(t, finish...)
		t.Logf("%s: lieutenant %s (exit %d):\n%s%s", c.name, strings.Join(finish, " "), code, stderr, stdout)
		if code != exitOK {
			t.Fatalf("lieutenant %s: exit %d, want 0", strings.Join(finish, " "), code)
		}
	}
	s.checkLoad(t)
	var want []string
	for _, h := range s.f.Hosts {
		want = append(want, h.Name+"="+s.version+".x86_64")
	}
	if got := s.installed(t); got != strings.Join(want, " ") {
		t.Errorf("rpm -q: %s, want %s", got, strings.Join(want, " "))
	}
	s.waitBalancer(t, allUp)
	s.checkHistory(t) // fetches the history, read below
	if files := testenv.Git(t, s.repo, "ls-tree", "-r", "--name-only", "fleet/runs"); strings.Contains(files, "locks/") {
		t.Errorf("a lock was left:\n%s", files)
	}
	t.Logf("%s: done in %s", c.name, time.Since(start).Round(time.Millisecond))
}

// lossless starts a new window of the case's load and ends the one
// before; failures in the new one count.
func (s *faultScene) lossless(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.load
	s.load = testenv.StartLoad(t, s.f.FrontendURL+"/", fleetRate)
	if prev != nil {
		s.results = append(s.results, prev.Stop())
	}
}

// checkLoad stops the case's load: no request may have failed, but in the
// first window of a lossy case.
func (s *faultScene) checkLoad(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, res := range append(s.results, s.load.Stop()) {
		switch {
		case i == 0 && s.lossy:
			t.Logf("load while HAProxy still sent requests to the cut-off server (these may fail): %s", res)
			continue
		case res.Failed != 0:
			t.Errorf("requests failed through HAProxy: %s", res)
		default:
			t.Logf("load: %s", res)
		}
		if res.Rate() < 200 {
			t.Errorf("load below 200 requests/s, too thin to prove a drain: %s", res)
		}
	}
}

// waitBalancer waits until HAProxy's view is want: a check that failed
// once under the load shows as "UP 1/2" for a moment.
func (s *faultScene) waitBalancer(t *testing.T, want string) {
	var got string
	if !waitUntil(t, 10*time.Second, "HAProxy: "+want, func() bool { got = s.statuses(t); return got == want }) {
		t.Errorf("HAProxy: %s", got)
	}
}

// waitProcess waits until a process named name runs on host, while the
// run r goes on.
func (s *faultScene) waitProcess(t *testing.T, r *liveRun, host, name string) {
	waitUntil(t, time.Minute, host+" to run "+name+" during the run", func() bool {
		_, err := s.f.Exec(t.Context(), host, "pgrep", "-x", name)
		return err == nil || r.ended()
	})
}

// waitUntil polls cond until it holds, at most timeout; it reports a
// timeout with t.Error, so that the goroutine injecting a fault may use it.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("waited %s for %s", timeout, what)
			return false
		}
	}
	return true
}

// liveRun is lieutenant running in a process of its own, its progress
// read line by line as it comes.
type liveRun struct {
	cmd    *exec.Cmd
	stdout strings.Builder
	mu     sync.Mutex
	lines  []string
	done   chan struct{} // stderr closed
	exited chan struct{}
}

func (s *faultScene) start(t *testing.T, args ...string) *liveRun {
	r := &liveRun{cmd: exec.Command(os.Args[0], args...), done: make(chan struct{}), exited: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), "LIEUTENANT_TEST_AS_CLI=1")
	r.cmd.Stdout = &r.stdout
	stderr, err := r.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !r.ended() {
			r.cmd.Process.Kill()
		}
	})
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			r.mu.Lock()
			r.lines = append(r.lines, sc.Text())
			r.mu.Unlock()
		}
	}()
	return r
}

// seen counts the lines so far that match re.
func (r *liveRun) seen(re string) int {
	rx := regexp.MustCompile(re)
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if rx.MatchString(l) {
			n++
		}
	}
	return n
}

// waitLine waits until the run printed a line matching re n times.
func (r *liveRun) waitLine(t *testing.T, re string, n int) {
	waitUntil(t, 2*time.Minute, fmt.Sprintf("the run to print %q %d times", re, n), func() bool {
		return r.seen(re) >= n || r.ended()
	})
}

func (r *liveRun) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// faultRun is what a run under a fault left.
type faultRun struct {
	code           int
	stdout, stderr string
	id             string
	rec            record.Run
}

func (r *liveRun) wait(t *testing.T) *faultRun {
	select {
	case <-r.done:
	case <-time.After(5 * time.Minute):
		r.cmd.Process.Kill()
		<-r.done
		t.Errorf("the run did not end within 5 minutes")
	}
	err := r.cmd.Wait()
	res := &faultRun{code: r.cmd.ProcessState.ExitCode(), stdout: r.stdout.String()}
	if err != nil && res.code < 0 {
		t.Errorf("lieutenant run: %v", err)
	}
	r.mu.Lock()
	res.stderr = strings.Join(r.lines, "\n") + "\n"
	r.mu.Unlock()
	return res
}

// show reads the run's record as an operator would: lieutenant show.
func (r *faultRun) show(t *testing.T, s *faultScene) {
	stdout, stderr, code := s.lieutenant(t, "show", "--output", "json", r.id)
	if code != exitOK {
		t.Fatalf("lieutenant show %s: exit %d\n%s", r.id, code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &r.rec); err != nil {
		t.Fatalf("lieutenant show %s: %v\n%s", r.id, err, stdout)
	}
}

// hosts checks each host's status in the record.
func (r *faultRun) hosts(t *testing.T, want string) {
	t.Helper()
	var got []string
	for _, h := range r.rec.Hosts {
		got = append(got, fmt.Sprintf("%s=%s", h.Name, h.Status))
	}
	if strings.Join(got, " ") != want {
		t.Errorf("record of run %s (%s): hosts %s, want %s", r.id, r.rec.Outcome, strings.Join(got, " "), want)
	}
}

// hostError checks that the record says why host failed.
func (r *faultRun) hostError(t *testing.T, host, want string) {
	t.Helper()
	for _, h := range r.rec.Hosts {
		if h.Name == host && !strings.Contains(h.Error, want) {
			t.Errorf("record of run %s: %s's error %q does not say %q", r.id, host, h.Error, want)
		}
	}
}

// stepOutput is the output of host's steps of kind in the record.
func (r *faultRun) stepOutput(host, kind string) string {
	var out []string
	for _, h := range r.rec.Hosts {
		for _, st := range h.Steps {
			if h.Name == host && st.Step == kind {
				out = append(out, string(st.Output+st.Error))
			}
		}
	}
	return strings.Join(out, " | ")
}

// TestReadmeFaultTable keeps README.md's "What happens when..." table and
// the fault matrix in step: a row per case, in the same order, under the
// same name, with the exit code the case checks.
func TestReadmeFaultTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### What happens when...\n")
	if !ok {
		t.Fatal(`README.md has no "### What happens when..." section`)
	}
	section, _, _ = strings.Cut(section, "\n#")
	var rows []string
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[1]) == "fault" {
			continue
		}
		rows = append(rows, fmt.Sprintf("%s (exit %s)", strings.TrimSpace(cells[1]), strings.Trim(strings.TrimSpace(cells[2]), "`")))
	}
	var cases []string
	for _, c := range faultCases {
		cases = append(cases, fmt.Sprintf("%s (exit %d)", c.name, c.exit))
	}
	if strings.Join(rows, "\n") != strings.Join(cases, "\n") {
		t.Errorf("README's fault table and the fault matrix differ:\n--- README\n%s\n--- faultCases\n%s", strings.Join(rows, "\n"), strings.Join(cases, "\n"))
	}
}

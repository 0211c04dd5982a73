package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// killPoint is a moment to kill `lieutenant run` with SIGKILL (or signal):
// when its progress shows line for the nth time (and after more), or while
// the remote holds a push whose commit message matches hold (its
// pre-receive hook waits, then takes the push, or with reject refuses it).
type killPoint struct {
	name   string
	line   string
	nth    int
	after  time.Duration
	hold   string
	reject bool
	// slow makes each host take 2.5s more (a sleep step), so that its
	// progress is written while it runs.
	slow bool
	// signal is sent instead of SIGKILL; with twice, again 200ms later,
	// as a closed terminal's shell and kernel each send SIGHUP.
	signal syscall.Signal
	twice  bool
}

var killPoints = []killPoint{
	{name: "during the lock commit, refused", hold: "locked by run", reject: true},
	{name: "during the lock commit, taken", hold: "locked by run"},
	{name: "after the lock, before any host", line: `Rolling production`},
	{name: "batch 1 declared", line: `batch 1/2:`},
	{name: "first drain done", line: `balancer\.drain\s+ok`},
	{name: "mid-install", line: `balancer\.drain\s+ok`, after: 40 * time.Millisecond},
	{name: "both drains done", line: `balancer\.drain\s+ok`, nth: 2},
	{name: "first install done", line: `packages\.install\s+ok`},
	{name: "first restart done", line: `service\.restart\s+ok`},
	{name: "checked, before enable", line: `http\.check\s+ok`},
	{name: "mid-enable", line: `http\.check\s+ok`, nth: 2, after: 2 * time.Millisecond},
	{name: "first enable done", line: `balancer\.enable\s+ok`},
	{name: "batch 1 done", line: `done in`, nth: 2},
	{name: "at the gate's check", line: `gate after batch 1: check`},
	{name: "mid-soak", line: `soaking for`, after: 100 * time.Millisecond},
	{name: "batch 2 declared", line: `batch 2/2:`},
	{name: "mid batch 2's intent", line: `gate after batch 1: gate ok`, after: 5 * time.Millisecond},
	{name: "after batch 2's drains", line: `balancer\.drain\s+ok`, nth: 4},
	{name: "batch 2 mid-install", line: `balancer\.drain\s+ok`, nth: 3, after: 40 * time.Millisecond},
	{name: "batch 2 first enable", line: `balancer\.enable\s+ok`, nth: 3},
	{name: "all hosts done, before the end", line: `done in`, nth: 4},
	{name: "mid-progress push, taken", hold: "progress", slow: true},
	{name: "mid-progress push, refused", hold: "progress", reject: true, slow: true},
	{name: "during batch 2's intent, refused", hold: "batch 2/2 in flight", reject: true},
	{name: "during the last commit, taken", hold: "succeeded"},
	{name: "during the last commit, refused", hold: "succeeded", reject: true},
}

// holdHook is the remote's pre-receive hook: a push whose commit message
// matches the file hold-pattern is held 1.5s, marked in the file held,
// then taken or (hold-exit 1) refused; the file done says the hook ended.
const holdHook = `#!/bin/sh
pattern=$(cat hold-pattern 2>/dev/null)
status=0
while read old new ref; do
	if [ -n "$pattern" ] && git log -1 --format=%B "$new" | grep -q -- "$pattern"; then
		rm -f hold-pattern
		: > held
		sleep 1.5
		status=$(cat hold-exit)
		: > done
	fi
done
exit $status
`

// TestKillAtEveryPointAndResume kills `lieutenant run` with SIGKILL at
// each of the moments above (in the middle of a batch, of a step, of a
// push to the remote, at the gate, during the last commit), with 200
// requests/s through HAProxy the whole time, and finishes each run from
// Git alone: `lieutenant resume`, from the same clone or from the remote's
// URL on another machine (a run killed before its first commit landed is
// run again). Each ends with every host at the release and in service,
// the run's record complete, no lock left, `git fsck` clean on the remote,
// and no request failed.
func TestKillAtEveryPointAndResume(t *testing.T) {
	s := newRemoteScene(t, `
hosts: "web-*"
steps:
  - balancer.drain: {timeout: 10s}
  - packages.install
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:PORT/health", retries: 20, interval: 20ms}
  - balancer.enable: {timeout: 10s}
gate:
  checks:
    - http.check: {url: "`+"FRONTEND"+`/version", contains: "1."}
  soak: 300ms
`)
	playbook := strings.ReplaceAll(testenv.Git(t, s.work, "show", "origin/main:playbooks/web.yaml"), "FRONTEND", s.ha.FrontendURL)
	slow := strings.Replace(playbook, "  - packages.install\n", "  - packages.install\n  - sleep: 2500ms\n", 1)
	if err := os.WriteFile(filepath.Join(s.bare, "hooks", "pre-receive"), []byte(holdHook), 0o755); err != nil {
		t.Fatal(err)
	}
	// The clone lieutenant runs in, as a CI job or an operator's checkout.
	clone := filepath.Join(t.TempDir(), "ops")
	testenv.Git(t, "", "clone", "-q", s.bare, clone)

	load := testenv.StartLoad(t, s.ha.FrontendURL+"/", 200)
	versions := []string{web110, web100}
	for i, p := range killPoints {
		want := versions[i%2]
		release := fmt.Sprintf("kill-%02d", i)
		pb := playbook
		if p.slow {
			pb = slow
		}
		s.merge(t, map[string]string{"releases/production.yaml": "release: " + release + "\npackages: [" + want + "]\n", "playbooks/web.yaml": pb}, release)
		before := testenv.RunIDs(s.bare, "lieutenant/runs", "production")
		out := killRun(t, []string{"--repo", clone, "run", "--env", "production", "--yes"}, p, s.bare)
		id := newRun(before, testenv.RunIDs(s.bare, "lieutenant/runs", "production"))
		// Finish it from Git alone: from the same clone every other time,
		// otherwise from the remote's URL, as another machine would.
		repo := clone
		if i%2 == 1 {
			repo = s.url
		}
		var stdout, stderr string
		var code int
		switch rec, _ := testenv.RunRecord(s.bare, "lieutenant/runs", "production", id); {
		case id == "":
			// Killed before its first commit reached the remote: nothing
			// happened, so run again.
			stdout, stderr, code = lieutenant(t, repo, "run", "--env", "production", "--yes")
		case strings.Contains(rec, "outcome: succeeded"):
			// The last commit landed as the process died.
		default:
			stdout, stderr, code = lieutenant(t, repo, "resume", "--yes", id)
		}
		if code != exitOK {
			t.Fatalf("%s: finishing run %q: exit %d\nkilled run:\n%s\nfinish:\n%s%s", p.name, id, code, out, stderr, stdout)
		}
		checkFinished(t, s, p.name, release, want)
	}
	res := load.Stop()
	t.Logf("load over %d kills and resumes: %s", len(killPoints), res)
	if res.Failed != 0 || res.Rate() < 150 {
		t.Errorf("want zero failed requests at >= 150/s: %s", res)
	}
}

// killRun starts lieutenant with args and kills it at p; remote is the
// bare repository whose hook holds pushes (for points with hold). It
// returns what the run printed.
func killRun(t *testing.T, args []string, p killPoint, remote string) string {
	t.Helper()
	out, _ := signalRun(t, args, p, remote)
	return out
}

// signalRun is killRun that also returns, once the process ended, its
// exit code (-1 when the signal ended it).
func signalRun(t *testing.T, args []string, p killPoint, remote string) (string, int) {
	t.Helper()
	for _, f := range []string{"held", "done", "hold-pattern"} {
		os.Remove(filepath.Join(remote, f))
	}
	if p.hold != "" {
		exit := "0"
		if p.reject {
			exit = "1"
		}
		if err := os.WriteFile(filepath.Join(remote, "hold-exit"), []byte(exit), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(remote, "hold-pattern"), []byte(p.hold), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "LIEUTENANT_TEST_AS_CLI=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := make(chan struct{})
	var once sync.Once
	fire := func() { once.Do(func() { close(kill) }) }
	var mu sync.Mutex
	var printed strings.Builder
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		re := regexp.MustCompile(p.line)
		seen := 0
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			printed.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if p.line != "" && re.MatchString(sc.Text()) {
				if seen++; seen == max(p.nth, 1) {
					time.AfterFunc(p.after, fire)
				}
			}
		}
	}()
	if p.hold != "" {
		go func() {
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if _, err := os.Stat(filepath.Join(remote, "held")); err == nil {
					fire()
					return
				}
			}
		}()
	}
	exited := make(chan error, 1)
	go func() { <-lines; exited <- cmd.Wait() }()
	select {
	case <-kill:
		sig := p.signal
		if sig == 0 {
			sig = syscall.SIGKILL
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		if p.twice {
			time.AfterFunc(200*time.Millisecond, func() { _ = cmd.Process.Signal(sig) })
		}
		select {
		case <-exited:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			t.Fatalf("%s: the run did not end after %v", p.name, sig)
		}
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s: the run ended (%v) before the kill point:\n%s%s", p.name, err, printed.String(), out.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%s: the kill point never came", p.name)
	}
	if p.hold != "" {
		// The remote finishes the held push on its own (the killed
		// process's receive-pack moves the branch once its hook said yes).
		testenv.WaitFor(t, 10*time.Second, "the held push to end", func() bool {
			_, err := os.Stat(filepath.Join(remote, "done"))
			if err != nil || p.reject {
				return err == nil
			}
			tip, _ := testenv.GitCommand(remote, "log", "-1", "--format=%B", "lieutenant/runs").Output()
			return strings.Contains(string(tip), p.hold)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	return printed.String(), cmd.ProcessState.ExitCode()
}

// newRun is the one run id in after that is not in before, "" when none.
func newRun(before, after []string) string {
	for _, id := range after {
		if !slices.Contains(before, id) {
			return id
		}
	}
	return ""
}

// checkFinished checks, as an operator would, that release is out there:
// every host has want and is in service, the last run's record says it
// succeeded host by host, no lock is held, the remote is sound.
func checkFinished(t *testing.T, s *remoteScene, point, release, want string) {
	t.Helper()
	v := strings.TrimSuffix(strings.TrimPrefix(want, "hello-web-"), ".x86_64")
	if got, w := s.versions(t), fmt.Sprintf("web-1=%s web-2=%s web-3=%s web-4=%s", v, v, v, v); got != w {
		t.Errorf("%s: versions %s, want %s", point, got, w)
	}
	// A check that failed once under the load shows as "UP 1/2" until the
	// next one passes: wait for that, not for a server to come back.
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = s.ha.Statuses(t); got == "web1=UP web2=UP web3=UP web4=UP" {
			break
		}
	}
	if got != "web1=UP web2=UP web3=UP web4=UP" {
		t.Errorf("%s: balancer %s, want every server UP", point, got)
	}
	var last string
	for _, id := range testenv.RunIDs(s.bare, "lieutenant/runs", "production") {
		run := testenv.Git(t, s.bare, "show", "lieutenant/runs:runs/production/"+id+".yaml")
		if strings.Contains(run, "release: "+release+"\n") && strings.Contains(run, "outcome: succeeded") {
			last = run
		}
	}
	if last == "" || strings.Count(last, "status: succeeded") != 4 {
		t.Errorf("%s: no record of %s says it succeeded on the 4 hosts:\n%s", point, release, last)
	}
	if files := testenv.Git(t, s.bare, "ls-tree", "-r", "--name-only", "lieutenant/runs"); strings.Contains(files, "locks/") {
		t.Errorf("%s: a lock was left:\n%s", point, files)
	}
	testenv.Git(t, s.bare, "fsck", "--strict", "--no-progress")
}

package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// TestMain lets a test start lieutenant as a process of its own (to kill
// it): the test binary re-executed with LIEUTENANT_TEST_AS_CLI set is the
// lieutenant command.
func TestMain(m *testing.M) {
	if os.Getenv("LIEUTENANT_TEST_AS_CLI") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// remoteScene is sshScene with the deploy repository behind a Git remote:
// lieutenant works from the remote's URL, as CI does, and the test pushes
// manifest changes to it the way a merge does.
type remoteScene struct {
	*sshScene
	bare string // the remote, a bare repository
	url  string // how lieutenant reaches it
	work string // a clone the test commits and pushes from
	args []string
}

// newRemoteScene starts the scene; playbook, when given, replaces the
// standard one, with PORT standing for hello-web's port.
func newRemoteScene(t *testing.T, playbook string) *remoteScene {
	s := &remoteScene{sshScene: newSSHScene(t)}
	if playbook != "" {
		playbook = strings.ReplaceAll(playbook, "PORT", fmt.Sprint(s.port))
		testenv.GitCommit(t, s.repo, map[string]string{"playbooks/web.yaml": playbook}, "playbook")
	}
	s.bare = filepath.Join(t.TempDir(), "deploy.git")
	testenv.Git(t, "", "clone", "-q", "--bare", s.repo, s.bare)
	s.url = "file://" + s.bare
	s.work = filepath.Join(t.TempDir(), "work")
	testenv.Git(t, "", "clone", "-q", s.bare, s.work)
	testenv.Git(t, s.work, "config", "user.name", "Release Manager")
	testenv.Git(t, s.work, "config", "user.email", "rm@example.com")
	return s
}

// lieutenant runs the command against the remote.
func (s *remoteScene) lieutenant(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return lieutenant(t, s.url, append(append([]string{}, s.args...), args...)...)
}

// process runs the command against the remote in a process of its own
// (the test binary as lieutenant, see TestMain): for commands that run at
// the same time as others, since urfave/cli keeps global state, and for
// processes the test kills.
func (s *remoteScene) process(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], append(append([]string{"--repo", s.url}, s.args...), args...)...)
	cmd.Env = append(os.Environ(), "LIEUTENANT_TEST_AS_CLI=1")
	return cmd
}

// runProcess runs s.process(args...) to its end.
func (s *remoteScene) runProcess(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := s.process(args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		// Not Fatal: callers run this in goroutines.
		t.Errorf("start lieutenant: %v", err)
		code = -1
	}
	return out.String(), errOut.String(), code
}

// merge commits files on the remote's main branch, as a merged pull
// request does.
func (s *remoteScene) merge(t *testing.T, files map[string]string, msg string) {
	t.Helper()
	testenv.Git(t, s.work, "pull", "-q", "--ff-only")
	testenv.GitCommit(t, s.work, files, msg)
	testenv.Git(t, s.work, "push", "-q", "origin", "HEAD")
}

func (s *remoteScene) historyTip(t *testing.T) string {
	return testenv.Git(t, s.bare, "rev-parse", "lieutenant/runs")
}

// record reads run id's record from the remote with the git CLI: the
// run's file and its hosts'.
func (s *remoteScene) record(t *testing.T, id string) string {
	t.Helper()
	rec, err := testenv.RunRecord(s.bare, "lieutenant/runs", "production", id)
	if err != nil {
		t.Fatalf("git show of run %s: %v", id, err)
	}
	return rec
}

var runIDRe = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ-[0-9a-f]{4}`)

// TestGitOpsOverSSHRemote is the CI story over a Git remote reached over
// real OpenSSH (host key checked): a merged manifest change reaches the
// fleet by sync alone, over one SSH connection to the remote for the whole
// run; a second sync does nothing; the outcome is in `git log` of the
// history branch, and a rollback is one command and one commit.
func TestGitOpsOverSSHRemote(t *testing.T) {
	s := newRemoteScene(t, "")
	sshd := testenv.StartSSHD(t)
	s.url = fmt.Sprintf("ssh://%s@%s%s", sshd.User, sshd.Addr, s.bare)
	s.args = []string{"--git-known-hosts", sshd.KnownHostsFile, "--git-identity", sshd.IdentityFile}

	load := testenv.StartLoad(t, s.ha.FrontendURL+"/", 200)
	stdout, stderr, code := s.lieutenant(t, "sync", "--env", "production")
	if code != exitOK {
		t.Fatalf("sync: exit %d\n%s%s", code, stdout, stderr)
	}
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("after sync: %s, want %s", got, want)
	}
	first := runIDRe.FindString(stdout)
	if first == "" {
		t.Fatalf("no run id in the output:\n%s", stdout)
	}
	if rec := s.record(t, first); !strings.Contains(rec, "kind: sync") || !strings.Contains(rec, "outcome: succeeded") {
		t.Errorf("record on the remote:\n%s", rec)
	}
	if n := strings.Count(sshd.Log(), "Accepted publickey"); n != 1 {
		t.Errorf("the sync opened %d SSH connections to the remote, want 1 for the fetch and every push", n)
	}
	log := testenv.Git(t, s.bare, "log", "--format=%B", "lieutenant/runs")
	for _, want := range []string{"production 2026.11.3: succeeded, 4/4 hosts done", "production: locked by run " + first, "production: unlocked by run " + first + " (succeeded)"} {
		if !strings.Contains(log, want) {
			t.Errorf("git log lieutenant/runs lacks %q:\n%s", want, log)
		}
	}
	if files := testenv.Git(t, s.bare, "ls-tree", "-r", "--name-only", "lieutenant/runs"); strings.Contains(files, "locks/") {
		t.Errorf("the lock was left on the remote:\n%s", files)
	}

	// The second sync finds nothing to do and writes nothing.
	tip := s.historyTip(t)
	stdout, stderr, code = s.lieutenant(t, "sync", "--env", "production")
	if code != exitOK || !strings.Contains(stdout, "in sync at 2026.11.3 (") {
		t.Errorf("second sync: exit %d\n%s%s", code, stdout, stderr)
	}
	if s.historyTip(t) != tip {
		t.Errorf("a sync with nothing to do wrote history")
	}

	// A merged manifest change reaches the fleet by sync alone.
	// (The fleet's 1.2.0 is broken, so the next release goes back to 1.0.0.)
	s.merge(t, map[string]string{"releases/production.yaml": "release: 2026.11.4\npackages: [" + web100 + "]\n"}, "release 2026.11.4")
	stdout, stderr, code = s.lieutenant(t, "sync", "--env", "production")
	if code != exitOK {
		t.Fatalf("sync of the merge: exit %d\n%s%s", code, stdout, stderr)
	}
	if got, want := s.versions(t), "web-1=1.0.0-1 web-2=1.0.0-1 web-3=1.0.0-1 web-4=1.0.0-1"; got != want {
		t.Errorf("after the merge's sync: %s, want %s", got, want)
	}

	// Rollback: one command, one commit on main, a run of kind rollback.
	mainBefore := testenv.Git(t, s.bare, "rev-parse", "main")
	stdout, stderr, code = s.lieutenant(t, "rollback", "--env", "production")
	if code != exitOK {
		t.Fatalf("rollback: exit %d\n%s%s", code, stdout, stderr)
	}
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("after rollback: %s, want %s", got, want)
	}
	if n := testenv.Git(t, s.bare, "rev-list", "--count", mainBefore+"..main"); n != "1" {
		t.Errorf("rollback made %s commits on main, want 1", n)
	}
	msg := testenv.Git(t, s.bare, "log", "-1", "--format=%B", "main")
	if !strings.Contains(msg, "Roll production back to 2026.11.3") || !strings.Contains(msg, "[skip ci]") {
		t.Errorf("rollback commit message:\n%s", msg)
	}
	if m := testenv.Git(t, s.bare, "show", "main:releases/production.yaml"); !strings.Contains(m, web110) {
		t.Errorf("manifest on main after rollback:\n%s", m)
	}
	rollbackID := runIDRe.FindString(stdout)
	if rec := s.record(t, rollbackID); !strings.Contains(rec, "kind: rollback") || !strings.Contains(rec, "outcome: succeeded") {
		t.Errorf("rollback record:\n%s", rec)
	}
	// ... which a later sync does not undo.
	stdout, _, code = s.lieutenant(t, "sync", "--env", "production")
	if code != exitOK || !strings.Contains(stdout, "in sync at 2026.11.3") {
		t.Errorf("sync after rollback: exit %d\n%s", code, stdout)
	}
	res := load.Stop()
	if res.Failed != 0 {
		t.Errorf("requests failed during sync, sync, rollback: %s", res)
	}

	// History and show read it back, for people and for scripts.
	stdout, stderr, code = s.lieutenant(t, "history", "--env", "production")
	if code != exitOK {
		t.Fatalf("history: exit %d\n%s%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], rollbackID) || !strings.Contains(lines[1], "rollback") || !strings.Contains(lines[3], first) {
		t.Errorf("history, newest first:\n%s", stdout)
	}
	stdout, _, _ = s.lieutenant(t, "history", "--env", "production", "-o", "json")
	var runs []runSummary
	if err := json.Unmarshal([]byte(stdout), &runs); err != nil || len(runs) != 3 || runs[0].Kind != "rollback" || runs[2].HostsOK != 4 {
		t.Errorf("history json: %v\n%s", err, stdout)
	}
	stdout, _, code = s.lieutenant(t, "show", first)
	if code != exitOK || !strings.Contains(stdout, "Run "+first+": sync of production to release 2026.11.3") || !strings.Contains(stdout, "web-4") {
		t.Errorf("show: exit %d\n%s", code, stdout)
	}
	testenv.Git(t, s.bare, "fsck", "--strict")
}

// Two runs race for one environment: exactly one runs, the other fails
// fast with the lock's holder, and no host is touched twice.
func TestRunsRaceForTheLock(t *testing.T) {
	s := newRemoteScene(t, drainedRestart+`
gate:
  soak: 2s
`)
	type result struct {
		stdout, stderr string
		code           int
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stdout, stderr, code := s.runProcess(t, "run", "--env", "production")
			results[i] = result{stdout, stderr, code}
		}()
	}
	wg.Wait()
	var won, locked int
	for _, r := range results {
		switch {
		case r.code == exitOK:
			won++
		case r.code == exitLocked && strings.Contains(r.stderr, "production is locked by run "):
			locked++
		default:
			t.Errorf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	if won != 1 || locked != 1 {
		t.Fatalf("%d runs ran and %d were refused the lock, want 1 and 1", won, locked)
	}
	if n := len(testenv.RunIDs(s.bare, "lieutenant/runs", "production")); n != 1 {
		t.Errorf("%d run records, want 1", n)
	}
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
}

// waitForRecord polls the remote until some run's record matches.
func (s *remoteScene) waitForRecord(t *testing.T, timeout time.Duration, match func(rec string) bool) (id, rec string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, id := range testenv.RunIDs(s.bare, "lieutenant/runs", "production") {
			if rec, err := testenv.RunRecord(s.bare, "lieutenant/runs", "production", id); err == nil && match(rec) {
				return id, rec
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no run record matched within %s", timeout)
	return "", ""
}

// drainedRestart is a playbook without a gate: drain, install, restart,
// enable.
const drainedRestart = `
hosts: "web-*"
steps:
  - balancer.drain: {timeout: 10s}
  - packages.install
  - service.restart: hello-web
  - balancer.enable: {timeout: 10s}
`

const approvalPlaybook = drainedRestart + `
gate:
  approval: prompt
  approval_timeout: %s
`

// A run waiting at its gate in CI (no terminal) is approved or aborted
// from elsewhere through Git and sees the decision within seconds; with no
// decision, its deadline aborts it. Either way the first batch stays in
// service and the lock is released.
func TestApprovalThroughGit(t *testing.T) {
	for _, tc := range []struct {
		decide, timeout string
		wantCode        int
		wantHosts       string
		wantRecord      string
	}{
		{"approve", "1m", exitOK, "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1", "approved_by: "},
		{"abort", "1m", exitFailed, "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.0.0-1 web-4=1.0.0-1", "not approved by "},
		{"", "2s", exitFailed, "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.0.0-1 web-4=1.0.0-1", "no decision within 2s"},
	} {
		t.Run(tc.decide+tc.timeout, func(t *testing.T) {
			s := newRemoteScene(t, fmt.Sprintf(approvalPlaybook, tc.timeout))
			done := make(chan struct{})
			var stdout, stderr string
			var code int
			go func() {
				defer close(done)
				stdout, stderr, code = s.runProcess(t, "run", "--env", "production")
			}()
			id, _ := s.waitForRecord(t, 30*time.Second, func(rec string) bool { return strings.Contains(rec, "waiting:") })
			decided := time.Now()
			if tc.decide != "" {
				out, errOut, c := s.lieutenant(t, tc.decide, "-m", "checked the dashboards", id)
				if c != exitOK || !strings.Contains(out, "Run "+id+": ") {
					t.Errorf("%s: exit %d\n%s%s", tc.decide, c, out, errOut)
				}
			}
			<-done
			t.Logf("run ended %s after the decision", time.Since(decided).Round(time.Millisecond))
			if code != tc.wantCode {
				t.Fatalf("run: exit %d, want %d\n%s%s", code, tc.wantCode, stdout, stderr)
			}
			if !strings.Contains(stderr, "lieutenant approve "+id) {
				t.Errorf("the waiting run does not say how to decide:\n%s", stderr)
			}
			if got := s.versions(t); got != tc.wantHosts {
				t.Errorf("versions: %s, want %s", got, tc.wantHosts)
			}
			if got, want := s.ha.Statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
				t.Errorf("balancer: %s, want %s", got, want)
			}
			rec := s.record(t, id)
			if !strings.Contains(rec, tc.wantRecord) || strings.Contains(rec, "waiting:") {
				t.Errorf("record lacks %q or still waits:\n%s", tc.wantRecord, rec)
			}
			if tc.decide != "" {
				who := testenv.Git(t, s.bare, "show", "lieutenant/runs:approvals/production/"+id+".yaml")
				if !strings.Contains(who, "by: ") || !strings.Contains(who, "message: checked the dashboards") {
					t.Errorf("decision file:\n%s", who)
				}
			}
			if files := testenv.Git(t, s.bare, "ls-tree", "-r", "--name-only", "lieutenant/runs"); strings.Contains(files, "locks/") {
				t.Errorf("the lock was left behind:\n%s", files)
			}
		})
	}
}

// A run killed with SIGKILL in the middle of a batch leaves its lock and
// its drained hosts; `lieutenant run` says to resume it, and `lieutenant
// resume` finishes it: every host at the new version and in service, no
// request failed through HAProxy over the whole episode, and the record
// names both processes.
func TestKilledRunIsResumed(t *testing.T) {
	s := newRemoteScene(t, `
hosts: "web-*"
steps:
  - balancer.drain: {timeout: 10s}
  - packages.install
  - sleep: 2s
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:PORT/health", retries: 20, interval: 100ms}
  - balancer.enable: {timeout: 10s}
`)
	load := testenv.StartLoad(t, s.ha.FrontendURL+"/", 200)
	var out bytes.Buffer
	first := s.process("run", "--env", "production", "--yes")
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	// The record is pushed before each irreversible step: once it shows a
	// drain done, the first batch is out of the balancer and upgrading.
	id, _ := s.waitForRecord(t, 30*time.Second, func(rec string) bool { return strings.Contains(rec, "step: balancer.drain") })
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	t.Logf("killed run %s:\n%s", id, out.String())
	if got, want := s.ha.Statuses(t), "web1=MAINT web2=MAINT web3=UP web4=UP"; got != want {
		t.Errorf("after the kill the balancer says %s, want %s", got, want)
	}

	// The lock is still the dead run's, and lieutenant says what to do.
	_, stderr, code := s.lieutenant(t, "run", "--env", "production", "--yes")
	if code != exitLocked || !strings.Contains(stderr, "that process is gone: finish the run with `lieutenant resume "+id+"`") {
		t.Errorf("run on the dead run's lock: exit %d\n%s", code, stderr)
	}
	stdout, stderr, code := s.lieutenant(t, "resume", "--yes", id)
	res := load.Stop()
	if code != exitOK {
		t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("resume:\n%s%s", stderr, stdout)
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	if got, want := s.ha.Statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	t.Logf("load over the kill and the resume: %s", res)
	if res.Failed != 0 || res.Rate() < 150 {
		t.Errorf("want zero failed requests at >= 150/s over the whole episode: %s", res)
	}
	if log := testenv.Git(t, s.bare, "log", "--format=%s", "lieutenant/runs"); !strings.Contains(log, "production: run "+id+" taken over (run)") {
		t.Errorf("the resume did not take the dead process's lock over:\n%s", log)
	}
	rec := s.record(t, id)
	for _, want := range []string{"outcome: succeeded", "resumed:", "in_flight:", "- web-1"} {
		if !strings.Contains(rec, want) {
			t.Errorf("record lacks %q:\n%s", want, rec)
		}
	}
	// web-3 and web-4 ran once, by the resume; web-1 twice.
	if n := strings.Count(rec, "step: balancer.enable"); n != 4 {
		t.Errorf("%d balancer.enable steps in the record, want 4 (one per host):\n%s", n, rec)
	}
	if files := testenv.Git(t, s.bare, "ls-tree", "-r", "--name-only", "lieutenant/runs"); strings.Contains(files, "locks/") {
		t.Errorf("the lock was left behind:\n%s", files)
	}
	// Resuming a finished run is refused.
	if _, stderr, code := s.lieutenant(t, "resume", id); code == exitOK || !strings.Contains(stderr, "nothing to resume") {
		t.Errorf("second resume: exit %d\n%s", code, stderr)
	}
}

// watch syncs at start and on verified push webhooks: a bad or missing
// signature triggers nothing, and a burst of pushes leads to one rollout.
func TestWatchSyncsOnVerifiedWebhooks(t *testing.T) {
	s := newRemoteScene(t, "")
	const secret = "webhook-secret"
	t.Setenv("LIEUTENANT_WEBHOOK_SECRET", secret)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut testenv.SafeBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"lieutenant", "--repo", s.url, "watch", "--interval", "1h", "--listen", "127.0.0.1:0", "--yes"},
			streams{in: strings.NewReader(""), out: &out, err: &errOut})
	}()
	// The first sync at start deploys the manifest.
	testenv.WaitFor(t, time.Minute, "the first sync", func() bool { return strings.Contains(out.String(), "succeeded in") })
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Fatalf("after the first sync: %s, want %s\n%s%s", got, want, errOut.String(), out.String())
	}
	addr := regexp.MustCompile(`webhook endpoint on (http://\S+)`).FindStringSubmatch(errOut.String())
	if addr == nil {
		t.Fatalf("watch did not say where it listens:\n%s", errOut.String())
	}
	post := func(sig string, ref string) int {
		body := []byte(`{"ref":"` + ref + `"}`)
		req, _ := http.NewRequest(http.MethodPost, addr[1], bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		if sig == "good" {
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write(body)
			sig = "sha256=" + hex.EncodeToString(mac.Sum(nil))
		}
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	s.merge(t, map[string]string{"releases/production.yaml": "release: 2026.11.4\npackages: [" + web100 + "]\n"}, "release 2026.11.4")
	if code := post("", "refs/heads/main"); code != http.StatusUnauthorized {
		t.Errorf("unsigned push: %d, want 401", code)
	}
	if code := post("sha256="+strings.Repeat("0", 64), "refs/heads/main"); code != http.StatusUnauthorized {
		t.Errorf("badly signed push: %d, want 401", code)
	}
	// lieutenant's own record pushes come back as webhooks too.
	if code := post("good", "refs/heads/lieutenant/runs"); code != http.StatusAccepted {
		t.Errorf("signed push of the history branch: %d, want 202", code)
	}
	time.Sleep(time.Second)
	if got := s.versions(t); !strings.Contains(got, "1.1.0-1") || strings.Contains(got, "1.0.0-1") {
		t.Fatalf("a push with a bad signature, or of the history branch, triggered a sync: %s", got)
	}
	if !strings.Contains(errOut.String(), `ref="refs/heads/lieutenant/runs" status=202 outcome="ignored: lieutenant's own history branch"`) {
		t.Errorf("the history branch's push was not ignored:\n%s", errOut.String())
	}
	for range 5 {
		if code := post("good", "refs/heads/main"); code != http.StatusAccepted {
			t.Errorf("signed push: %d, want 202", code)
		}
	}
	testenv.WaitFor(t, time.Minute, "the sync of the push", func() bool { return s.versions(t) == "web-1=1.0.0-1 web-2=1.0.0-1 web-3=1.0.0-1 web-4=1.0.0-1" })
	// The burst's later pushes cost at most one more sync, which finds
	// nothing to do.
	time.Sleep(2 * time.Second)
	if n := len(testenv.RunIDs(s.bare, "lieutenant/runs", "production")); n != 2 {
		t.Errorf("%d runs recorded, want 2 (the first sync and one for the burst)\n%s", n, errOut.String())
	}
	if n := strings.Count(errOut.String(), "watch: push received"); n < 1 || n > 2 {
		t.Errorf("%d syncs for a burst of 5 pushes, want 1 or 2 (one more if pushes came during the sync)\n%s", n, errOut.String())
	}
	cancel()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Errorf("watch exited %d after SIGTERM-like cancel, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("watch did not stop")
	}
}

// Git going wrong before the first drain: each is one clear line naming
// the remote, ref or file, and no host is touched.
func TestGitFaultsTouchNoHost(t *testing.T) {
	s := newRemoteScene(t, "")
	untouched := func(t *testing.T) {
		t.Helper()
		if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
			t.Errorf("hosts changed: %s", got)
		}
		if got, want := s.ha.Statuses(t), "web1=UP web2=UP web3=UP web4=UP"; got != want {
			t.Errorf("balancer changed: %s", got)
		}
	}
	writeHistory := func(t *testing.T, path, content string) {
		t.Helper()
		// A hand edit of the history branch, pushed from the test's clone.
		testenv.Git(t, s.work, "fetch", "-q", "origin")
		testenv.Git(t, s.work, "checkout", "-q", "-B", "hand-edit", "origin/lieutenant/runs")
		testenv.GitCommit(t, s.work, map[string]string{path: content}, "hand edit")
		testenv.Git(t, s.work, "push", "-q", "origin", "hand-edit:lieutenant/runs")
		testenv.Git(t, s.work, "checkout", "-q", "main")
	}
	// One real run first, so that the history branch exists.
	if _, stderr, code := s.lieutenant(t, "run", "--env", "production", "--yes"); code != exitOK {
		t.Fatalf("first run: exit %d\n%s", code, stderr)
	}
	// The manifest moves on, so every command below has work to do.
	s.merge(t, map[string]string{"releases/production.yaml": "release: 2026.11.4\npackages: [" + web100 + "]\n"}, "back to 1.0.0")

	t.Run("unreachable remote", func(t *testing.T) {
		_, stderr, code := lieutenant(t, fmt.Sprintf("ssh://git@127.0.0.1:%d/deploy.git", testenv.ClosedPort(t)), "run", "--env", "production", "--yes")
		t.Logf("unreachable: %s", stderr)
		if code != exitError || !strings.Contains(stderr, "127.0.0.1") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("exit %d, want %d and one line naming the remote:\n%s", code, exitError, stderr)
		}
	})
	t.Run("manifest branch without the playbook", func(t *testing.T) {
		testenv.Git(t, s.work, "checkout", "-q", "--orphan", "empty")
		testenv.GitCommit(t, s.work, map[string]string{"README": "nothing here\n"}, "empty")
		testenv.Git(t, s.work, "push", "-q", "origin", "empty")
		testenv.Git(t, s.work, "checkout", "-q", "main")
		_, stderr, code := s.lieutenant(t, "--branch", "empty", "run", "--env", "production", "--yes")
		if code != exitInvalid || !strings.Contains(stderr, "lieutenant.yaml: file not found") {
			t.Errorf("exit %d, want %d:\n%s", code, exitInvalid, stderr)
		}
		untouched(t)
	})
	t.Run("malformed lock", func(t *testing.T) {
		writeHistory(t, "locks/production.yaml", "run: [oops\n")
		_, stderr, code := s.lieutenant(t, "run", "--env", "production", "--yes")
		if code != exitError || !strings.Contains(stderr, "lieutenant/runs:locks/production.yaml is malformed") || !strings.Contains(stderr, "--force") {
			t.Errorf("exit %d:\n%s", code, stderr)
		}
		untouched(t)
		stdout, stderr, code := s.lieutenant(t, "lock", "release", "--env", "production", "--force")
		if code != exitOK || !strings.Contains(stdout, "was not locked") && !strings.Contains(stdout, "Released") {
			t.Errorf("lock release --force: exit %d\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("broken playbook at the tip", func(t *testing.T) {
		good := testenv.Git(t, s.bare, "show", "main:playbooks/web.yaml")
		s.merge(t, map[string]string{"playbooks/web.yaml": "hosts: [web\n"}, "a broken playbook")
		defer s.merge(t, map[string]string{"playbooks/web.yaml": good + "\n"}, "the playbook back")
		if _, stderr, code := s.lieutenant(t, "run", "--env", "production", "--yes"); code != exitInvalid {
			t.Errorf("run: exit %d, want %d\n%s", code, exitInvalid, stderr)
		}
		// What happened can still be read.
		if stdout, stderr, code := s.lieutenant(t, "history", "--env", "production"); code != exitOK || !strings.Contains(stdout, "succeeded") {
			t.Errorf("history: exit %d\n%s%s", code, stdout, stderr)
		}
		untouched(t)
	})
	t.Run("forged record", func(t *testing.T) {
		// Someone who can push the history branch, not main, writes a
		// "running" record naming a commit of their own.
		forged := testenv.Git(t, s.bare, "rev-parse", "empty")
		id := "2026-01-02T00-00-00Z-beef"
		writeHistory(t, "runs/production/"+id+".yaml", "id: "+id+"\nenvironment: production\nkind: run\nrelease: x\nmanifest_commit: "+forged+"\noutcome: running\n")
		_, stderr, code := s.lieutenant(t, "resume", "--yes", id)
		if code != exitError || !strings.Contains(stderr, "is not on the manifest branch") {
			t.Errorf("resume of a forged record: exit %d\n%s", code, stderr)
		}
		untouched(t)
	})
	t.Run("malformed record", func(t *testing.T) {
		writeHistory(t, "runs/production/2026-01-01T00-00-00Z-0000.yaml", "id: [\n")
		_, stderr, code := s.lieutenant(t, "history", "--env", "production")
		if code != exitError || !strings.Contains(stderr, "lieutenant/runs:runs/production/2026-01-01T00-00-00Z-0000.yaml is malformed") {
			t.Errorf("exit %d:\n%s", code, stderr)
		}
		testenv.Git(t, s.work, "push", "-q", "origin", ":lieutenant/runs") // start the history afresh
	})
	t.Run("push rejected", func(t *testing.T) {
		hook := filepath.Join(s.bare, "hooks", "pre-receive")
		if err := os.WriteFile(hook, []byte("#!/bin/sh\necho 'history is read-only today' >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(hook)
		_, stderr, code := s.lieutenant(t, "run", "--env", "production", "--yes")
		t.Logf("push rejected: %s", stderr)
		if code != exitError || !strings.Contains(stderr, "lieutenant/runs") || !strings.Contains(stderr, s.bare) {
			t.Errorf("exit %d, want %d naming the branch and the remote:\n%s", code, exitError, stderr)
		}
		untouched(t)
	})
}

// sync --heal finds a host that drifted (someone downgraded it by hand)
// and redeploys to it alone; lock status shows a holder, and --lock-wait
// waits for it instead of failing.
func TestHealAndLockWait(t *testing.T) {
	s := newRemoteScene(t, "")
	if _, stderr, code := s.lieutenant(t, "sync", "--env", "production"); code != exitOK {
		t.Fatalf("sync: exit %d\n%s", code, stderr)
	}
	s.fleet.SetInstalled(t, "web-3", web100)
	if stdout, _, code := s.lieutenant(t, "sync", "--env", "production"); code != exitOK || !strings.Contains(stdout, "in sync at 2026.11.3") {
		t.Errorf("sync without --heal looks at the record only: exit %d\n%s", code, stdout)
	}
	stdout, stderr, code := s.lieutenant(t, "sync", "--env", "production", "--heal")
	if code != exitOK {
		t.Fatalf("sync --heal: exit %d\n%s%s", code, stdout, stderr)
	}
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.1.0-1"; got != want {
		t.Errorf("after --heal: %s, want %s", got, want)
	}
	if !regexp.MustCompile(`web-3 +1 +succeeded +1\.0\.0-1 +1\.1\.0-1`).MatchString(stdout) || !regexp.MustCompile(`web-1 +- +up-to-date`).MatchString(stdout) {
		t.Errorf("--heal should redeploy web-3 alone:\n%s", stdout)
	}

	// Another machine holds the lock for a second.
	other, err := releases.InitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.UseRemote(releases.Remote{URL: s.url}); err != nil {
		t.Fatal(err)
	}
	hist, _ := other.History("lieutenant/runs")
	ctx := context.Background()
	if err := hist.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	lock := releases.Lock{Environment: "production", Run: "2026-11-28T09-00-00Z-aaaa", Kind: "run", HeldBy: "Ann <ann@example.com>",
		From: "ann@elsewhere", PID: 4242, Since: time.Now().UTC().Truncate(time.Second), Release: "2026.11.3", Token: "ann"}
	if err := hist.TryLock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	stdout, _, code = s.lieutenant(t, "lock", "status")
	if code != exitOK || !strings.Contains(stdout, "production   locked  2026-11-28T09-00-00Z-aaaa") || !strings.Contains(stdout, "ann@elsewhere pid 4242") {
		t.Errorf("lock status: exit %d\n%s", code, stdout)
	}
	s.merge(t, map[string]string{"releases/production.yaml": "release: 2026.11.4\npackages: [" + web100 + "]\n"}, "release 2026.11.4")
	if _, stderr, code := s.lieutenant(t, "sync", "--env", "production"); code != exitLocked || !strings.Contains(stderr, "Ann <ann@example.com> from ann@elsewhere") {
		t.Errorf("sync on a held lock: exit %d, want %d\n%s", code, exitLocked, stderr)
	}
	go func() {
		time.Sleep(time.Second)
		hist.Unlock(context.Background(), lock, "succeeded")
	}()
	start := time.Now()
	if _, stderr, code := s.lieutenant(t, "sync", "--env", "production", "--lock-wait", "30s"); code != exitOK {
		t.Errorf("sync --lock-wait: exit %d\n%s", code, stderr)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("sync --lock-wait went ahead after %s, while the lock was held for 1s", waited)
	}
	if got, want := s.versions(t), "web-1=1.0.0-1 web-2=1.0.0-1 web-3=1.0.0-1 web-4=1.0.0-1"; got != want {
		t.Errorf("after the wait: %s, want %s", got, want)
	}
}

// validate in a clone checks HEAD, the commit about to be pushed, not the
// remote's branch; --remote asks for the remote's.
func TestValidateChecksHeadOfAClone(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	bare := filepath.Join(t.TempDir(), "deploy.git")
	testenv.Git(t, "", "clone", "-q", "--bare", exampleRepo(t, nil), bare)
	work := filepath.Join(t.TempDir(), "work")
	testenv.Git(t, "", "clone", "-q", bare, work)
	testenv.Git(t, work, "config", "user.name", "Release Manager")
	testenv.Git(t, work, "config", "user.email", "rm@example.com")
	testenv.GitCommit(t, work, map[string]string{"releases/production.yaml": "release: x\npackages: [\"hello; rm -rf /\"]\n"}, "a bad manifest, not pushed")
	if _, stderr, code := lieutenant(t, work, "validate"); code != exitInvalid || !strings.Contains(stderr, `"hello; rm -rf /" is not name-version-release`) {
		t.Errorf("validate of HEAD: exit %d\n%s", code, stderr)
	}
	if stdout, stderr, code := lieutenant(t, work, "--remote", "origin", "validate"); code != exitOK || !strings.Contains(stdout, "origin/") {
		t.Errorf("validate of the remote's branch: exit %d\n%s%s", code, stdout, stderr)
	}
}

// `lieutenant run` in a clone inspects the hosts while it fetches, from the
// files the clone had. When the fetched files name other hosts, that
// inspection is dropped; when the fetch brings a run recorded meanwhile by
// another machine, the commit that takes the lock is refused and the hosts
// are inspected again. Either way the run deploys what the remote says.
func TestRunInspectsWhileFetching(t *testing.T) {
	s := newRemoteScene(t, drainedRestart)
	clone := filepath.Join(t.TempDir(), "ops")
	testenv.Git(t, "", "clone", "-q", s.bare, clone)

	// Another machine deploys, then the manifest moves on: the clone's
	// copies of both branches are stale.
	if _, stderr, code := s.lieutenant(t, "run", "--env", "production", "--yes"); code != exitOK {
		t.Fatalf("first run: exit %d\n%s", code, stderr)
	}
	s.merge(t, map[string]string{"releases/production.yaml": "release: r2\npackages: [" + web100 + "]\n"}, "r2")
	stdout, stderr, code := lieutenant(t, clone, "run", "--env", "production", "--yes")
	if code != exitOK || !strings.Contains(stderr, "Another run of production was recorded while the hosts were inspected: inspecting them again.") {
		t.Fatalf("run in the stale clone: exit %d\n%s%s", code, stderr, stdout)
	}
	if got, want := s.versions(t), "web-1=1.0.0-1 web-2=1.0.0-1 web-3=1.0.0-1 web-4=1.0.0-1"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}

	// The inventory moves on: web-4 is gone from it.
	s.merge(t, map[string]string{
		"releases/production.yaml":  "release: r3\npackages: [" + web110 + "]\n",
		"inventory/production.yaml": strings.Join(strings.Split(s.fleet.Inventory(), "\n")[:4], "\n") + "\n",
	}, "r3 without web-4")
	if _, stderr, code := lieutenant(t, clone, "run", "--env", "production", "--yes"); code != exitOK {
		t.Fatalf("run after the inventory changed: exit %d\n%s", code, stderr)
	}
	if got, want := s.versions(t), "web-1=1.1.0-1 web-2=1.1.0-1 web-3=1.1.0-1 web-4=1.0.0-1"; got != want {
		t.Errorf("versions: %s, want %s (web-4 left the inventory)", got, want)
	}
}

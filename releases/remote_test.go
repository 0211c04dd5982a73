package releases_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// cloneOf opens an empty cache repository whose remote is the bare
// repository at url, the way `lieutenant --repo URL` works.
func cloneOf(t *testing.T, url string) *releases.Repo {
	t.Helper()
	r, err := releases.InitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.UseRemote(releases.Remote{Name: "origin", URL: url}); err != nil {
		t.Fatal(err)
	}
	return r
}

func remoteHistory(t *testing.T, r *releases.Repo) *releases.History {
	t.Helper()
	h, err := r.History(releases.DefaultHistoryBranch)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestRemoteFetchReadsTheRemoteBranch(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	bare := testenv.NewBareGitRepo(t, map[string]string{"releases/production.yaml": "release: one\n"})
	r := cloneOf(t, bare)
	ctx := context.Background()
	branch, err := r.FetchDefault(ctx)
	if err != nil || branch != "main" {
		t.Fatalf("FetchDefault = %q, %v; want main", branch, err)
	}
	snap, err := r.Snapshot(ctx, r.Tracking(branch))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(testenv.Git(t, bare, "rev-parse", branch)); snap.Hash != want {
		t.Errorf("snapshot at %s, want the remote's %s", snap.Hash, want)
	}
	data, err := snap.ReadFile("releases/production.yaml")
	if err != nil || string(data) != "release: one\n" {
		t.Errorf("read %q, %v", data, err)
	}
}

// Writers on two machines (two caches of one remote) race; the remote's
// receive-pack refuses every push built on a stale tip, and each writer
// rebuilds on the new one, so every file arrives and history stays linear.
func TestRemotePutsFromTwoClonesAllArrive(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	bare := testenv.NewBareGitRepo(t, map[string]string{"lieutenant.yaml": "environments: {}\n"})
	const perWriter = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*perWriter)
	for w := range 2 {
		h := remoteHistory(t, cloneOf(t, bare))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				p := fmt.Sprintf("runs/production/w%d-%d.yaml", w, i)
				if _, err := h.Put(context.Background(), p, []byte(p+"\n"), "write "+p); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	files := strings.Fields(testenv.Git(t, bare, "ls-tree", "-r", "--name-only", releases.DefaultHistoryBranch))
	if len(files) != 2*perWriter {
		t.Errorf("remote branch holds %d files, want %d: %v", len(files), 2*perWriter, files)
	}
	if merges := testenv.Git(t, bare, "rev-list", "--merges", releases.DefaultHistoryBranch); merges != "" {
		t.Errorf("history has merges: %s", merges)
	}
	if n := len(strings.Fields(testenv.Git(t, bare, "rev-list", releases.DefaultHistoryBranch))); n != 2*perWriter {
		t.Errorf("remote branch has %d commits, want %d", n, 2*perWriter)
	}
	testenv.Git(t, bare, "fsck", "--strict")
}

// remoteAndClones is a bare remote and n caches of it, as n machines.
func remoteAndClones(t *testing.T, n int) (bare string, clones []*releases.History) {
	t.Helper()
	testenv.RequireBinaries(t, "git")
	bare = testenv.NewBareGitRepo(t, map[string]string{"lieutenant.yaml": "environments: {}\n"})
	for range n {
		clones = append(clones, remoteHistory(t, cloneOf(t, bare)))
	}
	return bare, clones
}

func testLock(env, run string) releases.Lock {
	return releases.Lock{Environment: env, Run: run, Kind: "run", HeldBy: "Ann <ann@example.com>", From: "ann@laptop",
		PID: 1, Since: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC), Release: "2026.11.1", Commit: "abc", Token: "token-" + run}
}

// Two machines race for one environment: exactly one gets the lock, the
// other is told who holds it.
func TestRemoteLockRace(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	bare := testenv.NewBareGitRepo(t, map[string]string{"lieutenant.yaml": "environments: {}\n"})
	ctx := context.Background()
	const racers = 4
	results := make([]error, racers)
	var wg sync.WaitGroup
	for i := range racers {
		h := remoteHistory(t, cloneOf(t, bare))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.TryLock(ctx, testLock("production", fmt.Sprintf("run-%d", i)))
		}()
	}
	wg.Wait()
	winners := 0
	for i, err := range results {
		var locked *releases.LockedError
		switch {
		case err == nil:
			winners++
		case errors.As(err, &locked):
			if !strings.Contains(err.Error(), "production is locked by run run-") {
				t.Errorf("racer %d: %v", i, err)
			}
		default:
			t.Errorf("racer %d: %v", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d racers got the lock, want exactly 1: %v", winners, results)
	}
	lockFile := testenv.Git(t, bare, "show", releases.DefaultHistoryBranch+":locks/production.yaml")
	if !strings.Contains(lockFile, "run: run-") {
		t.Errorf("lock file on the remote:\n%s", lockFile)
	}
}

func TestRemoteLockReleaseAndBreak(t *testing.T) {
	bare, hs := remoteAndClones(t, 2)
	a, b := hs[0], hs[1]
	ctx := context.Background()
	lockA, lockB := testLock("production", "run-a"), testLock("production", "run-b")
	if err := a.TryLock(ctx, lockA); err != nil {
		t.Fatal(err)
	}
	// Taking it again in the same process is fine; another process of the
	// same run is refused.
	if err := a.TryLock(ctx, lockA); err != nil {
		t.Fatalf("re-taking one's own lock: %v", err)
	}
	twin := lockA
	twin.Token = "another-process"
	var locked *releases.LockedError
	if err := b.TryLock(ctx, twin); !errors.As(err, &locked) {
		t.Fatalf("a second process of run-a took its lock: %v", err)
	}
	// Another run's unlock leaves it alone.
	if err := b.Unlock(ctx, lockB, "succeeded"); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if l, err := b.ReadLock(ctx, "production"); err != nil || l == nil || l.Run != "run-a" {
		t.Fatalf("lock after a stranger's unlock: %+v, %v", l, err)
	}
	broken, err := b.BreakLock(ctx, "production", "Bob <bob@example.com>", "")
	if err != nil || broken == nil || broken.Run != "run-a" {
		t.Fatalf("break: %+v, %v", broken, err)
	}
	msg := testenv.Git(t, bare, "log", "-1", "--format=%an%n%B", releases.DefaultHistoryBranch)
	if !strings.Contains(msg, "released by force by Bob") || !strings.Contains(msg, "held by run run-a") {
		t.Errorf("break commit:\n%s", msg)
	}
	// run-a's next record write sees that the lock is gone.
	_, err = a.UpdateIf(ctx, "runs/production/run-a.yaml", lockA.Guard(), func([]byte) ([]byte, error) { return []byte("x\n"), nil }, "save")
	if !errors.Is(err, releases.ErrLockLost) {
		t.Errorf("a save after the lock was broken: %v, want ErrLockLost", err)
	}
	if err := b.TryLock(ctx, lockB); err != nil {
		t.Fatalf("lock after break: %v", err)
	}
	// run-a ends late and must not remove run-b's lock.
	if err := a.Unlock(ctx, lockA, "failed"); err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, bare, "show", releases.DefaultHistoryBranch+":locks/production.yaml"); !strings.Contains(got, "run: run-b") {
		t.Errorf("lock after a late unlock:\n%s", got)
	}
	if l, _ := b.ReadLock(ctx, "production"); l == nil || l.Run != "run-b" {
		t.Errorf("lock after a late unlock: %+v", l)
	}
	// A resume takes run-b over; run-b's old process can neither save nor unlock.
	resumed := lockB
	resumed.Token = "resume"
	if err := a.TakeOver(ctx, resumed, lockB); err != nil {
		t.Fatalf("take over: %v", err)
	}
	if _, err := b.UpdateIf(ctx, "runs/production/run-b.yaml", lockB.Guard(), func([]byte) ([]byte, error) { return []byte("x\n"), nil }, "save"); !errors.Is(err, releases.ErrLockLost) {
		t.Errorf("the replaced process saved: %v", err)
	}
	if err := b.Unlock(ctx, lockB, "failed"); err != nil {
		t.Fatal(err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := a.ReadLock(ctx, "production"); l == nil || l.Token != "resume" {
		t.Errorf("the replaced process unlocked the resume's lock: %+v", l)
	}
	if err := a.Unlock(ctx, resumed, "succeeded"); err != nil {
		t.Fatal(err)
	}
	if out := testenv.Git(t, bare, "ls-tree", "-r", "--name-only", releases.DefaultHistoryBranch); strings.Contains(out, "locks/") {
		t.Errorf("lock file left after unlock: %s", out)
	}
	testenv.Git(t, bare, "fsck", "--strict")
}

func TestMalformedLockIsNamed(t *testing.T) {
	_, hs := remoteAndClones(t, 1)
	h := hs[0]
	ctx := context.Background()
	if _, err := h.Put(ctx, "locks/production.yaml", []byte("run: [oops\n"), "hand edit"); err != nil {
		t.Fatal(err)
	}
	err := h.TryLock(ctx, testLock("production", "run-a"))
	var bad *releases.MalformedError
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "lieutenant/runs:locks/production.yaml is malformed") ||
		!strings.Contains(err.Error(), "lock release --env production --force") {
		t.Fatalf("err = %v", err)
	}
}

func TestRemoteUnreachableIsNamed(t *testing.T) {
	r := cloneOf(t, t.TempDir()+"/missing.git/..")
	h, err := r.History(releases.DefaultHistoryBranch)
	if err != nil {
		t.Fatal(err)
	}
	err = h.Refresh(context.Background())
	if err == nil || !strings.Contains(err.Error(), "lieutenant/runs") {
		t.Fatalf("err = %v", err)
	}
}

// An HTTP remote: real `git http-backend`, over HTTPS with a token as
// basic auth (as GitHub and GitLab take tokens), and over plain HTTP
// without one.
func TestRemoteOverHTTPSWithToken(t *testing.T) {
	bins := testenv.RequireBinaries(t, "git")
	bare := testenv.NewBareGitRepo(t, map[string]string{"lieutenant.yaml": "environments: {}\n"})
	testenv.Git(t, bare, "config", "http.receivepack", "true")
	backend := &cgi.Handler{Path: bins["git"], Args: []string{"http-backend"},
		Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(bare), "GIT_HTTP_EXPORT_ALL=1"}}
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, tok, ok := r.BasicAuth(); !ok || tok != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		}
		backend.ServeHTTP(w, r)
	}))
	defer tlsSrv.Close()
	plainSrv := httptest.NewUnstartedServer(backend)
	var conns atomic.Int64
	plainSrv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	plainSrv.Start()
	defer plainSrv.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})
	ctx := context.Background()

	open := func(url, token string) *releases.History {
		r, err := releases.InitCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		auth := releases.RemoteAuth{Token: token}
		if strings.HasPrefix(url, "https:") {
			auth.CABundle = ca
		}
		if err := r.UseRemote(releases.Remote{URL: url, Auth: auth}); err != nil {
			t.Fatal(err)
		}
		h, err := r.History(releases.DefaultHistoryBranch)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	put := func(h *releases.History, files ...string) {
		t.Helper()
		if err := h.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if _, err := h.Put(ctx, "runs/production/"+f+".yaml", []byte(f+"\n"), f); err != nil {
				t.Fatal(err)
			}
		}
	}
	httpsURL := tlsSrv.URL + "/" + filepath.Base(bare)
	put(open(httpsURL, "s3cret"), "a")
	if got := testenv.Git(t, bare, "show", "lieutenant/runs:runs/production/a.yaml"); got != "a" {
		t.Errorf("remote has %q", got)
	}
	err := open(httpsURL, "wrong").Refresh(ctx)
	if err == nil || !strings.Contains(err.Error(), httpsURL) || strings.Contains(err.Error(), "wrong") {
		t.Errorf("a wrong token: %v (want the remote named, the token not)", err)
	}

	// One fetch and three pushes, each several requests: HTTP keep-alive
	// carries them all on one connection.
	put(open(plainSrv.URL+"/"+filepath.Base(bare), ""), "b", "c", "d")
	if got := testenv.Git(t, bare, "show", "lieutenant/runs:runs/production/d.yaml"); got != "d" {
		t.Errorf("remote has %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections to the HTTP remote for a fetch and three pushes, want 1", n)
	}
}

// A URL that would leak a secret is refused before anything is sent: a
// token over plain HTTP, credentials in the URL (go-git would send the
// user part as basic auth), a password in an SSH URL.
func TestRemoteURLsThatLeakAreRefused(t *testing.T) {
	host := testenv.UntouchedServer(t)
	sshConfig := func(string, string) (*ssh.ClientConfig, func(), error) { return nil, nil, errors.New("not used") }
	for _, tc := range []struct {
		url, token, want string
	}{
		{"http://" + host + "/deploy.git", "ghp_s3cret", "remote http://" + host + "/deploy.git: LIEUTENANT_GIT_TOKEN would cross the network in clear over http://: use https://" + host + "/deploy.git"},
		{"http://ghp_s3cret@" + host + "/deploy.git", "", "remote http://REDACTED@" + host + "/deploy.git: credentials in the URL are refused, so that they never reach a log: use http://" + host + "/deploy.git"},
		{"https://x-access-token:ghp_s3cret@github.com/acme/deploy.git", "", "remote https://REDACTED@github.com/acme/deploy.git: credentials in the URL are refused, so that they never reach a log: use https://github.com/acme/deploy.git"},
		{"https://ghp_s3cret@github.com/acme/deploy.git", "ghp_other", "remote https://REDACTED@github.com/acme/deploy.git: credentials in the URL"},
		{"ssh://deploy:ghp_s3cret@git.example/srv/deploy.git", "", "remote ssh://deploy:REDACTED@git.example/srv/deploy.git: a password in an SSH URL is refused"},
		{"deploy:ghp_s3cret@git.example:srv/deploy.git", "", "remote deploy:REDACTED@git.example:srv/deploy.git: a password in an SSH URL is refused"},
		{"https://ghp_s3cret@exa mple/deploy.git", "", "remote https://REDACTED@exa mple/deploy.git: not a URL git understands: invalid character \" \" in host name"},
	} {
		r, err := releases.InitCache(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		err = r.UseRemote(releases.Remote{URL: tc.url, Auth: releases.RemoteAuth{Token: tc.token, SSH: sshConfig}})
		r.Close()
		var bad *releases.RemoteURLError
		if !errors.As(err, &bad) || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("UseRemote(%s) with token %q:\n got %v\nwant a RemoteURLError starting %q", tc.url, tc.token, err, tc.want)
		}
	}
	// Without a token, plain HTTP (a test server) stays allowed.
	r, err := releases.InitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.UseRemote(releases.Remote{URL: "http://" + host + "/deploy.git"}); err != nil {
		t.Errorf("plain HTTP without a token: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://ghp_TOKEN@github.com/acme/deploy.git":       "https://REDACTED@github.com/acme/deploy.git",
		"https://bot:hunter2@gitlab.example/acme/deploy.git": "https://REDACTED@gitlab.example/acme/deploy.git",
		"HTTP://a@b@host:8080/x?y=1":                         "HTTP://REDACTED@host:8080/x?y=1",
		"https://github.com/acme/deploy.git":                 "https://github.com/acme/deploy.git",
		"https://github.com/acme/user@deploy.git":            "https://github.com/acme/user@deploy.git",
		"ssh://deploy@git.example:2222/srv/deploy.git":       "ssh://deploy@git.example:2222/srv/deploy.git",
		"ssh://deploy:pw@git.example/srv/deploy.git":         "ssh://deploy:REDACTED@git.example/srv/deploy.git",
		"git@github.com:acme/deploy.git":                     "git@github.com:acme/deploy.git",
		"deploy:pw@git.example:srv/deploy.git":               "deploy:REDACTED@git.example:srv/deploy.git",
		"file:///srv/git/deploy.git":                         "file:///srv/git/deploy.git",
		"/srv/git/a@b.git":                                   "/srv/git/a@b.git",
		"https://tok@exa mple/not a url":                     "https://REDACTED@exa mple/not a url",
	} {
		if got := releases.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRemoteURLs(t *testing.T) {
	for s, want := range map[string]bool{
		"git@github.com:acme/deploy.git": true,
		"ssh://git@host:2222/srv/deploy": true,
		"https://gitlab.example/acme/d":  true,
		"file:///srv/git/deploy.git":     true,
		"../deploy":                      false,
		"/srv/git/deploy.git":            false,
		".":                              false,
		"dir/with:colon-after-slash":     false,
	} {
		if got := releases.IsRemoteURL(s); got != want {
			t.Errorf("IsRemoteURL(%q) = %v, want %v", s, got, want)
		}
	}
	r, err := releases.InitCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.UseRemote(releases.Remote{URL: "ssh://git@host/deploy.git"}); err == nil {
		t.Error("an SSH remote without SSH credentials was accepted")
	}
}

func TestDecisionsFirstOneStands(t *testing.T) {
	_, hs := remoteAndClones(t, 2)
	a, b := hs[0], hs[1]
	ctx := context.Background()
	d := releases.Decision{Environment: "production", Run: "run-1", Gate: 1, Decision: releases.Approved, By: "Ann", From: "ann@laptop"}
	if err := a.Decide(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Decision, d.By = releases.Aborted, "Bob"
	if err := b.Decide(ctx, d); err == nil || !strings.Contains(err.Error(), "gate 1 of run run-1 was already approved by Ann") {
		t.Errorf("a second decision on the gate: %v", err)
	}
	d.Gate = 2
	if err := b.Decide(ctx, d); err != nil {
		t.Errorf("a decision on the next gate: %v", err)
	}
	if err := a.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := a.ReadDecision(ctx, "production", "run-1")
	if err != nil || got == nil || got.Gate != 2 || got.Decision != releases.Aborted {
		t.Errorf("latest decision: %+v, %v", got, err)
	}
}

// History written before a remote was used (in a clone, without one) is
// carried over by the first push, not left behind.
func TestRemoteTakesOverLocalHistory(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	bare := testenv.NewBareGitRepo(t, map[string]string{"lieutenant.yaml": "environments: {}\n"})
	clone := filepath.Join(t.TempDir(), "clone")
	testenv.Git(t, "", "clone", "-q", bare, clone)
	ctx := context.Background()
	r, err := releases.Open(clone)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	local, err := r.History(releases.DefaultHistoryBranch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.Put(ctx, "runs/production/old.yaml", []byte("old\n"), "an old run"); err != nil {
		t.Fatal(err)
	}
	if err := r.UseRemote(releases.Remote{Name: "origin", URL: bare}); err != nil {
		t.Fatal(err)
	}
	h := remoteHistory(t, r)
	if _, err := h.Put(ctx, "runs/production/new.yaml", []byte("new\n"), "a new run"); err != nil {
		t.Fatal(err)
	}
	files := testenv.Git(t, bare, "ls-tree", "-r", "--name-only", releases.DefaultHistoryBranch)
	if files != "runs/production/new.yaml\nruns/production/old.yaml" {
		t.Errorf("remote history holds:\n%s", files)
	}
	if got, want := testenv.Git(t, clone, "rev-parse", releases.DefaultHistoryBranch), testenv.Git(t, bare, "rev-parse", releases.DefaultHistoryBranch); got != want {
		t.Errorf("the clone's branch is at %s, the remote's at %s", got, want)
	}
}

// A clone that last saw the lock held decides again on a fresh fetch
// before it reports "locked": the lock was released meanwhile.
func TestRemoteLockStaleRefusalIsDecidedAgain(t *testing.T) {
	_, hs := remoteAndClones(t, 2)
	a, b := hs[0], hs[1]
	ctx := context.Background()
	lockA, lockB := testLock("production", "run-a"), testLock("production", "run-b")
	if err := a.TryLock(ctx, lockA); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if l, _ := b.ReadLock(ctx, "production"); l == nil {
		t.Fatal("b does not see a's lock")
	}
	if err := a.Unlock(ctx, lockA, "succeeded"); err != nil {
		t.Fatal(err)
	}
	// b's copy still shows run-a's lock.
	if err := b.TryLock(ctx, lockB); err != nil {
		t.Fatalf("b was refused on its stale copy: %v", err)
	}
}

// A lock written without a token (by an older lieutenant) can be taken
// over by resume.
func TestRemoteTakeOverOfATokenlessLock(t *testing.T) {
	bare, hs := remoteAndClones(t, 1)
	h := hs[0]
	ctx := context.Background()
	if _, err := h.Put(ctx, "locks/production.yaml", []byte("environment: production\nrun: run-a\nkind: run\n"), "old lock"); err != nil {
		t.Fatal(err)
	}
	held, err := h.ReadLock(ctx, "production")
	if err != nil || held == nil {
		t.Fatalf("read: %+v, %v", held, err)
	}
	if err := h.TakeOver(ctx, testLock("production", "run-a"), *held); err != nil {
		t.Fatalf("take over: %v", err)
	}
	if got := testenv.Git(t, bare, "show", releases.DefaultHistoryBranch+":locks/production.yaml"); !strings.Contains(got, "token: token-run-a") {
		t.Errorf("lock after take over:\n%s", got)
	}
}

// A process killed while it updated refs can leave an empty ref lock (git
// creates it, then writes it) and an empty remote-tracking ref (go-git
// rewrites it in place). Neither blocks the next command: locks older than
// a few seconds and empty refs that lieutenant can fetch again are cleared
// when the repository is opened, and the history is read and written as
// before.
func TestKilledWriterLeavesNothingThatBlocks(t *testing.T) {
	bare := testenv.NewBareGitRepo(t, deployFiles)
	dir := t.TempDir()
	r, err := releases.InitCache(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.UseRemote(releases.Remote{Name: "origin", URL: bare}); err != nil {
		t.Fatal(err)
	}
	if _, err := remoteHistory(t, r).Put(context.Background(), "runs/production/a.yaml", []byte("a\n"), "a"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	tracking := filepath.Join(dir, "refs", "remotes", "origin", "lieutenant", "runs")
	lock := filepath.Join(dir, "refs", "heads", "lieutenant", "runs.lock")
	if err := os.Truncate(tracking, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(lock, old, old); err != nil {
		t.Fatal(err)
	}

	r = openRepo(t, dir)
	if err := r.UseRemote(releases.Remote{Name: "origin", URL: bare}); err != nil {
		t.Fatal(err)
	}
	h := remoteHistory(t, r)
	if _, err := h.Put(context.Background(), "runs/production/b.yaml", []byte("b\n"), "b"); err != nil {
		t.Fatalf("Put after a killed writer: %v", err)
	}
	if got := testenv.Git(t, bare, "ls-tree", "--name-only", "lieutenant/runs", "runs/production/"); got != "runs/production/a.yaml\nruns/production/b.yaml" {
		t.Errorf("remote history: %s", got)
	}
	if _, err := os.Stat(lock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the stale lock is still there: %v", err)
	}
	fsck(t, dir)
}

// A remote with nothing to read fails at once with one line that says why,
// not after the fetch's timeout: an empty repository, one whose HEAD names
// a branch it lacks, a path that is no repository.
func TestRemoteWithNothingToReadFailsAtOnce(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.git")
	testenv.Git(t, "", "init", "-q", "--bare", empty)
	headless := testenv.NewBareGitRepo(t, deployFiles)
	testenv.Git(t, headless, "symbolic-ref", "HEAD", "refs/heads/gone")
	for _, tc := range []struct{ url, want string }{
		{empty, "the remote repository is empty"},
		{headless, "its HEAD names no branch: name the manifest branch with --branch"},
		{t.TempDir(), "does not appear to be a git repository"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r := cloneOf(t, tc.url)
		start := time.Now()
		_, err := r.FetchDefault(ctx, releases.DefaultHistoryBranch)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || time.Since(start) > 5*time.Second {
			t.Errorf("%s: FetchDefault = %v after %s; want one line saying %q, at once", tc.url, err, time.Since(start).Round(time.Millisecond), tc.want)
		}
	}
}

// TestRemoteHooksSeeNoSecrets: git receive-pack, started by lieutenant for
// a remote on this machine, runs the remote's hooks; they must not see
// lieutenant's secrets.
func TestRemoteHooksSeeNoSecrets(t *testing.T) {
	testenv.RequireBinaries(t, "git")
	const token = "ghp_hooks-must-not-see-this"
	t.Setenv("LIEUTENANT_GIT_TOKEN", token)
	bare := testenv.NewBareGitRepo(t, map[string]string{"lieutenant.yaml": "environments: {}\n"})
	seen := filepath.Join(t.TempDir(), "hook-env")
	hook := filepath.Join(bare, "hooks", "pre-receive")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\nenv >"+seen+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := remoteHistory(t, cloneOf(t, bare))
	if _, err := h.Put(context.Background(), "runs/production/one.yaml", []byte("one\n"), "write one"); err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(seen)
	if err != nil {
		t.Fatalf("the pre-receive hook did not run: %v", err)
	}
	if strings.Contains(string(env), token) || strings.Contains(string(env), "LIEUTENANT_GIT_TOKEN") {
		t.Errorf("the remote's hook saw lieutenant's token:\n%s", env)
	}
}

package releases_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

func TestPutCreatesOrphanBranchAndAppends(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	// A user in the middle of something: edits, a staged file, an
	// untracked file. None of it may change.
	testenv.WriteFiles(t, dir, map[string]string{
		"releases/production.yaml": "release: EDITED\n",
		"releases/staged.yaml":     "staged: true\n",
		"notes.txt":                "untracked\n",
	})
	testenv.Git(t, dir, "add", "releases/staged.yaml")
	before := captureUserState(t, dir)
	indexBefore, err := os.ReadFile(filepath.Join(dir, ".git", "index"))
	if err != nil {
		t.Fatal(err)
	}

	r := openRepo(t, dir)
	h := history(t, r)
	first, err := h.Put(ctx, "runs/production/2026-11-28T10-00-00Z-3f2a.yaml", []byte("outcome: success\n"), "production: run 2026-11-28T10-00-00Z-3f2a succeeded")
	if err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, dir, "rev-parse", "lieutenant/runs"); got != first {
		t.Fatalf("lieutenant/runs = %s, Put returned %s", got, first)
	}
	// An orphan: no parent, and none of main's files.
	if got := testenv.Git(t, dir, "rev-list", "--parents", "-n1", "lieutenant/runs"); got != first {
		t.Errorf("first history commit has parents: %s", got)
	}
	if got := testenv.Git(t, dir, "ls-tree", "-r", "--name-only", "lieutenant/runs"); got != "runs/production/2026-11-28T10-00-00Z-3f2a.yaml" {
		t.Errorf("history tree:\n%s", got)
	}

	second, err := h.Put(ctx, "runs/staging/2026-11-28T11-00-00Z-0b1c.yaml", []byte("outcome: failed\n"), "staging: run failed")
	if err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, dir, "log", "--format=%s", "lieutenant/runs"); got != "staging: run failed\nproduction: run 2026-11-28T10-00-00Z-3f2a succeeded" {
		t.Errorf("git log:\n%s", got)
	}
	if got := testenv.Git(t, dir, "rev-parse", second+"^"); got != first {
		t.Errorf("parent of second = %s, want %s", got, first)
	}
	if got := testenv.Git(t, dir, "show", "lieutenant/runs:runs/production/2026-11-28T10-00-00Z-3f2a.yaml"); got != "outcome: success" {
		t.Errorf("git show = %q", got)
	}
	if got := testenv.Git(t, dir, "show", "lieutenant/runs:runs/staging/2026-11-28T11-00-00Z-0b1c.yaml"); got != "outcome: failed" {
		t.Errorf("git show = %q", got)
	}
	if got, want := testenv.Git(t, dir, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "lieutenant/runs"),
		testenv.GitUserName+" <"+testenv.GitUserEmail+">|"+testenv.GitUserName+" <"+testenv.GitUserEmail+">"; got != want {
		t.Errorf("author|committer = %q, want %q", got, want)
	}
	fsck(t, dir)

	// Overwriting a file is a new commit; writing the same bytes is not.
	third, err := h.Put(ctx, "runs/staging/2026-11-28T11-00-00Z-0b1c.yaml", []byte("outcome: rolled back\n"), "staging: rolled back")
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.Put(ctx, "runs/staging/2026-11-28T11-00-00Z-0b1c.yaml", []byte("outcome: rolled back\n"), "staging: rolled back")
	if err != nil {
		t.Fatal(err)
	}
	if again != third {
		t.Errorf("an identical Put made commit %s on top of %s", again, third)
	}
	if got := testenv.Git(t, dir, "rev-list", "--count", "lieutenant/runs"); got != "3" {
		t.Errorf("history has %s commits, want 3", got)
	}

	// Reading back, through the branch and not the work tree.
	got, err := h.Get(ctx, "runs/staging/2026-11-28T11-00-00Z-0b1c.yaml")
	if err != nil || string(got) != "outcome: rolled back\n" {
		t.Errorf("Get = %q, %v", got, err)
	}
	if _, err := h.Get(ctx, "runs/staging/nope.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get(missing) = %v, want fs.ErrNotExist", err)
	}
	list, err := h.List(ctx, "runs/production")
	if err != nil || !slices.Equal(list, []string{"runs/production/2026-11-28T10-00-00Z-3f2a.yaml"}) {
		t.Errorf("List = %v, %v", list, err)
	}
	if list, err := h.List(ctx, "runs/qa"); err != nil || len(list) != 0 {
		t.Errorf("List(missing dir) = %v, %v", list, err)
	}
	snap, err := h.Snapshot(ctx)
	if err != nil || snap.Hash != third || snap.Subject != "staging: rolled back" {
		t.Errorf("Snapshot = %+v, %v", snap, err)
	}

	after := captureUserState(t, dir)
	if after != before {
		t.Errorf("user state changed:\nbefore %+v\nafter  %+v", before, after)
	}
	indexAfter, err := os.ReadFile(filepath.Join(dir, ".git", "index"))
	if err != nil {
		t.Fatal(err)
	}
	if string(indexAfter) != string(indexBefore) {
		t.Error("the index file changed")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "releases", "production.yaml")); string(got) != "release: EDITED\n" {
		t.Errorf("work tree file changed: %q", got)
	}
	fsck(t, dir)
}

func TestHistoryBeforeTheFirstPut(t *testing.T) {
	ctx := context.Background()
	h := history(t, openRepo(t, testenv.NewGitRepo(t, deployFiles)))
	if _, err := h.Get(ctx, "runs/production/x.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get = %v, want fs.ErrNotExist", err)
	} else if want := "runs/production/x.yaml: not found at lieutenant/runs (the branch does not exist yet)"; err.Error() != want {
		t.Errorf("Get = %q, want %q", err, want)
	}
	if list, err := h.List(ctx, "runs/production"); err != nil || list != nil {
		t.Errorf("List = %v, %v", list, err)
	}
	if _, err := h.Snapshot(ctx); !errors.Is(err, releases.ErrNoHistory) {
		t.Errorf("Snapshot = %v, want ErrNoHistory", err)
	}
}

func TestPutInEmptyRepository(t *testing.T) {
	dir := testenv.NewGitRepo(t, nil)
	h := history(t, openRepo(t, dir))
	if _, err := h.Put(context.Background(), "runs/production/x.yaml", []byte("x: 1\n"), "first run"); err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, dir, "show", "lieutenant/runs:runs/production/x.yaml"); got != "x: 1" {
		t.Errorf("git show = %q", got)
	}
	// main still has no commits, and HEAD still points at it.
	if got := testenv.Git(t, dir, "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Errorf("HEAD = %s", got)
	}
	fsck(t, dir)
}

func TestPutOnBareRepository(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewBareGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	for i := range 3 {
		if _, err := h.Put(ctx, fmt.Sprintf("runs/production/%d.yaml", i), []byte(fmt.Sprintf("n: %d\n", i)), fmt.Sprintf("run %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := testenv.Git(t, dir, "log", "--format=%s", "lieutenant/runs"); got != "run 2\nrun 1\nrun 0" {
		t.Errorf("git log:\n%s", got)
	}
	if got := testenv.Git(t, dir, "show", "lieutenant/runs:runs/production/1.yaml"); got != "n: 1" {
		t.Errorf("git show = %q", got)
	}
	fsck(t, dir)
}

func TestPutFromLinkedWorkTree(t *testing.T) {
	dir := testenv.NewGitRepo(t, deployFiles)
	wt := filepath.Join(t.TempDir(), "wt")
	testenv.Git(t, dir, "worktree", "add", "-q", "-b", "feature", wt)
	h := history(t, openRepo(t, wt))
	if _, err := h.Put(context.Background(), "runs/production/x.yaml", []byte("x: 1\n"), "from a linked work tree"); err != nil {
		t.Fatal(err)
	}
	// Branches live in the common git directory: the main work tree sees it.
	if got := testenv.Git(t, dir, "show", "lieutenant/runs:runs/production/x.yaml"); got != "x: 1" {
		t.Errorf("git show = %q", got)
	}
	if got := testenv.Git(t, wt, "symbolic-ref", "HEAD"); got != "refs/heads/feature" {
		t.Errorf("linked work tree HEAD = %s", got)
	}
	fsck(t, dir)
}

func TestPutKeepsCommitsMadeWithTheGitCLI(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	if _, err := h.Put(ctx, "runs/production/a.yaml", []byte("a: 1\n"), "lieutenant a"); err != nil {
		t.Fatal(err)
	}

	// Someone checks the history branch out elsewhere and commits to it.
	wt := filepath.Join(t.TempDir(), "runs")
	testenv.Git(t, dir, "worktree", "add", "-q", wt, "lieutenant/runs")
	cli := testenv.GitCommit(t, wt, map[string]string{"NOTES.md": "approved by ops\n"}, "human note")
	testenv.Git(t, dir, "worktree", "remove", wt)

	if _, err := h.Put(ctx, "runs/production/b.yaml", []byte("b: 1\n"), "lieutenant b"); err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, dir, "log", "--format=%s", "lieutenant/runs"); got != "lieutenant b\nhuman note\nlieutenant a" {
		t.Errorf("git log:\n%s", got)
	}
	testenv.Git(t, dir, "merge-base", "--is-ancestor", cli, "lieutenant/runs")
	if got := testenv.Git(t, dir, "ls-tree", "-r", "--name-only", "lieutenant/runs"); got != "NOTES.md\nruns/production/a.yaml\nruns/production/b.yaml" {
		t.Errorf("history tree:\n%s", got)
	}
	fsck(t, dir)
}

// TestPutAfterPackRefs covers a branch that lives only in packed-refs, as
// after `git gc`, and a git gc that packs the objects go-git has cached an
// index for.
func TestPutAfterPackRefs(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	if _, err := h.Put(ctx, "runs/production/a.yaml", []byte("a\n"), "a"); err != nil {
		t.Fatal(err)
	}
	testenv.Git(t, dir, "gc", "--quiet", "--prune=now")
	if _, err := os.Stat(filepath.Join(dir, ".git", "refs", "heads", "lieutenant", "runs")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the branch is still a loose ref after git gc: %v", err)
	}
	if _, err := h.Put(ctx, "runs/production/b.yaml", []byte("b\n"), "b"); err != nil {
		t.Fatal(err)
	}
	testenv.Git(t, dir, "gc", "--quiet", "--prune=now")
	if _, err := h.Put(ctx, "runs/production/c.yaml", []byte("c\n"), "c"); err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, dir, "log", "--format=%s", "lieutenant/runs"); got != "c\nb\na" {
		t.Errorf("git log:\n%s", got)
	}
	if got, err := h.Get(ctx, "runs/production/a.yaml"); err != nil || string(got) != "a\n" {
		t.Errorf("Get = %q, %v", got, err)
	}
	fsck(t, dir)
}

func TestConcurrentPutsFromGoroutines(t *testing.T) {
	for _, shared := range []bool{true, false} {
		name := "one Repo"
		if !shared {
			name = "a Repo each" // contend through the ref lock, like processes
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := testenv.NewGitRepo(t, deployFiles)
			repo := openRepo(t, dir)
			const n = 20
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					r := repo
					if !shared {
						var err error
						if r, err = releases.Open(dir); err != nil {
							errs <- err
							return
						}
						defer r.Close()
					}
					h, err := r.History(releases.DefaultHistoryBranch)
					if err != nil {
						errs <- err
						return
					}
					p := fmt.Sprintf("runs/production/run-%02d.yaml", i)
					if _, err := h.Put(ctx, p, []byte(fmt.Sprintf("run: %d\n", i)), "run "+strconv.Itoa(i)); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			checkLinearHistory(t, dir, n, n)
		})
	}
}

// checkLinearHistory checks that the history branch has commits commits,
// none of them a merge, and files files, and that fsck is happy.
func checkLinearHistory(t *testing.T, dir string, commits, files int) {
	t.Helper()
	if got := testenv.Git(t, dir, "rev-list", "--count", "lieutenant/runs"); got != strconv.Itoa(commits) {
		t.Errorf("history has %s commits, want %d", got, commits)
	}
	if got := testenv.Git(t, dir, "rev-list", "--min-parents=2", "lieutenant/runs"); got != "" {
		t.Errorf("history has merges: %s", got)
	}
	if got := lines(testenv.Git(t, dir, "ls-tree", "-r", "--name-only", "lieutenant/runs")); len(got) != files {
		t.Errorf("history has %d files, want %d:\n%s", len(got), files, strings.Join(got, "\n"))
	}
	fsck(t, dir)
}

// TestPutRacesTheGitCLI runs Puts while a git CLI writer commits to the
// same branch with `git update-ref <ref> <new> <old>`, git's own
// compare-and-swap. Both sides must keep every commit they reported.
func TestPutRacesTheGitCLI(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	if _, err := h.Put(ctx, "runs/production/seed.yaml", []byte("seed\n"), "seed"); err != nil {
		t.Fatal(err)
	}

	const puts, cliCommits = 15, 15
	var cliErr error
	var cliDone []string
	var wg sync.WaitGroup
	wg.Go(func() {
		run := func(args ...string) (string, error) {
			out, err := testenv.GitCommand(dir, args...).CombinedOutput()
			return strings.TrimSpace(string(out)), err
		}
		for len(cliDone) < cliCommits {
			tip, err := run("rev-parse", "lieutenant/runs")
			if err != nil {
				cliErr = fmt.Errorf("rev-parse: %v: %s", err, tip)
				return
			}
			c, err := run("commit-tree", "-p", tip, "-m", fmt.Sprintf("cli %d", len(cliDone)), tip+"^{tree}")
			if err != nil {
				cliErr = fmt.Errorf("commit-tree: %v: %s", err, c)
				return
			}
			// Fails when lieutenant moved the branch or holds its lock;
			// then try again from the new tip, as a script would.
			if _, err := run("update-ref", "refs/heads/lieutenant/runs", c, tip); err == nil {
				cliDone = append(cliDone, c)
			}
		}
	})
	for i := range puts {
		wg.Go(func() {
			if _, err := h.Put(ctx, fmt.Sprintf("runs/production/%02d.yaml", i), []byte("x\n"), fmt.Sprintf("put %d", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	for _, c := range cliDone {
		if err := testenv.GitCommand(dir, "merge-base", "--is-ancestor", c, "lieutenant/runs").Run(); err != nil {
			t.Errorf("git CLI commit %s was lost", c)
		}
	}
	checkLinearHistory(t, dir, 1+puts+cliCommits, 1+puts)
}

// TestPutFromOtherProcesses runs Puts in two child processes (this test
// binary, see putFromChild) and in this one at the same time.
func TestPutFromOtherProcesses(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	const perProcess = 10
	var cmds []*exec.Cmd
	for p := range 2 {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(),
			"LIEUTENANT_HELPER_PUT_REPO="+dir,
			"LIEUTENANT_HELPER_PUT_PREFIX=proc"+strconv.Itoa(p),
			"LIEUTENANT_HELPER_PUT_COUNT="+strconv.Itoa(perProcess))
		out := &strings.Builder{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("child %d:\n%s", p, out)
			}
		})
		cmds = append(cmds, cmd)
	}
	h := history(t, openRepo(t, dir))
	for i := range perProcess {
		if _, err := h.Put(ctx, fmt.Sprintf("runs/production/parent-%02d.yaml", i), []byte("x\n"), "parent"); err != nil {
			t.Error(err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("child process: %v", err)
		}
	}
	checkLinearHistory(t, dir, 3*perProcess, 3*perProcess)
}

func TestPutRejects(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	r := openRepo(t, dir)
	h := history(t, r)
	if _, err := h.Put(ctx, "runs/production/a.yaml", []byte("a\n"), "a"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"", ".", "/abs.yaml", "../x.yaml", "runs/../x.yaml", "runs//x.yaml", ".git/config", "runs/.git/x", "runs/GIT~1/x", "runs/a\\b.yaml", "runs/a\nb.yaml", "runs/production/a.yaml/x", "runs/production"} {
		if _, err := h.Put(ctx, p, []byte("x\n"), "bad"); err == nil {
			t.Errorf("Put(%q) succeeded", p)
		} else if !strings.HasPrefix(err.Error(), "write "+p+" to lieutenant/runs: ") {
			t.Errorf("Put(%q) = %q: want it to name the path and branch", p, err)
		}
	}
	if got := testenv.Git(t, dir, "rev-list", "--count", "lieutenant/runs"); got != "1" {
		t.Errorf("rejected Puts made commits: %s", got)
	}
	for _, b := range []string{"", "HEAD", "refs/heads/x", "a..b", "a b", "x.lock", "-x", "a/"} {
		if _, err := r.History(b); err == nil {
			t.Errorf("History(%q) succeeded", b)
		}
	}
	fsck(t, dir)
}

// TestPutBranchNameConflict: git cannot have refs/heads/lieutenant and
// refs/heads/lieutenant/runs at once, also when the first is only packed.
func TestPutBranchNameConflict(t *testing.T) {
	for _, packed := range []bool{false, true} {
		dir := testenv.NewGitRepo(t, deployFiles)
		testenv.Git(t, dir, "branch", "lieutenant")
		if packed {
			testenv.Git(t, dir, "pack-refs", "--all")
		}
		h := history(t, openRepo(t, dir))
		_, err := h.Put(context.Background(), "runs/production/x.yaml", []byte("x\n"), "x")
		if err == nil || !strings.Contains(err.Error(), "conflicts with existing ref refs/heads/lieutenant") {
			t.Errorf("packed=%v: Put = %v, want a ref name conflict", packed, err)
		}
		fsck(t, dir)
	}
}

// TestPutWaitsForAHeldLock: a ref lock another process holds is never
// taken over; the Put waits and gives up with the context.
func TestPutWaitsForAHeldLock(t *testing.T) {
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	tip, err := h.Put(context.Background(), "runs/production/a.yaml", []byte("a\n"), "a")
	if err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, ".git", "refs", "heads", "lieutenant", "runs.lock")
	if err := os.WriteFile(lock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = h.Put(ctx, "runs/production/b.yaml", []byte("b\n"), "b")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Put = %v, want the context's deadline", err)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Errorf("the other writer's lock is gone: %v", err)
	}
	if got := testenv.Git(t, dir, "rev-parse", "lieutenant/runs"); got != tip {
		t.Errorf("branch moved to %s while locked", got)
	}

	// Released: the next Put goes through.
	if err := os.Remove(lock); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Put(context.Background(), "runs/production/b.yaml", []byte("b\n"), "b"); err != nil {
		t.Fatal(err)
	}
	fsck(t, dir)
}

func TestPutWithIdentity(t *testing.T) {
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir)).WithIdentity(releases.Signature{Name: "CI <bot>", Email: "<ci@example.test>"})
	if _, err := h.Put(context.Background(), "runs/production/x.yaml", []byte("x\n"), "x"); err != nil {
		t.Fatal(err)
	}
	if got := testenv.Git(t, dir, "log", "-1", "--format=%an <%ae>", "lieutenant/runs"); got != "CI bot <ci@example.test>" {
		t.Errorf("author = %q", got)
	}
	fsck(t, dir)
}

// TestPutRefusesACheckedOutBranch: moving a branch under a work tree would
// let the next commit there drop the new records.
func TestPutRefusesACheckedOutBranch(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	r := openRepo(t, dir)
	h := history(t, r)
	if _, err := h.Put(ctx, "runs/production/a.yaml", []byte("a\n"), "a"); err != nil {
		t.Fatal(err)
	}
	wt := filepath.Join(t.TempDir(), "runs")
	testenv.Git(t, dir, "worktree", "add", "-q", wt, "lieutenant/runs")
	for _, from := range []*releases.History{h, history(t, openRepo(t, wt))} {
		_, err := from.Put(ctx, "runs/production/b.yaml", []byte("b\n"), "b")
		if err == nil || !strings.Contains(err.Error(), "lieutenant/runs is checked out") {
			t.Errorf("Put onto a branch checked out in a linked work tree = %v", err)
		}
	}
	testenv.Git(t, dir, "worktree", "remove", wt)

	testenv.Git(t, dir, "checkout", "-q", "lieutenant/runs")
	if _, err := h.Put(ctx, "runs/production/b.yaml", []byte("b\n"), "b"); err == nil || !strings.Contains(err.Error(), "is checked out") {
		t.Errorf("Put onto the current branch = %v", err)
	}
	// From a linked work tree, the main work tree's HEAD counts too.
	other := filepath.Join(t.TempDir(), "other")
	testenv.Git(t, dir, "worktree", "add", "-q", "--detach", other, "main")
	if _, err := history(t, openRepo(t, other)).Put(ctx, "runs/production/b.yaml", []byte("b\n"), "b"); err == nil {
		t.Error("Put from a linked work tree onto the main work tree's current branch succeeded")
	}
	testenv.Git(t, dir, "checkout", "-q", "main")
	if _, err := h.Put(ctx, "runs/production/b.yaml", []byte("b\n"), "b"); err != nil {
		t.Errorf("Put after switching back: %v", err)
	}
	fsck(t, dir)
}

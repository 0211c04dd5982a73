package releases_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// TestMain keeps the developer's git identity and config out of the
// in-process reads (the git CLI gets testenv.GitEnv instead).
func TestMain(m *testing.M) {
	for _, v := range []string{"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_DIR", "GIT_WORK_TREE"} {
		os.Unsetenv(v)
	}
	os.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	os.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	if dir := os.Getenv("LIEUTENANT_HELPER_PUT_REPO"); dir != "" {
		if err := putFromChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// putFromChild is the child process of TestPutFromOtherProcesses: the test
// binary started again with LIEUTENANT_HELPER_PUT_REPO set.
func putFromChild(dir string) error {
	n, err := strconv.Atoi(os.Getenv("LIEUTENANT_HELPER_PUT_COUNT"))
	if err != nil {
		return fmt.Errorf("LIEUTENANT_HELPER_PUT_COUNT: %w", err)
	}
	prefix := os.Getenv("LIEUTENANT_HELPER_PUT_PREFIX")
	r, err := releases.Open(dir)
	if err != nil {
		return err
	}
	defer r.Close()
	h, err := r.History(releases.DefaultHistoryBranch)
	if err != nil {
		return err
	}
	for i := range n {
		if _, err := h.Put(context.Background(), fmt.Sprintf("runs/production/%s-%02d.yaml", prefix, i), []byte("x\n"), prefix); err != nil {
			return err
		}
	}
	return nil
}

// deployFiles is a small deploy repository as the design describes it.
var deployFiles = map[string]string{
	"lieutenant.yaml":           "history_branch: lieutenant/runs\n",
	"releases/production.yaml":  "release: 2026.11.3\npackages:\n  - hello-web-1.1.0-1.x86_64\n",
	"inventory/production.yaml": "hosts:\n  web-1: {address: 10.0.1.11}\n",
	"playbooks/web.yaml":        "hosts: web\n",
}

func openRepo(t testing.TB, dir string) *releases.Repo {
	t.Helper()
	r, err := releases.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func history(t testing.TB, r *releases.Repo) *releases.History {
	t.Helper()
	h, err := r.History(releases.DefaultHistoryBranch)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// fsck fails the test unless `git fsck --strict` finds nothing wrong.
// Dangling objects (from attempts that lost a race) are not errors.
func fsck(t testing.TB, dir string) {
	t.Helper()
	out := testenv.Git(t, dir, "fsck", "--strict", "--no-progress", "--no-dangling")
	if strings.TrimSpace(out) != "" {
		t.Fatalf("git fsck --strict:\n%s", out)
	}
}

// userState is everything a history write must leave alone.
type userState struct {
	head, branch, status, index, staged string
}

func captureUserState(t testing.TB, dir string) userState {
	t.Helper()
	return userState{
		head:   testenv.Git(t, dir, "rev-parse", "HEAD"),
		branch: testenv.Git(t, dir, "symbolic-ref", "HEAD"),
		status: testenv.Git(t, dir, "status", "--porcelain=v1", "--untracked-files=all"),
		index:  testenv.Git(t, dir, "ls-files", "--stage", "--debug"),
		staged: testenv.Git(t, dir, "diff", "--cached", "--binary"),
	}
}

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

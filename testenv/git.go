package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Test identity set in every repository NewGitRepo makes.
const (
	GitUserName  = "Test Engineer"
	GitUserEmail = "engineer@example.test"
)

// GitEnv is the environment the git helpers run git in: the caller's
// environment without any GIT_* variable (a test run from a git hook would
// otherwise inherit GIT_DIR and write to the wrong repository), with no
// system or global config (so a developer's ~/.gitconfig, hooks, signing or
// default branch cannot change the outcome), English messages and no
// prompts.
func GitEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "LC_ALL=") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ADVICE=0",
		"LC_ALL=C",
		"LANG=C",
	)
}

// GitCommand returns a git command to run in dir with GitEnv. Use it where
// Git cannot be, such as in goroutines other than the test's.
func GitCommand(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = GitEnv()
	return cmd
}

// Git runs git in dir and returns its standard output without trailing
// newlines. A failure fails the test with git's output.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	RequireBinaries(t, "git")
	cmd := GitCommand(dir, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("git %s (in %s): %v\n%s%s", strings.Join(args, " "), dir, err, stdout.String(), stderr.String())
	}
	return strings.TrimRight(stdout.String(), "\n")
}

// NewGitRepo makes a repository in a new temporary directory with branch
// main checked out and a local user.name/user.email (GitUserName,
// GitUserEmail), commits files (slash-separated path -> content) as
// "initial commit", and returns the directory. With no files the repository
// has no commits at all.
func NewGitRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	RequireBinaries(t, "git")
	dir := t.TempDir()
	Git(t, dir, "init", "--quiet", "-b", "main")
	Git(t, dir, "config", "user.name", GitUserName)
	Git(t, dir, "config", "user.email", GitUserEmail)
	if len(files) > 0 {
		GitCommit(t, dir, files, "initial commit")
	}
	return dir
}

// NewBareGitRepo makes a bare repository holding a clone of what
// NewGitRepo(t, files) would hold, with the same local identity, and
// returns its directory.
func NewBareGitRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	bare := filepath.Join(t.TempDir(), "deploy.git")
	if len(files) == 0 {
		Git(t, filepath.Dir(bare), "init", "--quiet", "--bare", "-b", "main", bare)
	} else {
		src := NewGitRepo(t, files)
		Git(t, filepath.Dir(bare), "clone", "--quiet", "--bare", src, bare)
	}
	Git(t, bare, "config", "user.name", GitUserName)
	Git(t, bare, "config", "user.email", GitUserEmail)
	return bare
}

// WriteFiles writes files (slash-separated path -> content) under dir,
// creating directories, without touching git.
func WriteFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// GitCommit writes files into the work tree at dir, commits exactly those
// paths with message msg on the current branch, and returns the new
// commit's full hash.
func GitCommit(t testing.TB, dir string, files map[string]string, msg string) string {
	t.Helper()
	WriteFiles(t, dir, files)
	paths := make([]string, 0, len(files))
	for name := range files {
		paths = append(paths, filepath.FromSlash(name))
	}
	sort.Strings(paths)
	Git(t, dir, append([]string{"add", "--"}, paths...)...)
	// --only commits these paths even when other changes are staged.
	Git(t, dir, append([]string{"commit", "--quiet", "--no-verify", "-m", msg, "--only", "--"}, paths...)...)
	return Git(t, dir, "rev-parse", "HEAD")
}

// RunIDs lists, with the git CLI, the runs of environment env recorded on
// rev (such as "lieutenant/runs") of the repository at dir; none when
// there are none or rev does not exist yet.
func RunIDs(dir, rev, env string) []string {
	out, err := GitCommand(dir, "ls-tree", "--name-only", rev, "runs/"+env+"/").Output()
	if err != nil {
		return nil
	}
	var ids []string
	for _, p := range strings.Fields(string(out)) {
		if id, ok := strings.CutSuffix(filepath.Base(p), ".yaml"); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// RunRecord reads, with the git CLI, run id's record on rev as a person
// would: `git show` of the run's file, then of each of its hosts' files.
func RunRecord(dir, rev, env, id string) (string, error) {
	run, err := GitCommand(dir, "show", rev+":runs/"+env+"/"+id+".yaml").Output()
	if err != nil {
		return "", err
	}
	text := string(run)
	hosts, _ := GitCommand(dir, "ls-tree", "--name-only", rev, "runs/"+env+"/"+id+"/").Output()
	for _, p := range strings.Fields(string(hosts)) {
		h, err := GitCommand(dir, "show", rev+":"+p).Output()
		if err != nil {
			return "", err
		}
		text += "---\n" + string(h)
	}
	return text, nil
}

package releases_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// isolateGitConfig points the global config at a file of the test's own and
// turns the system config off, for this process (go-git reads config in
// process, not through the git CLI).
func isolateGitConfig(t *testing.T, global string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "gitconfig")
	if err := os.WriteFile(file, []byte(global), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", file)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_AUTHOR_NAME", "")
	t.Setenv("GIT_AUTHOR_EMAIL", "")
}

func TestIdentity(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	local := testenv.NewGitRepo(t, deployFiles) // has a local user.name/email
	bare := testenv.NewGitRepo(t, deployFiles)
	testenv.Git(t, bare, "config", "--unset", "user.name")
	testenv.Git(t, bare, "config", "--unset", "user.email")

	t.Run("repository config first", func(t *testing.T) {
		isolateGitConfig(t, "[user]\n\tname = Global Person\n\temail = global@example.test\n")
		got := openRepo(t, local).Identity()
		if want := (releases.Signature{Name: testenv.GitUserName, Email: testenv.GitUserEmail}); got != want {
			t.Errorf("Identity = %v, want %v", got, want)
		}
	})
	t.Run("then global config", func(t *testing.T) {
		isolateGitConfig(t, "[user]\n\tname = Global Person\n[user]\n\temail = global@example.test\n")
		got := openRepo(t, bare).Identity()
		if want := (releases.Signature{Name: "Global Person", Email: "global@example.test"}); got != want {
			t.Errorf("Identity = %v, want %v", got, want)
		}
	})
	t.Run("environment above all", func(t *testing.T) {
		isolateGitConfig(t, "")
		t.Setenv("GIT_AUTHOR_NAME", "CI Bot")
		t.Setenv("GIT_AUTHOR_EMAIL", "ci@example.test")
		got := openRepo(t, local).Identity()
		if want := (releases.Signature{Name: "CI Bot", Email: "ci@example.test"}); got != want {
			t.Errorf("Identity = %v, want %v", got, want)
		}
	})
	t.Run("fallback to the login", func(t *testing.T) {
		isolateGitConfig(t, "")
		t.Setenv("USER", "deployer")
		r := openRepo(t, bare)
		if got, want := r.Identity(), (releases.Signature{Name: "deployer", Email: "deployer@" + host}); got != want {
			t.Errorf("Identity = %v, want %v", got, want)
		}
		op := r.Operator()
		if op.User != "deployer" || op.Host != host || op.Name != "deployer" {
			t.Errorf("Operator = %+v", op)
		}
	})
}

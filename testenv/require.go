package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where a missing tool
// is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireBinaries returns the paths of the named programs. When one is missing
// the test is skipped with a message saying how to install it, except under
// CI, where a missing program fails the test: CI installs everything through
// `make test`, so a skip there would hide a broken install step.
func RequireBinaries(t testing.TB, names ...string) map[string]string {
	t.Helper()
	paths := make(map[string]string, len(names))
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			// Debian puts daemons in sbin, which a non-root PATH may lack.
			for _, dir := range []string{"/usr/sbin/", "/sbin/"} {
				if _, serr := os.Stat(dir + n); serr == nil {
					p, err = dir+n, nil
					break
				}
			}
		}
		if err != nil {
			Unavailable(t, n+" is not installed; `make test` installs it (Debian: apt-get install haproxy openssh-server git)")
		}
		paths[n] = p
	}
	return paths
}

// Unavailable ends a test that cannot run on this machine: skipped, with
// msg saying what is missing, except under CI, where the machine is set up
// by `make test` and anything missing is a failure, never a silent skip.
func Unavailable(t testing.TB, msg string) {
	t.Helper()
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

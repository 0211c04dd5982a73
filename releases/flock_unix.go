//go:build unix

package releases

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// repoLockFile is the file lieutenant processes flock in a git directory
// to decide, one at a time, on locks and refs a dead process left. The
// kernel releases a dead process's flock, so it never goes stale itself.
const repoLockFile = "lieutenant-refs.flock"

// withRepoLock runs fn while holding the repository's flock.
func (r *Repo) withRepoLock(fn func() error) error {
	p := filepath.Join(r.commonDir(), repoLockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return fmt.Errorf("lock %s: %w", p, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", p, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

// removeUnlessLocked removes the file at p unless a process holds a flock
// on it, as go-git does on a ref while it writes it.
func removeUnlessLocked(p string) {
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return
	}
	if fi, err := f.Stat(); err == nil && fi.Size() == 0 {
		_ = os.Remove(p)
	}
}

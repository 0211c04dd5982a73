//go:build !unix

package releases

// withRepoLock runs fn: without flock, lieutenant processes on one
// repository rely on the ref lock's age alone.
func (r *Repo) withRepoLock(fn func() error) error { return fn() }

// removeUnlessLocked leaves the file: without flock, a writer cannot be
// told from a dead one.
func removeUnlessLocked(string) {}

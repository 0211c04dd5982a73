package releases

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

// ErrBranchMoved is returned when a compare-and-swap ref update finds the
// branch at another commit than the one the caller built on.
var ErrBranchMoved = errors.New("branch moved")

// staleLockAge is how old a ref lock must be to be taken for one a dead
// process left: git holds a ref lock for well under a millisecond, and
// lieutenant for as long as one ref update takes. A writer that finds a
// lock waits up to that long for it to go, then breaks it.
const staleLockAge = 5 * time.Second

// readRef returns the commit a branch points at, or the zero hash when the
// branch does not exist. Called with r.mu held.
func (r *Repo) readRef(name plumbing.ReferenceName) (plumbing.Hash, error) {
	ref, err := r.storage.Reference(name)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return plumbing.ZeroHash, nil
	}
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("read %s: %w", name, err)
	}
	if ref.Type() != plumbing.HashReference {
		return plumbing.ZeroHash, fmt.Errorf("read %s: is a symbolic ref to %s", name, ref.Target())
	}
	return ref.Hash(), nil
}

// casRef points name at newHash if it points at oldHash now (oldHash zero:
// if it does not exist), using git's lockfile protocol: create
// <ref>.lock exclusively, check the current value, rename the lock over the
// ref. git, `git pack-refs` and other lieutenant processes take the same
// lock, so the check and the write are atomic for all of them. The lock is
// created with its content in one step (a hard link to a file written
// before), so that nobody, go-git included, ever reads an empty ref or
// lock file, whenever the process is killed. Called with r.mu held.
func (r *Repo) casRef(ctx context.Context, name plumbing.ReferenceName, newHash, oldHash plumbing.Hash) error {
	if oldHash.IsZero() {
		if err := r.checkRefNameFree(name); err != nil {
			return err
		}
	}
	refPath := filepath.Join(r.commonDir(), filepath.FromSlash(name.String()))
	lockPath := refPath + ".lock"
	ours, err := r.acquireRefLock(ctx, lockPath, newHash.String()+"\n")
	if err != nil {
		return err
	}
	// Another process could only have taken the lock away by judging it
	// stale, which it is not while this one holds it; each step checks it
	// still is this one's lock all the same, and never removes another's.
	mine := func() bool {
		fi, err := os.Stat(lockPath)
		return err == nil && os.SameFile(fi, ours)
	}
	renamed := false
	defer func() {
		if !renamed && mine() {
			_ = os.Remove(lockPath)
		}
	}()
	// Under the lock the value cannot change: every writer of this ref
	// (and pack-refs, which deletes loose refs) needs the lock first.
	cur, err := r.readRef(name)
	if err != nil {
		return err
	}
	if cur != oldHash {
		return fmt.Errorf("%w: %s is at %s, not %s", ErrBranchMoved, name, describeHash(cur), describeHash(oldHash))
	}
	if !mine() {
		return fmt.Errorf("%w: the lock of %s was taken by another process", ErrBranchMoved, name)
	}
	if err := os.Rename(lockPath, refPath); err != nil {
		return fmt.Errorf("update %s: %w", name, err)
	}
	renamed = true
	return nil
}

func describeHash(h plumbing.Hash) string {
	if h.IsZero() {
		return "nothing (absent)"
	}
	return h.String()[:shortHashLen]
}

// acquireRefLock creates lockPath holding content, exclusively, waiting
// with backoff while another writer holds it, and breaking it once it is
// older than staleLockAge. It returns the lock file's identity.
func (r *Repo) acquireRefLock(ctx context.Context, lockPath, content string) (os.FileInfo, error) {
	gitDir := r.commonDir()
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o777); err != nil {
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	tmp, err := os.CreateTemp(gitDir, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(content)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	deadline := time.Now().Add(staleLockAge + time.Second)
	backoff := time.Millisecond
	for {
		// A link keeps the file's time: it must say when the lock was
		// taken, not when the file was written, or the lock would look
		// stale to others from the start.
		now := time.Now()
		if err := os.Chtimes(tmp.Name(), now, now); err != nil {
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		err := os.Link(tmp.Name(), lockPath)
		if err == nil {
			return os.Stat(tmp.Name())
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		broke, err := r.breakStaleLock(lockPath)
		if err != nil {
			return nil, err
		}
		if broke {
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock %s in the git directory of %s: held for over %s by a process that is alive: another process is updating the branch (remove the file if no git or lieutenant process is running)",
				lockPath, r.path, staleLockAge)
		}
		if err := sleep(ctx, backoff+rand.N(backoff)); err != nil {
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// commonDir is the git directory that holds refs and objects: the
// repository's own, or for a linked work tree the main one's (its
// "commondir" file names it).
func (r *Repo) commonDir() string {
	root := r.storage.Filesystem().Root()
	if b, err := os.ReadFile(filepath.Join(root, "commondir")); err == nil {
		if dir := strings.TrimSpace(string(b)); filepath.IsAbs(dir) {
			return dir
		} else if dir != "" {
			return filepath.Join(root, dir)
		}
	}
	return root
}

// tempPrefix names the files lieutenant writes in the git directory before
// linking them into place.
const tempPrefix = "lieutenant-tmp-"

// breakStaleLock removes the ref lock at lockPath if it is older than
// staleLockAge, and reports whether the lock is gone. Lieutenant processes
// decide this one at a time (see withRepoLock), so none removes the fresh
// lock another just took in place of a stale one.
func (r *Repo) breakStaleLock(lockPath string) (gone bool, err error) {
	err = r.withRepoLock(func() error {
		fi, err := os.Stat(lockPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			gone = true
			return nil
		case err != nil:
			return fmt.Errorf("lock %s: %w", lockPath, err)
		case time.Since(fi.ModTime()) < staleLockAge:
			return nil
		}
		if err := os.Remove(lockPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove the stale lock %s: %w", lockPath, err)
		}
		gone = true
		return nil
	})
	return gone, err
}

// repairRefs clears what a killed process can leave in the git directory
// and what would otherwise stop every later command: ref locks older than
// staleLockAge, empty refs nobody is writing (go-git rewrites refs such as
// remote-tracking ones in place, under flock), and lieutenant's own
// temporary files and push refs. It only removes refs lieutenant can
// recreate: remote-tracking ones and its own.
func (r *Repo) repairRefs() error {
	gitDir := r.commonDir()
	return r.withRepoLock(func() error {
		if tmps, _ := filepath.Glob(filepath.Join(gitDir, tempPrefix+"*")); len(tmps) > 0 {
			for _, t := range tmps {
				if fi, err := os.Stat(t); err == nil && time.Since(fi.ModTime()) > time.Minute {
					_ = os.Remove(t)
				}
			}
		}
		return filepath.WalkDir(filepath.Join(gitDir, "refs"), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil // a directory removed meanwhile is nothing to repair
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			rel := filepath.ToSlash(strings.TrimPrefix(p, gitDir+string(filepath.Separator)))
			switch {
			case strings.HasSuffix(p, ".lock"):
				if time.Since(fi.ModTime()) > staleLockAge {
					_ = os.Remove(p)
				}
			case fi.Size() == 0 && (strings.HasPrefix(rel, "refs/remotes/") || strings.HasPrefix(rel, "refs/lieutenant/")):
				removeUnlessLocked(p)
			case strings.HasPrefix(rel, "refs/lieutenant/push/") && time.Since(fi.ModTime()) > 2*pushTimeout:
				_ = os.Remove(p)
			}
			return nil
		})
	})
}

// checkRefNameFree refuses to create refs/heads/a/b when refs/heads/a or
// refs/heads/a/b/c exists, which git forbids because loose refs are files
// and directories of the same names. go-git would create it when the
// conflicting ref is only in packed-refs. Called with r.mu held.
func (r *Repo) checkRefNameFree(name plumbing.ReferenceName) error {
	names, err := r.refNames()
	if err != nil {
		return err
	}
	n := name.String()
	for _, o := range names {
		if strings.HasPrefix(n, o+"/") || strings.HasPrefix(o, n+"/") {
			return fmt.Errorf("cannot create %s: it conflicts with existing ref %s", n, o)
		}
	}
	return nil
}

// refNames lists every ref, loose and packed. It does not use go-git's
// IterReferences, which reads <ref>.lock files as refs and so fails with
// "ref file is empty" whenever any writer, git included, holds a ref lock.
// Called with r.mu held.
func (r *Repo) refNames() ([]string, error) {
	fsys := r.storage.Filesystem()
	var names []string
	var walk func(dir string) error
	walk = func(dir string) error {
		infos, err := fsys.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile, as git prunes empty directories
		}
		if err != nil {
			return err
		}
		for _, fi := range infos {
			p := dir + "/" + fi.Name()
			switch {
			case fi.IsDir():
				if err := walk(p); err != nil {
					return err
				}
			case !strings.HasSuffix(fi.Name(), ".lock"):
				names = append(names, p)
			}
		}
		return nil
	}
	if err := walk("refs"); err != nil {
		return nil, fmt.Errorf("list refs: %w", err)
	}
	f, err := fsys.Open("packed-refs")
	if errors.Is(err, fs.ErrNotExist) {
		return names, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list refs: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "<hash> <name>", "^<peeled hash>" or "# comment".
		line := sc.Text()
		if _, name, ok := strings.Cut(line, " "); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "^") {
			names = append(names, name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("list refs: read packed-refs: %w", err)
	}
	return names, nil
}

// checkNotCheckedOut refuses to move a branch that a work tree has checked
// out: its index would then lack the new files, and the next commit made
// there would silently drop them from the branch tip. (git refuses to push
// into a checked-out branch for the same reason.) Called with r.mu held.
func (r *Repo) checkNotCheckedOut(name plumbing.ReferenceName) error {
	fsys := r.storage.Filesystem()
	heads := []string{}
	if !r.bare {
		heads = append(heads, "HEAD") // this work tree's own
	}
	// Linked work trees keep theirs in the common dir, under worktrees/.
	if infos, err := fsys.ReadDir("worktrees"); err == nil {
		for _, fi := range infos {
			heads = append(heads, "worktrees/"+fi.Name()+"/HEAD")
		}
	}
	// From a linked work tree, the main work tree's HEAD is the common
	// dir's, which the storage filesystem does not map "HEAD" to.
	if b, err := readFile(fsys, "commondir"); err == nil {
		heads = append(heads, filepath.Join(fsys.Root(), strings.TrimSpace(string(b)), "HEAD"))
	}
	for _, head := range heads {
		var b []byte
		var err error
		if filepath.IsAbs(head) {
			b, err = os.ReadFile(head)
		} else {
			b, err = readFile(fsys, head)
		}
		if err != nil {
			continue // not a work tree, or being removed
		}
		if target, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "ref: "); ok && target == name.String() {
			return fmt.Errorf("%s is checked out in a work tree (see `git worktree list`); switch that work tree to another branch: lieutenant does not move a checked-out branch, because a commit made there would drop the files it has not seen", name.Short())
		}
	}
	return nil
}

func readFile(fsys billy.Filesystem, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

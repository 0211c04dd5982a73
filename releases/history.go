package releases

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// DefaultHistoryBranch is the branch run records go to unless lieutenant.yaml
// names another.
const DefaultHistoryBranch = "lieutenant/runs"

// ErrNoHistory is returned when the history branch does not exist yet, that
// is before the first Put.
var ErrNoHistory = errors.New("history branch does not exist yet")

// maxPutAttempts bounds how often Put rebuilds on a branch that keeps
// moving. Each round some writer wins, so this many attempts get a write
// through a crowd of about as many concurrent writers.
const maxPutAttempts = 32

// History is a branch that lieutenant appends files to. The branch is never
// checked out: it is read and written through the object database, so the
// user's work tree, index and HEAD are untouched. History is safe for
// concurrent use.
type History struct {
	repo     *Repo
	branch   string
	ref      plumbing.ReferenceName
	identity Signature
}

// History returns the history branch named branch (a branch name such as
// DefaultHistoryBranch, without refs/heads/). Commits are made as
// r.Identity(); see WithIdentity. The branch need not exist yet.
func (r *Repo) History(branch string) (*History, error) {
	ref := plumbing.NewBranchReferenceName(branch)
	if branch == "" || branch == "HEAD" || strings.HasPrefix(branch, "refs/") || ref.Validate() != nil {
		return nil, fmt.Errorf("history branch %q: not a valid branch name", branch)
	}
	return &History{repo: r, branch: branch, ref: ref, identity: r.Identity()}, nil
}

// WithIdentity returns a copy of h that commits as sig.
func (h *History) WithIdentity(sig Signature) *History {
	c := *h
	c.identity = Signature{Name: sanitizeIdent(sig.Name, h.identity.Name), Email: sanitizeIdent(sig.Email, h.identity.Email)}
	return &c
}

// Branch is the branch name, e.g. "lieutenant/runs".
func (h *History) Branch() string { return h.branch }

// Identity is who h commits as.
func (h *History) Identity() Signature { return h.identity }

// Put commits data as the file at p (slash-separated, e.g.
// "runs/production/2026-11-28T10-00-00Z-3f2a.yaml") on top of the branch
// tip, keeping every other file, and returns the new commit's hash. The
// first Put creates the branch as an orphan holding only that file.
//
// The branch is moved by compare-and-swap. If another writer moved it in
// the meantime, the change is rebuilt on the new tip and tried again, up to
// a bound; their commits are kept. If the tip already holds exactly data
// at p, nothing is committed and the tip's hash is returned. Put refuses to
// move the branch while a work tree has it checked out.
func (h *History) Put(ctx context.Context, p string, data []byte, message string) (string, error) {
	hash, err := h.put(ctx, p, data, message)
	if err != nil {
		return "", fmt.Errorf("write %s to %s: %w", p, h.branch, err)
	}
	return hash, nil
}

func (h *History) put(ctx context.Context, p string, data []byte, message string) (string, error) {
	parts, err := splitTreePath(p)
	if err != nil {
		return "", err
	}
	message = strings.TrimSpace(message)
	if message == "" {
		message = "lieutenant: write " + p
	}
	message += "\n"

	r := h.repo
	if err := r.locked(func() error { return r.checkNotCheckedOut(h.ref) }); err != nil {
		return "", err
	}
	var blob plumbing.Hash
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		var commit plumbing.Hash
		err := r.locked(func() error {
			if blob.IsZero() {
				b := r.storage.NewEncodedObject()
				b.SetType(plumbing.BlobObject)
				w, err := b.Writer()
				if err != nil {
					return err
				}
				if _, err := w.Write(data); err != nil {
					return err
				}
				if err := w.Close(); err != nil {
					return err
				}
				if blob, err = r.storeObject(b); err != nil {
					return fmt.Errorf("write blob: %w", err)
				}
			}
			tip, err := r.readRef(h.ref)
			if err != nil {
				return err
			}
			var base plumbing.Hash
			var parents []plumbing.Hash
			if !tip.IsZero() {
				c, err := object.GetCommit(r.storage, tip)
				if err != nil {
					return fmt.Errorf("read tip %s: %w", tip, err)
				}
				base, parents = c.TreeHash, []plumbing.Hash{tip}
			}
			tree, changed, err := r.putInTree(base, "", parts, blob)
			if err != nil {
				return err
			}
			if !changed {
				commit = tip
				return nil
			}
			// Git records seconds; dropping the rest keeps the object
			// identical to what it decodes back to.
			now := time.Now().Truncate(time.Second)
			sig := object.Signature{Name: h.identity.Name, Email: h.identity.Email, When: now}
			c := &object.Commit{Author: sig, Committer: sig, Message: message, TreeHash: tree, ParentHashes: parents}
			if commit, err = r.writeObject(c); err != nil {
				return fmt.Errorf("write commit: %w", err)
			}
			return r.casRef(ctx, h.ref, commit, tip)
		})
		if err == nil {
			return commit.String(), nil
		}
		if !errors.Is(err, ErrBranchMoved) {
			return "", err
		}
		if attempt == maxPutAttempts {
			return "", fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		// Jitter so that writers who lost together do not collide again.
		if err := sleep(ctx, rand.N(time.Duration(min(attempt, 10))*2*time.Millisecond)+time.Millisecond); err != nil {
			return "", err
		}
	}
}

// Snapshot returns the branch tip as a Snapshot, or an error wrapping
// ErrNoHistory before the first Put.
func (h *History) Snapshot(ctx context.Context) (*Snapshot, error) {
	snap, err := h.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("read history branch %s: %w", h.branch, err)
	}
	return snap, nil
}

func (h *History) snapshot(ctx context.Context) (*Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var snap *Snapshot
	err := h.repo.locked(func() error {
		// The ref is read exactly: a revision lookup could pick a tag or
		// a hash prefix that happens to look like the branch name.
		tip, err := h.repo.readRef(h.ref)
		if err != nil {
			return err
		}
		if tip.IsZero() {
			return ErrNoHistory
		}
		snap, err = h.repo.snapshotAt(h.branch, tip)
		return err
	})
	return snap, err
}

// Get returns the file at p on the branch tip. A missing file, or a missing
// branch, gives an error wrapping fs.ErrNotExist.
func (h *History) Get(ctx context.Context, p string) ([]byte, error) {
	snap, err := h.snapshot(ctx)
	if errors.Is(err, ErrNoHistory) {
		return nil, &NotFoundError{Path: p, At: h.branch + " (the branch does not exist yet)"}
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", p, h.branch, err)
	}
	return snap.ReadFile(p)
}

// List returns the paths of the files directly in dir on the branch tip,
// sorted; run records sort by time because run IDs start with it. A
// missing directory or branch lists nothing.
func (h *History) List(ctx context.Context, dir string) ([]string, error) {
	snap, err := h.snapshot(ctx)
	if errors.Is(err, ErrNoHistory) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s on %s: %w", dir, h.branch, err)
	}
	entries, err := snap.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			paths = append(paths, path.Join(dir, e.Name()))
		}
	}
	return paths, nil
}

// splitTreePath checks that p can be a file in a tree that
// `git fsck --strict` accepts and that every checkout can hold.
func splitTreePath(p string) ([]string, error) {
	if !fs.ValidPath(p) || p == "." {
		return nil, fmt.Errorf("invalid path %q: want a relative slash-separated file path", p)
	}
	parts := strings.Split(p, "/")
	for _, part := range parts {
		if err := checkPathElem(part); err != nil {
			return nil, fmt.Errorf("invalid path %q: %w", p, err)
		}
	}
	return parts, nil
}

// checkPathElem rejects what fsck flags (".git" in any spelling) by
// rejecting all dot-files, plus separators and control characters.
func checkPathElem(e string) error {
	switch {
	case e == "" || e == "." || e == "..":
		return fmt.Errorf("element %q is empty or a dot", e)
	case strings.HasPrefix(e, "."):
		return fmt.Errorf("element %q starts with a dot", e)
	case strings.ContainsAny(e, `/\`):
		return fmt.Errorf("element %q contains a path separator", e)
	case strings.EqualFold(e, "git~1"):
		return fmt.Errorf("element %q is reserved by git", e)
	}
	for _, c := range e {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("element %q contains a control character", e)
		}
	}
	return nil
}

// putInTree returns the hash of tree base (zero: an empty tree) with the
// blob at path parts, writing the trees that change. changed is false when
// base holds exactly that blob there already. Called with r.mu held.
func (r *Repo) putInTree(base plumbing.Hash, dir string, parts []string, blob plumbing.Hash) (_ plumbing.Hash, changed bool, _ error) {
	var entries []object.TreeEntry
	if !base.IsZero() {
		t, err := object.GetTree(r.storage, base)
		if err != nil {
			return plumbing.ZeroHash, false, fmt.Errorf("read tree %s: %w", base, err)
		}
		entries = slices.Clone(t.Entries)
	}
	name := parts[0]
	here := path.Join(dir, name)
	i := slices.IndexFunc(entries, func(e object.TreeEntry) bool { return e.Name == name })
	entry := object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: blob}
	if len(parts) == 1 {
		if i >= 0 {
			switch e := entries[i]; {
			case e.Mode == filemode.Dir || e.Mode == filemode.Submodule:
				return plumbing.ZeroHash, false, fmt.Errorf("%s is a directory on the branch", here)
			case e.Mode == filemode.Regular && e.Hash == blob:
				return base, false, nil
			}
		}
	} else {
		var sub plumbing.Hash
		if i >= 0 {
			if entries[i].Mode != filemode.Dir {
				return plumbing.ZeroHash, false, fmt.Errorf("%s is a file on the branch, not a directory", here)
			}
			sub = entries[i].Hash
		}
		h, changed, err := r.putInTree(sub, here, parts[1:], blob)
		if err != nil || !changed {
			return base, false, err
		}
		entry = object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h}
	}
	if i >= 0 {
		entries[i] = entry
	} else {
		entries = append(entries, entry)
	}
	// Git's order, in which a directory sorts as if its name ended in "/";
	// fsck --strict checks it.
	sort.Sort(object.TreeEntrySorter(entries))
	h, err := r.writeObject(&object.Tree{Entries: entries})
	if err != nil {
		return plumbing.ZeroHash, false, fmt.Errorf("write tree %s: %w", path.Join(".", dir), err)
	}
	return h, true, nil
}

type encoder interface {
	Encode(plumbing.EncodedObject) error
}

// writeObject encodes o into the object database. Called with r.mu held.
func (r *Repo) writeObject(o encoder) (plumbing.Hash, error) {
	obj := r.storage.NewEncodedObject()
	if err := o.Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return r.storeObject(obj)
}

// storeObject writes obj unless the database has it already (go-git would
// write and then discard a temporary copy). Loose objects are written to a
// temporary file and renamed, so concurrent writers of the same object are
// harmless. Called with r.mu held.
func (r *Repo) storeObject(obj plumbing.EncodedObject) (plumbing.Hash, error) {
	if r.storage.HasEncodedObject(obj.Hash()) == nil {
		return obj.Hash(), nil
	}
	return r.storage.SetEncodedObject(obj)
}

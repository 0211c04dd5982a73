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

// errStale asks update to decide again after a fetch.
var errStale = errors.New("decided on a stale tip")

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
	// warn is told, in one line each, of files readers skip; nil: nobody.
	warn func(msg string)
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

// WithWarnings returns a copy of h that tells warn, in one line each, of
// the files on the branch its readers skip, such as a README.yaml among
// an environment's runs: a stray file must not stop lieutenant from
// reading the runs next to it.
func (h *History) WithWarnings(warn func(msg string)) *History {
	c := *h
	c.warn = warn
	return &c
}

func (h *History) warnf(format string, args ...any) {
	if h.warn != nil {
		h.warn(fmt.Sprintf(format, args...))
	}
}

// Branch is the branch name, e.g. "lieutenant/runs".
func (h *History) Branch() string { return h.branch }

// Identity is who h commits as.
func (h *History) Identity() Signature { return h.identity }

// Change computes a file's new content from its content on the branch tip
// (nil when the file is absent). Returning nil removes the file; returning
// the current content changes nothing. An error cancels the write and is
// returned as is. A change may be asked again, on a newer tip, when another
// writer got there first, so it must only compute.
type Change func(current []byte) ([]byte, error)

// Tip is the branch tip a write is built on, as Edits and Guards read it.
type Tip interface {
	// ReadFile returns the file at path; nil when there is none.
	ReadFile(path string) ([]byte, error)
	// TreeHash returns the hash of the directory at path ("" for the
	// root); zero when there is none.
	TreeHash(path string) (plumbing.Hash, error)
}

// Edits computes one commit's changes from the branch tip it is built on.
// The result maps paths
// (slash-separated, e.g. "runs/production/2026-11-28T10-00-00Z-3f2a.yaml")
// to their new contents; a nil content removes the file, and a file's
// current content changes nothing. An error cancels the write and is
// returned as is. Edits may be asked again, on a newer tip, when another
// writer got there first, so they must only compute.
type Edits func(tip Tip) (map[string][]byte, error)

// Put commits data as the file at p on top of the branch tip, keeping every
// other file, and returns the new commit's hash. See Commit.
func (h *History) Put(ctx context.Context, p string, data []byte, message string) (string, error) {
	if data == nil {
		data = []byte{}
	}
	return h.Update(ctx, p, func([]byte) ([]byte, error) { return data, nil }, message)
}

// Update commits the file at p as change makes it from the branch tip's
// version. See Commit.
func (h *History) Update(ctx context.Context, p string, change Change, message string) (string, error) {
	return h.UpdateIf(ctx, p, nil, change, message)
}

// Guard vetoes a write by returning an error, after reading other files
// of the same tip the write is built on. The compare-and-swap makes the
// check and the write one step.
type Guard func(tip Tip) error

// UpdateIf is Update with a guard checked on the same tip: a run's record
// is written only while the run still holds its lock, say.
func (h *History) UpdateIf(ctx context.Context, p string, guard Guard, change Change, message string) (string, error) {
	if _, err := splitTreePath(p); err != nil {
		return "", fmt.Errorf("write %s to %s: %w", p, h.where(), err)
	}
	return h.Commit(ctx, p, func(tip Tip) (map[string][]byte, error) {
		if guard != nil {
			if err := guard(tip); err != nil {
				return nil, err
			}
		}
		cur, err := tip.ReadFile(p)
		if err != nil {
			return nil, err
		}
		data, err := change(cur)
		if err != nil {
			return nil, err
		}
		return map[string][]byte{p: data}, nil
	}, message)
}

// Commit makes one commit of the changes edits computes from the branch
// tip, keeping every other file, and returns the new commit's hash (the
// tip's when nothing changed); what names the files for messages. The first write creates the branch as an
// orphan holding only those files.
//
// The branch is moved by compare-and-swap: locally through git's ref lock,
// and with a remote (see Repo.UseRemote) by a push the remote refuses when
// its branch moved. Either way, when another writer got there first, the
// branch is read again, edits are asked again on the new tip and the write
// is retried, up to a bound; the other writer's commits are kept. Without a
// remote, Commit refuses to move the branch while a work tree has it
// checked out. An error from edits is returned as it is.
func (h *History) Commit(ctx context.Context, what string, edits Edits, message string) (string, error) {
	hash, err := h.update(ctx, edits, message)
	var refused *changeError
	if errors.As(err, &refused) {
		return "", refused.err
	}
	if err != nil {
		return "", fmt.Errorf("write %s to %s: %w", what, h.where(), err)
	}
	return hash, nil
}

// changeError carries an error of Edits through update.
type changeError struct{ err error }

func (e *changeError) Error() string { return e.err.Error() }

// where names the branch in messages: with a remote, the remote's URL too.
func (h *History) where() string {
	if u := h.repo.RemoteURL(); u != "" {
		return h.branch + " of " + u
	}
	return h.branch
}

func (h *History) update(ctx context.Context, edits Edits, message string) (string, error) {
	message = strings.TrimSpace(message)
	if message == "" {
		message = "lieutenant: write history"
	}
	message += "\n"

	r := h.repo
	if r.remote == nil {
		if err := r.locked(func() error { return r.checkNotCheckedOut(h.ref) }); err != nil {
			return "", err
		}
	}
	fetched := false
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		var commit plumbing.Hash
		err := r.locked(func() error {
			base, expect, err := h.tip()
			if err != nil {
				return err
			}
			var changed bool
			commit, changed, err = h.commitOn(base, edits, message)
			if err == nil && changed {
				if r.remote == nil {
					return r.casRef(ctx, h.ref, commit, base)
				}
				return h.pushCAS(ctx, commit, expect)
			}
			commit = base
			var refused *changeError
			if r.remote != nil && !fetched && (err == nil || errors.As(err, &refused)) {
				// "Nothing to change", or a refusal such as "locked", may
				// come from a stale copy of the remote branch: decide
				// again on a fresh one. A fetch that fails leaves the
				// decision as it was.
				fetched = true
				if r.fetch(ctx, h.branch) != nil {
					return err
				}
				return errStale
			}
			return err
		})
		switch {
		case err == nil:
			return commit.String(), nil
		case errors.Is(err, errStale):
			continue
		case !errors.Is(err, ErrBranchMoved):
			return "", err
		case attempt == maxPutAttempts:
			return "", fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		// Jitter so that writers who lost together do not collide again.
		if err := sleep(ctx, rand.N(time.Duration(min(attempt, 10))*2*time.Millisecond)+time.Millisecond); err != nil {
			return "", err
		}
	}
}

// tip returns the commit a write builds on and the value the branch must
// have for the write to land. Without a remote both are the branch. With
// one, the branch is the remote's (its tracking ref); when the remote has
// no such branch yet but this repository does (history written before the
// remote was used), the first push carries that history over. Called with
// r.mu held.
func (h *History) tip() (base, expect plumbing.Hash, err error) {
	r := h.repo
	if r.remote == nil {
		base, err = r.readRef(h.ref)
		return base, base, err
	}
	if expect, err = r.readRef(h.tipRef()); err != nil || !expect.IsZero() {
		return expect, expect, err
	}
	base, err = r.readRef(h.ref)
	return base, expect, err
}

// tipRef is the remote-tracking ref with a remote, the branch without.
func (h *History) tipRef() plumbing.ReferenceName {
	if rm := h.repo.remote; rm != nil {
		return plumbing.NewRemoteReferenceName(rm.Name, h.branch)
	}
	return h.ref
}

// commitOn writes the commit that applies edits on top of tip (zero: an
// orphan). changed is false when they leave every file as it is. Called
// with r.mu held.
func (h *History) commitOn(tip plumbing.Hash, edits Edits, message string) (_ plumbing.Hash, changed bool, _ error) {
	r := h.repo
	var base plumbing.Hash
	var parents []plumbing.Hash
	if !tip.IsZero() {
		c, err := object.GetCommit(r.storage, tip)
		if err != nil {
			return plumbing.ZeroHash, false, fmt.Errorf("read tip %s: %w", tip, err)
		}
		base, parents = c.TreeHash, []plumbing.Hash{tip}
	}
	files, err := edits(treeTip{r, base})
	if err != nil {
		return plumbing.ZeroHash, false, &changeError{err}
	}
	blobs := make(map[string]plumbing.Hash, len(files))
	for p, data := range files {
		if _, err := splitTreePath(p); err != nil {
			return plumbing.ZeroHash, false, err
		}
		var blob plumbing.Hash // zero: remove
		if data != nil {
			if blob, err = r.writeBlob(data); err != nil {
				return plumbing.ZeroHash, false, fmt.Errorf("write blob: %w", err)
			}
		}
		blobs[p] = blob
	}
	tree, changed, err := r.setFiles(base, "", blobs)
	if err != nil || !changed {
		return plumbing.ZeroHash, false, err
	}
	// Git records seconds; dropping the rest keeps the object identical to
	// what it decodes back to.
	now := time.Now().Truncate(time.Second)
	sig := object.Signature{Name: h.identity.Name, Email: h.identity.Email, When: now}
	c := &object.Commit{Author: sig, Committer: sig, Message: message, TreeHash: tree, ParentHashes: parents}
	commit, err := r.writeObject(c)
	if err != nil {
		return plumbing.ZeroHash, false, fmt.Errorf("write commit: %w", err)
	}
	return commit, true, nil
}

// pushCAS pushes commit to the remote branch, which must be at tip (zero:
// absent). When the push fails, the branch is fetched to tell a lost race
// (ErrBranchMoved: try again on the new tip) from a real failure, and from
// a push that went through although its answer was lost. Called with r.mu
// held.
func (h *History) pushCAS(ctx context.Context, commit, tip plumbing.Hash) error {
	r := h.repo
	pushErr := r.push(ctx, h.branch, commit, tip)
	if pushErr != nil {
		if err := r.fetch(ctx, h.branch); err != nil {
			return pushErr
		}
		now, err := r.readRef(h.tipRef())
		switch {
		case err != nil:
			return err
		case now == commit:
		case now != tip:
			return fmt.Errorf("%w: %s is at %s, not %s", ErrBranchMoved, h.branch, describeHash(now), describeHash(tip))
		default:
			return pushErr
		}
	}
	if err := r.writeRef(ctx, h.tipRef(), commit); err != nil {
		return err
	}
	// The local branch follows when nobody else moved it, so that
	// `git log lieutenant/runs` works in a clone too.
	var parent plumbing.Hash
	if c, err := object.GetCommit(r.storage, commit); err == nil && len(c.ParentHashes) == 1 {
		parent = c.ParentHashes[0]
	}
	if local, err := r.readRef(h.ref); err == nil && (local == tip || local.IsZero() || local == parent) {
		if r.checkNotCheckedOut(h.ref) == nil {
			_ = r.casRef(ctx, h.ref, commit, local)
		}
	}
	return nil
}

// Refresh fetches the branch from the remote, so that reads see what other
// machines wrote. Without a remote it does nothing.
func (h *History) Refresh(ctx context.Context) error {
	if err := h.repo.Fetch(ctx, h.branch); err != nil {
		return fmt.Errorf("read history branch %s: %w", h.branch, err)
	}
	return nil
}

// TipHash is the commit the branch is at, as last fetched with a remote;
// the zero hash before the first write. BeginRun takes it to tell whether
// runs were recorded since.
func (h *History) TipHash(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var tip plumbing.Hash
	err := h.repo.locked(func() error {
		var err error
		tip, _, err = h.tip()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read history branch %s: %w", h.branch, err)
	}
	return tip.String(), nil
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
		tip, _, err := h.tip()
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

// getParsed reads the file at p on the branch tip and parses it; nil when
// there is no such file.
func getParsed[T any](ctx context.Context, h *History, p string, parse func([]byte) (*T, error)) (*T, error) {
	data, err := h.Get(ctx, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parse(data)
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

// setFiles returns the hash of tree base (zero: an empty tree) with the
// blobs at the given paths, relative to base (a zero blob removes the
// file), writing each tree that changes once. A directory left empty
// disappears, as in git. changed is false when base is already like that.
// dir is base's path, for messages. Called with r.mu held.
func (r *Repo) setFiles(base plumbing.Hash, dir string, files map[string]plumbing.Hash) (_ plumbing.Hash, changed bool, _ error) {
	var entries []object.TreeEntry
	if !base.IsZero() {
		t, err := object.GetTree(r.storage, base)
		if err != nil {
			return plumbing.ZeroHash, false, fmt.Errorf("read tree %s: %w", base, err)
		}
		entries = slices.Clone(t.Entries)
	}
	here := map[string]plumbing.Hash{}
	subdirs := map[string]map[string]plumbing.Hash{}
	for p, blob := range files {
		name, rest, nested := strings.Cut(p, "/")
		if !nested {
			here[name] = blob
			continue
		}
		if subdirs[name] == nil {
			subdirs[name] = map[string]plumbing.Hash{}
		}
		subdirs[name][rest] = blob
	}
	for name := range here {
		if _, both := subdirs[name]; both {
			return plumbing.ZeroHash, false, fmt.Errorf("%s is written both as a file and as a directory", path.Join(dir, name))
		}
	}
	set := func(name string, e object.TreeEntry) {
		i := slices.IndexFunc(entries, func(x object.TreeEntry) bool { return x.Name == name })
		switch {
		case i >= 0 && e.Hash.IsZero():
			entries = slices.Delete(entries, i, i+1)
		case i >= 0:
			entries[i] = e
		case !e.Hash.IsZero():
			entries = append(entries, e)
		}
		changed = true
	}
	find := func(name string) (object.TreeEntry, bool) {
		i := slices.IndexFunc(entries, func(x object.TreeEntry) bool { return x.Name == name })
		if i < 0 {
			return object.TreeEntry{}, false
		}
		return entries[i], true
	}
	for name, blob := range here {
		e, ok := find(name)
		switch {
		case ok && (e.Mode == filemode.Dir || e.Mode == filemode.Submodule):
			return plumbing.ZeroHash, false, fmt.Errorf("%s is a directory on the branch", path.Join(dir, name))
		case ok && e.Mode == filemode.Regular && e.Hash == blob, !ok && blob.IsZero():
			continue
		}
		set(name, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: blob})
	}
	for name, sub := range subdirs {
		e, ok := find(name)
		if ok && e.Mode != filemode.Dir {
			return plumbing.ZeroHash, false, fmt.Errorf("%s is a file on the branch, not a directory", path.Join(dir, name))
		}
		h, subChanged, err := r.setFiles(e.Hash, path.Join(dir, name), sub)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		if subChanged {
			set(name, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
	}
	if !changed {
		return base, false, nil
	}
	if len(entries) == 0 && dir != "" {
		return plumbing.ZeroHash, true, nil
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

// treeTip reads the tree of a tip, with r.mu held.
type treeTip struct {
	r    *Repo
	tree plumbing.Hash
}

func (t treeTip) ReadFile(p string) ([]byte, error) {
	parts, err := splitTreePath(p)
	if err != nil {
		return nil, err
	}
	return t.r.fileAt(t.tree, parts)
}

func (t treeTip) TreeHash(p string) (plumbing.Hash, error) {
	n := node{mode: filemode.Dir, hash: t.tree}
	if p == "" {
		return t.tree, nil
	}
	parts, err := splitTreePath(p)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for _, elem := range parts {
		if n.hash.IsZero() || n.mode != filemode.Dir {
			return plumbing.ZeroHash, nil
		}
		next, ok, err := t.r.child(n, elem)
		if err != nil || !ok {
			return plumbing.ZeroHash, err
		}
		n = next
	}
	if n.mode != filemode.Dir {
		return plumbing.ZeroHash, nil
	}
	return n.hash, nil
}

// fileAt reads the file at parts in tree (zero: an empty tree); nil when
// there is none. Called with r.mu held.
func (r *Repo) fileAt(tree plumbing.Hash, parts []string) ([]byte, error) {
	n := node{mode: filemode.Dir, hash: tree}
	for _, elem := range parts {
		if n.hash.IsZero() || n.mode != filemode.Dir {
			return nil, nil
		}
		next, ok, err := r.child(n, elem)
		if err != nil || !ok {
			return nil, err
		}
		n = next
	}
	if n.mode != filemode.Regular && n.mode != filemode.Executable {
		return nil, nil
	}
	data, err := r.blob(n.hash)
	if data == nil && err == nil {
		data = []byte{}
	}
	return data, err
}

// writeBlob stores data as a blob. Called with r.mu held.
func (r *Repo) writeBlob(data []byte) (plumbing.Hash, error) {
	b := r.storage.NewEncodedObject()
	b.SetType(plumbing.BlobObject)
	w, err := b.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := w.Write(data); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := w.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return r.storeObject(b)
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

package releases

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// NotFoundError says a path does not exist at a revision. It matches
// fs.ErrNotExist with errors.Is.
type NotFoundError struct {
	Path string // slash-separated path inside the repository
	At   string // the revision, e.g. "main (3f2a1b9)"
}

func (e *NotFoundError) Error() string { return e.Path + ": not found at " + e.At }
func (e *NotFoundError) Unwrap() error { return fs.ErrNotExist }

// maxSymlinkHops bounds symlink resolution, like the kernel's ELOOP limit.
const maxSymlinkHops = 40

var (
	_ fs.FS         = (*Snapshot)(nil)
	_ fs.ReadFileFS = (*Snapshot)(nil)
	_ fs.StatFS     = (*Snapshot)(nil)
	_ fs.ReadDirFS  = (*Snapshot)(nil)
	_ fs.ReadLinkFS = (*Snapshot)(nil)
)

// node is one tree entry, resolved.
type node struct {
	name string
	mode filemode.FileMode
	hash plumbing.Hash
}

func (n node) isDir() bool {
	// A submodule's commit is not in this repository; like `git archive`,
	// the snapshot shows it as an empty directory.
	return n.mode == filemode.Dir || n.mode == filemode.Submodule
}

func (n node) fsMode() fs.FileMode {
	switch n.mode {
	case filemode.Dir, filemode.Submodule:
		return fs.ModeDir | 0o755
	case filemode.Executable:
		return 0o755
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	default:
		return 0o644
	}
}

// Open opens the named file or directory of the commit's tree. Symbolic
// links inside the tree are followed; one pointing outside it is an error.
func (s *Snapshot) Open(name string) (fs.File, error) {
	var (
		n       node
		size    int64
		data    []byte
		entries []fs.DirEntry
	)
	err := s.repo.locked(func() error {
		var err error
		if n, err = s.resolve("open", name, true); err != nil {
			return err
		}
		if n.isDir() {
			entries, err = s.dirEntries(n)
			return err
		}
		data, err = s.repo.blob(n.hash)
		size = int64(len(data))
		return err
	})
	if err != nil {
		return nil, s.pathErr("open", name, err)
	}
	info := s.info(name, n, size)
	if n.isDir() {
		return &dirFile{info: info, entries: entries}, nil
	}
	return &file{info: info, Reader: bytes.NewReader(data)}, nil
}

// ReadFile returns the contents of the named file at the commit.
func (s *Snapshot) ReadFile(name string) ([]byte, error) {
	var data []byte
	err := s.repo.locked(func() error {
		n, err := s.resolve("read", name, true)
		if err != nil {
			return err
		}
		if n.isDir() {
			return &fs.PathError{Op: "read", Path: name, Err: errIsDir}
		}
		data, err = s.repo.blob(n.hash)
		return err
	})
	if err != nil {
		return nil, s.pathErr("read", name, err)
	}
	return data, nil
}

// Stat describes the named file, following symbolic links.
func (s *Snapshot) Stat(name string) (fs.FileInfo, error) { return s.stat("stat", name, true) }

// Lstat describes the named file without following a final symbolic link.
func (s *Snapshot) Lstat(name string) (fs.FileInfo, error) { return s.stat("lstat", name, false) }

func (s *Snapshot) stat(op, name string, follow bool) (fs.FileInfo, error) {
	var (
		n    node
		size int64
	)
	err := s.repo.locked(func() error {
		var err error
		if n, err = s.resolve(op, name, follow); err != nil {
			return err
		}
		size, err = s.repo.size(n)
		return err
	})
	if err != nil {
		return nil, s.pathErr(op, name, err)
	}
	return s.info(name, n, size), nil
}

// ReadDir lists the named directory, sorted by name.
func (s *Snapshot) ReadDir(name string) ([]fs.DirEntry, error) {
	var entries []fs.DirEntry
	err := s.repo.locked(func() error {
		n, err := s.resolve("readdir", name, true)
		if err != nil {
			return err
		}
		if !n.isDir() {
			return &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
		}
		entries, err = s.dirEntries(n)
		return err
	})
	if err != nil {
		return nil, s.pathErr("readdir", name, err)
	}
	return entries, nil
}

// ReadLink returns the target of the named symbolic link.
func (s *Snapshot) ReadLink(name string) (string, error) {
	var target []byte
	err := s.repo.locked(func() error {
		n, err := s.resolve("readlink", name, false)
		if err != nil {
			return err
		}
		if n.mode != filemode.Symlink {
			return &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
		}
		target, err = s.repo.blob(n.hash)
		return err
	})
	if err != nil {
		return "", s.pathErr("readlink", name, err)
	}
	return string(target), nil
}

var (
	errIsDir    = errors.New("is a directory")
	errNotDir   = errors.New("not a directory")
	errLinkLoop = errors.New("too many levels of symbolic links")
	errLinkOut  = errors.New("symbolic link points outside the repository")
)

// pathErr leaves *fs.PathError and *NotFoundError as they are (they name
// the path already) and wraps anything else, such as a storage failure.
func (s *Snapshot) pathErr(op, name string, err error) error {
	var pe *fs.PathError
	var nf *NotFoundError
	if errors.As(err, &pe) || errors.As(err, &nf) {
		return err
	}
	return &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("at %s: %w", s, err)}
}

// resolve walks name from the root tree. Symbolic links in directories on
// the way are always followed, a final one only when follow is set. Called
// with the repository lock held.
func (s *Snapshot) resolve(op, name string, follow bool) (node, error) {
	if !fs.ValidPath(name) {
		return node{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	root := node{name: ".", mode: filemode.Dir, hash: s.tree}
	todo := splitPath(name)
	cur, dir := root, ""
	for hops := 0; len(todo) > 0; {
		elem := todo[0]
		todo = todo[1:]
		if !cur.isDir() {
			return node{}, &fs.PathError{Op: op, Path: name, Err: errNotDir}
		}
		next, ok, err := s.repo.child(cur, elem)
		if err != nil {
			return node{}, err
		}
		if !ok {
			return node{}, &NotFoundError{Path: name, At: s.String()}
		}
		if next.mode == filemode.Symlink && (len(todo) > 0 || follow) {
			if hops++; hops > maxSymlinkHops {
				return node{}, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%w at %s", errLinkLoop, s)}
			}
			target, err := s.repo.blob(next.hash)
			if err != nil {
				return node{}, err
			}
			t := path.Join(dir, string(target))
			if path.IsAbs(string(target)) || t == ".." || strings.HasPrefix(t, "../") {
				return node{}, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%w at %s", errLinkOut, s)}
			}
			// Restart from the root with the link replaced by its target.
			todo = append(splitPath(t), todo...)
			cur, dir = root, ""
			continue
		}
		cur, dir = next, path.Join(dir, elem)
	}
	return cur, nil
}

func splitPath(p string) []string {
	if p == "." || p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// info describes n under the name it was asked for, which differs from
// n.name when a symbolic link was followed.
func (s *Snapshot) info(name string, n node, size int64) *fileInfo {
	return &fileInfo{name: path.Base(name), mode: n.fsMode(), size: size, modTime: s.Time}
}

// dirEntries lists directory n, sorted by name as fs.ReadDir requires
// (git's own order differs: it sorts "a/" after "a.b"). Called with the
// repository lock held.
func (s *Snapshot) dirEntries(n node) ([]fs.DirEntry, error) {
	if n.mode == filemode.Submodule {
		return []fs.DirEntry{}, nil
	}
	t, err := object.GetTree(s.repo.storage, n.hash)
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", n.hash, err)
	}
	entries := make([]fs.DirEntry, 0, len(t.Entries))
	for _, e := range t.Entries {
		entries = append(entries, &dirEntry{snap: s, node: node{name: e.Name, mode: e.Mode, hash: e.Hash}})
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, nil
}

// child finds the entry elem of directory n. Called with r.mu held.
func (r *Repo) child(n node, elem string) (node, bool, error) {
	if n.mode == filemode.Submodule {
		return node{}, false, nil
	}
	t, err := object.GetTree(r.storage, n.hash)
	if err != nil {
		return node{}, false, fmt.Errorf("read tree %s: %w", n.hash, err)
	}
	for _, e := range t.Entries {
		if e.Name == elem {
			return node{name: e.Name, mode: e.Mode, hash: e.Hash}, true, nil
		}
	}
	return node{}, false, nil
}

// maxBlob bounds a file lieutenant reads from Git: deploy configuration,
// run records, locks and approvals are kilobytes; a bigger file pushed to
// a branch must not take lieutenant's memory with it.
const maxBlob = 16 << 20

// blob reads a whole blob. Deploy configuration is small; reading it at
// once keeps the lock short and the returned files independent of it.
// Called with r.mu held.
func (r *Repo) blob(h plumbing.Hash) ([]byte, error) {
	b, err := object.GetBlob(r.storage, h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	if b.Size > maxBlob {
		return nil, fmt.Errorf("read blob %s: %d bytes, over the %d MiB lieutenant reads", h, b.Size, maxBlob>>20)
	}
	rd, err := b.Reader()
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	defer rd.Close()
	data, err := io.ReadAll(rd)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	return data, nil
}

// size is a blob's size without reading it; 0 for directories. Called with
// r.mu held.
func (r *Repo) size(n node) (int64, error) {
	if n.isDir() {
		return 0, nil
	}
	sz, err := r.storage.EncodedObjectSize(n.hash)
	if err != nil {
		return 0, fmt.Errorf("read blob %s: %w", n.hash, err)
	}
	return sz, nil
}

type fileInfo struct {
	name    string
	mode    fs.FileMode
	size    int64
	modTime time.Time
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.modTime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

// dirEntry reports its size lazily: listing a directory of hundreds of run
// records should not look up every blob.
type dirEntry struct {
	snap *Snapshot
	node node
}

func (d *dirEntry) Name() string      { return d.node.name }
func (d *dirEntry) IsDir() bool       { return d.node.isDir() }
func (d *dirEntry) Type() fs.FileMode { return d.node.fsMode().Type() }
func (d *dirEntry) Info() (fs.FileInfo, error) {
	var size int64
	err := d.snap.repo.locked(func() error {
		var err error
		size, err = d.snap.repo.size(d.node)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: d.node.name, Err: err}
	}
	return d.snap.info(d.node.name, d.node, size), nil
}
func (d *dirEntry) String() string { return fs.FormatDirEntry(d) }

// file is an open regular file (or followed symlink); its contents were
// read at Open.
type file struct {
	info *fileInfo
	*bytes.Reader
}

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *file) Close() error               { return nil }

// dirFile is an open directory.
type dirFile struct {
	info    *fileInfo
	entries []fs.DirEntry
	offset  int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Close() error               { return nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errIsDir}
}

// ReadDir follows fs.ReadDirFile: n <= 0 returns the rest, n > 0 at most n
// entries and io.EOF at the end.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.offset:]
	if n <= 0 {
		d.offset = len(d.entries)
		return slices.Clone(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.offset += n
	return slices.Clone(rest[:n]), nil
}

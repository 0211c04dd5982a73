package releases

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// ErrNotRepository is returned by Open when neither the path nor any of its
// parents is a Git repository.
var ErrNotRepository = errors.New("not a git repository")

// Repo is a deploy repository: a work tree or a bare repository. It is safe
// for concurrent use by multiple goroutines.
type Repo struct {
	path string // the directory Open found, for messages
	bare bool

	// mu serialises every use of git and storage: go-git's object storage
	// keeps unsynchronised caches (pack indexes, open packfiles).
	mu      sync.Mutex
	git     *git.Repository
	storage *filesystem.Storage
	remote  *remote // nil: the repository is used on its own
}

// Open opens the Git repository at path. Like git, it looks for a .git
// directory (or a .git file, as in linked work trees and submodules) in path
// and then in each parent; path may also be a bare repository or a .git
// directory itself. Nothing in the work tree is ever read or written.
func Open(path string) (*Repo, error) {
	if path == "" {
		path = "."
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open deploy repository %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open deploy repository %s: %w", abs, err)
	}
	if !fi.IsDir() {
		abs = filepath.Dir(abs)
	}
	root, err := discover(abs)
	if err != nil {
		return nil, fmt.Errorf("open deploy repository %s: %w", abs, err)
	}
	// DetectDotGit stays off: go-git's own search would skip a bare
	// repository and find an enclosing work tree instead.
	repo, err := git.PlainOpenWithOptions(root, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if err != nil {
		if errors.Is(err, git.ErrRepositoryNotExists) {
			err = ErrNotRepository
		}
		return nil, fmt.Errorf("open deploy repository %s: %w", root, err)
	}
	st, ok := repo.Storer.(*filesystem.Storage)
	if !ok {
		return nil, fmt.Errorf("open deploy repository %s: unexpected storage %T", root, repo.Storer)
	}
	cfg, err := repo.Config()
	if err != nil {
		return nil, fmt.Errorf("open deploy repository %s: read config: %w", root, err)
	}
	if err := checkFormat(cfg); err != nil {
		return nil, fmt.Errorf("open deploy repository %s: %w", root, err)
	}
	r := &Repo{path: root, bare: cfg.Core.IsBare, git: repo, storage: st}
	if err := r.repairRefs(); err != nil {
		return nil, fmt.Errorf("open deploy repository %s: %w", root, err)
	}
	return r, nil
}

// discover walks from dir to the file-system root the way git does: the
// first directory holding .git, or being a git directory itself, wins.
func discover(dir string) (root string, err error) {
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, git.GitDirName)); err == nil {
			return d, nil
		}
		if isGitDir(d) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("%w (run `git init` or pass --repo)", ErrNotRepository)
		}
		d = parent
	}
}

// isGitDir uses the same test as git's is_git_directory: HEAD, objects/ and
// refs/ present.
func isGitDir(d string) bool {
	for _, name := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(d, name)); err != nil {
			return false
		}
	}
	return true
}

// checkFormat refuses repositories go-git v5 would misread rather than fail
// on: SHA-256 object names and the reftable ref backend.
func checkFormat(cfg *config.Config) error {
	ext := cfg.Raw.Section("extensions")
	if f := strings.ToLower(ext.Option("objectformat")); f != "" && f != "sha1" {
		return fmt.Errorf("object format %s is not supported (only sha1)", f)
	}
	if f := strings.ToLower(ext.Option("refstorage")); f != "" && f != "files" {
		return fmt.Errorf("ref storage %s is not supported (only files)", f)
	}
	return nil
}

// Path is the directory of the repository: the work tree's top level, or
// the bare repository itself.
func (r *Repo) Path() string { return r.path }

// Bare reports whether the repository has no work tree (core.bare).
func (r *Repo) Bare() bool { return r.bare }

// Close releases open files. The Repo must not be used afterwards.
func (r *Repo) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.remote != nil && r.remote.wire != nil {
		r.remote.wire.close()
	}
	return r.storage.Close()
}

// locked runs fn with the repository to itself. A pack index go-git loaded
// earlier goes stale when git repacks (git gc, git maintenance) and then
// objects seem to vanish; fn is retried once after reloading the indexes.
func (r *Repo) locked(fn func() error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := fn()
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		r.storage.Reindex()
		err = fn()
	}
	return err
}

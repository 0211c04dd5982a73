package releases

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

var (
	// ErrUnknownRevision is returned when a revision names no commit.
	ErrUnknownRevision = errors.New("unknown revision")
	// ErrNoCommits is returned when the repository has no commits at all.
	ErrNoCommits = errors.New("repository has no commits yet")
)

// shortHashLen matches git's default abbreviation.
const shortHashLen = 7

// Snapshot is one commit of the deploy repository. It is an fs.FS over the
// commit's tree (see Open), so configuration is read with fs.ReadFile and
// friends and never from the work tree. A Snapshot is safe for concurrent
// use and stays valid while its Repo is open.
type Snapshot struct {
	Rev        string    // the revision asked for, e.g. "main"
	Hash       string    // full commit hash
	ShortHash  string    // abbreviated commit hash, as git log --oneline shows it
	Subject    string    // first line of the commit message
	Author     Signature // who wrote the change
	AuthorTime time.Time // when the change was written
	Time       time.Time // when it was committed (after rebases and merges)

	repo *Repo
	tree plumbing.Hash
}

// Snapshot resolves rev and returns the commit it names. rev may be a
// branch, a tag (annotated tags are peeled), a full or abbreviated commit
// hash, HEAD, or any of those followed by ~N or ^N; "" means HEAD.
func (r *Repo) Snapshot(ctx context.Context, rev string) (*Snapshot, error) {
	if rev == "" {
		rev = "HEAD"
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("resolve revision %q in %s: %w", rev, r.path, err)
	}
	if err := checkRevSyntax(rev); err != nil {
		return nil, fmt.Errorf("resolve revision %q in %s: %w", rev, r.path, err)
	}
	var snap *Snapshot
	err := r.locked(func() error {
		h, err := r.resolve(rev)
		switch {
		case err == nil:
		case r.hasNoCommits():
			return ErrNoCommits
		case errors.Is(err, plumbing.ErrReferenceNotFound):
			return fmt.Errorf("%w: no branch, tag or commit of that name", ErrUnknownRevision)
		case errors.Is(err, io.EOF):
			// go-git's answer to HEAD~9 on a shorter history, or ^2 of
			// a commit that is not a merge.
			return fmt.Errorf("%w: the commit has no such ancestor", ErrUnknownRevision)
		default:
			return fmt.Errorf("%w: %w", ErrUnknownRevision, err)
		}
		snap, err = r.snapshotAt(rev, h)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("resolve revision %q in %s: %w", rev, r.path, err)
	}
	return snap, nil
}

// checkRevSyntax refuses what go-git's ResolveRevision parses but then
// ignores: reflog and upstream suffixes (main@{1}, main@{yesterday},
// main@{u}), peeling (v1^{tree}) and paths (main:file). Resolving
// "main@{yesterday}" as main would deploy the wrong commit.
func checkRevSyntax(rev string) error {
	for _, bad := range []string{"@{", "^{", ":", ".."} {
		if strings.Contains(rev, bad) {
			return fmt.Errorf("unsupported revision syntax %q: use a branch, tag or commit hash, optionally followed by ~N or ^N", bad)
		}
	}
	return nil
}

// minAbbrev is the shortest hash abbreviation git accepts.
const minAbbrev = 4

// resolve turns rev into a commit hash. It resolves the name part itself,
// the way git does, and leaves only ~N and ^N to go-git's ResolveRevision:
// go-git prefers a hash prefix over a ref of the same name (git prefers the
// ref: a tag "20261128" is the tag), accepts one-character prefixes, and
// takes whichever object it finds first when a prefix is ambiguous. Called with r.mu held.
func (r *Repo) resolve(rev string) (plumbing.Hash, error) {
	base, suffix := rev, ""
	if i := strings.IndexAny(rev, "~^"); i >= 0 {
		base, suffix = rev[:i], rev[i:]
	}
	h, err := r.resolveName(base)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	// With a full hash as the name, go-git looks up nothing else.
	res, err := r.git.ResolveRevision(plumbing.Revision(h.String() + suffix))
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return *res, nil
}

// resolveName resolves a ref name (by git's rules: as given, refs/,
// refs/tags/, refs/heads/, refs/remotes/, refs/remotes/<name>/HEAD) or else
// a full or unambiguous abbreviated object name. Called with r.mu held.
func (r *Repo) resolveName(name string) (plumbing.Hash, error) {
	if name == "" {
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	}
	const full = 2 * len(plumbing.ZeroHash)
	if len(name) == full && isHex(name) {
		return plumbing.NewHash(name), nil // git never reads these as ref names
	}
	for _, rule := range plumbing.RefRevParseRules {
		ref, err := storer.ResolveReference(r.storage, plumbing.ReferenceName(fmt.Sprintf(rule, name)))
		if err == nil {
			return ref.Hash(), nil
		}
	}
	if !isHex(name) || len(name) < minAbbrev || len(name) > full {
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	}
	prefix, err := hex.DecodeString(name[:len(name)&^1])
	if err != nil {
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	}
	all, err := r.storage.HashesWithPrefix(prefix)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	// Like git, an abbreviation is ambiguous only among objects that could
	// be meant: commits and tags.
	var found []plumbing.Hash
	for _, h := range all {
		if !strings.HasPrefix(h.String(), strings.ToLower(name)) {
			continue
		}
		if obj, err := r.storage.EncodedObject(plumbing.AnyObject, h); err == nil &&
			(obj.Type() == plumbing.CommitObject || obj.Type() == plumbing.TagObject) {
			found = append(found, h)
		}
	}
	switch len(found) {
	case 0:
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, h := range found {
		names[i] = h.String()[:12]
	}
	return plumbing.ZeroHash, fmt.Errorf("abbreviated hash %s is ambiguous: %s", name, strings.Join(names, ", "))
}

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// hasNoCommits reports whether no ref points anywhere, which is what an
// empty repository looks like. Called with r.mu held.
func (r *Repo) hasNoCommits() bool {
	if head, err := r.storage.Reference(plumbing.HEAD); err == nil && head.Type() == plumbing.HashReference {
		return false // detached
	}
	names, err := r.refNames()
	return err == nil && len(names) == 0
}

// snapshotAt builds the Snapshot of commit h. Called with r.mu held.
func (r *Repo) snapshotAt(rev string, h plumbing.Hash) (*Snapshot, error) {
	c, err := object.GetCommit(r.storage, h)
	if err != nil {
		return nil, fmt.Errorf("read commit %s: %w", h, err)
	}
	subject, _, _ := strings.Cut(strings.TrimLeft(c.Message, "\n"), "\n")
	return &Snapshot{
		Rev:        rev,
		Hash:       h.String(),
		ShortHash:  h.String()[:shortHashLen],
		Subject:    strings.TrimSpace(subject),
		Author:     Signature{Name: c.Author.Name, Email: c.Author.Email},
		AuthorTime: c.Author.When,
		Time:       c.Committer.When,
		repo:       r,
		tree:       c.TreeHash,
	}, nil
}

// String names the snapshot the way messages do: "main (3f2a1b9)".
func (s *Snapshot) String() string {
	if s.Rev == "" || strings.HasPrefix(s.Hash, strings.ToLower(s.Rev)) {
		return s.ShortHash
	}
	return s.Rev + " (" + s.ShortHash + ")"
}

// CheckAncestor verifies that rev is a full commit hash reachable from the
// commit tip (or tip itself): that the commit a record names is one of the
// manifest branch's, not one only a history-branch writer vouches for.
func (r *Repo) CheckAncestor(rev, tip string) error {
	if len(rev) != 2*len(plumbing.ZeroHash) || !isHex(rev) {
		return fmt.Errorf("commit %q is not a full commit hash", rev)
	}
	return r.locked(func() error {
		if strings.EqualFold(rev, tip) {
			return nil
		}
		anc, err := object.GetCommit(r.storage, plumbing.NewHash(rev))
		if err != nil {
			return fmt.Errorf("commit %s is not on the manifest branch: %w", rev[:12], err)
		}
		desc, err := object.GetCommit(r.storage, plumbing.NewHash(tip))
		if err != nil {
			return fmt.Errorf("read commit %s: %w", tip, err)
		}
		ok, err := anc.IsAncestor(desc)
		if err != nil {
			return fmt.Errorf("commit %s: %w", rev[:12], err)
		}
		if !ok {
			return fmt.Errorf("commit %s is not on the manifest branch (not an ancestor of %s)", rev[:12], tip[:12])
		}
		return nil
	})
}

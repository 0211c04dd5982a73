package releases

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	gittransport "github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"golang.org/x/crypto/ssh"
)

// RemoteAuth holds the credentials for a remote. Secrets stay in memory:
// they are never written to the repository's config, a record or a message.
type RemoteAuth struct {
	// SSH returns the client configuration for an SSH remote: the login
	// user, keys, and a host key callback that checks known_hosts. Required
	// for ssh:// and user@host:path remotes; lieutenant never connects to a
	// host whose key it has not verified. release is called once the
	// connection it was made for is over.
	SSH func(user, hostport string) (cfg *ssh.ClientConfig, release func(), err error)
	// Token authenticates to an HTTPS remote (a GitHub or GitLab access
	// token) as TokenUser, or "x-access-token" when that is empty.
	Token     string
	TokenUser string
}

// Remote is the Git remote the repository's branches are fetched from and
// the history branch is pushed to.
type Remote struct {
	Name string // e.g. "origin"; names the refs/remotes/<Name>/ tracking refs
	URL  string // ssh://, user@host:path, https://, file:// or a local path
	Auth RemoteAuth
}

// remote is a Remote ready for use. Its methods are called with r.mu held:
// go-git's storage is not safe for concurrent use.
type remote struct {
	Remote
	endpoint *gittransport.Endpoint
	// wire speaks to SSH and local remotes (see wire.go); nil for HTTPS,
	// which goes through go-git.
	wire wire
	git  *git.Remote
	auth gittransport.AuthMethod
}

// RemoteError is a failed conversation with the remote: unreachable,
// refused credentials, a rejected push. It names the remote and the ref.
type RemoteError struct {
	Op     string // "fetch", "push", "list"
	Remote string // the URL, without credentials
	Ref    string
	Err    error
}

func (e *RemoteError) Error() string {
	switch e.Op {
	case "push":
		return fmt.Sprintf("push %s to %s: %v", e.Ref, e.Remote, e.Err)
	case "list":
		return fmt.Sprintf("read the default branch of %s (or name it with --branch): %v", e.Remote, e.Err)
	}
	return fmt.Sprintf("%s %s from %s: %v", e.Op, e.Ref, e.Remote, e.Err)
}

func (e *RemoteError) Unwrap() error { return e.Err }

// UseRemote makes rem the remote of r: Fetch reads from it, and history
// writes are pushed to it (see History). Without a remote, r is used on its
// own, as before.
func (r *Repo) UseRemote(rem Remote) error {
	if rem.Name == "" {
		rem.Name = "origin"
	}
	if err := plumbing.NewRemoteReferenceName(rem.Name, "x").Validate(); err != nil || strings.Contains(rem.Name, "/") {
		return fmt.Errorf("remote name %q: not a valid name", rem.Name)
	}
	ep, err := gittransport.NewEndpoint(rem.URL)
	if err != nil {
		return fmt.Errorf("remote %s: %w", redactURL(rem.URL), err)
	}
	rm := &remote{Remote: rem, endpoint: ep}
	switch ep.Protocol {
	case "ssh":
		if rem.Auth.SSH == nil {
			return fmt.Errorf("remote %s: an SSH remote needs SSH credentials", redactURL(rem.URL))
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		rm.wire = &sshWire{path: ep.Path, user: user, hostport: net.JoinHostPort(ep.Host, fmt.Sprint(portOr(ep.Port, 22))), config: rem.Auth.SSH}
	case "http", "https":
		if ep.Password != "" {
			return fmt.Errorf("remote %s: put the token in LIEUTENANT_GIT_TOKEN, not in the URL, so it never reaches a log", redactURL(rem.URL))
		}
		if rem.Auth.Token != "" {
			u := rem.Auth.TokenUser
			if u == "" {
				u = "x-access-token"
			}
			rm.auth = &githttp.BasicAuth{Username: u, Password: rem.Auth.Token}
		}
	case "file":
		if _, err := os.Stat(ep.Path); err != nil {
			return fmt.Errorf("remote %s: %w", rem.URL, err)
		}
		rm.wire = localWire{path: ep.Path}
	default:
		return fmt.Errorf("remote %s: unsupported protocol %q (use ssh, https or a path)", redactURL(rem.URL), ep.Protocol)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rm.git = git.NewRemote(r.storage, &config.RemoteConfig{Name: rem.Name, URLs: []string{rem.URL}})
	r.remote = rm
	return nil
}

// InitCache makes an empty bare repository at dir for working from a remote
// URL without a clone of one's own; UseRemote and Fetch fill it.
func InitCache(dir string) (*Repo, error) {
	if _, err := git.PlainInit(dir, true); err != nil {
		return nil, fmt.Errorf("create repository cache %s: %w", dir, err)
	}
	return Open(dir)
}

// IsRemoteURL reports whether s names a remote (a URL or user@host:path)
// rather than a directory on this machine.
func IsRemoteURL(s string) bool {
	if strings.Contains(s, "://") {
		return true
	}
	// scp-like syntax, as git reads it: a colon before any slash.
	colon, slash := strings.Index(s, ":"), strings.Index(s, "/")
	return colon > 0 && (slash < 0 || colon < slash) && !filepath.IsAbs(s)
}

// RemoteURL is the URL of r's remote without credentials, "" without one.
func (r *Repo) RemoteURL() string {
	if r.remote == nil {
		return ""
	}
	return redactURL(r.remote.URL)
}

// RemoteName is the name of r's remote, "" without one.
func (r *Repo) RemoteName() string {
	if r.remote == nil {
		return ""
	}
	return r.remote.Name
}

// Tracking is the ref name a branch of the remote is fetched into, e.g.
// "origin/main"; the branch itself without a remote.
func (r *Repo) Tracking(branch string) string {
	if r.remote == nil {
		return branch
	}
	return r.remote.Name + "/" + branch
}

// FetchDefault fetches the branch the remote's HEAD points at, and
// branches, and returns the default branch's name: over SSH or a path, in
// one conversation with the remote.
func (r *Repo) FetchDefault(ctx context.Context, branches ...string) (string, error) {
	if r.remote == nil {
		return "", errors.New("default branch: no remote")
	}
	if r.remote.wire == nil {
		def, err := r.defaultBranch(ctx)
		if err != nil {
			return "", err
		}
		return def, r.Fetch(ctx, append([]string{def}, branches...)...)
	}
	var def string
	err := r.locked(func() error {
		ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		defer cancel()
		var err error
		if def, err = r.fetchWire(ctx, true, branches...); err != nil {
			return r.remote.fail("fetch", strings.Join(append([]string{"the default branch"}, branches...), ", "), err)
		}
		return nil
	})
	return def, err
}

// defaultBranch asks an HTTPS remote, through go-git, which branch its HEAD
// points at.
func (r *Repo) defaultBranch(ctx context.Context) (string, error) {
	var branch string
	err := r.locked(func() error {
		refs, err := r.remote.git.ListContext(ctx, &git.ListOptions{Auth: r.remote.auth})
		if err != nil {
			return r.remote.fail("list", "", err)
		}
		for _, ref := range refs {
			if ref.Name() == plumbing.HEAD && ref.Type() == plumbing.SymbolicReference && ref.Target().IsBranch() {
				branch = ref.Target().Short()
				return nil
			}
		}
		return r.remote.fail("list", "", errors.New("its HEAD names no branch"))
	})
	return branch, err
}

// Fetch brings the named branches of the remote into their tracking refs
// (refs/remotes/<remote>/<branch>). A branch the remote does not have is
// not an error: its tracking ref is removed, so reads see it as missing.
func (r *Repo) Fetch(ctx context.Context, branches ...string) error {
	if r.remote == nil {
		return nil
	}
	return r.locked(func() error { return r.fetch(ctx, branches...) })
}

// pushTimeout and fetchTimeout bound one conversation with the remote: a
// stalled server must fail the write (which stops the run and repairs the
// host in flight) rather than hang it. A fetch may bring a whole history
// into a fresh cache, so it gets longer.
const (
	pushTimeout  = 2 * time.Minute
	fetchTimeout = 5 * time.Minute
)

// fetch is Fetch with r.mu held.
func (r *Repo) fetch(ctx context.Context, branches ...string) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	rm := r.remote
	if rm.wire != nil {
		if _, err := r.fetchWire(ctx, false, branches...); err != nil {
			return rm.fail("fetch", strings.Join(branches, ", "), err)
		}
		return nil
	}
	specs := make([]config.RefSpec, len(branches))
	for i, b := range branches {
		specs[i] = trackingSpec(rm.Name, b)
	}
	// One round trip when every branch exists, which is the usual case.
	err := rm.git.FetchContext(ctx, &git.FetchOptions{RemoteName: rm.Name, RefSpecs: specs, Auth: rm.auth, Tags: git.NoTags})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if !errors.Is(err, git.NoMatchingRefSpecError{}) {
		return rm.fail("fetch", strings.Join(branches, ", "), err)
	}
	refs, err := rm.git.ListContext(ctx, &git.ListOptions{Auth: rm.auth})
	if err != nil {
		return rm.fail("fetch", strings.Join(branches, ", "), err)
	}
	present := map[plumbing.ReferenceName]bool{}
	for _, ref := range refs {
		present[ref.Name()] = true
	}
	specs = specs[:0]
	for _, b := range branches {
		name := plumbing.NewBranchReferenceName(b)
		if !present[name] {
			if err := r.storage.RemoveReference(plumbing.NewRemoteReferenceName(rm.Name, b)); err != nil {
				return fmt.Errorf("forget %s/%s: %w", rm.Name, b, err)
			}
			continue
		}
		specs = append(specs, trackingSpec(rm.Name, b))
	}
	if len(specs) == 0 {
		return nil
	}
	err = rm.git.FetchContext(ctx, &git.FetchOptions{RemoteName: rm.Name, RefSpecs: specs, Auth: rm.auth, Tags: git.NoTags})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return rm.fail("fetch", strings.Join(branches, ", "), err)
	}
	return nil
}

// push moves branch on the remote from old to commit (old zero: the branch
// must not exist), and nothing else: the remote refuses the update when the
// branch is somewhere else by then, which makes it a compare-and-swap.
// Called with r.mu held.
func (r *Repo) push(ctx context.Context, branch string, commit, old plumbing.Hash) error {
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	rm := r.remote
	if rm.wire != nil {
		if err := r.pushWire(ctx, branch, commit, old); err != nil {
			return rm.fail("push", branch, err)
		}
		return nil
	}
	// go-git pushes from a ref; a private one per push keeps concurrent
	// lieutenant processes on one clone out of each other's way.
	src := plumbing.ReferenceName("refs/lieutenant/push/" + commit.String())
	if err := r.storage.SetReference(plumbing.NewHashReference(src, commit)); err != nil {
		return fmt.Errorf("push %s: %w", branch, err)
	}
	defer r.storage.RemoveReference(src)
	dst := plumbing.NewBranchReferenceName(branch)
	// The server's own words (a protected branch, a hook's message) come
	// as progress lines.
	var said bytes.Buffer
	opts := &git.PushOptions{
		RemoteName: rm.Name,
		RefSpecs:   []config.RefSpec{config.RefSpec(src + ":" + dst)},
		Auth:       rm.auth,
		Progress:   &said,
	}
	if !old.IsZero() {
		opts.RequireRemoteRefs = []config.RefSpec{config.RefSpec(old.String() + ":" + dst.String())}
	}
	if err := rm.git.PushContext(ctx, opts); err != nil {
		if msg := strings.Join(strings.Fields(said.String()), " "); msg != "" {
			err = fmt.Errorf("%w (the server said: %s)", err, msg)
		}
		return rm.fail("push", branch, err)
	}
	return nil
}

func trackingSpec(remote, branch string) config.RefSpec {
	return config.RefSpec(fmt.Sprintf("+%s:%s", plumbing.NewBranchReferenceName(branch), plumbing.NewRemoteReferenceName(remote, branch)))
}

func (rm *remote) fail(op, ref string, err error) error {
	return &RemoteError{Op: op, Remote: redactURL(rm.URL), Ref: ref, Err: err}
}

// redactURL drops a password from a URL before it is shown.
func redactURL(u string) string {
	ep, err := gittransport.NewEndpoint(u)
	if err != nil || ep.Password == "" {
		return u
	}
	ep.Password = ""
	return ep.String()
}

func portOr(p, def int) int {
	if p == 0 {
		return def
	}
	return p
}

// ConfiguredRemote returns the URL of the remote called name in the
// repository's config (remote.<name>.url), if there is one.
func (r *Repo) ConfiguredRemote(name string) (string, bool) {
	url := r.localConfig().Section("remote").Subsection(name).Option("url")
	return url, url != ""
}

// HeadBranch is the branch HEAD points at, for a repository used without
// a remote.
func (r *Repo) HeadBranch() (string, error) {
	var branch string
	err := r.locked(func() error {
		head, err := r.storage.Reference(plumbing.HEAD)
		if err != nil {
			return fmt.Errorf("read HEAD: %w", err)
		}
		if head.Type() != plumbing.SymbolicReference || !head.Target().IsBranch() {
			return errors.New("HEAD is detached: name the manifest branch with --branch")
		}
		branch = head.Target().Short()
		return nil
	})
	return branch, err
}

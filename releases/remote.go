package releases

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
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
	// CABundle holds PEM certificates an HTTPS remote's certificate may
	// chain to besides the system's (a self-hosted server's private CA).
	// go-git then opens a connection per conversation.
	CABundle []byte
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

// RemoteURLError is a remote URL refused before anything was contacted:
// unparsable, an unsupported protocol, or one that would leak a secret.
type RemoteURLError struct {
	URL     string // redacted (see RedactURL)
	Problem string // what is wrong and what to do
}

func (e *RemoteURLError) Error() string { return "remote " + e.URL + ": " + e.Problem }

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
		// url.Parse's and go-git's messages quote the whole URL,
		// credentials and all: only the reason is kept.
		reason := "not a URL git understands"
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			reason += ": " + ue.Err.Error()
		}
		return &RemoteURLError{URL: RedactURL(rem.URL), Problem: reason + " (use ssh://, user@host:path, https://, file:// or a path)"}
	}
	rm := &remote{Remote: rem, endpoint: ep}
	switch ep.Protocol {
	case "ssh":
		// scp-like user:password@host:path leaves the password in User.
		if ep.Password != "" || strings.Contains(ep.User, ":") {
			return &RemoteURLError{URL: RedactURL(rem.URL), Problem: "a password in an SSH URL is refused (it would reach logs, and it is never used): remove it and authenticate with a key (--git-identity or ssh-agent)"}
		}
		if rem.Auth.SSH == nil {
			return fmt.Errorf("remote %s: an SSH remote needs SSH credentials", RedactURL(rem.URL))
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		rm.wire = &sshWire{path: ep.Path, user: user, hostport: net.JoinHostPort(ep.Host, fmt.Sprint(portOr(ep.Port, 22))), config: rem.Auth.SSH}
	case "http", "https":
		clean := *ep
		clean.User, clean.Password = "", ""
		if ep.User != "" || ep.Password != "" {
			// go-git would send the user part as basic auth, and every
			// message naming the remote would show it.
			return &RemoteURLError{URL: RedactURL(rem.URL), Problem: fmt.Sprintf(
				"credentials in the URL are refused, so that they never reach a log: use %s (git remote set-url, in a clone) and put the token in LIEUTENANT_GIT_TOKEN", clean.String())}
		}
		if rem.Auth.Token != "" {
			if ep.Protocol == "http" {
				clean.Protocol = "https"
				return &RemoteURLError{URL: RedactURL(rem.URL), Problem: fmt.Sprintf(
					"LIEUTENANT_GIT_TOKEN would cross the network in clear over http://: use %s (or unset the token for a server that needs none)", clean.String())}
			}
			u := rem.Auth.TokenUser
			if u == "" {
				u = "x-access-token"
			}
			rm.auth = &githttp.BasicAuth{Username: u, Password: rem.Auth.Token}
		}
	case "file":
		if _, err := os.Stat(ep.Path); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return &RemoteURLError{URL: RedactURL(rem.URL), Problem: "no such repository on this machine"}
			}
			return fmt.Errorf("remote %s: %w", RedactURL(rem.URL), err)
		}
		rm.wire = localWire{path: ep.Path}
	default:
		return &RemoteURLError{URL: RedactURL(rem.URL), Problem: fmt.Sprintf("unsupported protocol %q (use ssh, https or a path)", ep.Protocol)}
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
	return RedactURL(r.remote.URL)
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

// FetchedDefault is the remote's default branch as the last fetch or git
// clone recorded it (refs/remotes/<remote>/HEAD), for reading without
// contacting the remote; "" when none was recorded.
func (r *Repo) FetchedDefault() string {
	if r.remote == nil {
		return ""
	}
	var branch string
	r.locked(func() error {
		head, err := r.storage.Reference(plumbing.NewRemoteHEADReferenceName(r.remote.Name))
		if err == nil && head.Type() == plumbing.SymbolicReference {
			if b, ok := strings.CutPrefix(head.Target().String(), "refs/remotes/"+r.remote.Name+"/"); ok {
				branch = b
			}
		}
		return nil
	})
	return branch
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
		refs, err := r.remote.git.ListContext(ctx, &git.ListOptions{Auth: r.remote.auth, CABundle: r.remote.Auth.CABundle})
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
	err := rm.git.FetchContext(ctx, &git.FetchOptions{RemoteName: rm.Name, RefSpecs: specs, Auth: rm.auth, CABundle: rm.Auth.CABundle, Tags: git.NoTags})
	if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	if !errors.Is(err, git.NoMatchingRefSpecError{}) {
		return rm.fail("fetch", strings.Join(branches, ", "), err)
	}
	refs, err := rm.git.ListContext(ctx, &git.ListOptions{Auth: rm.auth, CABundle: rm.Auth.CABundle})
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
	err = rm.git.FetchContext(ctx, &git.FetchOptions{RemoteName: rm.Name, RefSpecs: specs, Auth: rm.auth, CABundle: rm.Auth.CABundle, Tags: git.NoTags})
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
		CABundle:   rm.Auth.CABundle,
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
	return &RemoteError{Op: op, Remote: RedactURL(rm.URL), Ref: ref, Err: err}
}

// redacted replaces credentials in a URL that is shown.
const redacted = "REDACTED"

// RedactURL is s, a remote URL or a path, as it may be shown: the whole
// user part of a URL becomes REDACTED (a token is often sent as the user
// name), except in SSH URLs, whose user is a login name that messages
// about authentication need; there only a password is replaced. It works
// on the text, so that a URL that does not parse is redacted too.
func RedactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		// scp-like: user@host:path, the user before any slash.
		at := strings.Index(s, "@")
		if at < 0 || strings.Contains(s[:at], "/") {
			return s
		}
		return redactUserinfo("ssh", s[:at]) + s[at:]
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	// The last @ of the authority ends the user part, as net/url reads it.
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	return scheme + "://" + redactUserinfo(scheme, rest[:at]) + rest[at:]
}

func redactUserinfo(scheme, userinfo string) string {
	switch strings.ToLower(scheme) {
	case "ssh", "git+ssh", "ssh+git":
		if user, _, ok := strings.Cut(userinfo, ":"); ok {
			return user + ":" + redacted
		}
		return userinfo
	}
	return redacted
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

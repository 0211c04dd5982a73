package releases

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/format/pktline"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// lieutenant speaks Git's smart protocol itself to SSH and local remotes
// (HTTPS remotes go through go-git, whose client keeps its connections
// alive): every conversation of a run (a git-upload-pack or
// git-receive-pack on the remote) goes over one SSH connection, a fetch
// learns the remote's default branch in the same conversation, and a push
// sends exactly the objects its commits add to the remote's tip, found
// from the trees that changed, instead of walking the history the remote
// already has. The messages are go-git's (packp, packfile).

// wire opens conversations with the remote's repository.
type wire interface {
	// converse runs service ("git-upload-pack" or "git-receive-pack") on
	// the remote repository. ctx bounds the whole conversation.
	converse(ctx context.Context, service string) (*conversation, error)
	close()
}

// conversation is one service running on the remote: what lieutenant
// writes is its standard input, what it answers its standard output.
type conversation struct {
	in     io.WriteCloser
	out    io.Reader
	stderr *tailBuffer
	// wait waits for the service's end and says how it ended; end gives
	// up on it.
	wait func() error
	end  func()
}

// finish waits for the service's end, after lieutenant said all it had to
// say, and returns its failure with what it said on stderr.
func (c *conversation) finish() error {
	defer c.end()
	if err := c.wait(); err != nil {
		return c.said(err)
	}
	return nil
}

// abort ends a conversation that went wrong on this side: the service may
// be waiting for input, so it is stopped rather than waited for. It
// returns err, with what the service said on stderr.
func (c *conversation) abort(err error) error {
	c.in.Close()
	c.end()
	return c.said(err)
}

// said adds what the service said on stderr to err, on the same line.
func (c *conversation) said(err error) error {
	if msg := c.stderr.String(); msg != "" {
		return fmt.Errorf("%w (the remote said: %s)", err, msg)
	}
	return err
}

// tailBuffer keeps the last 4 KiB written to it, as one line.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 4096; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(strings.Fields(string(t.buf)), " ")
}

// sshWire holds one SSH connection to the remote for all conversations,
// dialled on first use and again if it breaks.
type sshWire struct {
	path     string
	user     string
	hostport string
	config   func(user, hostport string) (*ssh.ClientConfig, func(), error)

	mu      sync.Mutex
	client  *ssh.Client
	release func()
}

func (w *sshWire) converse(ctx context.Context, service string) (*conversation, error) {
	sess, err := w.session(ctx)
	if err != nil {
		return nil, err
	}
	in, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, err
	}
	stderr := &tailBuffer{}
	sess.Stderr = stderr
	// As git and go-git send it: the service and the quoted path.
	if err := sess.Start(service + " '" + strings.ReplaceAll(w.path, "'", `'\''`) + "'"); err != nil {
		sess.Close()
		return nil, fmt.Errorf("start %s: %w", service, err)
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	return &conversation{in: in, out: out, stderr: stderr,
		wait: func() error {
			err := sess.Wait()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		},
		end: func() { stop(); sess.Close() },
	}, nil
}

// session opens a session on the connection, dialling it when there is
// none or the one there broke.
func (w *sshWire) session(ctx context.Context) (*ssh.Session, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if w.client == nil {
			if err := w.dial(ctx); err != nil {
				return nil, err
			}
		}
		sess, err := newSession(ctx, w.client)
		if err == nil || attempt > 0 || ctx.Err() != nil {
			return sess, err
		}
		// A connection the server closed since: dial again, once.
		w.drop()
	}
}

// newSession opens a session, giving up (and closing the connection, which
// then is dialled again) when ctx ends first: on a connection that died
// without a word, opening one waits for TCP to notice.
func newSession(ctx context.Context, cl *ssh.Client) (*ssh.Session, error) {
	stop := context.AfterFunc(ctx, func() { cl.Close() })
	defer stop()
	sess, err := cl.NewSession()
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return sess, err
}

func (w *sshWire) dial(ctx context.Context) error {
	cfg, release, err := w.config(w.user, w.hostport)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", w.hostport)
	if err != nil {
		release()
		return fmt.Errorf("dial %s: %w", w.hostport, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	sc, chans, reqs, err := ssh.NewClientConn(conn, w.hostport, cfg)
	stop()
	if err != nil {
		conn.Close()
		release()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("ssh %s: %w", w.hostport, err)
	}
	_ = conn.SetDeadline(time.Time{})
	w.client, w.release = ssh.NewClient(sc, chans, reqs), release
	return nil
}

func (w *sshWire) drop() {
	if w.client != nil {
		w.client.Close()
		w.release()
		w.client, w.release = nil, nil
	}
}

func (w *sshWire) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.drop()
}

// localWire runs the services on this machine, as git does for a path or
// file:// remote: `git upload-pack PATH`, without the variables that would
// point it at another repository (git clears the same for local remotes).
type localWire struct{ path string }

// repoEnv are the variables that locate a repository, which a service run
// for the remote must not inherit (git's local_repo_env).
var repoEnv = []string{"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
	"GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE", "GIT_INDEX_FILE",
	"GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE"}

func (w localWire) converse(ctx context.Context, service string) (*conversation, error) {
	cmd := exec.CommandContext(ctx, "git", strings.TrimPrefix(service, "git-"), w.path)
	// The service needs no secret of lieutenant's: a pre-receive hook runs
	// with this environment.
	for _, kv := range transport.ScrubEnv(os.Environ()) {
		if name, _, _ := strings.Cut(kv, "="); !slices.Contains(repoEnv, name) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := &tailBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", service, err)
	}
	return &conversation{in: in, out: out, stderr: stderr, wait: cmd.Wait,
		end: func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}}, nil
}

func (localWire) close() {}

// advertised reads what the service announces first: refs and
// capabilities. An empty repository announces none.
func advertised(c *conversation) (*packp.AdvRefs, error) {
	ar := packp.NewAdvRefs()
	if err := ar.Decode(c.out); err != nil && !errors.Is(err, packp.ErrEmptyAdvRefs) {
		return nil, fmt.Errorf("read the remote's refs: %w", err)
	}
	return ar, nil
}

// branchHash is branch's commit as the remote announced it; zero when the
// remote has no such branch.
func branchHash(ar *packp.AdvRefs, branch string) plumbing.Hash {
	refs, err := ar.AllReferences()
	if err != nil {
		return plumbing.ZeroHash
	}
	if ref, ok := refs[plumbing.NewBranchReferenceName(branch)]; ok && ref.Type() == plumbing.HashReference {
		return ref.Hash()
	}
	return plumbing.ZeroHash
}

// headBranch is the branch the remote's HEAD points at, "" when it does
// not say.
func headBranch(ar *packp.AdvRefs) string {
	for _, v := range ar.Capabilities.Get(capability.SymRef) {
		if src, dst, ok := strings.Cut(v, ":"); ok && src == "HEAD" {
			if name := plumbing.ReferenceName(dst); name.IsBranch() {
				return name.Short()
			}
		}
	}
	return ""
}

// fetchWire fetches branches (and, with head, the branch the remote's HEAD
// points at, returned) into their tracking refs in one conversation. A
// branch the remote lacks has its tracking ref removed. Called with r.mu
// held.
func (r *Repo) fetchWire(ctx context.Context, head bool, branches ...string) (string, error) {
	rm := r.remote
	c, err := rm.wire.converse(ctx, "git-upload-pack")
	if err != nil {
		return "", err
	}
	defer c.end()
	ar, err := advertised(c)
	if err != nil {
		return "", c.abort(err)
	}
	var def string
	if head {
		switch def = headBranch(ar); {
		case def == "" && ar.IsEmpty():
			return "", c.abort(errors.New("the remote repository is empty: push the deploy repository's branch to it first"))
		case def == "":
			return "", c.abort(errors.New("its HEAD names no branch: name the manifest branch with --branch"))
		}
		branches = append([]string{def}, branches...)
	}
	tips := map[string]plumbing.Hash{}
	var wants []plumbing.Hash
	for _, b := range branches {
		h := branchHash(ar, b)
		tips[b] = h
		if !h.IsZero() && r.storage.HasEncodedObject(h) != nil && !containsHash(wants, h) {
			wants = append(wants, h)
		}
	}
	if len(wants) == 0 {
		// Nothing to bring: a flush ends the conversation.
		if _, err := c.in.Write(pktline.FlushPkt); err != nil {
			return "", c.abort(err)
		}
		c.in.Close()
	} else if err := r.receivePack(c, ar, wants); err != nil {
		return "", c.abort(err)
	}
	if err := c.finish(); err != nil {
		return "", err
	}
	for b, h := range tips {
		name := plumbing.NewRemoteReferenceName(rm.Name, b)
		if h.IsZero() {
			if err := r.storage.RemoveReference(name); err != nil {
				return "", fmt.Errorf("forget %s/%s: %w", rm.Name, b, err)
			}
			continue
		}
		if err := r.writeRef(ctx, name, h); err != nil {
			return "", err
		}
	}
	return def, nil
}

// receivePack asks for wants, telling what this repository has, and
// stores the pack the remote sends.
func (r *Repo) receivePack(c *conversation, ar *packp.AdvRefs, wants []plumbing.Hash) error {
	req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
	// A thin pack's deltas against objects outside it cannot be indexed
	// by go-git's pack writer; a whole pack of what is new is small here.
	req.Capabilities.Delete(capability.ThinPack)
	if ar.Capabilities.Supports(capability.NoProgress) {
		_ = req.Capabilities.Set(capability.NoProgress)
	}
	req.Wants = wants
	req.Haves = r.haves()
	if err := req.UploadRequest.Encode(c.in); err != nil {
		return fmt.Errorf("send the wants: %w", err)
	}
	if err := req.UploadHaves.Encode(c.in, true); err != nil {
		return fmt.Errorf("send the haves: %w", err)
	}
	if err := pktline.NewEncoder(c.in).Encodef("done\n"); err != nil {
		return fmt.Errorf("send done: %w", err)
	}
	c.in.Close()
	resp := packp.NewUploadPackResponse(req)
	if err := resp.Decode(io.NopCloser(c.out)); err != nil {
		return fmt.Errorf("read the remote's answer: %w", err)
	}
	var pack io.Reader = resp
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		pack = sideband.NewDemuxer(sideband.Sideband64k, resp)
	case req.Capabilities.Supports(capability.Sideband):
		pack = sideband.NewDemuxer(sideband.Sideband, resp)
	}
	if err := packfile.UpdateObjectStorage(r.storage, pack); err != nil {
		return fmt.Errorf("store the fetched objects: %w", err)
	}
	return nil
}

// haves are the commits this repository's branches and remote-tracking
// refs point at, so that the remote sends only what is new.
func (r *Repo) haves() []plumbing.Hash {
	names, err := r.refNames()
	if err != nil {
		return nil
	}
	var out []plumbing.Hash
	for _, n := range names {
		if !strings.HasPrefix(n, "refs/heads/") && !strings.HasPrefix(n, "refs/remotes/") {
			continue
		}
		if h, err := r.readRef(plumbing.ReferenceName(n)); err == nil && !h.IsZero() && !containsHash(out, h) &&
			r.storage.HasEncodedObject(h) == nil && len(out) < 256 {
			out = append(out, h)
		}
	}
	return out
}

func containsHash(hs []plumbing.Hash, h plumbing.Hash) bool {
	for _, x := range hs {
		if x == h {
			return true
		}
	}
	return false
}

// errRemoteMoved is a push refused before sending anything: the remote's
// branch is not where the push would move it from.
var errRemoteMoved = errors.New("the remote branch moved")

// pushWire moves branch on the remote from old to commit (old zero: the
// branch must not exist) in one conversation, sending the objects commit
// adds to old. The remote's receive-pack refuses the update if the branch
// is elsewhere by then. Called with r.mu held.
func (r *Repo) pushWire(ctx context.Context, branch string, commit, old plumbing.Hash) error {
	c, err := r.remote.wire.converse(ctx, "git-receive-pack")
	if err != nil {
		return err
	}
	defer c.end()
	ar, err := advertised(c)
	if err != nil {
		return c.abort(err)
	}
	if now := branchHash(ar, branch); now != old {
		_, _ = c.in.Write(pktline.FlushPkt)
		c.in.Close()
		_ = c.finish()
		return fmt.Errorf("%w: %s is at %s, not %s", errRemoteMoved, branch, describeHash(now), describeHash(old))
	}
	hashes, err := r.objectsAdded(commit, old)
	if err != nil {
		return c.abort(err)
	}
	req := packp.NewReferenceUpdateRequestFromCapabilities(ar.Capabilities)
	req.Commands = []*packp.Command{{Name: plumbing.NewBranchReferenceName(branch), Old: old, New: commit}}
	pr, pw := io.Pipe()
	go func() {
		_, err := packfile.NewEncoder(pw, r.storage, false).Encode(hashes, 10)
		pw.CloseWithError(err)
	}()
	req.Packfile = pr
	err = req.Encode(c.in)
	pr.Close()
	c.in.Close()
	if err != nil {
		return c.abort(fmt.Errorf("send the update: %w", err))
	}
	if req.Capabilities.Supports(capability.ReportStatus) {
		report := packp.NewReportStatus()
		if err := report.Decode(c.out); err != nil {
			return c.abort(fmt.Errorf("read the remote's report: %w", err))
		}
		if err := report.Error(); err != nil {
			return c.abort(err)
		}
	}
	return c.finish()
}

// objectsAdded lists the objects of commit and its ancestors down to old
// (zero: all of them) that old does not have: each commit, and the trees
// and blobs in which its tree differs from its parent's.
func (r *Repo) objectsAdded(commit, old plumbing.Hash) ([]plumbing.Hash, error) {
	seen := map[plumbing.Hash]bool{}
	var out []plumbing.Hash
	add := func(h plumbing.Hash) bool {
		if seen[h] {
			return false
		}
		seen[h] = true
		out = append(out, h)
		return true
	}
	for h := commit; !h.IsZero() && h != old; {
		c, err := object.GetCommit(r.storage, h)
		if err != nil {
			return nil, fmt.Errorf("read commit %s: %w", h, err)
		}
		add(h)
		var parent, parentTree plumbing.Hash
		if len(c.ParentHashes) > 0 {
			parent = c.ParentHashes[0]
			pc, err := object.GetCommit(r.storage, parent)
			if err != nil {
				return nil, fmt.Errorf("read commit %s: %w", parent, err)
			}
			parentTree = pc.TreeHash
		}
		if err := r.treesAdded(c.TreeHash, parentTree, add); err != nil {
			return nil, err
		}
		h = parent
	}
	return out, nil
}

// treesAdded adds tree and, recursively, what it holds that base (the same
// directory in the parent, zero when it had none) does not.
func (r *Repo) treesAdded(tree, base plumbing.Hash, add func(plumbing.Hash) bool) error {
	if tree == base || !add(tree) {
		return nil
	}
	t, err := object.GetTree(r.storage, tree)
	if err != nil {
		return fmt.Errorf("read tree %s: %w", tree, err)
	}
	had := map[string]object.TreeEntry{}
	if !base.IsZero() {
		bt, err := object.GetTree(r.storage, base)
		if err != nil {
			return fmt.Errorf("read tree %s: %w", base, err)
		}
		for _, e := range bt.Entries {
			had[e.Name] = e
		}
	}
	for _, e := range t.Entries {
		old, ok := had[e.Name]
		switch {
		case ok && old.Hash == e.Hash, e.Mode == filemode.Submodule:
		case e.Mode == filemode.Dir:
			var sub plumbing.Hash
			if ok && old.Mode == filemode.Dir {
				sub = old.Hash
			}
			if err := r.treesAdded(e.Hash, sub, add); err != nil {
				return err
			}
		default:
			add(e.Hash)
		}
	}
	return nil
}

// writeRef points name at h, whatever it held (the last writer wins, as in
// git fetch), through git's ref lock so that no reader ever sees it half
// written. Called with r.mu held.
func (r *Repo) writeRef(ctx context.Context, name plumbing.ReferenceName, h plumbing.Hash) error {
	for attempt := 0; ; attempt++ {
		cur, err := r.readRef(name)
		if err != nil || cur == h {
			return err
		}
		err = r.casRef(ctx, name, h, cur)
		if err == nil || !errors.Is(err, ErrBranchMoved) || attempt == 5 {
			if err != nil {
				return fmt.Errorf("update %s: %w", name, err)
			}
			return nil
		}
	}
}

package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// SSHConfig configures an SSH Connector. The zero value suits a user whose
// ~/.ssh holds a known_hosts file and an unencrypted key.
type SSHConfig struct {
	// User logs in to hosts whose Host.User is empty; "" means the user
	// lieutenant runs as.
	User string
	// KnownHostsFiles are the OpenSSH known_hosts files host keys are checked
	// against; empty means ~/.ssh/known_hosts. Each must exist. Error messages
	// suggest adding keys to the first one.
	KnownHostsFiles []string
	// IdentityFiles are the private keys offered; empty means whichever of
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa exist. An encrypted key is used
	// only through the agent, which must hold it.
	IdentityFiles []string
	// UseAgent also offers the keys of the ssh-agent at $SSH_AUTH_SOCK, when
	// that variable is set.
	UseAgent bool
	// DialTimeout bounds the TCP connect; 0 means 10s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the SSH handshake including authentication;
	// 0 means 15s.
	HandshakeTimeout time.Duration
	// KeepAliveInterval is how often a connection is probed. One that does
	// not answer within an interval is closed, so that commands on it fail
	// rather than hang on a dead peer. 0 means 15s; negative turns probes off.
	KeepAliveInterval time.Duration
	// MaxSessions is the number of sessions the hosts' sshd allows on one
	// connection (its MaxSessions); 0 means 10, OpenSSH's default. One is
	// kept spare for stopping commands, so up to MaxSessions-1 commands run
	// at once on a connection and more wait for a slot instead of being
	// refused by the server.
	MaxSessions int
	// MaxHandshakes bounds the connections being opened (TCP connect, key
	// exchange, authentication) at once, across all hosts; 0 means 64.
	// Handshakes cost CPU on both sides; a thousand at once would starve
	// the machine, and trip MaxStartups on a shared bastion.
	MaxHandshakes int
}

// Defaults for SSHConfig's zero values.
const (
	DefaultDialTimeout       = 10 * time.Second
	DefaultHandshakeTimeout  = 15 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultMaxSessions       = 10
	DefaultMaxHandshakes     = 64
)

// SSH is a Connector that runs commands over SSH, one connection per host.
// It is safe for concurrent use.
type SSH struct {
	cfg        SSHConfig // defaults filled in, paths expanded
	hostKeys   *knownhosts.HostKeyDB
	identities []identity // from IdentityFiles, in order
	agentSock  string     // "" when no agent is used
	secrets    Secrets    // redacted from output, read from the environment by NewSSH

	dials      atomic.Int64
	closed     atomic.Bool
	handshakes chan struct{} // one token per handshake in progress

	mu    sync.Mutex
	hosts map[string]*hostConn // by Host.Name
}

type identity struct {
	path   string
	signer ssh.Signer
}

var _ Connector = (*SSH)(nil)

// NewSSH checks cfg, reads the known_hosts and identity files and returns a
// Connector. It fails when a known_hosts file is missing or unreadable, when
// an identity cannot be used, or when no credential at all is available.
func NewSSH(cfg SSHConfig) (*SSH, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.KeepAliveInterval == 0 {
		cfg.KeepAliveInterval = DefaultKeepAliveInterval
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = DefaultMaxHandshakes
	}
	if cfg.User == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("ssh: find the default login user (set one in the ssh config): %w", err)
		}
		cfg.User = u.Username
	}
	home, homeErr := os.UserHomeDir()
	expand := func(p string) (string, error) {
		if p != "~" && !strings.HasPrefix(p, "~/") {
			return p, nil
		}
		if homeErr != nil {
			return "", fmt.Errorf("expand %s: %w", p, homeErr)
		}
		return filepath.Join(home, p[1:]), nil
	}

	files := cfg.KnownHostsFiles
	if len(files) == 0 {
		files = []string{"~/.ssh/known_hosts"}
	}
	cfg.KnownHostsFiles = make([]string, len(files))
	for i, f := range files {
		p, err := expand(f)
		if err != nil {
			return nil, fmt.Errorf("ssh: known_hosts: %w", err)
		}
		// knownhosts.NewDB would fail too, but without saying what to do.
		fh, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("ssh: known_hosts file %s cannot be read: %w; lieutenant only talks to hosts "+
				"whose keys it lists: create it with each host's key after checking its fingerprint, "+
				"e.g. `ssh-keyscan -p PORT ADDRESS >> %s`", p, err, p)
		}
		fh.Close()
		cfg.KnownHostsFiles[i] = p
	}
	db, err := knownhosts.NewDB(cfg.KnownHostsFiles...)
	if err != nil {
		return nil, fmt.Errorf("ssh: read known_hosts: %w", err)
	}

	s := &SSH{cfg: cfg, hostKeys: db, hosts: make(map[string]*hostConn), handshakes: make(chan struct{}, cfg.MaxHandshakes),
		secrets: SecretsFromEnv()}
	var agentKeys []*agent.Key
	if sock := os.Getenv("SSH_AUTH_SOCK"); cfg.UseAgent && sock != "" {
		s.agentSock = sock
		agentKeys, err = listAgentKeys(sock, cfg.DialTimeout)
		if err != nil {
			return nil, fmt.Errorf("ssh: ssh-agent at SSH_AUTH_SOCK=%s: %w", sock, err)
		}
	}

	paths, explicit := cfg.IdentityFiles, true
	if len(paths) == 0 {
		paths, explicit = []string{"~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"}, false
	}
	cfg.IdentityFiles = nil
	tried := make([]string, 0, len(paths))
	for _, f := range paths {
		p, err := expand(f)
		if err != nil {
			return nil, fmt.Errorf("ssh: identity file: %w", err)
		}
		tried = append(tried, p)
		id, err := loadIdentity(p, agentKeys, s.agentSock != "")
		if errors.Is(err, os.ErrNotExist) && !explicit {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("ssh: identity file %s: %w", p, err)
		}
		cfg.IdentityFiles = append(cfg.IdentityFiles, p)
		if id.signer != nil {
			s.identities = append(s.identities, id)
		}
	}
	s.cfg = cfg
	if len(s.identities) == 0 && s.agentSock == "" {
		why := "SSH_AUTH_SOCK is not set"
		if !cfg.UseAgent {
			why = "the agent is not used"
		}
		return nil, fmt.Errorf("ssh: no credentials: no identity file (tried %s) and %s; "+
			"name a private key or load one into ssh-agent", strings.Join(tried, ", "), why)
	}
	return s, nil
}

// loadIdentity reads a private key. An encrypted key yields no signer when
// the agent holds it (the agent signs for it) and an error otherwise, since
// lieutenant never prompts for a passphrase.
func loadIdentity(path string, agentKeys []*agent.Key, haveAgent bool) (identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return identity{}, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	var missing *ssh.PassphraseMissingError
	if errors.As(err, &missing) {
		pub := missing.PublicKey
		if pub == nil { // old PEM keys do not carry their public half
			if b, err := os.ReadFile(path + ".pub"); err == nil {
				pub, _, _, _, _ = ssh.ParseAuthorizedKey(b)
			}
		}
		for _, k := range agentKeys {
			if pub != nil && bytes.Equal(k.Marshal(), pub.Marshal()) {
				return identity{path: path}, nil
			}
		}
		if pub == nil && haveAgent {
			return identity{path: path}, nil // cannot tell; the agent may hold it
		}
		return identity{}, fmt.Errorf("the key is encrypted and ssh-agent does not hold it; "+
			"lieutenant does not prompt for passphrases: load it with `ssh-add %s` and make "+
			"SSH_AUTH_SOCK point at that agent", path)
	}
	if err != nil {
		return identity{}, fmt.Errorf("parse private key: %w", err)
	}
	return identity{path: path, signer: signer}, nil
}

func listAgentKeys(sock string, timeout time.Duration) ([]*agent.Key, error) {
	conn, err := net.DialTimeout("unix", sock, timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	keys, err := agent.NewClient(conn).List()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// Dials reports how many connections the Connector has attempted, successful
// or not. With healthy hosts it equals the number of distinct hosts
// connected to, which is what benchmarks and tests check.
func (s *SSH) Dials() int { return int(s.dials.Load()) }

// Connect returns the Runner for h, connecting first if no live connection
// to h exists. Concurrent calls for one host share one dial. Host keys are
// checked against known_hosts; an unknown or changed key, and refused
// authentication, are permanent errors (see IsPermanent).
func (s *SSH) Connect(ctx context.Context, h Host) (Runner, error) {
	c, err := s.hostConn(h)
	if err != nil {
		return nil, err
	}
	// Checked before the live connection is handed out, so that an ended
	// ctx fails alike whether or not the host is connected yet.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect to %s (%s): %w", c.host.Name, c.addr, err)
	}
	if _, err := c.client(ctx); err != nil {
		return nil, err
	}
	return c.runner, nil
}

// Close closes every connection. Runs in progress fail; later Connect and
// Run calls return ErrClosed.
func (s *SSH) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	conns := make([]*hostConn, 0, len(s.hosts))
	for _, c := range s.hosts {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, c := range conns {
		c.mu.Lock()
		cl := c.cl
		c.cl = nil
		c.mu.Unlock()
		if cl == nil {
			continue
		}
		if err := cl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close connection to %s: %w", c.host.Name, err))
		}
	}
	return errors.Join(errs...)
}

// hostConn returns the shared state for h, creating it on first use.
func (s *SSH) hostConn(h Host) (*hostConn, error) {
	if h.Name == "" {
		return nil, errors.New("connect: host has no name")
	}
	if h.Port == 0 {
		h.Port = 22
	}
	if h.User == "" {
		h.User = s.cfg.User
	}
	if h.Address == "" {
		return nil, fmt.Errorf("connect to %s: host has no address", h.Name)
	}
	addr := net.JoinHostPort(h.Address, strconv.Itoa(h.Port))
	if s.closed.Load() {
		return nil, fmt.Errorf("connect to %s (%s): %w", h.Name, addr, ErrClosed)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.hosts[h.Name]; ok {
		if c.host != h {
			return nil, fmt.Errorf("connect to %s (%s): this connector already knows a host of that name "+
				"at %s@%s; host names must be unique", h.Name, addr, c.host.User, c.addr)
		}
		return c, nil
	}
	// One session stays spare for stopping a command (see stop).
	slots := max(1, s.cfg.MaxSessions-1)
	c := &hostConn{ssh: s, host: h, addr: addr, slots: make(chan struct{}, slots)}
	c.runner = &sshRunner{c: c}
	s.hosts[h.Name] = c
	return c, nil
}

// hostConn is the connection to one host, shared by all its Runners. It is
// dialled lazily, and again after the connection is lost.
type hostConn struct {
	ssh    *SSH
	host   Host   // port and user filled in
	addr   string // address:port
	runner *sshRunner
	slots  chan struct{} // one token per running session

	mu      sync.Mutex
	cl      *ssh.Client // nil when not connected
	pending *dialCall   // the dial in progress, if any
}

// dialCall is one dial, whose outcome every concurrent caller shares.
type dialCall struct {
	done chan struct{}
	cl   *ssh.Client
	err  error
}

// client returns the live connection, dialling when there is none. Callers
// that arrive during a dial wait for it instead of dialling themselves.
func (c *hostConn) client(ctx context.Context) (*ssh.Client, error) {
	for {
		c.mu.Lock()
		if c.ssh.closed.Load() {
			c.mu.Unlock()
			return nil, fmt.Errorf("connect to %s (%s): %w", c.host.Name, c.addr, ErrClosed)
		}
		if c.cl != nil {
			cl := c.cl
			c.mu.Unlock()
			return cl, nil
		}
		if call := c.pending; call != nil {
			c.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("connect to %s (%s): %w", c.host.Name, c.addr, ctx.Err())
			}
			// A dial that failed only because its caller gave up says nothing
			// about the host: try again while this caller still wants to.
			if call.err != nil && isContextErr(call.err) && ctx.Err() == nil {
				continue
			}
			return call.cl, call.err
		}
		call := &dialCall{done: make(chan struct{})}
		c.pending = call
		c.mu.Unlock()

		cl, err := c.ssh.dial(ctx, c.host, c.addr)
		if err != nil {
			err = fmt.Errorf("connect to %s (%s): %w", c.host.Name, c.addr, err)
		}
		c.mu.Lock()
		c.pending = nil
		if err == nil && c.ssh.closed.Load() {
			// Close ran during the dial and could not see this connection.
			cl.Close()
			cl, err = nil, fmt.Errorf("connect to %s (%s): %w", c.host.Name, c.addr, ErrClosed)
		}
		if err == nil {
			c.cl = cl
			c.watch(cl)
		}
		call.cl, call.err = cl, err
		c.mu.Unlock()
		close(call.done)
		return cl, err
	}
}

// watch forgets cl once it is closed, so that the next command redials, and
// probes it so that a silent peer is noticed.
func (c *hostConn) watch(cl *ssh.Client) {
	dead := make(chan struct{})
	go func() {
		_ = cl.Wait()
		close(dead)
		c.forget(cl)
	}()
	if every := c.ssh.cfg.KeepAliveInterval; every > 0 {
		go keepAlive(cl, every, dead)
	}
}

func keepAlive(cl *ssh.Client, every time.Duration, dead <-chan struct{}) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-dead:
			return
		case <-tick.C:
		}
		replied := make(chan struct{})
		go func() {
			// OpenSSH answers unknown requests with a failure, which is
			// as good a sign of life as a success.
			_, _, _ = cl.SendRequest("keepalive@openssh.com", true, nil)
			close(replied)
		}()
		timeout := time.NewTimer(every)
		select {
		case <-replied:
			timeout.Stop()
		case <-dead:
			timeout.Stop()
			return
		case <-timeout.C:
			cl.Close()
			return
		}
	}
}

// dial opens and authenticates one connection. Errors name the step, not the
// host: the caller adds that.
func (s *SSH) dial(ctx context.Context, h Host, addr string) (*ssh.Client, error) {
	select {
	case s.handshakes <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("dial: %w", ctx.Err())
	}
	defer func() { <-s.handshakes }()
	s.dials.Add(1)
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial: %w", ctx.Err())
		}
		// The poller acts on ctx's deadline, and may do so before ctx's own
		// timer fires: then the dial fails with a bare "i/o timeout" while
		// ctx.Err() is still nil.
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			return nil, fmt.Errorf("dial: %w", context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}

	// x/crypto's ClientConfig.Timeout covers only its own dial, so the
	// handshake gets a deadline on the connection, cleared once it is done.
	timeout := s.cfg.HandshakeTimeout
	deadline, ctxDeadline := time.Now().Add(timeout), false
	if ctxDL, ok := ctx.Deadline(); ok && ctxDL.Before(deadline) {
		deadline, ctxDeadline = ctxDL, true
	}
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh handshake: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })

	signers, agentNote, release := s.signers(ctx, deadline)
	defer release()
	var hostKeyErr error
	checkKey := s.hostKeys.HostKeyCallback()
	config := &ssh.ClientConfig{
		User: h.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			hostKeyErr = s.hostKeyError(addr, key, checkKey(hostname, remote, key))
			return hostKeyErr
		},
		// Asking only for the key types known_hosts holds for the host
		// avoids a false mismatch when the host also has keys of other types.
		HostKeyAlgorithms: s.hostKeys.HostKeyAlgorithms(addr),
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, config)
	ctxDone := !stop()
	if err == nil && ctxDone {
		sc.Close()
		return nil, fmt.Errorf("ssh handshake: %w", ctx.Err())
	}
	if err != nil {
		var algErr *ssh.AlgorithmNegotiationError
		switch {
		case hostKeyErr != nil:
			return nil, hostKeyErr
		case ctxDone || ctx.Err() != nil:
			return nil, fmt.Errorf("ssh handshake: %w", ctx.Err())
		case (errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline)) && ctxDeadline:
			// The connection's deadline was ctx's, which has passed even if
			// ctx's own timer has not fired yet.
			return nil, fmt.Errorf("ssh handshake: %w", context.DeadlineExceeded)
		case errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline):
			return nil, fmt.Errorf("ssh handshake did not finish within %s: %w", timeout, err)
		case errors.As(err, &algErr) && algErr.What == "host key" && len(config.HostKeyAlgorithms) > 0:
			return nil, &HostKeyError{
				Address:         addr,
				KnownHostsFiles: s.cfg.KnownHostsFiles,
				Known:           knownEntries(checkKey, addr, conn.RemoteAddr()),
				OfferedTypes:    algErr.RequestedAlgorithms,
			}
		case isAuthFailure(err):
			return nil, s.authError(h.User, signers, agentNote, err)
		}
		return nil, fmt.Errorf("ssh handshake: %w", err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		sc.Close()
		return nil, fmt.Errorf("ssh handshake: %w", err)
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

// ClientConfig returns the configuration of one SSH connection to addr
// (host:port) as user, for SSH clients other than Connect's, such as Git's:
// the same keys, and the same host key check against known_hosts, whose
// failure is a *HostKeyError. release closes the agent connection the keys
// use; call it once the connection is over.
func (s *SSH) ClientConfig(user, addr string) (cfg *ssh.ClientConfig, release func(), err error) {
	signers, _, release := s.signers(context.Background(), time.Now().Add(s.cfg.HandshakeTimeout))
	checkKey := s.hostKeys.HostKeyCallback()
	return &ssh.ClientConfig{
		User: user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			return s.hostKeyError(addr, key, checkKey(hostname, remote, key))
		},
		HostKeyAlgorithms: s.hostKeys.HostKeyAlgorithms(addr),
		Timeout:           s.cfg.DialTimeout,
	}, release, nil
}

// signers returns the identity-file keys followed by the agent's, and a
// function that releases the agent connection. The agent is asked afresh
// for each connection so that keys added to it since NewSSH are offered; an
// unreachable agent leaves a note for the message should authentication
// fail.
func (s *SSH) signers(ctx context.Context, deadline time.Time) (signers []ssh.Signer, agentNote string, release func()) {
	seen := make(map[string]bool)
	for _, id := range s.identities {
		signers = append(signers, id.signer)
		seen[string(id.signer.PublicKey().Marshal())] = true
	}
	if s.agentSock == "" {
		return signers, "", func() {}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.agentSock)
	if err != nil {
		return signers, fmt.Sprintf("ssh-agent at %s unreachable: %v", s.agentSock, err), func() {}
	}
	// The agent signs during the handshake, which the same deadline bounds.
	_ = conn.SetDeadline(deadline)
	fromAgent, err := agent.NewClient(conn).Signers()
	if err != nil {
		conn.Close()
		return signers, fmt.Sprintf("ssh-agent at %s: %v", s.agentSock, err), func() {}
	}
	for _, sg := range fromAgent {
		if k := string(sg.PublicKey().Marshal()); !seen[k] {
			seen[k] = true
			signers = append(signers, sg)
		}
	}
	return signers, "", func() { conn.Close() }
}

func isAuthFailure(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "unable to authenticate") ||
		strings.Contains(msg, "too many authentication failures")
}

func (s *SSH) authError(user string, signers []ssh.Signer, agentNote string, err error) error {
	offered := make([]string, 0, len(signers))
	for _, sg := range signers {
		name := "ssh-agent key"
		for _, id := range s.identities {
			if id.signer == sg {
				name = id.path
			}
		}
		offered = append(offered, fmt.Sprintf("%s (%s)", name, ssh.FingerprintSHA256(sg.PublicKey())))
	}
	what := "no keys were offered"
	if len(offered) > 0 {
		what = "the host accepted none of the keys offered: " + strings.Join(offered, ", ")
	}
	if agentNote != "" {
		what += "; " + agentNote
	}
	return fmt.Errorf("%w for user %q: %s; check that the user exists on the host and that its "+
		"~/.ssh/authorized_keys holds one of these keys: %w", ErrAuthFailed, user, what, err)
}

// HostKeyError reports a host key that no known_hosts file vouches for. It
// matches ErrHostKeyUnknown, or ErrHostKeyChanged when known_hosts holds
// other keys for the host, with errors.Is.
type HostKeyError struct {
	Address         string        // address:port dialled
	Offered         ssh.PublicKey // the key the host offered; nil when it offered none of the known types
	OfferedTypes    []string      // when Offered is nil: the key types the host offers
	KnownHostsFiles []string      // the files checked
	Known           []string      // the entries known for the host, as "file:line type fingerprint"
	Revoked         bool          // the offered key is marked @revoked
}

// Changed reports whether known_hosts vouches for other keys of the host (or
// revoked the offered one): the case of a possible man-in-the-middle.
func (e *HostKeyError) Changed() bool { return len(e.Known) > 0 || e.Revoked }

// Is makes errors.Is(err, ErrHostKeyUnknown) and
// errors.Is(err, ErrHostKeyChanged) work.
func (e *HostKeyError) Is(target error) bool {
	if e.Changed() {
		return target == ErrHostKeyChanged
	}
	return target == ErrHostKeyUnknown
}

func (e *HostKeyError) Error() string {
	host, port, err := net.SplitHostPort(e.Address)
	if err != nil {
		host, port = e.Address, "22"
	}
	entry := knownhosts.Normalize(e.Address)
	file := "~/.ssh/known_hosts"
	if len(e.KnownHostsFiles) > 0 {
		file = e.KnownHostsFiles[0]
	}
	keyscan := "ssh-keyscan " + Quote(host) + " >> " + Quote(file)
	if port != "22" {
		keyscan = "ssh-keyscan -p " + port + " " + Quote(host) + " >> " + Quote(file)
	}
	offered := "the host offers none of the key types known for it (it offers " +
		strings.Join(e.OfferedTypes, ", ") + ")"
	if e.Offered != nil {
		offered = fmt.Sprintf("the host offered key %s %s", e.Offered.Type(), ssh.FingerprintSHA256(e.Offered))
	}
	var b strings.Builder
	switch {
	case e.Revoked:
		fmt.Fprintf(&b, "HOST KEY CHANGED: %s, which known_hosts marks @revoked", offered)
	case e.Changed():
		fmt.Fprintf(&b, "HOST KEY CHANGED: %s, but known_hosts holds a different key for %s (%s)",
			offered, entry, strings.Join(e.Known, "; "))
	default:
		fmt.Fprintf(&b, "host key unknown: %s, which %s holds for %s; if this fingerprint is the host's "+
			"real key (check it out of band, e.g. `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the host's "+
			"console), trust it with `%s`", offered, noneOf(e.KnownHostsFiles), entry, keyscan)
		return b.String()
	}
	fmt.Fprintf(&b, ". This is a possible man-in-the-middle attack, or the host was reinstalled. "+
		"lieutenant will not connect and has no option to override this: verify the host's new key "+
		"out of band, then remove the old entry with `ssh-keygen -R %s -f %s` and add the new one "+
		"(`%s`)", Quote(entry), Quote(file), keyscan)
	return b.String()
}

func noneOf(files []string) string {
	if len(files) == 1 {
		return "no line of " + files[0]
	}
	return "none of " + strings.Join(files, ", ")
}

// hostKeyError turns the known_hosts verdict on key into a *HostKeyError,
// or returns nil when key is known.
func (s *SSH) hostKeyError(addr string, key ssh.PublicKey, err error) error {
	if err == nil {
		return nil
	}
	e := &HostKeyError{Address: addr, Offered: key, KnownHostsFiles: s.cfg.KnownHostsFiles}
	var keyErr *xknownhosts.KeyError
	var revoked *xknownhosts.RevokedError
	switch {
	case errors.As(err, &revoked):
		e.Revoked = true
		e.Known = []string{describeKnownKey(revoked.Revoked)}
	case errors.As(err, &keyErr):
		for _, k := range keyErr.Want {
			e.Known = append(e.Known, describeKnownKey(k))
		}
	default:
		return fmt.Errorf("check host key: %w", err)
	}
	return e
}

// knownEntries lists the known_hosts entries for addr, for the message
// about a host that offers none of their key types. It asks check about a
// key that matches nothing, whose rejection lists every entry for the host.
func knownEntries(check ssh.HostKeyCallback, addr string, remote net.Addr) []string {
	var keyErr *xknownhosts.KeyError
	if err := check(addr, remote, probeKey{}); !errors.As(err, &keyErr) || len(keyErr.Want) == 0 {
		return []string{"entries of other key types"}
	}
	out := make([]string, 0, len(keyErr.Want))
	for _, k := range keyErr.Want {
		out = append(out, describeKnownKey(k))
	}
	return out
}

// probeKey is a host key no known_hosts line can hold.
type probeKey struct{}

func (probeKey) Type() string                        { return "lieutenant-probe" }
func (probeKey) Marshal() []byte                     { return []byte("lieutenant-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key verifies nothing") }

func describeKnownKey(k xknownhosts.KnownKey) string {
	return fmt.Sprintf("%s:%d %s %s", k.Filename, k.Line, k.Key.Type(), ssh.FingerprintSHA256(k.Key))
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// sshRunner runs commands on one host, one SSH session per command, over
// the host's shared connection.
type sshRunner struct{ c *hostConn }

func (r *sshRunner) Run(ctx context.Context, cmd Command) (Result, error) {
	res, err := r.c.run(ctx, cmd)
	if err != nil {
		return res, fmt.Errorf("run on %s: %s: %w", r.c.host.Name, brief(cmd), err)
	}
	return res, nil
}

func (c *hostConn) run(parent context.Context, cmd Command) (Result, error) {
	if err := cmd.check(); err != nil {
		return Result{ExitStatus: -1}, err
	}
	if err := parent.Err(); err != nil {
		return Result{ExitStatus: -1}, err
	}
	ctx, cancel, out := newCapture(parent, cmd, c.ssh.secrets)
	defer cancel()
	start := time.Now()
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{ExitStatus: -1}, fmt.Errorf("wait for a free session: %w", ctx.Err())
	}
	release := func() { <-c.slots }
	cl, sess, err := c.openSession(ctx)
	if err != nil {
		release()
		return Result{ExitStatus: -1}, err
	}

	stderr := &stderrFilter{out: out.stderr, pidSeen: make(chan struct{})}
	sess.Stdout, sess.Stderr = out.stdout, stderr
	var (
		mu        sync.Mutex
		started   bool // the exec request is on its way
		abandoned bool // Run returned because ctx ended
	)
	done := make(chan error, 1)
	go func() {
		defer release()
		defer sess.Close()
		mu.Lock()
		if abandoned {
			mu.Unlock()
			return
		}
		started = true
		mu.Unlock()
		if err := sess.Start(remoteLine(cmd)); err != nil {
			done <- fmt.Errorf("start: %w", err)
			return
		}
		err := sess.Wait()
		stderr.flush()
		done <- err
	}()

	select {
	case err = <-done:
	case <-ctx.Done():
		mu.Lock()
		abandoned = true
		kill := started
		mu.Unlock()
		if kill {
			go c.stop(cl, sess, stderr, cmd.Sudo, done)
		}
		res := Result{ExitStatus: -1, Duration: time.Since(start)}
		out.fill(&res)
		if err := out.limitErr(parent); err != nil {
			return res, err
		}
		return res, parent.Err()
	}

	res := Result{Duration: time.Since(start)}
	out.fill(&res)
	if err := out.limitErr(parent); err != nil {
		res.ExitStatus = -1
		return res, err
	}
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &exitErr):
		res.ExitStatus = exitErr.ExitStatus()
		return res, &ExitError{Status: res.ExitStatus, Signal: exitErr.Signal(), Stderr: stderrTail(res.Stderr)}
	}
	res.ExitStatus = -1
	switch {
	case c.ssh.closed.Load():
		return res, ErrClosed
	case parent.Err() != nil:
		return res, parent.Err()
	case errors.As(err, &missing):
		return res, fmt.Errorf("no exit status arrived, so the connection was probably lost and the "+
			"command's effect is unknown: %w", err)
	}
	return res, err
}

// openSession opens a session on the host's connection. A connection found
// dead is replaced once: no command has started on it, so that is safe.
func (c *hostConn) openSession(ctx context.Context) (*ssh.Client, *ssh.Session, error) {
	type opened struct {
		sess *ssh.Session
		err  error
	}
	for attempt := 1; ; attempt++ {
		cl, err := c.client(ctx)
		if err != nil {
			return nil, nil, err
		}
		// NewSession waits for the server's answer, which a silent peer
		// never sends: wait in a goroutine, and for ctx here.
		ch := make(chan opened, 1)
		go func() {
			s, err := cl.NewSession()
			ch <- opened{s, err}
		}()
		var o opened
		select {
		case o = <-ch:
		case <-ctx.Done():
			go func() {
				if o := <-ch; o.sess != nil {
					o.sess.Close()
				}
			}()
			return nil, nil, fmt.Errorf("open session: %w", ctx.Err())
		}
		if o.err == nil {
			return cl, o.sess, nil
		}
		if c.ssh.closed.Load() {
			return nil, nil, ErrClosed
		}
		var refused *ssh.OpenChannelError
		if errors.As(o.err, &refused) || attempt > 1 {
			return nil, nil, fmt.Errorf("open session: %w", o.err)
		}
		c.forget(cl)
		cl.Close()
	}
}

// forget drops cl as the host's connection, if it still is.
func (c *hostConn) forget(cl *ssh.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cl == cl {
		c.cl = nil
	}
}

// pidMarker starts the line the remote shell writes to stderr, just before
// it execs the command, to tell its PID. sshd starts each session in a new
// process session, so that PID is also the command's process group.
const pidMarker = "lieutenant-pid="

// remoteLine is the line the remote login shell runs for cmd. exec makes the
// command the shell's own process, so that its PID is known, and makes the
// first word a program, as for Local, never a shell builtin or keyword.
func remoteLine(cmd Command) string {
	return "printf '" + pidMarker + "%s\\n' \"$$\" >&2; exec " + cmd.String()
}

// stopTimeout bounds how long stopping a command may take in the background.
const stopTimeout = 10 * time.Second

// stop kills a command whose ctx ended, then closes its session. It kills
// the command's process group from a second session (with sudo when the
// command ran with it), because OpenSSH refuses "signal" requests for root
// logins and a signal to sudo would not reach its command; the signal
// request is the fallback when the PID is unknown.
func (c *hostConn) stop(cl *ssh.Client, sess *ssh.Session, stderr *stderrFilter, sudo bool, ended <-chan error) {
	defer sess.Close()
	timeout := time.NewTimer(stopTimeout)
	defer timeout.Stop()
	select {
	case <-stderr.pidSeen:
	case <-ended:
		return
	case <-timeout.C:
		_ = sess.Signal(ssh.SIGKILL)
		return
	}
	killer, err := cl.NewSession()
	if err != nil {
		_ = sess.Signal(ssh.SIGKILL)
		return
	}
	defer killer.Close()
	stopKiller := time.AfterFunc(stopTimeout, func() { killer.Close() })
	defer stopKiller.Stop()
	kill := Command{Args: []string{"kill", "-s", "KILL", "--", "-" + strconv.Itoa(stderr.pid)}, Sudo: sudo}
	if err := killer.Run(kill.String()); err != nil {
		_ = sess.Signal(ssh.SIGKILL)
	}
}

// stderrFilter passes a session's stderr on to out, without the line that
// carries the PID. Lines before it (from the login shell's startup files)
// are passed on too.
type stderrFilter struct {
	out     *Tail
	pidSeen chan struct{} // closed once pid is set

	mu      sync.Mutex
	pending []byte // held back while the PID line may still come
	done    bool   // the PID line has passed, or will not come
	pid     int
}

func (f *stderrFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return f.out.Write(p)
	}
	f.pending = append(f.pending, p...)
	for !f.done {
		i := bytes.IndexByte(f.pending, '\n')
		if i < 0 {
			break
		}
		line := f.pending[:i+1]
		f.pending = f.pending[i+1:]
		if rest, ok := bytes.CutPrefix(line, []byte(pidMarker)); ok {
			if pid, err := strconv.Atoi(string(bytes.TrimSpace(rest))); err == nil && pid > 0 {
				f.pid = pid
				close(f.pidSeen)
			}
			f.done = true
			continue
		}
		f.out.Write(line)
	}
	if f.done || len(f.pending) > 64<<10 {
		f.flushLocked()
	}
	return len(p), nil
}

// flush passes on whatever is held back; the session has ended.
func (f *stderrFilter) flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushLocked()
}

func (f *stderrFilter) flushLocked() {
	f.done = true
	if len(f.pending) > 0 {
		f.out.Write(f.pending)
		f.pending = nil
	}
}

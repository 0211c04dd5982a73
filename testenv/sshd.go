package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// SSHD is an OpenSSH server started for one test on 127.0.0.1, with a fresh
// host key and a client key authorized for the current user.
type SSHD struct {
	Addr           string        // "127.0.0.1:PORT"
	Port           int           // the port sshd listens on
	User           string        // the user the client key logs in as: the current user
	IdentityFile   string        // the client's private key (ed25519, no passphrase)
	KnownHostsFile string        // one line, "[127.0.0.1]:PORT ssh-ed25519 ...", from the real host key
	HostPublicKey  ssh.PublicKey // the server's host key
	Dir            string        // holds the config, keys and files above

	log *SafeBuffer
}

// Host returns a transport.Host named name that points at the server.
func (s *SSHD) Host(name string) transport.Host {
	return transport.Host{Name: name, Address: "127.0.0.1", Port: s.Port, User: s.User}
}

// SSHConfig returns a transport.SSHConfig that trusts the server's host key
// and logs in with the client key, and nothing else (no agent).
func (s *SSHD) SSHConfig() transport.SSHConfig {
	return transport.SSHConfig{
		User:            s.User,
		KnownHostsFiles: []string{s.KnownHostsFile},
		IdentityFiles:   []string{s.IdentityFile},
	}
}

// Log returns what sshd has logged so far.
func (s *SSHD) Log() string { return s.log.String() }

// SSHDOption changes how StartSSHD configures the server.
type SSHDOption func(*sshdOptions)

type sshdOptions struct {
	maxStartups int
	maxSessions int
	extra       []string
}

// SSHDMaxStartups sets how many connections may be in the handshake at once
// (sshd's MaxStartups); more are dropped. The default is 1000, so that a
// benchmark can open dozens of connections at once.
func SSHDMaxStartups(n int) SSHDOption { return func(o *sshdOptions) { o.maxStartups = n } }

// SSHDMaxSessions sets how many sessions one connection may have open at once
// (sshd's MaxSessions). The default is 100; OpenSSH's own default is 10.
func SSHDMaxSessions(n int) SSHDOption { return func(o *sshdOptions) { o.maxSessions = n } }

// SSHDConfig adds lines to sshd_config, e.g. "LogLevel DEBUG3". They come
// before StartSSHD's own, and sshd keeps the first value it reads for most
// keywords, so they override StartSSHD's settings (but add to multi-valued
// ones such as Port and HostKey).
func SSHDConfig(lines ...string) SSHDOption {
	return func(o *sshdOptions) { o.extra = append(o.extra, lines...) }
}

// StartSSHD starts OpenSSH's sshd on a free port of 127.0.0.1 and returns
// once it answers there with its own host key. It is stopped on t.Cleanup. Without
// sshd or ssh-keygen the test is skipped, or fails under CI.
func StartSSHD(t testing.TB, opts ...SSHDOption) *SSHD {
	t.Helper()
	bins := RequireBinaries(t, "sshd", "ssh-keygen")
	o := sshdOptions{maxStartups: 1000, maxSessions: 100}
	for _, opt := range opts {
		opt(&o)
	}
	sshdPath, err := filepath.Abs(bins["sshd"]) // sshd re-executes itself and insists on an absolute path
	if err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("start sshd: find the current user: %v", err)
	}
	if os.Geteuid() == 0 {
		// sshd running as root needs its privilege separation directory, which
		// only a booted system's tmpfiles.d creates. It stays: other sshds
		// may use it.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("start sshd: create /run/sshd: %v", err)
		}
	}

	dir := t.TempDir()
	s := &SSHD{
		User:           u.Username,
		IdentityFile:   filepath.Join(dir, "id_ed25519"),
		KnownHostsFile: filepath.Join(dir, "known_hosts"),
		Dir:            dir,
	}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	sshKeygen(t, bins["ssh-keygen"], hostKey, "lieutenant-test-host")
	sshKeygen(t, bins["ssh-keygen"], s.IdentityFile, "lieutenant-test-client")
	hostPub := sshdReadFile(t, hostKey+".pub")
	s.HostPublicKey, _, _, _, err = ssh.ParseAuthorizedKey(hostPub)
	if err != nil {
		t.Fatalf("start sshd: parse host key: %v", err)
	}
	sshdWriteFile(t, filepath.Join(dir, "authorized_keys"), sshdReadFile(t, s.IdentityFile+".pub"))

	// The port is free when picked but may be taken before sshd binds it:
	// then try another.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		s.Port = sshdFreePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
		sshdWriteFile(t, s.KnownHostsFile,
			[]byte(fmt.Sprintf("[127.0.0.1]:%d %s\n", s.Port, strings.TrimSpace(string(hostPub)))))
		cfg := writeSSHDConfig(t, sshdPath, dir, hostKey, s.Port, o)
		err := s.start(t, sshdPath, cfg)
		if err == nil {
			return s
		}
		if !errors.Is(err, errSSHDPortTaken) || attempt == attempts {
			t.Fatalf("start sshd: %v\nsshd log:\n%s", err, s.log)
		}
	}
}

var errSSHDPortTaken = errors.New("port taken")

// start runs sshd and waits until it answers. On failure sshd has been
// stopped.
func (s *SSHD) start(t testing.TB, sshdPath, cfg string) error {
	s.log = &SafeBuffer{}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", cfg)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Its own process group, so that stopping it reaches the session
	// processes it forked too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}

	// Ready once the server on the port offers our host key while our
	// process runs. A banner alone proves nothing: the port was free when
	// picked, but another test's server may have taken it since, and ours
	// then fails to bind and exits while theirs answers.
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-exited:
			if log := s.log.String(); strings.Contains(log, "Address already in use") {
				return fmt.Errorf("%w: %s", errSSHDPortTaken, s.Addr)
			}
			return fmt.Errorf("sshd exited before accepting connections on %s", s.Addr)
		default:
		}
		if s.offersHostKey() {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("sshd log:\n%s", s.log)
				}
			})
			return nil
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("sshd did not answer on %s within 15s", s.Addr)
		}
		<-tick.C
	}
}

// offersHostKey reports whether the SSH server on s.Addr offers
// s.HostPublicKey, which was made for this server alone. The probe stops
// after the key exchange, before authentication.
func (s *SSHD) offersHostKey() bool {
	conn, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	want := s.HostPublicKey.Marshal()
	// Returned by the key check to end the handshake there.
	errOurs := errors.New("the server offers our host key")
	cfg := &ssh.ClientConfig{
		User:              "lieutenant-readiness-probe",
		HostKeyAlgorithms: []string{s.HostPublicKey.Type()},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if bytes.Equal(key.Marshal(), want) {
				return errOurs
			}
			return errors.New("another server's host key")
		},
	}
	_, _, _, err = ssh.NewClientConn(conn, s.Addr, cfg)
	return errors.Is(err, errOurs)
}

func writeSSHDConfig(t testing.TB, sshdPath, dir, hostKey string, port int, o sshdOptions) string {
	t.Helper()
	lines := append(o.extra[:len(o.extra):len(o.extra)],
		"Port "+strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey "+hostKey,
		"PidFile none",
		"AuthorizedKeysFile "+filepath.Join(dir, "authorized_keys"),
		// The key files live in a test's temporary directory, whose parents
		// sshd's ownership checks would reject.
		"StrictModes no",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"UseDNS no",
		"PrintMotd no",
		"MaxStartups "+strconv.Itoa(o.maxStartups),
		"MaxSessions "+strconv.Itoa(o.maxSessions),
		"MaxAuthTries 20",
		"LogLevel INFO",
		// bash sources ~/.bashrc for commands sshd runs unless SHLVL says
		// it is nested; a heavy one (pyenv init, say) would otherwise add
		// seconds to every command and serialise concurrent ones.
		"SetEnv SHLVL=1",
	)
	path := filepath.Join(dir, "sshd_config")
	// OpenSSH 9.8 and later penalise addresses whose connections fail
	// authentication, and tests fail authentication on purpose from
	// 127.0.0.1. Older versions reject the keyword, so ask sshd itself.
	withPenaltiesOff := append([]string{"PerSourcePenalties no"}, lines...)
	sshdWriteFile(t, path, []byte(strings.Join(withPenaltiesOff, "\n")+"\n"))
	if out, err := exec.Command(sshdPath, "-t", "-f", path).CombinedOutput(); err == nil {
		return path
	} else if !bytes.Contains(out, []byte("PerSourcePenalties")) {
		t.Fatalf("start sshd: sshd -t rejects the config: %v\n%s", err, out)
	}
	sshdWriteFile(t, path, []byte(strings.Join(lines, "\n")+"\n"))
	if out, err := exec.Command(sshdPath, "-t", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("start sshd: sshd -t rejects the config: %v\n%s", err, out)
	}
	return path
}

func sshKeygen(t testing.TB, keygenPath, path, comment string) {
	t.Helper()
	out, err := exec.Command(keygenPath, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", path, err, out)
	}
}

func sshdFreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ClosedPort returns a port of 127.0.0.1 that refuses connections until the
// test ends. A port that was merely closed again could be taken meanwhile by
// a server another test (or package) starts; this one is held by a socket
// bound to it that never listens, which on Linux refuses connections and
// keeps anyone else from listening there.
func ClosedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("hold a closed port: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("hold a closed port: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("hold a closed port: %v", err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// HangingPort returns a port of 127.0.0.1 on which connection attempts hang
// (until their deadline) for the rest of the test, as with a host whose
// network drops packets: a socket listens there with a backlog of 0 and one
// connection it never accepts, so that Linux drops every further SYN. The
// test is skipped on a kernel that does not behave so.
func HangingPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("make a hanging port: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("make a hanging port: bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("make a hanging port: listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("make a hanging port: %v", err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	filler, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("make a hanging port: fill the accept queue: %v", err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp4", addr, 100*time.Millisecond); err == nil {
		c.Close()
		Unavailable(t, "this kernel completes connections beyond the listen backlog: cannot make a port hang")
	}
	return port
}

func sshdReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sshdWriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

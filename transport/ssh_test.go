package transport_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
	"github.com/lieutenant-deploy/lieutenant/transport/transporttest"
)

func newSSH(t *testing.T, cfg transport.SSHConfig) *transport.SSH {
	t.Helper()
	c, err := transport.NewSSH(cfg)
	if err != nil {
		t.Fatalf("NewSSH: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func connect(t *testing.T, c transport.Connector, h transport.Host) transport.Runner {
	t.Helper()
	r, err := c.Connect(testCtx(t), h)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return r
}

// clientFiles returns a known_hosts file and an identity file that are valid
// but vouch for nothing, for tests that never get as far as the host key.
func clientFiles(t *testing.T) (knownHosts, identity string) {
	dir := t.TempDir()
	identity, _ = writeKey(t, dir, "id_ed25519", "")
	return writeFile(t, dir, "known_hosts", nil), identity
}

func TestSSHConformance(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	c := newSSH(t, sshd.SSHConfig())
	transporttest.RunConformance(t, func(t *testing.T) transport.Runner {
		return connect(t, c, sshd.Host("web-1"))
	})
	if got := c.Dials(); got != 1 {
		t.Errorf("Dials() = %d after the whole suite, want 1: every command shares the host's connection", got)
	}
}

func TestSSHConnectorConformance(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	transporttest.RunConnectorConformance(t, func(t *testing.T) (transport.Connector, []transport.Host) {
		// Two names for one server: the connector keeps a connection per
		// host name, which is what it counts.
		return newSSH(t, sshd.SSHConfig()), []transport.Host{sshd.Host("web-1"), sshd.Host("web-2")}
	})
}

func TestSSHCancelKillsRemoteProcess(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	r := connect(t, newSSH(t, sshd.SSHConfig()), sshd.Host("web-1"))
	for _, sudo := range []bool{false, true} {
		t.Run(fmt.Sprintf("sudo=%v", sudo), func(t *testing.T) {
			if sudo {
				// Skipped without sudo, except under CI, which installs it.
				testenv.RequireBinaries(t, "sudo")
			}
			sleep := uniqueSleep(t)
			ctx, cancel := context.WithCancel(t.Context())
			errc := make(chan error, 1)
			go func() { _, err := r.Run(ctx, transport.Command{Args: sleep, Sudo: sudo}); errc <- err }()
			// sshd runs on this machine, so its sessions' processes are visible here.
			testenv.WaitFor(t, 5*time.Second, "remote sleep starts", func() bool { return processRunning(t, sleep...) })
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want one wrapping context.Canceled", err)
			}
			testenv.WaitFor(t, 3*time.Second, "remote sleep is killed", func() bool { return !processRunning(t, sleep...) })
		})
	}
}

func TestSSHExitBySignal(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	r := connect(t, newSSH(t, sshd.SSHConfig()), sshd.Host("web-1"))
	res, err := r.Run(testCtx(t), cmd("sh", "-c", "kill -KILL $$"))
	var exitErr *transport.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("err = %v, want one wrapping *transport.ExitError", err)
	}
	if exitErr.Status != 137 || res.ExitStatus != 137 {
		t.Errorf("status %d, result status %d; want 137 (128+KILL)", exitErr.Status, res.ExitStatus)
	}
	if exitErr.Signal != "KILL" || !strings.Contains(err.Error(), "killed by signal KILL") {
		t.Errorf("signal %q, err %q; want KILL and a message saying so", exitErr.Signal, err)
	}
}

func TestSSHErrorsNameHostAndCommand(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	r := connect(t, newSSH(t, sshd.SSHConfig()), sshd.Host("web-1"))
	_, err := r.Run(testCtx(t), cmd("sh", "-c", "exit 3"))
	if want := "run on web-1: sh -c 'exit 3': exited with status 3"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestSSHUnknownHostKey(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	_, identity := clientFiles(t)
	otherKey, _ := writeKey(t, t.TempDir(), "other", "")
	otherPub := mustPublicKey(t, otherKey)
	for name, content := range map[string]string{
		"empty file": "",
		// A key for the same address on another port says nothing about this one.
		"other port": fmt.Sprintf("[127.0.0.1]:%d %s", sshd.Port+1, ssh.MarshalAuthorizedKey(otherPub)),
	} {
		t.Run(name, func(t *testing.T) {
			knownHosts := writeFile(t, t.TempDir(), "known_hosts", []byte(content))
			c := newSSH(t, transport.SSHConfig{User: sshd.User, KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}})
			_, err := c.Connect(testCtx(t), sshd.Host("web-1"))
			if !errors.Is(err, transport.ErrHostKeyUnknown) || errors.Is(err, transport.ErrHostKeyChanged) {
				t.Fatalf("err = %v, want one matching ErrHostKeyUnknown only", err)
			}
			if !transport.IsPermanent(err) {
				t.Error("IsPermanent = false, want true")
			}
			var hkErr *transport.HostKeyError
			if !errors.As(err, &hkErr) || hkErr.Offered == nil ||
				ssh.FingerprintSHA256(hkErr.Offered) != ssh.FingerprintSHA256(sshd.HostPublicKey) {
				t.Errorf("HostKeyError = %+v, want one carrying the offered key", hkErr)
			}
			msg := err.Error()
			for _, want := range []string{
				"connect to web-1 (" + sshd.Addr + "): host key unknown",
				"ssh-ed25519",
				ssh.FingerprintSHA256(sshd.HostPublicKey),
				knownHosts,
				fmt.Sprintf("ssh-keyscan -p %d 127.0.0.1 >> %s", sshd.Port, knownHosts),
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("error message lacks %q:\n%s", want, msg)
				}
			}
		})
	}
}

// TestSSHUnknownHostKeyAdviceWorks follows the advice the error gives and
// checks that the host is then trusted.
func TestSSHUnknownHostKeyAdviceWorks(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	bins := testenv.RequireBinaries(t, "ssh-keyscan")
	_, identity := clientFiles(t)
	knownHosts := writeFile(t, t.TempDir(), "known_hosts", nil)
	cfg := transport.SSHConfig{User: sshd.User, KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}}
	if _, err := newSSH(t, cfg).Connect(testCtx(t), sshd.Host("web-1")); !errors.Is(err, transport.ErrHostKeyUnknown) {
		t.Fatalf("err = %v, want ErrHostKeyUnknown", err)
	}
	out, err := exec.Command(bins["ssh-keyscan"], "-p", fmt.Sprint(sshd.Port), "127.0.0.1").Output()
	if err != nil {
		t.Fatalf("ssh-keyscan: %v", err)
	}
	writeFile(t, filepath.Dir(knownHosts), "known_hosts", out)
	// Only the key's verdict changes: the client key is still not authorized.
	if _, err := newSSH(t, cfg).Connect(testCtx(t), sshd.Host("web-1")); !errors.Is(err, transport.ErrAuthFailed) {
		t.Errorf("after ssh-keyscan: err = %v, want the host key accepted (and auth to fail)", err)
	}
}

func TestSSHChangedHostKey(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	otherKey, _ := writeKey(t, t.TempDir(), "other", "")
	ed25519Pub := mustPublicKey(t, otherKey)
	ecdsaPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecdsaPub, err := ssh.NewPublicKey(&ecdsaPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, known := range map[string]ssh.PublicKey{
		"same key type": ed25519Pub,
		// The host offers no key of the type known for it.
		"other key type": ecdsaPub,
	} {
		t.Run(name, func(t *testing.T) {
			line := fmt.Sprintf("[127.0.0.1]:%d %s", sshd.Port, ssh.MarshalAuthorizedKey(known))
			knownHosts := writeFile(t, t.TempDir(), "known_hosts", []byte(line))
			cfg := sshd.SSHConfig()
			cfg.KnownHostsFiles = []string{knownHosts}
			_, err := newSSH(t, cfg).Connect(testCtx(t), sshd.Host("web-1"))
			if !errors.Is(err, transport.ErrHostKeyChanged) || errors.Is(err, transport.ErrHostKeyUnknown) {
				t.Fatalf("err = %v, want one matching ErrHostKeyChanged only", err)
			}
			if !transport.IsPermanent(err) {
				t.Error("IsPermanent = false, want true")
			}
			msg := err.Error()
			for _, want := range []string{
				"connect to web-1 (" + sshd.Addr + "): HOST KEY CHANGED",
				"possible man-in-the-middle attack",
				ssh.FingerprintSHA256(known),
				knownHosts + ":1",
				"no option to override",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("error message lacks %q:\n%s", want, msg)
				}
			}
			if name == "same key type" && !strings.Contains(msg, ssh.FingerprintSHA256(sshd.HostPublicKey)) {
				t.Errorf("error message lacks the offered key's fingerprint:\n%s", msg)
			}
		})
	}
}

func TestSSHAuthFailure(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	t.Run("key not authorized", func(t *testing.T) {
		wrongKey, wrongPub := writeKey(t, t.TempDir(), "id_wrong", "")
		cfg := sshd.SSHConfig()
		cfg.IdentityFiles = []string{wrongKey}
		_, err := newSSH(t, cfg).Connect(testCtx(t), sshd.Host("web-1"))
		if !errors.Is(err, transport.ErrAuthFailed) || !transport.IsPermanent(err) {
			t.Fatalf("err = %v, want a permanent ErrAuthFailed", err)
		}
		for _, want := range []string{
			"connect to web-1 (" + sshd.Addr + "): authentication failed",
			fmt.Sprintf("user %q", sshd.User),
			wrongKey,
			ssh.FingerprintSHA256(wrongPub),
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error message lacks %q:\n%s", want, err)
			}
		}
	})
	t.Run("no such user", func(t *testing.T) {
		h := sshd.Host("web-1")
		h.User = "lieutenant-no-such-user"
		_, err := newSSH(t, sshd.SSHConfig()).Connect(testCtx(t), h)
		if !errors.Is(err, transport.ErrAuthFailed) || !strings.Contains(err.Error(), `"lieutenant-no-such-user"`) {
			t.Errorf("err = %v, want ErrAuthFailed naming the user", err)
		}
	})
}

func TestSSHAgentWithEncryptedKey(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	dir := t.TempDir()
	keyPath, pub := writeKey(t, dir, "id_encrypted", "secret")
	f, err := os.OpenFile(filepath.Join(sshd.Dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(ssh.MarshalAuthorizedKey(pub))
	f.Close()

	raw, err := ssh.ParseRawPrivateKeyWithPassphrase(mustRead(t, keyPath), []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: raw}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SSH_AUTH_SOCK", serveAgent(t, keyring))

	cfg := sshd.SSHConfig()
	cfg.IdentityFiles = []string{keyPath}
	cfg.UseAgent = true
	r := connect(t, newSSH(t, cfg), sshd.Host("web-1"))
	if res, err := r.Run(testCtx(t), cmd("echo", "via agent")); err != nil || string(res.Stdout) != "via agent\n" {
		t.Errorf("Run = %q, %v; want %q, nil", res.Stdout, err, "via agent\n")
	}
}

// serveAgent serves keyring as an ssh-agent on a new socket and returns its path.
func serveAgent(t *testing.T, keyring agent.Agent) string {
	// Unix socket paths are short; t.TempDir's may be too long.
	dir, err := os.MkdirTemp("", "agent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = agent.ServeAgent(keyring, conn)
			})
		}
	})
	return sock
}

func TestNewSSHEncryptedKeyWithoutAgent(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "")
	knownHosts, _ := clientFiles(t)
	keyPath, _ := writeKey(t, t.TempDir(), "id_encrypted", "secret")
	_, err := transport.NewSSH(transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{keyPath}, UseAgent: true})
	if err == nil {
		t.Fatal("NewSSH with an encrypted key and no agent: err = nil, want an error")
	}
	for _, want := range []string{keyPath, "encrypted", "ssh-add " + keyPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error message lacks %q:\n%s", want, err)
		}
	}
}

func TestNewSSHConfigErrors(t *testing.T) {
	knownHosts, identity := clientFiles(t)
	missing := filepath.Join(t.TempDir(), "missing")
	home := t.TempDir() // holds no ~/.ssh
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	for _, tc := range []struct {
		name string
		cfg  transport.SSHConfig
		want []string
	}{
		{"missing known_hosts", transport.SSHConfig{KnownHostsFiles: []string{missing}, IdentityFiles: []string{identity}},
			[]string{"known_hosts file " + missing, "ssh-keyscan", ">> " + missing}},
		{"default known_hosts missing", transport.SSHConfig{IdentityFiles: []string{identity}},
			[]string{filepath.Join(home, ".ssh", "known_hosts")}},
		{"missing identity file", transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{missing}},
			[]string{"identity file " + missing}},
		{"no credentials", transport.SSHConfig{KnownHostsFiles: []string{knownHosts}},
			[]string{"no credentials", filepath.Join(home, ".ssh", "id_ed25519")}},
		{"not a key", transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{knownHosts}},
			[]string{"identity file " + knownHosts, "parse private key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := transport.NewSSH(tc.cfg)
			if err == nil {
				t.Fatal("err = nil, want an error")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error message lacks %q:\n%s", want, err)
				}
			}
		})
	}
}

func TestSSHDialClosedPort(t *testing.T) {
	knownHosts, identity := clientFiles(t)
	port := testenv.ClosedPort(t)
	c := newSSH(t, transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}})
	start := time.Now()
	_, err := c.Connect(testCtx(t), transport.Host{Name: "web-1", Address: "127.0.0.1", Port: port})
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Connect to a closed port took %v, want it to fail at once", elapsed)
	}
	want := fmt.Sprintf("connect to web-1 (127.0.0.1:%d): dial: ", port)
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want one starting %q", err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("err = %v, want one wrapping ECONNREFUSED", err)
	}
	if transport.IsPermanent(err) {
		t.Error("IsPermanent = true for a refused connection, want false: the host may come up")
	}
}

// A dial cut short by ctx's deadline reports the deadline, even when ctx's
// timer has not fired yet, and not a network timeout of the host's.
func TestSSHDialContextDeadline(t *testing.T) {
	knownHosts, identity := clientFiles(t)
	port := testenv.HangingPort(t)
	c := newSSH(t, transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}})
	ctx := testenv.LateTimer(t.Context(), 100*time.Millisecond)
	start := time.Now()
	_, err := c.Connect(ctx, transport.Host{Name: "web-1", Address: "127.0.0.1", Port: port})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want one wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Connect took %s, want it to end at the ctx deadline", d)
	}
}

// silentListener accepts connections and never says a word, like a host
// whose sshd hangs.
func silentListener(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	return l.Addr().(*net.TCPAddr).Port
}

func TestSSHHandshakeTimeout(t *testing.T) {
	knownHosts, identity := clientFiles(t)
	port := silentListener(t)
	h := transport.Host{Name: "web-1", Address: "127.0.0.1", Port: port}
	const timeout = 300 * time.Millisecond

	t.Run("HandshakeTimeout", func(t *testing.T) {
		c := newSSH(t, transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}, HandshakeTimeout: timeout})
		start := time.Now()
		_, err := c.Connect(testCtx(t), h)
		if elapsed := time.Since(start); elapsed > timeout+time.Second {
			t.Errorf("Connect took %v, want about %v", elapsed, timeout)
		}
		want := fmt.Sprintf("connect to web-1 (127.0.0.1:%d): ssh handshake did not finish within 300ms", port)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("err = %v, want one starting %q", err, want)
		}
	})
	t.Run("ContextDeadline", func(t *testing.T) {
		c := newSSH(t, transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}, HandshakeTimeout: time.Minute})
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		start := time.Now()
		_, err := c.Connect(ctx, h)
		if elapsed := time.Since(start); elapsed > timeout+time.Second {
			t.Errorf("Connect took %v, want about %v", elapsed, timeout)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want one wrapping context.DeadlineExceeded", err)
		}
	})
	t.Run("ContextCancel", func(t *testing.T) {
		c := newSSH(t, transport.SSHConfig{KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}, HandshakeTimeout: time.Minute})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		time.AfterFunc(timeout, cancel)
		start := time.Now()
		_, err := c.Connect(ctx, h)
		if elapsed := time.Since(start); elapsed > timeout+time.Second {
			t.Errorf("Connect took %v, want about %v", elapsed, timeout)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want one wrapping context.Canceled", err)
		}
	})
}

func TestSSHOneDialPerHost(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	c := newSSH(t, sshd.SSHConfig())
	hosts := []transport.Host{sshd.Host("web-1"), sshd.Host("web-2")}
	const connects, runs = 32, 40
	var wg sync.WaitGroup
	errs := make(chan error, len(hosts)*(connects+runs))
	for _, h := range hosts {
		for range connects {
			wg.Go(func() {
				r, err := c.Connect(testCtx(t), h)
				if err != nil {
					errs <- err
					return
				}
				for range runs / connects {
					if _, err := r.Run(testCtx(t), cmd("true")); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, h := range hosts {
		r1, r2 := connect(t, c, h), connect(t, c, h)
		if r1 != r2 {
			t.Errorf("Connect(%s) handed out different Runners", h.Name)
		}
		for range runs {
			if _, err := r1.Run(testCtx(t), cmd("true")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := c.Dials(); got != len(hosts) {
		t.Errorf("Dials() = %d, want %d: one connection per host", got, len(hosts))
	}
}

func TestSSHHostNamesAreUnique(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	c := newSSH(t, sshd.SSHConfig())
	connect(t, c, sshd.Host("web-1"))
	other := sshd.Host("web-1")
	other.Address = "127.0.0.2"
	if _, err := c.Connect(testCtx(t), other); err == nil || !strings.Contains(err.Error(), "unique") {
		t.Errorf("second host named web-1: err = %v, want one saying names must be unique", err)
	}
}

func TestSSHClosed(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	c := newSSH(t, sshd.SSHConfig())
	r := connect(t, c, sshd.Host("web-1"))
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := r.Run(testCtx(t), cmd("true")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Run after Close: err = %v, want one wrapping ErrClosed", err)
	}
	if _, err := c.Connect(testCtx(t), sshd.Host("web-1")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Connect after Close: err = %v, want one wrapping ErrClosed", err)
	}
}

// TestSSHRedialsAfterConnectionLoss cuts the connection under a running
// command: that command fails (not as a context error), and the next one
// runs on a new connection.
func TestSSHRedialsAfterConnectionLoss(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	p := startProxy(t, sshd.Addr)
	knownHosts := writeFile(t, t.TempDir(), "known_hosts",
		fmt.Appendf(nil, "[127.0.0.1]:%d %s", p.port, ssh.MarshalAuthorizedKey(sshd.HostPublicKey)))
	cfg := sshd.SSHConfig()
	cfg.KnownHostsFiles = []string{knownHosts}
	c := newSSH(t, cfg)
	h := sshd.Host("web-1")
	h.Port = p.port
	r := connect(t, c, h)

	sleep := uniqueSleep(t) // survives the connection loss: killed at the end
	errc := make(chan error, 1)
	go func() { _, err := r.Run(testCtx(t), cmd(sleep...)); errc <- err }()
	testenv.WaitFor(t, 5*time.Second, "remote sleep starts", func() bool { return processRunning(t, sleep...) })
	p.cut()
	select {
	case err := <-errc:
		var exitErr *transport.ExitError
		if err == nil || errors.As(err, &exitErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run across a lost connection: err = %v, want a connection error", err)
		} else if !strings.HasPrefix(err.Error(), "run on web-1: "+strings.Join(sleep, " ")+": ") {
			t.Errorf("err = %v, want one naming the host and command", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of the connection loss")
	}
	res, err := r.Run(testCtx(t), cmd("echo", "again"))
	if err != nil || string(res.Stdout) != "again\n" {
		t.Fatalf("Run after the loss = %q, %v; want %q, nil", res.Stdout, err, "again\n")
	}
	if got := c.Dials(); got != 2 {
		t.Errorf("Dials() = %d, want 2", got)
	}
}

// TestSSHKeepAliveDetectsSilentPeer freezes the connection under a running
// command: keepalive probes go unanswered, the connection is closed, and
// the command fails instead of hanging until its context ends.
func TestSSHKeepAliveDetectsSilentPeer(t *testing.T) {
	sshd := testenv.StartSSHD(t)
	p := startProxy(t, sshd.Addr)
	knownHosts := writeFile(t, t.TempDir(), "known_hosts",
		fmt.Appendf(nil, "[127.0.0.1]:%d %s", p.port, ssh.MarshalAuthorizedKey(sshd.HostPublicKey)))
	cfg := sshd.SSHConfig()
	cfg.KnownHostsFiles = []string{knownHosts}
	const every = 200 * time.Millisecond
	cfg.KeepAliveInterval = every
	h := sshd.Host("web-1")
	h.Port = p.port
	r := connect(t, newSSH(t, cfg), h)

	sleep := uniqueSleep(t)
	errc := make(chan error, 1)
	go func() { _, err := r.Run(testCtx(t), cmd(sleep...)); errc <- err }()
	testenv.WaitFor(t, 5*time.Second, "remote sleep starts", func() bool { return processRunning(t, sleep...) })
	p.freeze()
	select {
	case err := <-errc:
		t.Logf("Run: %v", err)
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run across a silent connection: err = %v, want a connection error", err)
		}
	case <-time.After(3*every + 2*time.Second):
		t.Fatal("Run did not fail after keepalives went unanswered")
	}
}

type proxy struct {
	port   int
	mu     sync.Mutex
	conns  []net.Conn
	frozen bool
}

// startProxy forwards TCP connections on a new port to target, until cut.
func startProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{port: l.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); p.cut(); wg.Wait() })
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			wg.Go(func() { p.forward(out, in) })
			wg.Go(func() { p.forward(in, out) })
		}
	})
	return p
}

// forward copies from src to dst until either fails; while frozen, it drops
// what it reads, as a network that lost its route would.
func (p *proxy) forward(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		frozen := p.frozen
		p.mu.Unlock()
		if frozen {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// freeze makes every connection silent without closing it.
func (p *proxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = true
}

// cut closes every forwarded connection, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustPublicKey(t *testing.T, privatePath string) ssh.PublicKey {
	t.Helper()
	signer, err := ssh.ParsePrivateKey(mustRead(t, privatePath))
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey()
}

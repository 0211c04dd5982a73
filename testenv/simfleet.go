package testenv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// SimFleet is a fleet too large for real sshd processes on one machine
// (a thousand hosts): every host is an SSH server in this process
// (x/crypto/ssh, with a host key lieutenant checks against known_hosts and
// the client key it must offer) on an address of its own on loopback
// (127.1.x.y), answering the commands a rollout sends with a FakeHost: the
// same rpm, dnf and service behaviour as the shims, conformance-tested as a
// transport.Runner. Each host also serves hello-web's /health over HTTP for
// HAProxy's checks and the playbook's. lieutenant's side is all real: the
// SSH transport, its handshakes and sessions, the balancer adapter.
type SimFleet struct {
	Fleet      *FakeFleet
	Hosts      []SimHost
	SSHPort    int    // every host's SSH port
	HTTPPort   int    // every host's hello-web port
	KnownHosts string // every host's address and port with the fleet's host key
	Identity   string // the client key every host accepts
	User       string

	handshaking, handshakes, maxHandshaking atomic.Int64
	sessions                                atomic.Int64
}

// SimHost is one host of a SimFleet.
type SimHost struct {
	Name    string // web-1, ...
	Address string // 127.1.x.y
	Server  string // its balancer server name: web1, ...
}

// SimDelays are how long the simulated package manager and service
// manager take, so that steps have a time of their own.
type SimDelays struct {
	Install, Restart time.Duration
}

// StartSimFleet starts n simulated hosts with installed (a NEVRA), whose
// repository serves available.
func StartSimFleet(t testing.TB, n int, delays SimDelays, installed string, available ...string) *SimFleet {
	t.Helper()
	if n > 250*250 {
		t.Fatalf("StartSimFleet: %d hosts do not fit in 127.1.0.0/16", n)
	}
	_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	clientPub, clientKey, _ := ed25519.GenerateKey(rand.Reader)
	clientSSHPub, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &SimFleet{Fleet: NewFakeFleet(available...), User: "deploy", Identity: filepath.Join(dir, "id_ed25519")}
	block, err := ssh.MarshalPrivateKey(clientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f.Identity, string(pem.EncodeToMemory(block)))
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() == f.User && string(key.Marshal()) == string(clientSSHPub.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hostSigner)

	for i := range n {
		f.Hosts = append(f.Hosts, SimHost{
			Name:    fmt.Sprintf("web-%d", i+1),
			Address: fmt.Sprintf("127.1.%d.%d", i/250, i%250+1),
			Server:  fmt.Sprintf("web%d", i+1),
		})
	}
	sshLns, sshPort := listenEverywhere(t, f.Hosts)
	httpLns, httpPort := listenEverywhere(t, f.Hosts)
	f.SSHPort, f.HTTPPort = sshPort, httpPort
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		for i := range sshLns {
			sshLns[i].Close()
			httpLns[i].Close()
		}
		wg.Wait()
	})
	var known strings.Builder
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostSigner.PublicKey())))
	for i, h := range f.Hosts {
		fh := f.Fleet.AddHost(h.Name, installed)
		fh.SetDelays(delays.Install, delays.Restart)
		fmt.Fprintf(&known, "[%s]:%d %s\n", h.Address, sshPort, key)
		wg.Go(func() { f.serveSSH(ctx, sshLns[i], cfg, fh, &wg) })
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := fh.Installed()["hello-web"]
			helloweb.Handler(h.Name, v, true).ServeHTTP(w, r)
		}), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { _ = srv.Serve(httpLns[i]) })
	}
	f.KnownHosts = filepath.Join(dir, "known_hosts")
	writeFile(t, f.KnownHosts, known.String())
	return f
}

// listenEverywhere listens on one port on every host's address.
func listenEverywhere(t testing.TB, hosts []SimHost) ([]net.Listener, int) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp4", hosts[0].Address+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, h := range hosts[1:] {
			ln, err := net.Listen("tcp4", fmt.Sprintf("%s:%d", h.Address, port))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(hosts) {
			return lns, port
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	t.Fatal("StartSimFleet: no port free on every address")
	return nil, 0
}

// Inventory is the fleet as an inventory file.
func (f *SimFleet) Inventory() string {
	var b strings.Builder
	b.WriteString("hosts:\n")
	for _, h := range f.Hosts {
		fmt.Fprintf(&b, "  %s: {address: %s, port: %d, balancer_server: %s}\n", h.Name, h.Address, f.SSHPort, h.Server)
	}
	return b.String()
}

// HTTPAddrs are the hosts' hello-web addresses, for HAProxy's servers.
func (f *SimFleet) HTTPAddrs() []string {
	out := make([]string, len(f.Hosts))
	for i, h := range f.Hosts {
		out[i] = fmt.Sprintf("%s:%d", h.Address, f.HTTPPort)
	}
	return out
}

// Handshakes is how many SSH handshakes the hosts accepted, and the most
// that were in progress at once.
func (f *SimFleet) Handshakes() (total, maxAtOnce int) {
	return int(f.handshakes.Load()), int(f.maxHandshaking.Load())
}

func (f *SimFleet) serveSSH(ctx context.Context, ln net.Listener, cfg *ssh.ServerConfig, h *FakeHost, wg *sync.WaitGroup) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Go(func() {
			defer conn.Close()
			now := f.handshaking.Add(1)
			for {
				m := f.maxHandshaking.Load()
				if now <= m || f.maxHandshaking.CompareAndSwap(m, now) {
					break
				}
			}
			sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
			f.handshaking.Add(-1)
			if err != nil {
				return
			}
			f.handshakes.Add(1)
			defer sc.Close()
			go ssh.DiscardRequests(reqs)
			go func() {
				<-ctx.Done()
				sc.Close()
			}()
			for nc := range chans {
				if nc.ChannelType() != "session" {
					_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
					continue
				}
				ch, creqs, err := nc.Accept()
				if err != nil {
					continue
				}
				go f.session(ctx, ch, creqs, h)
			}
		})
	}
}

// session runs the one command of an exec request with the FakeHost, as
// sshd runs it through the login shell: the line lieutenant sends is
// "printf PID-marker; exec COMMAND", with COMMAND's words quoted.
func (f *SimFleet) session(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request, h *FakeHost) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" || len(req.Payload) < 4 {
			_ = req.Reply(false, nil)
			continue
		}
		_ = req.Reply(true, nil)
		line := string(req.Payload[4:])
		status := f.run(ctx, ch, line, h)
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(status))
		_, _ = ch.SendRequest("exit-status", false, b[:])
		return
	}
}

func (f *SimFleet) run(ctx context.Context, ch ssh.Channel, line string, h *FakeHost) int {
	f.sessions.Add(1)
	_, rest, ok := strings.Cut(line, "; exec ")
	if !ok {
		rest = line
	} else {
		fmt.Fprintf(ch.Stderr(), "lieutenant-pid=%d\n", 1000+f.sessions.Load())
	}
	args, err := shellWords(rest)
	if err != nil {
		fmt.Fprintf(ch.Stderr(), "sim: %v\n", err)
		return 2
	}
	cmd := transport.Command{Args: args}
	if len(args) > 3 && args[0] == "sudo" && args[1] == "-n" && args[2] == "--" {
		cmd = transport.Command{Args: args[3:], Sudo: true}
	}
	// A failing command's status and output are in res, as sshd sends them.
	res, _ := h.Run(ctx, cmd)
	_, _ = ch.Write(res.Stdout)
	_, _ = ch.Stderr().Write(res.Stderr)
	if res.ExitStatus < 0 {
		return 255
	}
	return res.ExitStatus
}

// shellWords splits a command line as transport.Quote writes it: words
// separated by blanks, single-quoted where needed (with '\” for a quote).
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\'':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '\'':
			quoted, in = true, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

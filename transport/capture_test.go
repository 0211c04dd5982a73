package transport_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

func TestTailKeepsTheEnd(t *testing.T) {
	tail := transport.NewTail(10, transport.Secrets{})
	for i := range 100 {
		fmt.Fprintf(tail, "%03d,", i)
	}
	if got, want := string(tail.Bytes()), "7,098,099,"; got != want {
		t.Errorf("Bytes() = %q, want %q", got, want)
	}
	if got := tail.Total(); got != 400 {
		t.Errorf("Total() = %d, want 400", got)
	}
	tail.Write(bytes.Repeat([]byte("y"), 25))
	if got, want := string(tail.Bytes()), "yyyyyyyyyy"; got != want {
		t.Errorf("after a write longer than the tail: Bytes() = %q, want %q", got, want)
	}
}

// A secret is replaced however the writes cut it, and when two overlap.
func TestTailRedactsSecrets(t *testing.T) {
	secrets := transport.NewSecrets("ghp_s3cret", "s3cret-too", "", "abc", "tok1", "tok1-longer", "1-lo")
	for _, tc := range []struct{ in, want string }{
		{"token=ghp_s3cret\n", "token=REDACTED\n"},
		{"ghp_s3cretghp_s3cret", "REDACTEDREDACTED"},
		{"ghp_s3cret-too", "REDACTED-too"},             // the first to start wins
		{"xs3cret-tooghp_s3cre", "xREDACTEDghp_s3cre"}, // an unfinished start is output
		{"abc is too short to be a secret", "abc is too short to be a secret"},
		{"tok1-longer.", "REDACTED."}, // the longest of those starting first wins
		{"xtok1-long", "xREDACTED-long"},
		{"tok1", "REDACTED"},
	} {
		for _, size := range []int{1, 3, 7, len(tc.in)} {
			tail := transport.NewTail(1<<10, secrets)
			for in := tc.in; in != ""; {
				n := min(size, len(in))
				tail.Write([]byte(in[:n]))
				in = in[n:]
			}
			if got := string(tail.Bytes()); got != tc.want {
				t.Errorf("%q in writes of %d: kept %q, want %q", tc.in, size, got, tc.want)
			}
		}
	}
}

func TestScrubEnv(t *testing.T) {
	env := []string{"PATH=/bin", "LIEUTENANT_GIT_TOKEN=x", "LIEUTENANT_GIT_USER=ci", "LIEUTENANT_WEBHOOK_SECRET=y", "LIEUTENANT_GITLAB_TOKEN="}
	if got, want := strings.Join(transport.ScrubEnv(env), " "), "PATH=/bin LIEUTENANT_GIT_USER=ci"; got != want {
		t.Errorf("ScrubEnv = %s, want %s", got, want)
	}
}

// A local command sees none of lieutenant's secrets, and a secret's value
// that reaches its output by other ways is replaced, on stdout, on stderr
// and in the error.
func TestLocalKeepsSecrets(t *testing.T) {
	const token = "ghp_0123456789abcdef"
	t.Setenv("LIEUTENANT_GIT_TOKEN", token)
	t.Setenv("LIEUTENANT_WEBHOOK_SECRET", "hook-secret")
	t.Setenv("COPY_OF_TOKEN", token)
	r := localRunner(t)
	res, err := r.Run(testCtx(t), cmd("env"))
	if err != nil {
		t.Fatal(err)
	}
	if out := string(res.Stdout); strings.Contains(out, "LIEUTENANT_GIT_TOKEN") || strings.Contains(out, "LIEUTENANT_WEBHOOK_SECRET") ||
		strings.Contains(out, token) || !strings.Contains(out, "COPY_OF_TOKEN=REDACTED\n") {
		t.Errorf("env printed:\n%s\nwant no LIEUTENANT_GIT_TOKEN or LIEUTENANT_WEBHOOK_SECRET, and COPY_OF_TOKEN=REDACTED", out)
	}
	res, err = r.Run(testCtx(t), cmd("sh", "-c", `echo "$COPY_OF_TOKEN"; echo "auth with $COPY_OF_TOKEN failed" >&2; exit 1`))
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "auth with REDACTED failed") {
		t.Errorf("err = %v, want the stderr tail with the token replaced", err)
	}
	if string(res.Stdout) != "REDACTED\n" || strings.Contains(string(res.Stderr), token) {
		t.Errorf("stdout %q, stderr %q: want the token replaced", res.Stdout, res.Stderr)
	}
}

func TestLocalMaxOutput(t *testing.T) {
	testenv.RequireBinaries(t, "yes")
	r := localRunner(t)
	start := time.Now()
	// yes never ends: only the limit stops it.
	res, err := r.Run(testCtx(t), transport.Command{Args: []string{"yes"}, MaxOutput: 1 << 20})
	if !errors.Is(err, transport.ErrOutputLimit) || !strings.HasPrefix(err.Error(), "run on local: yes: output too long: more than 1 MiB on stdout") {
		t.Fatalf("err = %v, want the output limit naming the host and the command", err)
	}
	if len(res.Stdout) != 1<<20 || res.ExitStatus != -1 {
		t.Errorf("kept %d bytes, status %d; want 1 MiB, -1", len(res.Stdout), res.ExitStatus)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("yes was stopped after %s", d)
	}
	res, err = r.Run(testCtx(t), transport.Command{Args: []string{"echo", "fits"}, MaxOutput: 5})
	if err != nil || string(res.Stdout) != "fits\n" {
		t.Errorf("output of exactly MaxOutput: %q, %v; want it whole and no error", res.Stdout, err)
	}
}

// checkBounded runs c, which prints size bytes, far more than any tail, and
// fails when that grew lieutenant's heap by more than a few MiB.
func checkBounded(t *testing.T, r transport.Runner, c transport.Command, size int64, maxAlloc uint64) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	res, err := r.Run(ctx, c)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	const bound = 8 << 20
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > bound {
		t.Errorf("the heap grew by %d MiB, holding the result of a command that printed %d MiB; want at most %d MiB",
			grew>>20, size>>20, bound>>20)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxAlloc {
		t.Errorf("running it allocated %d MiB; want at most %d MiB", alloc>>20, maxAlloc>>20)
	}
	if res.StdoutBytes != size || len(res.Stdout) != transport.DefaultOutputTail {
		t.Errorf("result: %d bytes kept of %d; want %d of %d", len(res.Stdout), res.StdoutBytes, transport.DefaultOutputTail, size)
	}
	runtime.KeepAlive(res)
}

func TestLocalOutputIsBounded(t *testing.T) {
	testenv.RequireBinaries(t, "head")
	const size = 200 << 20
	checkBounded(t, localRunner(t), cmd("head", "-c", fmt.Sprint(size), "/dev/zero"), size, 16<<20)
}

func TestSSHOutputIsBounded(t *testing.T) {
	// Less than locally: SSH's encryption is slow under -race.
	const size = 64 << 20
	cfg, h := startFloodServer(t, size)
	r := connect(t, newSSH(t, cfg), h)
	// x/crypto/ssh allocates each packet it receives: allocations grow
	// with the output, what is kept must not.
	checkBounded(t, r, cmd("anything"), size, 1<<40)
}

// startFloodServer starts an SSH server in this process whose every command
// prints n bytes and exits 0, without holding them in memory itself, and
// returns the config and host that reach it.
func startFloodServer(t *testing.T, n int) (transport.SSHConfig, transport.Host) {
	t.Helper()
	dir := t.TempDir()
	identity, clientKey := writeKey(t, dir, "id_ed25519", "")
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if !bytes.Equal(k.Marshal(), clientKey.Marshal()) {
			return nil, errors.New("unknown key")
		}
		return nil, nil
	}}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go flood(conn, cfg, n)
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	knownHosts := filepath.Join(dir, "known_hosts")
	line := xknownhosts.Line([]string{fmt.Sprintf("[127.0.0.1]:%d", port)}, hostKey.PublicKey())
	if err := os.WriteFile(knownHosts, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return transport.SSHConfig{User: "flood", KnownHostsFiles: []string{knownHosts}, IdentityFiles: []string{identity}},
		transport.Host{Name: "web-1", Address: "127.0.0.1", Port: port}
}

func flood(conn net.Conn, cfg *ssh.ServerConfig, n int) {
	defer conn.Close()
	sc, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	chunk := bytes.Repeat([]byte("flood\n"), 32<<10/6)
	for nc := range chans {
		ch, creqs, err := nc.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				_ = req.Reply(req.Type == "exec", nil)
				if req.Type != "exec" {
					continue
				}
				for left := n; left > 0; left -= len(chunk) {
					if _, err := ch.Write(chunk[:min(left, len(chunk))]); err != nil {
						return
					}
				}
				_, _ = ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, 0))
				return
			}
		}()
	}
}

package transport_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

func cmd(args ...string) transport.Command { return transport.Command{Args: args} }

// testCtx bounds a test step that should finish at once.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// writeKey writes a new ed25519 private key in OpenSSH format to dir/name,
// encrypted when passphrase is not empty, and returns its path and public key.
func writeKey(t *testing.T, dir, name, passphrase string) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return path, sshPub
}

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// uniqueSleep returns the argv of a sleep that no other process on this
// machine runs, for tests that look for it with processRunning, and kills
// it when the test ends, should the test have left it running.
func uniqueSleep(t *testing.T) []string {
	argv := []string{"sleep", strconv.Itoa(10000 + mrand.IntN(90000))}
	t.Cleanup(func() {
		for _, pid := range processes(t, argv...) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return argv
}

// processRunning reports whether a process with exactly argv runs on this
// machine.
func processRunning(t *testing.T, argv ...string) bool { return len(processes(t, argv...)) > 0 }

func processes(t *testing.T, argv ...string) []int {
	t.Helper()
	want := []byte{}
	for _, a := range argv {
		want = append(append(want, a...), 0)
	}
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && bytes.Equal(b, want) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

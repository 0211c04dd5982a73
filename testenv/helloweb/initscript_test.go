package helloweb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

// TestInitScript drives /etc/init.d/hello-web the way `service` does on a
// host without systemd, against a real hello-web binary. The binaries are
// built once here, since the go build dominates the test's time.
func TestInitScript(t *testing.T) {
	if runtime.GOOS != "linux" {
		testenv.Unavailable(t, "the init script reads /proc and runs start-stop-daemon: Linux only")
	}
	// dash is /bin/sh on Debian; running the script with it catches bashisms
	// also where /bin/sh is bash.
	bins := testenv.RequireBinaries(t, "start-stop-daemon", "dash")
	dir := t.TempDir()
	v1, v2 := filepath.Join(dir, "1.0.0"), filepath.Join(dir, "1.1.0")
	buildHelloWeb(t, v1, "1.0.0")
	buildHelloWeb(t, v2, "1.1.0")
	newEnv := func(t *testing.T) *scriptEnv { return newScriptEnv(t, bins["dash"], v1) }

	t.Run("lifecycle", func(t *testing.T) { testLifecycle(t, newEnv(t), v2) })
	t.Run("port in use", func(t *testing.T) {
		s := newEnv(t)
		s.env["HELLO_WEB_USER"] = ""
		ln, err := net.Listen("tcp", s.env["HELLO_WEB_LISTEN"])
		if err != nil {
			t.Fatalf("hold port: %v", err)
		}
		defer ln.Close()
		s.expect("start", 1, "already in use")
		s.expect("status", 3, "not running")
	})
	t.Run("process dies at start", func(t *testing.T) {
		s := newEnv(t)
		s.env["HELLO_WEB_USER"] = ""
		// 192.0.2.1 (TEST-NET-1) is not on this host, so listening fails.
		s.env["HELLO_WEB_LISTEN"] = "192.0.2.1:" + s.port
		s.expect("start", 1, "cannot assign requested address")
		s.expect("status", 3, "not running")
	})
	t.Run("binary missing", func(t *testing.T) {
		s := newEnv(t)
		if err := os.Remove(s.bin); err != nil {
			t.Fatalf("remove binary: %v", err)
		}
		s.expect("start", 5, "not installed")
		s.expect("stop", 0, "stopped")
	})
	t.Run("unknown action", func(t *testing.T) {
		newEnv(t).expect("reload", 2, "usage")
	})
	t.Run("drops root", func(t *testing.T) { testDropsRoot(t, newEnv(t)) })
}

// testLifecycle checks the promises a rollout relies on: start returns only
// once the port answers, restart replaces the process even after a package
// upgrade swapped the binary, and start and stop are idempotent.
func testLifecycle(t *testing.T, s *scriptEnv, upgrade string) {
	s.env["HELLO_WEB_USER"] = "" // run as the test's user

	s.expect("status", 3, "not running")
	s.expect("start", 0, "started")
	pid1 := s.pid()
	// No polling: start has returned, so the service must answer now.
	if got := s.get("/version"); got != "1.0.0\n" {
		t.Fatalf("GET /version right after start = %q, want 1.0.0", got)
	}
	s.expect("start", 0, "already running")
	if pid := s.pid(); pid != pid1 {
		t.Fatalf("a second start replaced pid %d with %d, want the running process kept", pid1, pid)
	}
	s.expect("status", 0, fmt.Sprintf("running (pid %d)", pid1))

	// What a rollout does: the package manager replaces the binary under
	// the running process (a new file renamed over the old one), then the
	// service is restarted.
	next := s.bin + ".new"
	copyFile(t, upgrade, next)
	if err := os.Rename(next, s.bin); err != nil {
		t.Fatalf("upgrade %s: %v", s.bin, err)
	}
	s.expect("restart", 0, "started")
	pid2 := s.pid()
	if pid2 == pid1 {
		t.Fatalf("restart kept pid %d, want a new process", pid1)
	}
	if alive(pid1) {
		t.Fatalf("old pid %d still runs after restart", pid1)
	}
	if got := s.get("/version"); got != "1.1.0\n" {
		t.Fatalf("GET /version after restart = %q, want the upgraded 1.1.0", got)
	}
	s.expect("status", 0, fmt.Sprintf("running (pid %d)", pid2))

	s.expect("stop", 0, "stopped")
	if alive(pid2) {
		t.Fatalf("pid %d still runs after stop", pid2)
	}
	if _, err := os.Stat(s.env["HELLO_WEB_PIDFILE"]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pidfile after stop: %v, want it removed", err)
	}
	s.expect("status", 3, "not running")
	s.expect("stop", 0, "stopped")

	logText, err := os.ReadFile(s.env["HELLO_WEB_LOG"])
	if err != nil {
		t.Fatalf("read service log: %v", err)
	}
	for _, want := range []string{"hello-web 1.0.0 listening on " + s.env["HELLO_WEB_LISTEN"], "hello-web 1.1.0 listening on "} {
		if !strings.Contains(string(logText), want) {
			t.Errorf("service log lacks %q:\n%s", want, logText)
		}
	}
}

// testDropsRoot checks the default user: without HELLO_WEB_USER a root
// caller runs the service as hello-web if that user exists, else nobody.
func testDropsRoot(t *testing.T, s *scriptEnv) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "only root can switch users")
	}
	want, err := user.Lookup("hello-web")
	if err != nil {
		if want, err = user.Lookup("nobody"); err != nil {
			testenv.Unavailable(t, fmt.Sprintf("neither a hello-web nor a nobody user: %v", err))
		}
	}
	// The unprivileged user must be able to reach the binary: open the bin
	// directory, the test's temporary directory and the testing package's
	// directory above it, which this test created, and nothing further up.
	binDir := filepath.Dir(s.bin)
	for _, d := range []string{binDir, filepath.Dir(binDir), filepath.Dir(filepath.Dir(binDir))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("open %s to the service user: %v", d, err)
		}
	}
	s.expect("start", 0, "started")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid()))
	if err != nil {
		t.Fatalf("read process status: %v", err)
	}
	if !strings.Contains(string(status), "\nUid:\t"+want.Uid+"\t") {
		t.Fatalf("service runs as\n%s\nwant uid %s (%s)", status, want.Uid, want.Username)
	}
	s.expect("stop", 0, "stopped")
}

// scriptEnv is one installation of the init script in a temporary
// directory, with its own binary, pidfile, log and port.
type scriptEnv struct {
	t      testing.TB
	script string
	shell  string
	bin    string
	port   string
	env    map[string]string
}

func newScriptEnv(t *testing.T, shell, bin string) *scriptEnv {
	t.Helper()
	dir := t.TempDir()
	s := &scriptEnv{
		t:      t,
		script: filepath.Join(dir, "hello-web.init"),
		shell:  shell,
		bin:    filepath.Join(dir, "bin", "hello-web"),
		port:   freePort(t),
	}
	s.env = map[string]string{
		"PATH":               os.Getenv("PATH"),
		"HELLO_WEB_DEFAULTS": filepath.Join(dir, "no-defaults"),
		"HELLO_WEB_BIN":      s.bin,
		"HELLO_WEB_PIDFILE":  filepath.Join(dir, "hello-web.pid"),
		"HELLO_WEB_LOG":      filepath.Join(dir, "hello-web.log"),
		"HELLO_WEB_LISTEN":   "127.0.0.1:" + s.port,
	}
	if err := os.WriteFile(s.script, helloweb.InitScript(), 0o755); err != nil {
		t.Fatalf("write init script: %v", err)
	}
	if err := os.Mkdir(filepath.Dir(s.bin), 0o755); err != nil {
		t.Fatalf("make bin dir: %v", err)
	}
	copyFile(t, bin, s.bin)
	// Never leave a daemon behind, also when the test failed half-way.
	t.Cleanup(func() {
		if code, out := s.run("stop"); code != 0 {
			t.Errorf("cleanup: stop exited %d: %s", code, out)
		}
	})
	return s
}

// run runs the script with one action and returns its exit code and output.
func (s *scriptEnv) run(action string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.shell, s.script, action)
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit) && ctx.Err() == nil:
		return exit.ExitCode(), string(out)
	default:
		s.t.Fatalf("run init script %s: %v: %s", action, err, out)
		return 0, ""
	}
}

func (s *scriptEnv) expect(action string, code int, output string) {
	s.t.Helper()
	got, out := s.run(action)
	if got != code || !strings.Contains(out, output) {
		s.t.Fatalf("init script %s: exit %d, output %q; want exit %d and %q", action, got, out, code, output)
	}
}

func (s *scriptEnv) pid() int {
	s.t.Helper()
	b, err := os.ReadFile(s.env["HELLO_WEB_PIDFILE"])
	if err != nil {
		s.t.Fatalf("read pidfile: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		s.t.Fatalf("parse pidfile %q: %v", b, err)
	}
	return pid
}

func (s *scriptEnv) get(path string) string {
	s.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + s.env["HELLO_WEB_LISTEN"] + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("read GET %s: %v", path, err)
	}
	return string(body)
}

// alive reports whether pid runs; a zombie has exited and counts as gone,
// since a container's PID 1 may never reap the daemon.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// buildHelloWeb builds cmd/hello-web at a version into out.
func buildHelloWeb(t testing.TB, out, version string) {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatalf("find the go command: %v", err)
		}
	}
	cmd := exec.Command(goBin, "build", "-buildvcs=false", "-ldflags", "-X main.version="+version,
		"-o", out, "github.com/lieutenant-deploy/lieutenant/testenv/helloweb/cmd/hello-web")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build hello-web %s: %v\n%s", version, err, b)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatalf("read %s: %v", from, err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatalf("write %s: %v", to, err)
	}
}

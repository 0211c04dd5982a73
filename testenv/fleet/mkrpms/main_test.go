package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

// rpmLead is the magic number every RPM file starts with.
const rpmLead = "\xed\xab\xee\xdb"

func TestBuildIsReproducible(t *testing.T) {
	rels, err := selectReleases("1.2.0")
	if err != nil {
		t.Fatal(err)
	}
	when := time.Unix(defaultEpoch, 0)
	var files [2][]byte
	for i := range files {
		paths, err := build(t.Context(), t.TempDir(), rels, when)
		if err != nil {
			t.Fatalf("build %d: %v", i+1, err)
		}
		if len(paths) != 1 || filepath.Base(paths[0]) != "hello-web-1.2.0-1.x86_64.rpm" {
			t.Fatalf("build %d wrote %q, want one hello-web-1.2.0-1.x86_64.rpm", i+1, paths)
		}
		if files[i], err = os.ReadFile(paths[0]); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(files[i], []byte(rpmLead)) || len(files[i]) < 1<<20 {
			t.Fatalf("build %d wrote %d bytes that do not look like an RPM with a Go binary in it", i+1, len(files[i]))
		}
	}
	if !bytes.Equal(files[0], files[1]) {
		t.Fatalf("two builds differ: %d and %d bytes", len(files[0]), len(files[1]))
	}
}

func TestBuildTime(t *testing.T) {
	tests := []struct {
		env     string
		want    int64
		wantErr bool
	}{
		{"", defaultEpoch, false},
		{"1700000000", 1700000000, false},
		{"0", 0, false},
		{"-1", 0, true},
		{"4294967296", 0, true}, // past what RPM's 32-bit times hold
		{"yesterday", 0, true},
	}
	for _, tt := range tests {
		got, err := buildTime(tt.env)
		if (err != nil) != tt.wantErr || (err == nil && got.Unix() != tt.want) {
			t.Errorf("buildTime(%q) = %v, %v; want %d (error: %t)", tt.env, got.Unix(), err, tt.want, tt.wantErr)
		}
	}
}

func TestSelectReleases(t *testing.T) {
	got, err := selectReleases("1.2.0, 1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	want := []release{{"1.2.0", false}, {"1.0.0", true}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("selectReleases = %v, want %v", got, want)
	}
	if all, _ := selectReleases(""); len(all) != 3 {
		t.Errorf("selectReleases(\"\") = %v, want all three releases", all)
	}
	if _, err := selectReleases("1.3.0"); err == nil || !strings.Contains(err.Error(), `"1.3.0"`) {
		t.Errorf("selectReleases(1.3.0) error = %v, want one naming the version", err)
	}
}

// TestPackages checks the RPMs with RPM's own tools: their metadata, that
// nothing would stop Debian's rpm or dnf from installing them, and that what
// they install runs and reports its version and health.
func TestPackages(t *testing.T) {
	rpm := testenv.RequireBinaries(t, "rpm")["rpm"]
	dir := t.TempDir()
	paths, err := build(t.Context(), dir, releases(), time.Unix(defaultEpoch, 0))
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	if len(paths) != 3 {
		t.Fatalf("build wrote %q, want three packages", paths)
	}
	query := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(t.Context(), rpm, args...).Output()
		if err != nil {
			t.Fatalf("rpm %s: %v", strings.Join(args, " "), stderrOf(err))
		}
		return string(out)
	}

	for i, r := range releases() {
		pkg := paths[i]
		t.Run(r.version, func(t *testing.T) {
			nevra := query(t, "-qp", "--qf", "%{NAME} %{EPOCH} %{VERSION} %{RELEASE} %{ARCH} %{OS} %{BUILDTIME} %{LICENSE} %{URL}", pkg)
			if want := fmt.Sprintf("hello-web (none) %s 1 x86_64 linux %d Apache-2.0 https://github.com/lieutenant-deploy/lieutenant", r.version, defaultEpoch); nevra != want {
				t.Errorf("NEVRA and tags = %q, want %q", nevra, want)
			}
			if summary := query(t, "-qp", "--qf", "%{SUMMARY}", pkg); summary == "" {
				t.Error("no summary")
			}
			if desc := query(t, "-qp", "--qf", "%{DESCRIPTION}", pkg); strings.Contains(desc, "broken on purpose") == r.healthy {
				t.Errorf("description %q: want it to say it is broken on purpose exactly when the build is unhealthy (healthy: %t)", desc, r.healthy)
			}
			for _, req := range strings.Split(strings.TrimSpace(query(t, "-qpR", pkg)), "\n") {
				if req != "" && !strings.HasPrefix(req, "rpmlib(") {
					t.Errorf("requires %q; Debian's rpm database provides nothing, so no requires may be there", req)
				}
			}
			if scripts := query(t, "-qp", "--scripts", pkg); scripts != "" {
				t.Errorf("scriptlets %q, want none", scripts)
			}
			files := query(t, "-qp", "--qf", "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEMTIMES} %{FILENAMES}\n]", pkg)
			wantFiles := fmt.Sprintf("-rwxr-xr-x root:root %[1]d /etc/init.d/hello-web\n-rwxr-xr-x root:root %[1]d /usr/bin/hello-web\n", defaultEpoch)
			if files != wantFiles {
				t.Errorf("files:\n%s\nwant:\n%s", files, wantFiles)
			}
			if list := query(t, "-qpl", pkg); list != "/etc/init.d/hello-web\n/usr/bin/hello-web\n" {
				t.Errorf("rpm -qpl = %q, want the binary and the init script only", list)
			}
			installAndRun(t, rpm, pkg, r)
		})
	}

	// An upgrade as dnf does it: no --nodeps, no --noscripts.
	t.Run("upgrade", func(t *testing.T) {
		root := installRoot(t, rpm, paths[0])
		mustRun(t, rpm, "--root", root, "--dbpath", "/var/lib/rpm", "-U", paths[1])
		if got := mustRun(t, rpm, "--root", root, "--dbpath", "/var/lib/rpm", "-q", "hello-web"); got != "hello-web-1.1.0-1.x86_64\n" {
			t.Errorf("installed after upgrade: %q, want hello-web-1.1.0-1.x86_64", got)
		}
	})
}

// installAndRun installs pkg into a fresh root, checks the installed init
// script, and starts the installed binary to ask it for its version and
// health.
func installAndRun(t *testing.T, rpm, pkg string, r release) {
	t.Helper()
	root := installRoot(t, rpm, pkg)
	script, err := os.ReadFile(filepath.Join(root, "etc/init.d/hello-web"))
	if err != nil {
		t.Fatalf("read installed init script: %v", err)
	}
	if !bytes.Equal(script, helloweb.InitScript()) {
		t.Error("installed init script differs from helloweb.InitScript()")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		testenv.Unavailable(t, fmt.Sprintf("the packaged binary is for linux/amd64, not %s/%s", runtime.GOOS, runtime.GOARCH))
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "usr/bin/hello-web"), "-listen", "127.0.0.1:0", "-host", "rpm-test")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start installed hello-web: %v", err)
	}
	defer func() {
		if cmd.ProcessState == nil { // not waited for: the test failed early
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	// The first line is printed once the port is bound: no polling needed.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read start-up line: %v", err)
	}
	wantPrefix := "hello-web " + r.version + " listening on 127.0.0.1:"
	if !strings.HasPrefix(line, wantPrefix) {
		t.Fatalf("start-up line %q, want it to start with %q", line, wantPrefix)
	}
	addr := strings.Fields(strings.TrimPrefix(line, "hello-web "+r.version+" listening on "))[0]

	if code, body := get(t, addr, "/version"); code != http.StatusOK || body != r.version+"\n" {
		t.Errorf("GET /version = %d %q, want 200 %q", code, body, r.version)
	}
	wantHealth := http.StatusOK
	if !r.healthy {
		wantHealth = http.StatusServiceUnavailable
	}
	if code, _ := get(t, addr, "/health"); code != wantHealth {
		t.Errorf("GET /health = %d, want %d", code, wantHealth)
	}
	if code, body := get(t, addr, "/"); code != http.StatusOK || !strings.Contains(body, "rpm-test") {
		t.Errorf("GET / = %d %q, want the host name on the page", code, body)
	}

	// SIGTERM must end it at once and cleanly: a restart relies on that.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal hello-web: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("hello-web after SIGTERM: %v, want exit status 0", err)
	}
}

// installRoot installs pkg into a new root directory, as the brief for the
// fleet's hosts does: a database at /var/lib/rpm inside that root.
func installRoot(t *testing.T, rpm, pkg string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		// rpm gives the files to root:root, which only root can do.
		testenv.Unavailable(t, "installing an RPM needs root")
	}
	root := t.TempDir()
	mustRun(t, rpm, "--root", root, "--dbpath", "/var/lib/rpm", "-i", "--nodeps", "--noscripts", pkg)
	return root
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), stderrOf(err))
	}
	return string(out)
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// stderrOf adds a failed command's standard error to its error.
func stderrOf(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err
}

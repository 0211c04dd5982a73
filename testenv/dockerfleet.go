package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv/fleet"
)

// StartDockerFleet brings the docker-compose fleet up for one test, under a
// project name of its own, and removes it when the test ends, also when it
// fails. Without Docker or the fleet's images (`make images`) the test is
// skipped, except under CI, where that fails it.
func StartDockerFleet(t testing.TB, o fleet.Options) *fleet.Fleet {
	t.Helper()
	RequireBinaries(t, "docker")
	ctx := context.Background()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		Unavailable(t, "the Docker daemon is not reachable: "+strings.TrimSpace(string(out)))
	}
	if err := fleet.CheckImages(ctx, o.Tag); err != nil {
		Unavailable(t, err.Error())
	}
	if o.Project == "" {
		o.Project = projectName(t.Name())
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	upCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	f, err := fleet.Up(upCtx, o)
	if err != nil {
		t.Fatalf("fleet up: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Down(context.Background()); err != nil {
			t.Errorf("fleet down: %v", err)
		}
	})
	return f
}

var nonProjectChars = regexp.MustCompile(`[^a-z0-9]+`)

// projectName makes a compose project name from the test's: lowercase,
// unique per call, so parallel and repeated runs never share containers.
func projectName(test string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := strings.Trim(nonProjectChars.ReplaceAllString(strings.ToLower(test), "-"), "-")
	if len(name) > 40 {
		name = name[:40]
	}
	return "lt-" + name + "-" + hex.EncodeToString(b[:])
}

// FloorRollout runs testenv/floor/rollout on the fleet's hosts: the same
// steps as the fleet's playbook with nothing around them, the floor a
// rollout's time is measured against. It returns the script's wall time.
func FloorRollout(ctx context.Context, f *fleet.Fleet, nevra string) (time.Duration, error) {
	_, self, _, _ := runtime.Caller(0)
	args := []string{nevra, "hello-web"}
	for _, h := range f.Hosts {
		args = append(args, h.Name+"="+h.Address+"="+h.Server)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(filepath.Dir(self), "floor", "rollout"), args...)
	cmd.Env = append(os.Environ(), "FLOOR_API="+f.LBAPI, "FLOOR_BACKEND="+f.Backend, "FLOOR_USER="+f.User,
		"FLOOR_IDENTITY="+f.Identity, "FLOOR_KNOWN_HOSTS="+f.KnownHosts, "FLOOR_HEALTH_PORT=8080")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("floor rollout to %s: %w\n%s", nevra, err, out)
	}
	return time.Since(start), nil
}

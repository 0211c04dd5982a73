package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"regexp"
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

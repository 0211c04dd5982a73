package playbook_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// A gate check runs on lieutenant's machine without lieutenant's secrets,
// and a secret's value it prints anyway reaches neither the record in Git
// nor what is shown of the run.
func TestGateCheckKeepsSecrets(t *testing.T) {
	testenv.RequireBinaries(t, "sh", "env", "grep", "cat")
	const token = "ghp_gatetoken0123456789"
	t.Setenv("LIEUTENANT_GIT_TOKEN", token)
	t.Setenv("LIEUTENANT_GIT_USER", "ci")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newScene(t, gateCheck("env | grep LIEUTENANT_; cat "+file+"; cat "+file+" >&2; exit 1"))
	rec, err := s.runWithLocalGate(t)
	if err == nil {
		t.Fatal("the run passed a gate check that exits 1")
	}
	if out := string(rec.Batches[0].Gate.Checks[0].Output); !strings.Contains(out, "LIEUTENANT_GIT_USER=ci\nREDACTED\nREDACTED") {
		t.Errorf("the check's output in the record:\n%s\nwant LIEUTENANT_GIT_USER alone and the token replaced", out)
	}
	s.recorder.mu.Lock()
	defer s.recorder.mu.Unlock()
	for i, c := range s.recorder.commits {
		for path, data := range c.tree {
			if strings.Contains(string(data), token) || strings.Contains(string(data), "LIEUTENANT_GIT_TOKEN") {
				t.Errorf("commit %d: %s holds the token:\n%s", i+1, path, data)
			}
		}
	}
	for _, e := range s.events {
		if shown := fmt.Sprint(e.Message, e.Err); strings.Contains(shown, token) {
			t.Errorf("event %s shows the token: %s", e.Kind, shown)
		}
	}
}

// A step's output in the record says how much there was when its start was
// dropped.
func TestStepOutputSaysWhatWasDropped(t *testing.T) {
	testenv.RequireBinaries(t, "seq")
	s := newScene(t, gateCheck("seq 100000"))
	rec, err := s.runWithLocalGate(t)
	if err != nil {
		t.Fatal(err)
	}
	out := string(rec.Batches[0].Gate.Checks[0].Output)
	if want := "[588895 bytes of output, the last 120 kept]\n99981\n"; !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "\n100000") {
		t.Errorf("output in the record:\n%s\nwant it to start with %q and end with 100000", out, want)
	}
}

// gateCheck is a playbook whose gate runs script as its one check.
func gateCheck(script string) string {
	return fmt.Sprintf(`
hosts: "web-*"
steps:
  - packages.install
gate:
  checks:
    - command.check: %q
`, script)
}

// runWithLocalGate runs the scene with its gate checks run on this machine,
// as lieutenant runs them, and returns the record with one gate check.
func (s *scene) runWithLocalGate(t *testing.T) (*record.Run, error) {
	t.Helper()
	ctx := t.Context()
	dep, obs, err := s.observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := playbook.MakePlan(dep, obs)
	if err != nil {
		t.Fatal(err)
	}
	rec := playbook.NewRecord(plan, record.Start{ID: "run-1", Revision: "abc123", By: "Test <t@example.com>", From: "t@ci", At: time.Now()})
	r := s.runner(dep)
	if r.Local, err = transport.NewLocal().Connect(ctx, transport.Host{Name: "localhost"}); err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx, dep.Environment, plan, rec)
	if g := rec.Batches[0].Gate; g == nil || len(g.Checks) != 1 {
		t.Fatalf("gate record %+v, run error %v: want the one check", g, err)
	}
	return rec, err
}

// rpm -q is read whole, so its output is bounded, and more is an error that
// names the host and the command.
func TestQueryInstalledOutputIsBounded(t *testing.T) {
	testenv.RequireBinaries(t, "sh", "yes", "head")
	bin := t.TempDir()
	// 100,000 valid lines, 3.2 MB.
	rpm := "#!/bin/sh\nyes 'hello-web\t0\t1.0.0\t1\tx86_64' | head -n 100000\n"
	if err := os.WriteFile(filepath.Join(bin, "rpm"), []byte(rpm), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conn, err := transport.NewLocal().Connect(ctx, transport.Host{Name: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = playbook.QueryInstalled(ctx, conn, false, []playbook.Package{{Name: "hello-web"}})
	if err == nil || !strings.HasPrefix(err.Error(), "query installed packages with rpm: run on web-1: rpm -q ") ||
		!strings.HasSuffix(err.Error(), "output too long: more than 1 MiB on stdout, so it was stopped") {
		t.Errorf("err = %v, want the output limit, naming the host and rpm -q", err)
	}
}

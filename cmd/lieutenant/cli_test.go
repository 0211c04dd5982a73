package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/testenv"
)

var update = flag.Bool("update", false, "rewrite golden files")

// exampleRepo is a deploy repository holding playbook/testdata/valid, the
// same files README.md shows.
func exampleRepo(t *testing.T, extra map[string]string) string {
	t.Helper()
	files := map[string]string{}
	root := "../../playbook/testdata/valid"
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range extra {
		files[k] = v
	}
	return testenv.NewGitRepo(t, files)
}

// cli runs lieutenant in-process and returns what a terminal would show.
func lieutenant(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"lieutenant", "--repo", dir}, args...), streams{in: strings.NewReader(""), out: &out, err: &errOut})
	return out.String(), errOut.String(), code
}

var (
	hashRe = regexp.MustCompile(`\b[0-9a-f]{7}\b|\b[0-9a-f]{40}\b`)
	tmpRe  = regexp.MustCompile(`/tmp/[^\s:]+`)
)

func normalize(s string) string {
	s = hashRe.ReplaceAllString(s, "<commit>")
	return tmpRe.ReplaceAllString(s, "<tmp>")
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/lieutenant -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (-update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestCLI runs commands that contact no host against a real repository and
// compares what the user sees with golden files.
func TestCLI(t *testing.T) {
	cases := []struct {
		name  string
		args  string
		files map[string]string // changes to the example repository
		code  int
	}{
		{name: "validate", args: "validate", code: exitOK},
		{name: "plan-offline", args: "plan --env production --offline", code: exitOK},
		{name: "plan-offline-json", args: "plan --env staging --offline -o json", code: exitOK},
		{name: "plan-unknown-env", args: "plan --env prod --offline", code: exitInvalid},
		{name: "plan-without-env", args: "plan --offline", code: exitInvalid},
		{name: "plan-bad-output", args: "plan --env production --offline -o yaml", code: exitInvalid},
		{name: "unknown-flag", args: "run --env production --force", code: exitInvalid},
		{name: "extra-argument", args: "validate production", code: exitInvalid},
		{name: "unknown-command", args: "deploy --env production", code: exitInvalid},
		{name: "validate-bad-manifest", args: "validate", code: exitInvalid, files: map[string]string{
			"releases/production.yaml": "release: 2026.11.3\npackages:\n  - \"hello; rm -rf /\"\n  - hello-web-1.1.0-1.x86_64\n",
			"inventory/staging.yaml":   "hosts:\n  web-1: {port: 22}\n",
		}},
		{name: "run-invalid-nothing-touched", args: "run --env production --yes", code: exitInvalid, files: map[string]string{
			"playbooks/web.yaml": "hosts: web\nsteps:\n  - servce.restart: hello-web\n",
		}},
		{name: "unknown-revision", args: "--rev v9.9 validate", code: exitInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := exampleRepo(t, tc.files)
			stdout, stderr, code := lieutenant(t, dir, strings.Fields(tc.args)...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic:") {
				t.Errorf("a Go stack trace reached the user:\n%s", stderr)
			}
			checkGolden(t, tc.name, normalize(fmt.Sprintf("$ lieutenant %s\n%s--- stderr\n%s--- exit %d\n", tc.args, stdout, stderr, code)))
		})
	}
}

func TestNotARepository(t *testing.T) {
	_, stderr, code := lieutenant(t, t.TempDir(), "validate")
	if code != exitInvalid || !strings.Contains(stderr, "not a git repository") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, cmd := range []string{"validate", "plan", "run"} {
		stdout, _, code := lieutenant(t, ".", cmd, "--help")
		if code != exitOK || !strings.Contains(stdout, "EXAMPLE:") || !strings.Contains(stdout, "lieutenant "+cmd) {
			t.Errorf("lieutenant %s --help (exit %d) lacks an example:\n%s", cmd, code, stdout)
		}
	}
	stdout, _, _ := lieutenant(t, ".", "--help")
	if !strings.Contains(stdout, "EXIT CODES:") {
		t.Errorf("lieutenant --help does not document exit codes:\n%s", stdout)
	}
}

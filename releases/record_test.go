package releases_test

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

func TestNewRunID(t *testing.T) {
	now := time.Date(2026, 11, 28, 11, 0, 0, 0, time.FixedZone("CET", 3600))
	id := releases.NewRunID(now)
	if !regexp.MustCompile(`^2026-11-28T10-00-00Z-[0-9a-f]{4}$`).MatchString(id) {
		t.Errorf("NewRunID = %q, want the UTC time and 4 hex digits", id)
	}
	if _, err := record.Path("production", id); err != nil {
		t.Errorf("a run ID is not a valid record name: %v", err)
	}
	seen := map[string]bool{}
	for range 50 {
		seen[releases.NewRunID(now)] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 run IDs in one second gave only %d distinct ones", len(seen))
	}
	// Run IDs sort by time, so a directory listing is a timeline.
	ids := []string{
		releases.NewRunID(now.Add(time.Hour)),
		releases.NewRunID(now),
		releases.NewRunID(now.Add(24 * time.Hour)),
	}
	sorted := slices.Sorted(slices.Values(ids))
	if !slices.Equal(sorted, []string{ids[1], ids[0], ids[2]}) {
		t.Errorf("run IDs do not sort by time: %v", sorted)
	}
}

// recordFiles are the files of a run of env with one host, web-1, that
// has a file of its own.
func recordFiles(t *testing.T, env, id string) map[string][]byte {
	t.Helper()
	r := record.New(record.Start{ID: id, Environment: env, Release: "r1", At: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)},
		[][]record.Planned{{{Name: "web-1", Address: "10.0.0.1"}}}, nil)
	r.StartBatch(1, time.Now())
	r.StartHost("web-1", time.Now())
	files, err := r.Files(true, r.Changes())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		out[f.Path] = f.Data
	}
	return out
}

// A file among an environment's runs whose name is no run id (a README,
// a note, a directory) is skipped with one warning each, and the runs
// next to it are read; so is what is not a host's file in a run's
// directory.
func TestStrayFilesAmongRunsAreSkippedWithAWarning(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	const id = "2026-11-28T10-00-00Z-3f2a"
	files := recordFiles(t, "staging", id)
	files["runs/staging/README.yaml"] = []byte("These are staging's runs.\n")
	files["runs/staging/notes/x.yaml"] = []byte("x\n")
	files["runs/staging/2026-11-28T10-00-00Z-3f2a/NOTES.md"] = []byte("web-1 was slow\n")
	files["runs/staging/2026-11-28T11-00-00Z-0000/web-1.yaml"] = []byte("a host directory without its run\n")
	if _, err := h.Commit(ctx, "hand edits", func(releases.Tip) (map[string][]byte, error) { return files, nil }, "hand edits"); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	h = h.WithWarnings(func(msg string) { warnings = append(warnings, msg) })

	recs, err := h.Records(ctx, "staging")
	if err != nil || len(recs) != 1 || recs[0].ID != id {
		t.Fatalf("Records = %v, %v; want run %s", recs, err, id)
	}
	want := []string{
		"lieutenant/runs:runs/staging/2026-11-28T11-00-00Z-0000 is not a run record",
		"lieutenant/runs:runs/staging/README.yaml is not a run record",
		"lieutenant/runs:runs/staging/notes is not a run record",
	}
	checkWarnings(t, warnings, want)

	warnings = nil
	rec, err := h.FindRun(ctx, id)
	if err != nil {
		t.Fatalf("FindRun: %v", err)
	}
	if host, _ := rec.Host("web-1"); host.StartedAt == nil {
		t.Errorf("web-1's own file was not read: %+v", host)
	}
	checkWarnings(t, warnings, []string{"lieutenant/runs:runs/staging/2026-11-28T10-00-00Z-3f2a/NOTES.md is not a host's file of the run"})

	// Only run ids name runs: the README is not one.
	if _, err := h.FindRun(ctx, "README"); err == nil || !strings.Contains(err.Error(), `run "README": not a run id`) {
		t.Errorf("FindRun(README) = %v, want an error saying it is not a run id", err)
	}
}

func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("warnings:\n%s\nwant %d, one per stray file", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) || strings.Contains(got[i], "\n") {
			t.Errorf("warning %q, want one line starting %q", got[i], want[i])
		}
	}
}

// A run's file that is malformed is an error naming its path and the
// problem, not skipped: it has a run's name.
func TestMalformedRunRecordNamesItsPath(t *testing.T) {
	ctx := context.Background()
	dir := testenv.NewGitRepo(t, deployFiles)
	h := history(t, openRepo(t, dir))
	const id = "2026-11-28T10-00-00Z-3f2a"
	bad := "id: " + id + "\nenvironment: staging\noutcome: running\nbatches:\n  - {number: 0, hosts: [web-1]}\nhosts:\n  - {name: web-1, batch: 1, status: running}\n"
	if _, err := h.Put(ctx, "runs/staging/"+id+".yaml", []byte(bad), "hand edit"); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func() error{
		"Records": func() error { _, err := h.Records(ctx, "staging"); return err },
		"FindRun": func() error { _, err := h.FindRun(ctx, id); return err },
	} {
		err := read()
		var malformed *releases.MalformedError
		if !errors.As(err, &malformed) || !strings.Contains(err.Error(), "lieutenant/runs:runs/staging/"+id+".yaml is malformed: batches[0]: number 0, want 1") {
			t.Errorf("%s: %v, want a MalformedError naming the file and the batch number", name, err)
		}
	}
}

package record_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

func TestPath(t *testing.T) {
	got, err := record.Path("production", "2026-11-28T10-00-00Z-3f2a")
	if err != nil || got != "runs/production/2026-11-28T10-00-00Z-3f2a.yaml" {
		t.Errorf("Path = %q, %v", got, err)
	}
	for _, tc := range []struct{ env, id string }{
		{"../x", "run"}, {"a/b", "run"}, {"production", "../x"}, {"production", "a/b"},
		{"", "run"}, {"production", ""}, {".", "run"}, {"..", "run"}, {".git", "run"},
		{"production", ".hidden"}, {`a\b`, "run"}, {"prod\nuction", "run"}, {"production", "x.lock"},
	} {
		if p, err := record.Path(tc.env, tc.id); err == nil {
			t.Errorf("Path(%q, %q) = %q, want an error", tc.env, tc.id, p)
		}
	}
}

func newRun() *record.Run {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	return record.New(record.Start{ID: "2026-11-28T10-00-00Z-3f2a", Environment: "production", Release: "r1",
		Packages: []string{"hello-web-1.1.0-1.x86_64"}, By: "Jane <j@example.com>", From: "j@laptop", At: at},
		[][]record.Planned{{{Name: "web-1", Address: "10.0.0.1"}, {Name: "web-2", Address: "10.0.0.2"}}, {{Name: "web-3", Address: "10.0.0.3"}}},
		[]record.Planned{{Name: "web-4", Address: "10.0.0.4"}})
}

// reread writes the record's files as Git would hold them after the
// given writes and parses them back.
func reread(t *testing.T, writes ...[]record.File) *record.Run {
	t.Helper()
	tree := map[string][]byte{}
	for _, w := range writes {
		for _, f := range w {
			tree[f.Path] = f.Data
		}
	}
	run := tree["runs/production/2026-11-28T10-00-00Z-3f2a.yaml"]
	hosts := map[string][]byte{}
	for p, data := range tree {
		if name, ok := strings.CutPrefix(p, "runs/production/2026-11-28T10-00-00Z-3f2a/"); ok {
			hosts[strings.TrimSuffix(name, ".yaml")] = data
		}
	}
	r, err := record.Parse(run, hosts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func files(t *testing.T, r *record.Run, withRun bool) []record.File {
	t.Helper()
	f, err := r.Files(withRun, r.Changes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The run's file carries no steps; a host's steps live in its own file,
// written as the host makes progress; read back, the record is whole, and
// a host's file wins over the run's (older) line for it.
func TestFilesSplitAndReadBack(t *testing.T) {
	r := newRun()
	at := time.Date(2026, 11, 28, 10, 0, 1, 0, time.UTC)
	r.StartBatch(1, at)
	start := files(t, r, true)
	if len(start) != 1 {
		t.Errorf("batch 1's intent writes %d files, want only the run's", len(start))
	}
	r.StartHost("web-1", at)
	r.AddStep("web-1", record.NewStep("balancer.drain", at, 10*time.Millisecond, "", nil))
	progress := files(t, r, false)
	if len(progress) != 1 || progress[0].Path != "runs/production/2026-11-28T10-00-00Z-3f2a/web-1.yaml" {
		t.Fatalf("progress writes %+v, want web-1's file only", progress)
	}
	got := reread(t, start, progress)
	if h, _ := got.Host("web-1"); h.Status != record.HostRunning || len(h.Steps) != 1 {
		t.Errorf("web-1 read back: %+v", h)
	}
	if h, _ := got.Host("web-2"); h.Status != record.HostRunning || h.StartedAt != nil {
		t.Errorf("web-2 (in flight, not started) read back: %+v", h)
	}
	r.FinishHost("web-1", record.HostEnd{Err: errors.New("install: exit 1"), Duration: time.Second})
	end := files(t, r, false)
	got = reread(t, start, progress, end)
	if h, _ := got.Host("web-1"); h.Status != record.HostFailed || h.Error != "install: exit 1" {
		t.Errorf("web-1 after its end: %+v", h)
	}
	for _, f := range start {
		if strings.Contains(string(f.Data), "steps:") {
			t.Errorf("the run's file carries steps:\n%s", f.Data)
		}
	}
}

// goodRecord is a run's file as a person might write it: the least a
// record lieutenant can act on has.
const goodRecord = `id: 2026-11-28T10-00-00Z-3f2a
environment: production
outcome: running
batches:
  - {number: 1, hosts: [web-1]}
  - {number: 2, hosts: [web-2]}
hosts:
  - {name: web-1, batch: 1, status: succeeded}
  - {name: web-2, batch: 2, status: running}
`

func TestParseRefusesMalformedRecords(t *testing.T) {
	if _, err := record.Parse([]byte(goodRecord), nil); err != nil {
		t.Fatalf("a good record: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edits []string // old, new, ... as for strings.NewReplacer
		want  string
	}{
		{"batches from 0", []string{"number: 1,", "number: 0,"}, "number 0, want 1"},
		{"batches 7 and 8", []string{"number: 2,", "number: 8,"}, "number 8, want 2"},
		{"a batch host missing", []string{"hosts: [web-2]", "hosts: [web-9]"}, "web-9 is not in the run's hosts"},
		{"a host in two batches", []string{"hosts: [web-2]", "hosts: [web-2, web-1]"}, "web-1 is in more than one batch"},
		{"an unknown status", []string{"status: running", "status: sleeping"}, `status "sleeping"`},
		{"an unknown outcome", []string{"outcome: running", "outcome: fine"}, `outcome "fine"`},
		{"a host no batch lists", []string{"hosts: [web-2]", "hosts: []"}, "batch 2 does not list it"},
		// Its file would be written elsewhere: runs/production/<run>/../web-2.yaml.
		{"a host name that is a path", []string{"web-2", "../web-2"}, `hosts[1]: name "../web-2" is not a host name`},
		// A resume would declare it in flight and never run it.
		{"a running host in no batch", []string{"hosts: [web-2]", "hosts: []", "batch: 2, ", ""}, "host web-2: status running, but it is in no batch"},
		// approve would record a decision on a gate that does not exist.
		{"waiting at gate 0", []string{"outcome: running\n", "outcome: running\nwaiting: {gate: 0}\n"}, "waiting: gate 0 is not between two of the run's 2 batches"},
		{"waiting after the last batch", []string{"outcome: running\n", "outcome: running\nwaiting: {gate: 2}\n"}, "waiting: gate 2 is not between two"},
	} {
		_, err := record.Parse([]byte(strings.NewReplacer(tc.edits...).Replace(goodRecord)), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line with %q", tc.name, err, tc.want)
		}
	}
	if _, err := record.Parse([]byte(goodRecord), map[string][]byte{"web-1": []byte("name: web-2\nstatus: failed\n")}); err == nil {
		t.Error("a host file naming another host was accepted")
	}
}

// A resume reruns the hosts of a batch in flight that did not finish,
// and those failed only by the interruption; never a finished host.
func TestResumeInFlight(t *testing.T) {
	r := newRun()
	at := time.Now()
	r.StartBatch(1, at)
	r.StartHost("web-1", at)
	r.FinishHost("web-1", record.HostEnd{})
	r.StartHost("web-2", at)
	r.FinishHost("web-2", record.HostEnd{Err: errors.New("interrupted"), Interrupted: true})
	r.StartBatch(2, at)
	if got := r.Resume("S <s@x>", "s@ci", at); strings.Join(got, ",") != "web-2,web-3" {
		t.Errorf("in flight: %v, want web-2 (interrupted) and web-3 (declared, not started)", got)
	}
	if h, _ := r.Host("web-1"); h.Status != record.HostSucceeded {
		t.Errorf("web-1 after resume: %s", h.Status)
	}
}

// A refusal after hosts were changed by a process before (a refused
// resume) leaves the run resumable.
func TestFinishRefusedResumeStaysResumable(t *testing.T) {
	r := newRun()
	r.StartBatch(1, time.Now())
	r.StartHost("web-1", time.Now())
	r.FinishHost("web-1", record.HostEnd{})
	r.Finish(record.End{Outcome: record.OutcomeRefused, Reason: "refused before changing any host: web-2 unreachable", At: time.Now()})
	if r.Outcome != record.OutcomeInterrupted || r.CheckResumable() != nil || !strings.Contains(r.Reason, "resume refused") {
		t.Errorf("outcome %s, reason %q", r.Outcome, r.Reason)
	}
	if strings.Contains(strings.Join(r.Next, " "), "Nothing was changed") || !strings.Contains(strings.Join(r.Next, " "), "lieutenant resume "+r.ID) {
		t.Errorf("next: %v", r.Next)
	}
}

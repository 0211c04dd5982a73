package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// writeHistory commits files (path -> content) to the history branch of
// the repository at dir in one commit, as a hand edit would.
func writeHistory(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	repo, err := releases.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	hist, err := repo.History(releases.DefaultHistoryBranch)
	if err != nil {
		t.Fatal(err)
	}
	edits := map[string][]byte{}
	for p, data := range files {
		edits[p] = []byte(data)
	}
	if _, err := hist.Commit(context.Background(), "hand edit", func(releases.Tip) (map[string][]byte, error) { return edits, nil }, "hand edit"); err != nil {
		t.Fatal(err)
	}
}

// stagingInSync is the record of a sync that found staging (of the
// example repository at commit) at its release.
func stagingInSync(t *testing.T, id, commit string) map[string]string {
	t.Helper()
	r := record.NewInSync(record.Start{ID: id, Environment: "staging", Kind: "sync", Release: "2026.11.4", Revision: commit,
		Packages: []string{"hello-web-1.2.0-1.x86_64"}, By: "Jane <jane@example.com>", From: "jane@ci", At: time.Now()},
		[]record.Planned{{Name: "web-1", Address: "10.0.2.11"}, {Name: "web-2", Address: "10.0.2.12"}})
	files, err := r.Files(true, nil)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{files[0].Path: string(files[0].Data)}
}

// A README.yaml among staging's runs on the history branch is ignored with
// one warning on stderr: history lists the runs, sync finds staging in
// sync, rollback looks for a run to go back to. None touches a host.
func TestStrayFileAmongRunsIsIgnored(t *testing.T) {
	dir := exampleRepo(t, nil)
	const id = "2026-11-28T10-00-00Z-3f2a"
	files := stagingInSync(t, id, testenv.Git(t, dir, "rev-parse", "HEAD"))
	files["runs/staging/README.yaml"] = "These are staging's runs; see lieutenant history --env staging.\n"
	writeHistory(t, dir, files)
	const warning = "lieutenant: warning: lieutenant/runs:runs/staging/README.yaml is not a run record (runs/staging/ holds RUN.yaml and RUN/ for run ids such as 2026-11-28T10-00-00Z-3f2a); ignored\n"

	for _, tc := range []struct {
		args       string
		code       int
		out, error string
	}{
		{args: "history --env staging", code: exitOK, out: id},
		{args: "sync --env staging", code: exitOK, out: "in sync at 2026.11.4"},
		{args: "rollback --env staging --yes", code: exitError, error: "nothing to roll back to"},
	} {
		stdout, stderr, code := lieutenant(t, dir, strings.Fields(tc.args)...)
		rest, warned := strings.CutPrefix(stderr, warning)
		switch {
		case code != tc.code || !strings.Contains(stdout, tc.out):
			t.Errorf("%s: exit %d, want %d and %q on stdout\n%s%s", tc.args, code, tc.code, tc.out, stdout, stderr)
		case !warned:
			t.Errorf("%s: stderr does not start with the warning:\n%s", tc.args, stderr)
		case tc.error == "" && rest != "":
			t.Errorf("%s: more than the warning on stderr:\n%s", tc.args, stderr)
		case tc.error != "" && (!strings.Contains(rest, tc.error) || strings.Count(rest, "\n") != 1):
			t.Errorf("%s: want the warning, then one line with %q:\n%s", tc.args, tc.error, stderr)
		}
	}
}

// A run record edited into something lieutenant cannot act on stops
// resume (and approve) with one line naming the file and what is wrong in
// it, exit 1 as for other broken Git data; never a panic.
func TestMalformedRecordIsRefused(t *testing.T) {
	dir := exampleRepo(t, nil)
	head := testenv.Git(t, dir, "rev-parse", "HEAD")
	twoHosts := "  - {name: web-1, address: 10.0.2.11, batch: 1, status: running}\n  - {name: web-2, address: 10.0.2.12, batch: 2, status: pending}\n"
	cases := []struct {
		name, id, batches, hosts, more string
		command, want                  string
	}{
		{name: "batches 0 and 1", id: "2026-11-28T10-00-00Z-0001",
			batches: "  - {number: 0, hosts: [web-1]}\n  - {number: 1, hosts: [web-2]}\n", hosts: twoHosts,
			command: "resume", want: "batches[0]: number 0, want 1"},
		{name: "batches 7 and 8", id: "2026-11-28T10-00-00Z-0002",
			batches: "  - {number: 7, hosts: [web-1]}\n  - {number: 8, hosts: [web-2]}\n",
			hosts:   strings.NewReplacer("batch: 1", "batch: 7", "batch: 2", "batch: 8").Replace(twoHosts),
			command: "resume", want: "batches[0]: number 7, want 1"},
		{name: "a batch host not in hosts", id: "2026-11-28T10-00-00Z-0003",
			batches: "  - {number: 1, hosts: [web-1]}\n  - {number: 2, hosts: [web-9]}\n",
			hosts:   "  - {name: web-1, address: 10.0.2.11, batch: 1, status: running}\n",
			command: "resume", want: "batch 2: host web-9 is not in the run's hosts"},
		{name: "a host in flight in no batch", id: "2026-11-28T10-00-00Z-0004",
			batches: "  - {number: 1, hosts: [web-1]}\n",
			hosts:   "  - {name: web-1, address: 10.0.2.11, batch: 1, status: succeeded}\n  - {name: web-2, address: 10.0.2.12, status: running}\n",
			command: "resume", want: "host web-2: status running, but it is in no batch"},
		{name: "waiting at no gate", id: "2026-11-28T10-00-00Z-0005",
			batches: "  - {number: 1, hosts: [web-1]}\n  - {number: 2, hosts: [web-2]}\n", hosts: twoHosts,
			more:    "waiting: {gate: 0, since: 2026-11-28T10:00:00Z, until: 2026-11-28T11:00:00Z}\n",
			command: "approve", want: "waiting: gate 0 is not between two of the run's 2 batches"},
	}
	files := map[string]string{}
	for _, tc := range cases {
		files["runs/staging/"+tc.id+".yaml"] = "id: " + tc.id + "\nenvironment: staging\nkind: run\nrelease: 2026.11.4\nmanifest_commit: " + head +
			"\noutcome: running\n" + tc.more + "batches:\n" + tc.batches + "hosts:\n" + tc.hosts
	}
	writeHistory(t, dir, files)
	tip := testenv.Git(t, dir, "rev-parse", "lieutenant/runs")

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{tc.command, tc.id}
			if tc.command == "resume" {
				args = []string{"resume", "--yes", tc.id}
			}
			stdout, stderr, code := lieutenant(t, dir, args...)
			want := "lieutenant: lieutenant/runs:runs/staging/" + tc.id + ".yaml is malformed: "
			if code != exitError || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("%s: exit %d, want %d and one line %q...%q\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, exitError, want, tc.want, stdout, stderr)
			}
		})
	}
	if now := testenv.Git(t, dir, "rev-parse", "lieutenant/runs"); now != tip {
		t.Errorf("a refused command wrote the history branch:\n%s", testenv.Git(t, dir, "log", "--format=%s", tip+"..lieutenant/runs"))
	}
}

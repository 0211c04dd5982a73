package record_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

// FuzzParse feeds Parse a run's file and one host's file as a hand edit
// of the history branch could leave them. Parse never panics; a record it
// accepts is written back by Files to files that parse to the same record,
// and a resume of it (reopen, plan, run every batch, end) neither panics
// nor leaves a record that fails to parse.
func FuzzParse(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed.run, seed.host, seed.hostData)
	}
	f.Fuzz(func(t *testing.T, run []byte, host string, hostData []byte) {
		var hosts map[string][]byte
		if host != "" {
			hosts = map[string][]byte{host: hostData}
		}
		r, err := record.Parse(run, hosts)
		if err != nil {
			return
		}
		written := allFiles(t, r)
		again := parseFiles(t, r, written)
		if rewritten := allFiles(t, again); !sameFiles(written, rewritten) {
			t.Fatalf("the record does not round-trip:\n%s\n---\n%s", dump(written), dump(rewritten))
		}
		resume(t, again)
	})
}

type seed struct {
	run      []byte
	host     string
	hostData []byte
}

// fuzzSeeds are records as lieutenant writes them, at each stage of a run,
// and the hand-written ones of TestParseRefusesMalformedRecords.
func fuzzSeeds(f *testing.F) []seed {
	var out []seed
	add := func(r *record.Run) {
		files, err := r.Files(true, r.Changes())
		if err != nil {
			f.Fatal(err)
		}
		s := seed{run: files[0].Data}
		if len(files) > 1 {
			s.host, s.hostData = "web-1", files[1].Data
		}
		out = append(out, s)
	}
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	r := newRun()
	add(r)
	r.StartBatch(1, at)
	add(r)
	r.StartHost("web-1", at)
	r.AddStep("web-1", record.NewStep("packages.install", at, time.Second, "Installed: hello-web\nComplete!", nil))
	add(r)
	r.FinishHost("web-1", record.HostEnd{Err: errors.New("http.check: status 503"), Interrupted: true, After: map[string]string{"hello-web": "1.1.0-1"}})
	r.SetGate(1, &record.Gate{Status: record.StepOK, ApprovedBy: "Jane", At: at})
	r.SetWaiting(&record.Wait{Gate: 1, Since: at, Until: at.Add(time.Hour)})
	add(r)
	r.Finish(record.End{Outcome: record.OutcomeInterrupted, Reason: "interrupted", At: at.Add(time.Minute), Balancer: map[string]string{"web-1": "maint/down"}})
	add(r)
	r.Resume("S <s@example.com>", "s@ci", at.Add(time.Hour))
	add(r)
	add(record.NewInSync(record.Start{ID: "2026-11-28T10-00-00Z-3f2a", Environment: "production", Release: "r1", At: at},
		[]record.Planned{{Name: "web-1", Address: "10.0.0.1", Balancer: "ready/up"}}))
	out = append(out, seed{run: []byte(goodRecord)},
		seed{run: []byte(goodRecord), host: "web-1", hostData: []byte("name: web-1\nbatch: 1\nstatus: failed\nsteps:\n  - {step: balancer.drain, status: ok, duration: 1s}\n")},
		seed{run: []byte("id: [\n")})
	return out
}

// allFiles is every file of r: the run's and each host's.
func allFiles(t *testing.T, r *record.Run) []record.File {
	t.Helper()
	names := make([]string, len(r.Hosts))
	for i, h := range r.Hosts {
		names[i] = h.Name
	}
	files, err := r.Files(true, names)
	if err != nil {
		t.Fatalf("a record that parsed cannot be written: %v", err)
	}
	return files
}

// parseFiles parses files as the history branch would hold them for r.
func parseFiles(t *testing.T, r *record.Run, files []record.File) *record.Run {
	t.Helper()
	dir, err := record.HostDir(r.Environment, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var run []byte
	hosts := map[string][]byte{}
	for _, f := range files {
		if f.Path == dir+".yaml" {
			run = f.Data
			continue
		}
		name, ok := strings.CutPrefix(f.Path, dir+"/")
		name, yaml := strings.CutSuffix(name, ".yaml")
		if !ok || !yaml || strings.Contains(name, "/") {
			t.Fatalf("file %s is not in the run's host directory %s", f.Path, dir)
		}
		hosts[name] = f.Data
	}
	again, err := record.Parse(run, hosts)
	if err != nil {
		t.Fatalf("the files the record wrote do not parse: %v\n%s", err, dump(files))
	}
	return again
}

func sameFiles(a, b []record.File) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Path != b[i].Path || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func dump(files []record.File) string {
	var b bytes.Buffer
	for _, f := range files {
		b.WriteString("== " + f.Path + "\n")
		b.Write(f.Data)
	}
	return b.String()
}

// resume continues r as `lieutenant resume` and the runner do, without
// I/O: every host of the plan succeeds and every gate passes, then the run
// ends interrupted; the record must stay one that parses.
func resume(t *testing.T, r *record.Run) {
	t.Helper()
	if r.CheckResumable() != nil {
		return
	}
	at := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	r.Resume("S <s@example.com>", "s@ci", at)
	dep := &playbook.Deployment{
		Environment: &playbook.Environment{Name: r.Environment},
		Manifest:    &playbook.Manifest{Release: r.Release},
		Playbook:    &playbook.Playbook{Strategy: playbook.Strategy{Batches: playbook.Halves()}},
	}
	for _, h := range r.Hosts {
		dep.Hosts = append(dep.Hosts, playbook.Host{Name: h.Name, Address: h.Address})
	}
	plan, err := playbook.ResumePlan(dep, nil, r)
	if err != nil {
		t.Fatalf("resume plan of a valid record: %v", err)
	}
	plan.Declare(r, at)
	for i, b := range plan.Batches {
		r.StartBatch(b.Number, at)
		for _, hp := range b.Hosts {
			r.StartHost(hp.Host.Name, at)
			r.AddStep(hp.Host.Name, record.NewStep("packages.install", at, time.Second, "", nil))
			r.FinishHost(hp.Host.Name, record.HostEnd{Duration: time.Second})
		}
		if i < len(plan.Batches)-1 && !r.GatePassed(b.Number) {
			r.SetGate(b.Number, &record.Gate{Status: record.StepOK, At: at})
		}
	}
	r.Finish(record.End{Outcome: record.OutcomeInterrupted, Reason: "interrupted", At: at})
	parseFiles(t, r, allFiles(t, r))
}

package playbook_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

const (
	v100 = "hello-web-1.0.0-1.x86_64"
	v110 = "hello-web-1.1.0-1.x86_64"
)

// scene is a four-host fleet behind a fake balancer, with a playbook that
// drains, installs, restarts, checks and enables.
type scene struct {
	t        *testing.T
	files    fstest.MapFS
	fleet    *testenv.FakeFleet
	balancer *testenv.FakeBalancer
	recorder *memRecorder
	approver playbook.Approver
	minUp    int
	events   []playbook.Event
	// onEvent, when set, also sees every event.
	onEvent func(playbook.Event)
	// healthy decides the verification check per host.
	mu      sync.Mutex
	healthy map[string]bool
}

func newScene(t *testing.T, playbookYAML string) *scene {
	s := &scene{
		t:        t,
		fleet:    testenv.NewFakeFleet(v100, v110),
		balancer: testenv.NewFakeBalancer("web1", "web2", "web3", "web4"),
		recorder: &memRecorder{},
		healthy:  map[string]bool{},
		files: fstest.MapFS{
			"lieutenant.yaml": {Data: []byte(`
environments:
  production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
    balancer: {type: haproxy, api: "127.0.0.1:1", backend: web, min_up: 2}
    ssh: {user: deploy, sudo: true}
`)},
			"releases/production.yaml": {Data: []byte("release: 2026.11.3\npackages: [" + v110 + "]\n")},
			"inventory/production.yaml": {Data: []byte(`
hosts:
  web-1: {address: 10.0.1.11, balancer_server: web1}
  web-2: {address: 10.0.1.12, balancer_server: web2}
  web-3: {address: 10.0.1.13, balancer_server: web3}
  web-4: {address: 10.0.1.14, balancer_server: web4}
`)},
			"playbooks/web.yaml": {Data: []byte(playbookYAML)},
		},
	}
	for i := 0; i <= 4; i++ {
		name := fmt.Sprintf("web-%d", i)
		if i == 0 {
			name = "orchestrator" // where gate checks run
		}
		h := s.fleet.AddHost(name, v100)
		s.healthy[name] = true
		h.HandleScript("check-hello", func(ctx context.Context, h *testenv.FakeHost) (string, int) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if !s.healthy[h.Name] {
				return "503 unhealthy", 1
			}
			return "200 ok", 0
		})
	}
	return s
}

const standardPlaybook = `
hosts: "web-*"
steps:
  - balancer.drain: {timeout: 5s}
  - packages.install
  - service.restart: hello-web
  - command.check: check-hello
  - balancer.enable: {timeout: 5s}
gate:
  checks:
    - command.check: check-hello
`

func (s *scene) setHealthy(host string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.healthy[host] = ok
}

// observe loads the files and inspects the fleet, as every run starts.
func (s *scene) observe(ctx context.Context) (*playbook.Deployment, *playbook.Observed, error) {
	s.t.Helper()
	dep, err := playbook.Load(s.files, "production")
	if err != nil {
		s.t.Fatal(err)
	}
	obs, err := playbook.Inspect(ctx, s.fleet, s.balancer, dep, 0)
	return dep, obs, err
}

// run loads, inspects, plans and runs, as `lieutenant run` does.
func (s *scene) run(ctx context.Context) (*record.Run, error) {
	s.t.Helper()
	dep, obs, err := s.observe(ctx)
	if err != nil {
		return nil, err
	}
	plan, err := playbook.MakePlan(dep, obs)
	if err != nil {
		s.t.Fatal(err)
	}
	rec := playbook.NewRecord(plan, record.Start{ID: "run-1", Revision: "abc123", By: "Test <t@example.com>", From: "t@ci", At: time.Now()})
	return rec, s.runner(dep).Run(ctx, dep.Environment, plan, rec)
}

// runner is the Runner of the scene's fakes, recording events anew.
func (s *scene) runner(dep *playbook.Deployment) *playbook.Runner {
	minUp := dep.Environment.Balancer.MinUp
	if s.minUp != 0 {
		minUp = s.minUp
	}
	s.events = nil
	return &playbook.Runner{
		Connector: s.fleet,
		Balancer:  s.balancer,
		MinUp:     minUp,
		Local:     s.fleet.Host("orchestrator"),
		Approver:  s.approver,
		Recorder:  s.recorder,
		Observe: func(e playbook.Event) {
			s.events = append(s.events, e)
			if s.onEvent != nil {
				s.onEvent(e)
			}
		},
		// Progress is written as soon as it happens, so that tests see
		// every write the background writer makes.
		ProgressInterval: time.Millisecond,
	}
}

func (s *scene) hostStatus(rec *record.Run) string {
	var out []string
	for _, h := range rec.Hosts {
		out = append(out, fmt.Sprintf("%s=%s", h.Name, h.Status))
	}
	return strings.Join(out, " ")
}

func (s *scene) serverStates() string {
	var out []string
	for _, name := range []string{"web1", "web2", "web3", "web4"} {
		sv := s.balancer.Server(name)
		out = append(out, fmt.Sprintf("%s=%s", name, sv.Admin))
	}
	return strings.Join(out, " ")
}

func (s *scene) versions() string {
	var out []string
	for i := 1; i <= 4; i++ {
		name := fmt.Sprintf("web-%d", i)
		out = append(out, name+"="+strings.TrimPrefix(s.fleet.Host(name).Installed()["hello-web"], "hello-web-"))
	}
	return strings.Join(out, " ")
}

// memRecorder is a history branch in memory: each save is a commit of
// files on top of the previous ones, as Git would hold them.
type memRecorder struct {
	mu        sync.Mutex
	tree      map[string][]byte
	commits   []memCommit
	fail      error
	failAfter int // saves that succeed before fail applies
	// hold, when set, is called (without the lock) before each save
	// lands: a test blocks a write there.
	hold        func(c record.Commit)
	inFlight    int
	maxInFlight int
}

// memCommit is one save: its message and the files after it.
type memCommit struct {
	message string
	tree    map[string][]byte
	changed []string
}

func (m *memRecorder) Save(ctx context.Context, c record.Commit) error {
	m.mu.Lock()
	m.inFlight++
	m.maxInFlight = max(m.maxInFlight, m.inFlight)
	hold := m.hold
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.inFlight--
		m.mu.Unlock()
	}()
	if hold != nil {
		hold(c)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Like Git over the network, a save on a cancelled context fails.
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.fail != nil && len(m.commits) >= m.failAfter {
		return m.fail
	}
	if m.tree == nil {
		m.tree = map[string][]byte{}
	}
	var changed []string
	for _, f := range c.Files {
		m.tree[f.Path] = f.Data
		changed = append(changed, f.Path)
	}
	m.commits = append(m.commits, memCommit{message: c.Message, tree: maps.Clone(m.tree), changed: changed})
	return nil
}

// saves is how many saves landed.
func (m *memRecorder) saves() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.commits)
}

// at reads the record as Git held it after save i (negative: from the end).
func (m *memRecorder) at(t *testing.T, i int) *record.Run {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if i < 0 {
		i += len(m.commits)
	}
	return parseTree(t, m.commits[i].tree)
}

// records is the record after each save, oldest first.
func (m *memRecorder) records(t *testing.T) []*record.Run {
	t.Helper()
	var out []*record.Run
	for i := range m.saves() {
		out = append(out, m.at(t, i))
	}
	return out
}

// parseTree reads the one run of a tree of record files.
func parseTree(t *testing.T, tree map[string][]byte) *record.Run {
	t.Helper()
	var run []byte
	hosts := map[string][]byte{}
	for p, data := range tree {
		if strings.Count(p, "/") == 2 {
			run = data
		} else {
			hosts[strings.TrimSuffix(path.Base(p), ".yaml")] = data
		}
	}
	rec, err := record.Parse(run, hosts)
	if err != nil {
		t.Fatalf("the record in Git does not parse: %v", err)
	}
	return rec
}

func TestRunHalvesSucceeds(t *testing.T) {
	s := newScene(t, standardPlaybook)
	rec, err := s.run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, want := s.versions(), "web-1=1.1.0-1.x86_64 web-2=1.1.0-1.x86_64 web-3=1.1.0-1.x86_64 web-4=1.1.0-1.x86_64"; got != want {
		t.Errorf("versions = %s, want %s", got, want)
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer = %s, want %s", got, want)
	}
	if rec.Outcome != record.OutcomeSucceeded || rec.Reason != "" || rec.Next != nil {
		t.Errorf("record outcome %s reason %q next %v", rec.Outcome, rec.Reason, rec.Next)
	}
	for _, h := range rec.Hosts {
		if h.Before["hello-web"] != "1.0.0-1" || h.After["hello-web"] != "1.1.0-1" || h.Balancer != "ready/up" || len(h.Steps) != 5 {
			t.Errorf("host record %s: before %v after %v balancer %q steps %d", h.Name, h.Before, h.After, h.Balancer, len(h.Steps))
		}
	}
	// Halves: both hosts of batch 1 are enabled before any host of batch 2 is drained.
	var order []string
	for _, c := range s.balancer.Calls() {
		order = append(order, c.Op+" "+c.Server)
	}
	firstBatch2 := slices.IndexFunc(order, func(c string) bool { return c == "drain web3" || c == "drain web4" })
	for _, c := range []string{"enable web1", "enable web2"} {
		if i := slices.Index(order, c); i < 0 || i > firstBatch2 {
			t.Errorf("balancer calls %v: %s should come before batch 2 starts", order, c)
		}
	}
	if rec.Batches[0].Gate == nil || rec.Batches[0].Gate.Status != record.StepOK || rec.Batches[1].Gate != nil {
		t.Errorf("gates: %+v %+v, want one passed gate after batch 1", rec.Batches[0].Gate, rec.Batches[1].Gate)
	}
	// One connection per host for the whole run (inspection included), plus
	// the orchestrator's local runner which is not dialled.
	if d := s.fleet.Dials(); d != 4 {
		t.Errorf("dials = %d, want 4 (one per host)", d)
	}
	// Git held each batch's intent before any of its hosts was touched,
	// with the batch before it finished and its gate passed; the steps of
	// every host, and their end, reached it too, off the critical path.
	recs := s.recorder.records(t)
	intent := slices.IndexFunc(recs, func(r *record.Run) bool { return r.Batches[1].StartedAt != nil })
	if intent < 0 {
		t.Fatal("no write declared batch 2 in flight")
	}
	if got, want := s.hostStatus(recs[intent]), "web-1=succeeded web-2=succeeded web-3=running web-4=running"; got != want || !recs[intent].GatePassed(1) {
		t.Errorf("batch 2's intent: hosts %s (want %s), gate 1 %+v", got, want, recs[intent].Batches[0].Gate)
	}
	for _, h := range recs[intent].Hosts[2:] {
		if h.StartedAt != nil || len(h.Steps) > 0 {
			t.Errorf("%s had started when batch 2's intent was written: %+v", h.Name, h)
		}
	}
	if first := recs[0]; first.Batches[0].StartedAt == nil || len(first.Hosts[0].Steps) > 0 {
		t.Errorf("the first write is not batch 1's intent: %+v", first.Batches[0])
	}
	if last := recs[len(recs)-1]; last.Outcome != record.OutcomeSucceeded || len(last.Hosts[3].Steps) != 5 {
		t.Errorf("last write: %s, web-4 with %d steps", last.Outcome, len(last.Hosts[3].Steps))
	}
	if s.recorder.maxInFlight != 1 {
		t.Errorf("%d writes at once, want one at a time", s.recorder.maxInFlight)
	}
	// Every install went through sudo with the exact NEVRA.
	for _, c := range s.fleet.Host("web-1").Commands() {
		if c.Args[0] == "dnf" && (!c.Sudo || c.String() != "sudo -n -- dnf install -y "+v110) {
			t.Errorf("install command = %q", c.String())
		}
	}
}

func TestRunFailedHostStaysOutAndLaterBatchesUntouched(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.setHealthy("web-1", false)
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeFailed {
		t.Fatalf("run error = %v, want a failed *RunError", err)
	}
	if got, want := s.hostStatus(rec), "web-1=failed web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if got, want := s.serverStates(), "web1=maint web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if got, want := s.versions(), "web-1=1.1.0-1.x86_64 web-2=1.1.0-1.x86_64 web-3=1.0.0-1.x86_64 web-4=1.0.0-1.x86_64"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	// Hosts of the second batch got nothing but the inspection.
	for _, h := range []string{"web-3", "web-4"} {
		for _, c := range s.fleet.Host(h).Commands() {
			if c.Args[0] != "rpm" {
				t.Errorf("%s received %q after the run stopped", h, c)
			}
		}
	}
	if !strings.Contains(rec.Reason, "batch 1: web-1 failed: command.check") {
		t.Errorf("reason = %q", rec.Reason)
	}
	next := strings.Join(rec.Next, "\n")
	for _, want := range []string{"web-1 (10.0.1.11) failed", "kept out of service", "Not touched, still on the previous release: web-3, web-4.", "lieutenant run --env production"} {
		if !strings.Contains(next, want) {
			t.Errorf("next steps lack %q:\n%s", want, next)
		}
	}
	if rec.Batches[0].Gate != nil {
		t.Errorf("a gate ran after a failed batch: %+v", rec.Batches[0].Gate)
	}
}

func TestRunToleratesFailuresUpToMax(t *testing.T) {
	s := newScene(t, strings.Replace(standardPlaybook, `hosts: "web-*"`, "hosts: \"web-*\"\nstrategy: {max_failures: 1}", 1))
	s.setHealthy("web-3", false)
	rec, err := s.run(context.Background())
	if err == nil {
		t.Fatal("run with a failed host returned nil")
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=failed web-4=succeeded"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=maint web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if !strings.Contains(rec.Reason, "tolerated by max_failures 1") {
		t.Errorf("reason = %q", rec.Reason)
	}
}

func TestRunRefusesBeforeTouchingAnything(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(s *scene)
		wantErr string
	}{
		{"unreachable host", func(s *scene) { s.fleet.SetUnreachable("web-3", errors.New("connection refused")) },
			"web-3: connect to web-3 (10.0.1.13:22): connection refused"},
		{"approval without a terminal", func(s *scene) {
			s.files["playbooks/web.yaml"].Data = []byte(standardPlaybook + "  approval: prompt\n")
		}, "there is no terminal to ask on"},
		{"backend cannot spare a half", func(s *scene) { s.minUp = 3 }, "min_up is 3"},
		{"server missing from the balancer", func(s *scene) { s.balancer = testenv.NewFakeBalancer("web1", "web2", "web3") },
			`web-4: balancer has no server "web4"`},
		{"preflight fails", func(s *scene) {
			s.files["playbooks/web.yaml"].Data = []byte(standardPlaybook + "preflight:\n  - command.check: check-hello\n")
			s.setHealthy("web-2", false)
		}, "web-2: preflight: run on web-2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newScene(t, standardPlaybook)
			tc.setup(s)
			_, err := s.run(context.Background())
			var refused *playbook.RefusedError
			if !errors.As(err, &refused) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want a *RefusedError containing %q", err, tc.wantErr)
			}
			if calls := s.balancer.Calls(); len(calls) != 0 {
				t.Errorf("balancer calls after a refusal: %v", calls)
			}
			for i := 1; i <= 4; i++ {
				for _, c := range s.fleet.Host(fmt.Sprintf("web-%d", i)).Commands() {
					if c.Args[0] != "rpm" && !(c.Args[0] == "sh" && strings.Contains(tc.name, "preflight")) {
						t.Errorf("web-%d received %q", i, c)
					}
				}
			}
		})
	}
}

func TestRunDrainRefusedLeavesHostInService(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.balancer.SetHook(func(_ context.Context, c testenv.FakeCall) error {
		if c.Op == "drain" && c.Server == "web2" {
			return fmt.Errorf("drain web2: %w", lb.ErrDrainTimeout)
		}
		return nil
	})
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeFailed {
		t.Fatalf("err = %v, want a failed run", err)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=failed web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	// web-2 was not changed, so it is put back (a no-op for a drain that
	// restored itself) and keeps serving its old version.
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if v := s.fleet.Host("web-2").Installed()["hello-web"]; v != v100 {
		t.Errorf("web-2 has %s, want it untouched at %s", v, v100)
	}
}

func TestRunFailureAfterEnableTakesHostOut(t *testing.T) {
	s := newScene(t, `
hosts: "web-*"
steps:
  - balancer.drain
  - packages.install
  - balancer.enable
  - command.check: check-hello
`)
	s.setHealthy("web-2", false)
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeFailed {
		t.Fatalf("err = %v, want a failed run", err)
	}
	if got, want := s.serverStates(), "web1=ready web2=maint web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if rec.Hosts[1].Status != record.HostFailed || rec.Hosts[1].Balancer != "maint/down" {
		t.Errorf("web-2 record: %+v", rec.Hosts[1])
	}
}

func TestRunInterruptedRepairsBalancer(t *testing.T) {
	s := newScene(t, `
hosts: "web-*"
steps:
  - balancer.drain
  - packages.install
  - command.run: slow-migration
  - balancer.enable
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 4)
	for i := 1; i <= 4; i++ {
		s.fleet.Host(fmt.Sprintf("web-%d", i)).HandleScript("slow-migration", func(ctx context.Context, h *testenv.FakeHost) (string, int) {
			started <- struct{}{}
			<-ctx.Done()
			return "killed", 137
		})
	}
	go func() {
		<-started // both hosts of batch 1 are in the migration
		<-started
		cancel()
	}()
	rec, err := s.run(ctx)
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeInterrupted {
		t.Fatalf("err = %v, want an interrupted *RunError", err)
	}
	// Batch 1 hosts changed and did not finish: out of service. Batch 2: untouched.
	if got, want := s.serverStates(), "web1=maint web2=maint web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if got, want := s.hostStatus(rec), "web-1=failed web-2=failed web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	last := s.recorder.at(t, -1)
	if last.Outcome != record.OutcomeInterrupted {
		t.Errorf("last saved outcome = %s, want interrupted (saved despite the cancelled context)", last.Outcome)
	}
}

type denyApprover struct{ asked []playbook.GateRequest }

func (d *denyApprover) Approve(_ context.Context, req playbook.GateRequest) (bool, string, error) {
	d.asked = append(d.asked, req)
	return false, "alice", nil
}

func TestRunGateNotApproved(t *testing.T) {
	s := newScene(t, standardPlaybook+"  approval: prompt\n")
	deny := &denyApprover{}
	s.approver = deny
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeAborted {
		t.Fatalf("err = %v, want aborted", err)
	}
	if len(deny.asked) != 1 || strings.Join(deny.asked[0].Next, ",") != "web-3,web-4" || strings.Join(deny.asked[0].Done, ",") != "web-1,web-2" {
		t.Errorf("approver asked %+v", deny.asked)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if g := rec.Batches[0].Gate; g == nil || g.Status != record.StepFailed || !strings.Contains(g.Error, "not approved by alice") {
		t.Errorf("gate record: %+v", g)
	}
}

func TestRunGateCheckFailureStops(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.setHealthy("orchestrator", false)
	rec, err := s.run(context.Background())
	if err == nil || !strings.Contains(rec.Reason, "gate after batch 1: check command.check failed") {
		t.Fatalf("err = %v, reason = %q", err, rec.Reason)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
}

// A run whose first batch's intent cannot be written changes nothing and
// is refused.
func TestRunStopsWhenRecordCannotBeSaved(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.recorder.fail = errors.New("disk full")
	_, err := s.run(context.Background())
	var refused *playbook.RefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want a refusal naming the save error", err)
	}
	if calls := s.balancer.Calls(); len(calls) != 0 {
		t.Errorf("balancer calls: %v", calls)
	}
}

func TestRunSkipsHostsAlreadyAtRelease(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.fleet.AddHost("web-2", v110)
	s.fleet.Host("web-2").HandleScript("check-hello", func(context.Context, *testenv.FakeHost) (string, int) { return "", 0 })
	rec, err := s.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-3=succeeded web-4=succeeded web-2=up-to-date"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	for _, c := range s.balancer.Calls() {
		if c.Server == "web2" {
			t.Errorf("up-to-date web-2 was touched: %v", c)
		}
	}
}

// A host left out of service by a failed run is not "up to date": running
// again verifies it and puts it back.
func TestRunAgainRepairsHostLeftOutOfService(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.fleet.AddHost("web-1", v110)
	s.fleet.Host("web-1").HandleScript("check-hello", func(context.Context, *testenv.FakeHost) (string, int) { return "", 0 })
	s.balancer.SetAdmin("web1", lb.AdminMaint)
	rec, err := s.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if rec.Hosts[0].Name != "web-1" || rec.Hosts[0].Status != record.HostSucceeded {
		t.Errorf("web-1: %+v, want it re-run and succeeded", rec.Hosts[0])
	}
}

// Taking a failed host out is not refused by min_up: a server running a
// failed change is no capacity.
func TestRunIsolatesFailedHostsBelowMinimum(t *testing.T) {
	s := newScene(t, `
hosts: "web-*"
steps:
  - packages.install
  - command.check: check-hello
`)
	s.minUp = 3
	s.setHealthy("web-1", false)
	s.setHealthy("web-2", false)
	_, err := s.run(context.Background())
	if err == nil {
		t.Fatal("run with failing hosts returned nil")
	}
	if got, want := s.serverStates(), "web1=maint web2=maint web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
}

// If a failed host cannot be taken out, the run stops whatever
// max_failures tolerates: that host may be serving a failed change.
func TestRunStopsWhenFailedHostCannotBeIsolated(t *testing.T) {
	s := newScene(t, strings.Replace(standardPlaybook, `hosts: "web-*"`, "hosts: \"web-*\"\nstrategy: {max_failures: 3}", 1))
	s.setHealthy("web-1", false)
	drains := 0
	s.balancer.SetHook(func(_ context.Context, c testenv.FakeCall) error {
		if c.Op == "drain" && c.Server == "web1" {
			drains++
			if drains > 1 { // the playbook's drain passes, the isolation fails
				return errors.New("runtime API timeout")
			}
		}
		return nil
	})
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || !strings.Contains(rec.Reason, "could not be taken out of the balancer") {
		t.Fatalf("err = %v, reason %q", err, rec.Reason)
	}
	if got, want := s.hostStatus(rec), "web-1=failed web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
}

func TestRunInterruptedDuringPreflight(t *testing.T) {
	s := newScene(t, standardPlaybook+"preflight:\n  - command.check: slow-check\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 1; i <= 4; i++ {
		s.fleet.Host(fmt.Sprintf("web-%d", i)).HandleScript("slow-check", func(ctx context.Context, _ *testenv.FakeHost) (string, int) {
			cancel()
			<-ctx.Done()
			return "", 1
		})
	}
	_, err := s.run(ctx)
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeInterrupted {
		t.Fatalf("err = %v, want an interrupted run (exit 5), not a refusal", err)
	}
	if calls := s.balancer.Calls(); len(calls) != 0 {
		t.Errorf("balancer calls: %v", calls)
	}
}

// A batch whose intent cannot be written does not start: the batch before
// it finishes (its hosts never wait for Git), the run stops there, and the
// hosts of later batches stay untouched and in service.
func TestRunStopsBeforeABatchWhoseIntentCannotBeWritten(t *testing.T) {
	s := newScene(t, standardPlaybook)
	// Batch 1's intent lands; every later write fails.
	s.recorder.fail, s.recorder.failAfter = errors.New("disk full"), 1
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || !strings.Contains(rec.Reason, "batch 2 not started") || !strings.Contains(rec.Reason, "disk full") {
		t.Fatalf("err = %v, reason %q", err, rec.Reason)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	for _, h := range []string{"web-3", "web-4"} {
		for _, c := range s.fleet.Host(h).Commands() {
			if c.Args[0] != "rpm" {
				t.Errorf("%s ran %q although its batch's intent could not be written", h, c)
			}
		}
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
}

// Hosts never wait for Git: with a progress write stuck at the remote,
// batch 1's hosts run all their steps; the stuck write is the only one in
// flight, and the batch after waits for it only to write its intent.
func TestProgressNeverMakesAHostWait(t *testing.T) {
	s := newScene(t, standardPlaybook)
	finished := make(chan struct{})
	var once sync.Once
	s.recorder.hold = func(c record.Commit) {
		if strings.Contains(c.Message, "progress") {
			once.Do(func() { <-finished })
		}
	}
	var done int
	var mu sync.Mutex
	obs := func(e playbook.Event) {
		if e.Kind == playbook.EventHostFinished && e.Batch == 1 {
			mu.Lock()
			if done++; done == 2 {
				close(finished)
			}
			mu.Unlock()
		}
	}
	dep, o, err := s.observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	plan, err := playbook.MakePlan(dep, o)
	if err != nil {
		t.Fatal(err)
	}
	rec := playbook.NewRecord(plan, record.Start{ID: "run-1", Revision: "abc123", By: "Test <t@example.com>", From: "t@ci", At: time.Now()})
	runner := s.runner(dep)
	runner.Observe = obs
	if err := runner.Run(context.Background(), dep.Environment, plan, rec); err != nil {
		t.Fatal(err)
	}
	if s.recorder.maxInFlight != 1 {
		t.Errorf("%d writes at once, want one at a time", s.recorder.maxInFlight)
	}
	if got, want := s.hostStatus(s.recorder.at(t, -1)), "web-1=succeeded web-2=succeeded web-3=succeeded web-4=succeeded"; got != want {
		t.Errorf("hosts in Git at the end: %s, want %s", got, want)
	}
}

// An enable right after a check step that passed since the host's last
// change is verified: the check stands for the balancer's first one. Not
// after a change without a check, nor with wait_for_check.
func TestEnableIsVerifiedByACheckAfterTheLastChange(t *testing.T) {
	for _, tc := range []struct {
		name, steps string
		verified    bool
	}{
		{"check then enable", "  - packages.install\n  - command.check: check-hello\n  - balancer.enable\n", true},
		{"check, sleep, enable", "  - packages.install\n  - command.check: check-hello\n  - sleep: 1ms\n  - balancer.enable\n", true},
		{"change after the check", "  - command.check: check-hello\n  - service.restart: hello-web\n  - balancer.enable\n", false},
		{"no check", "  - packages.install\n  - balancer.enable\n", false},
		{"wait_for_check", "  - packages.install\n  - command.check: check-hello\n  - balancer.enable: {wait_for_check: true}\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScene(t, "hosts: \"web-*\"\nsteps:\n  - balancer.drain\n"+tc.steps)
			if _, err := s.run(context.Background()); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, c := range s.balancer.Calls() {
				if c.Op == "enable" {
					n++
					if c.Enable.Verified != tc.verified {
						t.Errorf("%s: verified %v, want %v", c, c.Enable.Verified, tc.verified)
					}
				}
			}
			if n != 4 {
				t.Errorf("%d enables, want 4", n)
			}
		})
	}
}

// A balancer restart (or a reload without a server-state file) between a
// drain and a step that changes the host puts the server back in service:
// the runner drains it again before that step, and the record says so.
func TestRunDrainsAgainWhenTheBalancerForgot(t *testing.T) {
	s := newScene(t, strings.Replace(standardPlaybook, `hosts: "web-*"`, "hosts: \"web-*\"\nstrategy: {max_parallel: 1}", 1))
	var mu sync.Mutex
	var atChange []string // the host's server as each changing step started
	restarted := map[string]bool{}
	s.onEvent = func(e playbook.Event) {
		server := "web" + strings.TrimPrefix(e.Host, "web-")
		switch {
		case e.Kind == playbook.EventStepStarted && (e.Step == "packages.install" || e.Step == "service.restart"):
			mu.Lock()
			atChange = append(atChange, fmt.Sprintf("%s %s %s", e.Host, e.Step, s.balancer.Server(server).Admin))
			mu.Unlock()
		case e.Kind != playbook.EventStepFinished || e.Err != nil:
		// Between web-1's drain and its install, and between web-3's
		// install and its restart.
		case e.Host == "web-1" && e.Step == "balancer.drain", e.Host == "web-3" && e.Step == "packages.install":
			if !restarted[e.Host] {
				restarted[e.Host] = true
				s.balancer.Restart()
			}
		}
	}
	if _, err := s.run(context.Background()); err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, c := range atChange {
		if !strings.HasSuffix(c, " maint") {
			t.Errorf("a step that changes the host started on a server in service: %s", c)
		}
	}
	if len(atChange) != 8 {
		t.Errorf("changing steps seen: %v, want 8", atChange)
	}
	// The record in Git shows the drain made again, where it was made.
	rec := s.recorder.at(t, -1)
	steps := func(host string) string {
		var out []string
		h, _ := rec.Host(host)
		for _, st := range h.Steps {
			out = append(out, st.Step+"="+string(st.Status))
		}
		return strings.Join(out, " ")
	}
	tests := []struct{ host, steps, again string }{
		{"web-1", "balancer.drain=ok balancer.drain=ok packages.install=ok service.restart=ok command.check=ok balancer.enable=ok",
			"balancer had put web1 back in service (ready/up: restarted or reloaded?); drained again before packages.install"},
		{"web-2", "balancer.drain=ok packages.install=ok service.restart=ok command.check=ok balancer.enable=ok", ""},
		{"web-3", "balancer.drain=ok packages.install=ok balancer.drain=ok service.restart=ok command.check=ok balancer.enable=ok",
			"balancer had put web3 back in service (ready/up: restarted or reloaded?); drained again before service.restart"},
	}
	for _, tt := range tests {
		if got := steps(tt.host); got != tt.steps {
			t.Errorf("%s steps: %s\nwant %s", tt.host, got, tt.steps)
		}
		if tt.again == "" {
			continue
		}
		var outputs []string
		h, _ := rec.Host(tt.host)
		for _, st := range h.Steps {
			outputs = append(outputs, string(st.Output))
		}
		if !slices.Contains(outputs, tt.again) {
			t.Errorf("%s: no step says %q: %q", tt.host, tt.again, outputs)
		}
	}
	// lieutenant show prints the record's notes under the hosts' table.
	if want := []string{"web-1: " + tests[0].again, "web-3: " + tests[2].again}; !slices.Equal(rec.Notes, want) {
		t.Errorf("notes: %q\nwant %q", rec.Notes, want)
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer = %s, want %s", got, want)
	}
}

// Draining again goes through the min_up guard like the first drain: when
// the servers left in service are too few, the host fails before its
// change and is left serving its old version.
func TestRunDrainAgainRefusedBelowMinimum(t *testing.T) {
	s := newScene(t, strings.Replace(standardPlaybook, `hosts: "web-*"`, "hosts: \"web-*\"\nstrategy: {max_parallel: 1}", 1))
	once := false
	s.onEvent = func(e playbook.Event) {
		if e.Kind == playbook.EventStepFinished && e.Host == "web-1" && e.Step == "balancer.drain" && !once {
			once = true
			s.balancer.Restart()
			s.balancer.SetHealthy("web3", false)
			s.balancer.SetHealthy("web4", false)
		}
	}
	_, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeFailed {
		t.Fatalf("err = %v, want a failed run", err)
	}
	rec := s.recorder.at(t, -1)
	if got, want := s.hostStatus(rec), "web-1=failed web-2=untouched web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	web1, _ := rec.Host("web-1")
	steps := web1.Steps
	if len(steps) != 2 || steps[1].Step != "balancer.drain" || steps[1].Status != record.StepFailed {
		t.Fatalf("web-1 steps: %+v, want the drain and a failed drain again", steps)
	}
	if want := "before packages.install: web1 is back in service (ready/up, 0 sessions): drain web1: 2 of 4 servers in service, 1 would remain, minimum is 2: " + lb.ErrBelowMinimum.Error(); string(steps[1].Error) != want {
		t.Errorf("web-1's failed step: %q\nwant %q", steps[1].Error, want)
	}
	if v := s.fleet.Host("web-1").Installed()["hello-web"]; v != v100 {
		t.Errorf("web-1 has %s, want it untouched at %s", v, v100)
	}
	// Not changed, it keeps serving; the guard let no drain through.
	if got := s.balancer.Server("web1"); !got.Serving() {
		t.Errorf("web1 = %+v, want it serving its old version", got)
	}
}

package playbook_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// resume continues rec (as read back from Git) the way `lieutenant resume`
// does: reopen it, inspect, plan from the record, declare, run.
func (s *scene) resume(ctx context.Context, rec *record.Run) (*record.Run, error) {
	s.t.Helper()
	if err := rec.CheckResumable(); err != nil {
		return rec, err
	}
	rec.Resume("Second <s@example.com>", "s@ci", time.Now())
	dep, obs, err := s.observe(ctx)
	if err != nil {
		return nil, err
	}
	plan, err := playbook.ResumePlan(dep, obs, rec)
	if err != nil {
		s.t.Fatal(err)
	}
	return rec, s.runner(dep).Run(ctx, dep.Environment, plan, rec)
}

// stepsRun lists host:step for the steps the last run or resume started.
func (s *scene) stepsRun() string {
	var out []string
	for _, e := range s.events {
		if e.Kind == playbook.EventStepStarted && e.Host != "" {
			out = append(out, e.Host+":"+e.Step)
		}
	}
	return strings.Join(out, " ")
}

// A process that dies after batch 1 and its gate leaves in Git a record
// with batch 2 pending: the resume runs batch 2 only, and neither the
// finished hosts nor the passed gate again.
func TestResumeSkipsFinishedHostsAndPassedGates(t *testing.T) {
	s := newScene(t, standardPlaybook)
	if _, err := s.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Batch 2's intent, written before its first drain: what Git held had
	// the process been killed there. (The fleet is at the release already;
	// batch 2's steps are idempotent.)
	var killedAt *record.Run
	for _, rec := range s.recorder.records(t) {
		if rec.Batches[1].StartedAt != nil {
			killedAt = rec
			break
		}
	}
	if killedAt == nil {
		t.Fatal("no saved record shows batch 2 started")
	}
	rec, err := s.resume(context.Background(), killedAt)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.stepsRun(), "web-1") || strings.Contains(s.stepsRun(), "web-2") {
		t.Errorf("the resume ran steps on finished hosts: %s", s.stepsRun())
	}
	for _, e := range s.events {
		if e.Kind == playbook.EventGate && e.Step != "" {
			t.Errorf("the resume ran the gate again: %+v", e)
		}
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=succeeded web-4=succeeded"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if got, want := s.versions(), "web-1=1.1.0-1.x86_64 web-2=1.1.0-1.x86_64 web-3=1.1.0-1.x86_64 web-4=1.1.0-1.x86_64"; got != want {
		t.Errorf("versions: %s, want %s", got, want)
	}
	if len(rec.Resumed) != 1 || len(rec.Resumed[0].Hosts) == 0 || strings.Contains(strings.Join(rec.Resumed[0].Hosts, ","), "web-1") ||
		rec.StartedFrom != "t@ci" || rec.Resumed[0].From != "s@ci" {
		t.Errorf("record names the processes: started from %s, resumed %+v", rec.StartedFrom, rec.Resumed)
	}
	if rec.Outcome != record.OutcomeSucceeded || rec.Batches[0].Gate == nil {
		t.Errorf("outcome %s, gate 1 %+v", rec.Outcome, rec.Batches[0].Gate)
	}
}

// An interrupted run (Ctrl-C mid-batch) is resumed: the hosts it stopped
// mid-way run their steps again, which finishes them, and the rest follows.
func TestResumeFinishesInterruptedRun(t *testing.T) {
	s := newScene(t, `
hosts: "web-*"
steps:
  - balancer.drain
  - packages.install
  - command.run: migration
  - balancer.enable
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 4)
	slow := true
	for i := 1; i <= 4; i++ {
		s.fleet.Host(fmt.Sprintf("web-%d", i)).HandleScript("migration", func(ctx context.Context, h *testenv.FakeHost) (string, int) {
			s.mu.Lock()
			wait := slow
			s.mu.Unlock()
			if !wait {
				return "migrated", 0
			}
			started <- struct{}{}
			<-ctx.Done()
			return "killed", 137
		})
	}
	go func() {
		<-started
		<-started
		cancel()
	}()
	_, err := s.run(ctx)
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeInterrupted {
		t.Fatalf("err = %v, want interrupted", err)
	}
	s.mu.Lock()
	slow = false
	s.mu.Unlock()
	rec, err := s.resume(context.Background(), s.recorder.at(t, -1))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=succeeded web-4=succeeded"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if got := strings.Join(rec.Resumed[0].Hosts, ","); got != "web-1,web-2" {
		t.Errorf("in flight: %s, want web-1,web-2", got)
	}
	// A finished run has nothing to resume.
	if _, err := s.resume(context.Background(), s.recorder.at(t, -1)); err == nil || !strings.Contains(err.Error(), "nothing to resume") {
		t.Errorf("resuming a finished run: %v", err)
	}
}

// A gate nobody decides on ends at its deadline as aborted, with the
// first batch in service and the second untouched.
func TestRunApprovalDeadlineAborts(t *testing.T) {
	s := newScene(t, standardPlaybook+"  approval: prompt\n  approval_timeout: 50ms\n")
	s.approver = waitForever{}
	rec, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeAborted || !strings.Contains(runErr.Reason, "no decision within 50ms") {
		t.Fatalf("err = %v, want aborted at the deadline", err)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	waited := false
	for _, r := range s.recorder.records(t) {
		waited = waited || r.Waiting != nil && r.Waiting.Gate == 1 && r.Hosts[1].Status == record.HostSucceeded
	}
	if !waited || rec.Waiting != nil {
		t.Errorf("the record did not show the wait while it lasted, or still shows it: %+v", rec.Waiting)
	}
}

type waitForever struct{}

func (waitForever) Approve(ctx context.Context, _ playbook.GateRequest) (bool, string, error) {
	<-ctx.Done()
	return false, "", ctx.Err()
}

// A run whose write says another process owns the environment now (its
// lock was broken, or a resume took it over) stops the host in flight
// before its next step and leaves the balancer to that process: the
// drained host is not put back by this one, and no other host starts.
func TestRunSupersededLeavesTheBalancerAlone(t *testing.T) {
	s := newScene(t, `
hosts: "web-*"
strategy: {max_parallel: 1}
steps:
  - balancer.drain
  - packages.install
  - balancer.enable
`)
	// Batch 1's intent lands; the first progress write is refused, and
	// web-1's install waits until it was.
	refused := make(chan struct{})
	s.recorder.fail = fmt.Errorf("production: %w", playbook.ErrSuperseded)
	s.recorder.failAfter = 1
	var once sync.Once
	s.onEvent = func(e playbook.Event) {
		if e.Kind == playbook.EventRecordFailed && errors.Is(e.Err, playbook.ErrSuperseded) {
			once.Do(func() { close(refused) })
		}
	}
	s.balancer.SetHook(func(ctx context.Context, call testenv.FakeCall) error {
		if call.Op == "drain" {
			// Hold the host until the refusal came back.
			select {
			case <-refused:
			case <-ctx.Done():
			}
		}
		return nil
	})
	_, err := s.run(context.Background())
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || !strings.Contains(runErr.Reason, "no longer holds") {
		t.Fatalf("err = %v, want the run stopped as superseded", err)
	}
	if got, want := s.serverStates(), "web1=maint web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s (the superseded run must not enable web1)", got, want)
	}
	if got := s.stepsRun(); got != "web-1:balancer.drain" {
		t.Errorf("steps: %s, want only web-1's drain", got)
	}
}

// killedInBatch2 runs until batch 2's hosts are drained and changed and
// wait for their enable, and returns the record as Git held it then: what a
// `kill -9` at that moment leaves, with web3 and web4 out of service.
func killedInBatch2(t *testing.T, s *scene) *record.Run {
	t.Helper()
	reached := make(chan struct{}, 2)
	release := make(chan struct{})
	s.balancer.SetHook(func(ctx context.Context, call testenv.FakeCall) error {
		if call.Op == "enable" && (call.Server == "web3" || call.Server == "web4") {
			reached <- struct{}{}
			<-release
			return errors.New("killed")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	<-reached
	<-reached
	// What Git held at the kill, once the background writes settled.
	var killed *record.Run
	testenv.WaitFor(t, 5*time.Second, "web-3's install in Git", func() bool {
		killed = s.recorder.at(t, -1)
		h, _ := killed.Host("web-3")
		return len(h.Steps) >= 2
	})
	cancel()
	close(release)
	<-done
	s.balancer.SetHook(nil)
	if got, want := s.serverStates(), "web1=ready web2=ready web3=maint web4=maint"; got != want {
		t.Fatalf("after the kill: %s, want %s", got, want)
	}
	return killed
}

// Killed after batch 2 was drained, with min_up 1 and only batch 1's two
// servers in service: the resume counts only the hosts it runs, whose
// servers are out already, and finishes the run.
func TestResumeAfterSecondHalfDrained(t *testing.T) {
	s := newScene(t, standardPlaybook)
	s.minUp = 1
	killed := killedInBatch2(t, s)
	rec, err := s.resume(context.Background(), killed)
	if err != nil {
		t.Fatalf("resume: %v\n%s", err, strings.Join(rec.Next, "\n"))
	}
	if got, want := s.serverStates(), "web1=ready web2=ready web3=ready web4=ready"; got != want {
		t.Errorf("balancer: %s, want %s", got, want)
	}
	if got := s.stepsRun(); strings.Contains(got, "web-1") || strings.Contains(got, "web-2") || !strings.Contains(got, "web-3:balancer.enable") {
		t.Errorf("steps of the resume: %s, want batch 2's only", got)
	}
	// The end state of every host is recorded, the ones the first process
	// finished too.
	for _, h := range rec.Hosts {
		if h.Balancer != "ready/up" {
			t.Errorf("%s: balancer %q in the record, want ready/up", h.Name, h.Balancer)
		}
	}
}

// A resume refused before changing anything more (a preflight check fails
// on web-3) is no "refused run": the record says the run was interrupted
// and how to resume it, and keeps what the first process did.
func TestRefusedResumeStaysResumable(t *testing.T) {
	s := newScene(t, standardPlaybook+"preflight:\n  - command.check: check-hello\n")
	s.minUp = 1
	killed := killedInBatch2(t, s)
	s.setHealthy("web-3", false)
	rec, err := s.resume(context.Background(), killed)
	if err == nil {
		t.Fatal("resume with web-3 unreachable succeeded")
	}
	if rec.Outcome != record.OutcomeInterrupted || rec.CheckResumable() != nil {
		t.Errorf("outcome %s: want interrupted, resumable", rec.Outcome)
	}
	if next := strings.Join(rec.Next, " "); strings.Contains(next, "Nothing was changed") || !strings.Contains(next, "lieutenant resume "+rec.ID) {
		t.Errorf("next: %s", next)
	}
	if got, want := s.hostStatus(rec), "web-1=succeeded web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("hosts: %s, want %s", got, want)
	}
	if last := s.recorder.at(t, -1); last.Outcome != record.OutcomeInterrupted {
		t.Errorf("Git says %s", last.Outcome)
	}
}

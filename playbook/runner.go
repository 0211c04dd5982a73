package playbook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// Approver decides whether a run goes past a gate.
type Approver interface {
	// Approve blocks until a person (or a rule) decides. by names who
	// approved, for the record. An error or approved == false stops the run.
	Approve(ctx context.Context, req GateRequest) (approved bool, by string, err error)
}

// GateRequest is what an approver is asked.
type GateRequest struct {
	Environment string
	Release     string
	Run         string    // the run's ID
	Until       time.Time // when the wait ends as aborted
	AfterBatch  int
	Batches     int
	Done        []string // hosts changed so far
	Next        []string // hosts of the next batch
}

// Runner executes a plan. It talks to hosts only through Connector and to
// the load balancer only through Balancer.
type Runner struct {
	Connector transport.Connector
	// Balancer is the adapter itself, nil for fleets without one (drain and
	// enable then do nothing). The runner guards balancer.drain steps with
	// MinUp, but not the isolation of a failed host: a server running a
	// failed change is no capacity worth keeping.
	Balancer lb.Balancer
	// MinUp is the balancer's configured minimum of servers in service,
	// checked against the plan before anything changes and at every drain.
	MinUp int
	// Local runs gate command checks on the machine lieutenant runs on.
	Local transport.Runner
	HTTP  *http.Client
	// Approver is asked at gates with approval: prompt; nil makes such a
	// plan refuse to start instead of waiting for nobody.
	Approver Approver
	Recorder Recorder
	// Observe receives progress events, one call at a time.
	Observe func(Event)
	Now     func() time.Time
	// Notes, when set, gives what the run's record notes at its end.
	Notes func() []string
	// CleanupTimeout bounds the balancer repairs made after a host failed or
	// the run was interrupted; they run even when ctx is cancelled.
	CleanupTimeout time.Duration
	// ProgressInterval is the least time between two writes of the hosts'
	// progress; zero means DefaultProgressInterval.
	ProgressInterval time.Duration
}

// EventKind names a progress event.
type EventKind string

const (
	EventRunStarted   EventKind = "run-started"
	EventBatchStarted EventKind = "batch-started"
	EventStepStarted  EventKind = "step-started"
	EventStepFinished EventKind = "step-finished"
	EventHostFinished EventKind = "host-finished"
	EventBalancerFix  EventKind = "balancer-fix"
	EventGate         EventKind = "gate"
	EventRunFinished  EventKind = "run-finished"
	// EventRecordFailed: a write of the hosts' progress did not land; it is
	// tried again, unless another process owns the environment now.
	EventRecordFailed EventKind = "record-failed"
)

// Event is one thing that happened during a run, for live views.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Batch    int
	Batches  int
	Host     string
	Step     string
	Duration time.Duration
	Err      error
	Message  string
}

// NewRecord starts the record of a run of plan; s gives who starts which
// run, the plan the rest.
func NewRecord(plan *Plan, s record.Start) *record.Run {
	batches := make([][]record.Planned, len(plan.Batches))
	for i, b := range plan.Batches {
		batches[i] = planned(b.Hosts)
	}
	return record.New(plan.start(s), batches, planned(plan.UpToDate))
}

// NewInSyncRecord records that the fleet already runs plan's release (plan
// has no batches); see record.NewInSync.
func NewInSyncRecord(plan *Plan, s record.Start) *record.Run {
	return record.NewInSync(plan.start(s), planned(plan.UpToDate))
}

// start is s with what the plan says of the run.
func (p *Plan) start(s record.Start) record.Start {
	s.Environment, s.Release, s.Strategy, s.Packages = p.Environment, p.Release, p.Strategy.String(), nil
	for _, pkg := range p.Packages {
		s.Packages = append(s.Packages, pkg.NEVRA())
	}
	return s
}

func planned(hosts []HostPlan) []record.Planned {
	out := make([]record.Planned, len(hosts))
	for i, hp := range hosts {
		out[i] = record.Planned{Name: hp.Host.Name, Address: hp.Host.Address, Before: changesFrom(hp.Changes), Balancer: hp.Balancer}
	}
	return out
}

// Declare marks in rec, for the plan's first batch with hosts to run, that
// the batch is in flight: the first write of a run (which also takes the
// environment's lock) then says what the run is about to touch, and the
// runner needs no write of its own before it starts.
func (p *Plan) Declare(rec *record.Run, at time.Time) {
	for _, b := range p.Batches {
		if len(b.Hosts) > 0 {
			rec.StartBatch(b.Number, at)
			return
		}
	}
}

func changesFrom(cs []Change) map[string]string {
	if len(cs) == 0 || cs[0].Action == ActionUnknown {
		return nil
	}
	m := make(map[string]string, len(cs))
	for _, c := range cs {
		m[c.Package] = c.From
	}
	return m
}

// runState is the run's shared, mutable state; every access holds mu.
type runState struct {
	obsMu    sync.Mutex // Observe gets one event at a time
	mu       sync.Mutex
	plan     *Plan
	env      *Environment
	rec      *record.Run
	journal  *journal
	servers  map[string]string // host name -> balancer server
	guarded  lb.Balancer       // the balancer behind the MinUp guard, for drain steps
	failures int
	stopped  string // why no further host starts; "" while running
	outcome  record.Outcome
	// superseded: another process owns the environment now, and this one
	// must not touch the balancer any more.
	superseded bool
	// notes go in the record's notes at the end: the drains made again,
	// which a summary of the hosts would not show.
	notes []string
}

// Run executes plan on env's hosts and keeps rec up to date. rec comes
// from NewRecord (or is a resumed run's), and as given is taken to be what
// the Recorder has already: the caller wrote it when it took the
// environment's lock, with the first batch declared (see Plan.Declare). Run
// returns nil when every host succeeded, a *RefusedError when it stopped
// before changing any host, and a *RunError otherwise; in every case rec
// says host by host what happened.
//
// Writes to the Recorder: each batch's intent before any of its hosts is
// touched (carrying the previous batch's end and its gate), the wait at a
// gate that asks for an approval, and the end of the run; in between, the
// hosts' progress in the background, never waited for.
func (r *Runner) Run(ctx context.Context, env *Environment, plan *Plan, rec *record.Run) error {
	st := &runState{plan: plan, env: env, rec: rec, servers: map[string]string{}}
	st.journal = newJournal(st, r.Recorder, r.ProgressInterval)
	st.journal.onFail = func(err error) { r.emit(st, Event{Kind: EventRecordFailed, Err: err}) }
	// A resumed run counts the failures of the process before it.
	st.failures = rec.Count(record.HostFailed)
	if st.failures > 0 && shouldStop(st.failures, plan.Strategy.MaxFailures) {
		st.stopped, st.outcome = fmt.Sprintf("%d hosts failed before the run was resumed", st.failures), record.OutcomeFailed
	}
	for _, hp := range slices.Concat(plan.Hosts(), plan.UpToDate, plan.Finished) {
		st.servers[hp.Host.Name] = hp.Host.BalancerServer
	}
	if r.Balancer != nil {
		st.guarded = lb.WithMinimum(r.Balancer, r.MinUp)
	}
	st.journal.start(ctx)
	defer st.journal.close()
	r.emit(st, Event{Kind: EventRunStarted, Batches: len(plan.Batches), Message: fmt.Sprintf("%s to %s: %d hosts in %d batches",
		plan.Environment, plan.Release, len(plan.Hosts()), len(plan.Batches))})

	if problems := r.preflight(ctx, st); len(problems) > 0 {
		if ctx.Err() != nil {
			st.stop(record.OutcomeInterrupted, "interrupted before any host was changed")
			return r.finish(ctx, st, "")
		}
		err := &RefusedError{Problems: problems}
		st.outcome = record.OutcomeRefused
		r.finish(ctx, st, err.Error())
		return err
	}

	for i, b := range plan.Batches {
		if st.isStopped() {
			break
		}
		if len(b.Hosts) > 0 {
			r.emit(st, Event{Kind: EventBatchStarted, Batch: b.Number, Batches: len(plan.Batches), Message: strings.Join(hostNames(b.Hosts), ", ")})
			if err := r.declare(ctx, st, b); err != nil {
				if st.changedNothing() {
					refused := &RefusedError{Problems: []string{err.Error()}}
					st.outcome = record.OutcomeRefused
					r.finish(ctx, st, refused.Error())
					return refused
				}
				break
			}
			r.runBatch(ctx, st, b)
		}
		// A write follows at once: the next batch's intent, the gate's wait
		// for an approval, or the end. A soak writes the batch's end before
		// it, so that a resume during the soak does not run the batch again.
		st.journal.hold()
		if st.isStopped() || i == len(plan.Batches)-1 {
			continue
		}
		if plan.Gate.Soak > 0 && !st.gatePassed(b.Number) {
			if r.commit(ctx, st, fmt.Sprintf("batch %d/%d done", b.Number, len(plan.Batches))) != nil {
				break
			}
		}
		r.gate(ctx, st, b, plan.Batches[i+1])
	}
	return r.finish(ctx, st, "")
}

// declare writes the batch's intent (its hosts in flight) and returns once
// it is durable: a killed run is resumed from it, running every host of
// the batch that did not finish again. The previous batch's end and its
// gate go in the same write. When it cannot be written the batch does not
// start, and the run stops.
func (r *Runner) declare(ctx context.Context, st *runState, b Batch) error {
	st.mu.Lock()
	if st.rec.StartBatch(b.Number, r.now()) {
		st.journal.changed(false)
	}
	st.mu.Unlock()
	err := st.journal.commit(ctx, fmt.Sprintf("batch %d/%d in flight", b.Number, len(st.plan.Batches)))
	if err != nil {
		err = fmt.Errorf("batch %d not started: %w", b.Number, err)
		st.recordLost(ctx, err)
	}
	return err
}

// changedNothing reports whether no host of the run started yet, in this
// process or the one before it.
func (st *runState) changedNothing() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, h := range st.rec.Hosts {
		if h.StartedAt != nil || h.Finished() {
			return false
		}
	}
	return true
}

func hostNames(hs []HostPlan) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Host.Name
	}
	return out
}

// preflight checks everything that can be checked without changing a host.
func (r *Runner) preflight(ctx context.Context, st *runState) []string {
	var problems []string
	plan := st.plan
	if len(plan.Batches) > 1 && plan.Gate.Approval == ApprovalPrompt && r.Approver == nil {
		problems = append(problems, "the gate needs an approval (gate.approval: prompt) and there is no terminal to ask on; "+
			"run it from a terminal, or pass --yes to approve ahead")
	}
	if r.Balancer != nil {
		servers, err := r.Balancer.Servers(ctx)
		if err != nil {
			problems = append(problems, fmt.Sprintf("balancer: %v", err))
		} else {
			for _, hp := range plan.Hosts() {
				if _, ok := lb.Find(servers, hp.Host.BalancerServer); !ok {
					problems = append(problems, fmt.Sprintf("%s: balancer has no server %q (set balancer_server in the inventory)", hp.Host.Name, hp.Host.BalancerServer))
				}
			}
			if err := plan.CheckCapacity(servers, r.MinUp); err != nil {
				problems = append(problems, err.Error())
			}
		}
	}
	if len(problems) > 0 || len(plan.Preflight) == 0 {
		return problems
	}
	// Preflight steps run on every host of the plan before any is changed.
	hosts := make([]Host, 0, len(plan.Hosts()))
	for _, hp := range plan.Hosts() {
		hosts = append(hosts, hp.Host)
	}
	failed := forEachHost(ctx, hosts, DefaultParallelConnects, func(ctx context.Context, h Host) error {
		env, err := r.hostEnv(ctx, st, h)
		for _, s := range plan.Preflight {
			if err != nil {
				break
			}
			_, err = r.step(ctx, st, "", 0, s, env)
		}
		if err != nil {
			return fmt.Errorf("preflight: %w", err)
		}
		return nil
	})
	return append(problems, failed.lines()...)
}

func (p *Plan) drains() bool {
	for _, s := range p.Steps {
		if _, ok := s.(*drainStep); ok {
			return true
		}
	}
	return false
}

func (r *Runner) hostEnv(ctx context.Context, st *runState, h Host) (*stepEnv, error) {
	conn, err := r.Connector.Connect(ctx, st.env.Target(h))
	if err != nil {
		return nil, err
	}
	return &stepEnv{
		host: h, conn: conn, balancer: st.guarded, sudo: st.env.SSH.Sudo,
		commandTimeout: st.env.SSH.CommandTimeout, http: r.http(), packages: st.plan.Packages,
		data: newTemplateData(st.plan.Environment, st.plan.Release, h, st.env.SSH.User, st.env.SSH.Port),
	}, nil
}

func (r *Runner) http() *http.Client {
	if r.HTTP != nil {
		return r.HTTP
	}
	return http.DefaultClient
}

func (r *Runner) runBatch(ctx context.Context, st *runState, b Batch) {
	limit := len(b.Hosts)
	if st.plan.Strategy.MaxParallel > 0 {
		limit = min(limit, st.plan.Strategy.MaxParallel)
	}
	slots := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i, hp := range b.Hosts {
		slots <- struct{}{}
		// The first hosts of a batch start together. A later one starts
		// only if nothing stopped the run while it waited for a slot.
		if ctx.Err() != nil || i >= limit && st.isStopped() {
			st.update(false, func(rec *record.Run) { rec.MarkUntouched(hp.Host.Name) })
			<-slots
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			r.runHost(ctx, st, b.Number, hp)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		// A failure before the interruption stays the reason; failures
		// seen while cancelling are only its effects.
		st.stop(record.OutcomeInterrupted, fmt.Sprintf("interrupted during batch %d", b.Number))
	}
}

func (r *Runner) runHost(ctx context.Context, st *runState, batch int, hp HostPlan) {
	name := hp.Host.Name
	start := r.now()
	st.update(true, func(rec *record.Run) { rec.StartHost(name, start) })
	var prog hostProgress
	var failure error
	var drained *drainStep // the drain that has the host out of service, until enable
	env, err := r.hostEnv(ctx, st, hp.Host)
	if err != nil {
		prog.failed, failure = true, err
	}
	for _, s := range st.plan.Steps {
		if failure != nil {
			break
		}
		if err := ctx.Err(); err != nil {
			prog.failed, failure = true, fmt.Errorf("interrupted before %s: %w", s.Kind(), err)
			break
		}
		// The record is written in the background; a write refused because
		// another process owns the environment stops the host here.
		if st.isSuperseded() {
			prog.failed, failure = true, fmt.Errorf("not started %s: %w", s.Kind(), ErrSuperseded)
			break
		}
		drain, _ := s.(*drainStep)
		_, enable := s.(*enableStep)
		// Between drain and enable, a step that changes the host runs only
		// on a server still out of service: a balancer restart may have
		// put it back meanwhile.
		if drained != nil && s.changesHost() {
			if err := r.keepOut(ctx, st, batch, env, drained, s); err != nil {
				prog.failed, failure = true, fmt.Errorf("%s: %w", drained.Kind(), err)
				break
			}
		}
		prog.drainAttempted = prog.drainAttempted || drain != nil
		prog.changed = prog.changed || s.changesHost()
		if _, err := r.step(ctx, st, name, batch, s, env); err != nil {
			prog.failed, failure = true, fmt.Errorf("%s: %w", s.Kind(), err)
			break
		}
		switch {
		case drain != nil && env.balancer != nil:
			drained = drain
		case enable:
			drained = nil
		}
		prog.enabled = prog.enabled || enable
		env.verified = verifiesHost(s) || env.verified && !s.changesHost()
	}
	if err := r.repair(ctx, st, batch, hp.Host, prog); err != nil {
		// A failed host may still be serving: stop whatever max_failures says.
		st.stop(record.OutcomeFailed, fmt.Sprintf("batch %d: %s failed and could not be taken out of the balancer: %v", batch, name, firstLine(err.Error())))
	}

	var after map[string][]Package
	if env != nil {
		after = env.installed
		if after == nil && prog.changed {
			// The install step did not get to verify; ask rpm so the record
			// says what the host has now.
			cctx, cancel := r.cleanupContext(ctx)
			after, _ = QueryInstalled(cctx, env.conn, env.sudo, st.plan.Packages)
			cancel()
		}
	}
	st.update(true, func(rec *record.Run) {
		end := record.HostEnd{Err: failure, After: versionMap(st.plan.Packages, after), Duration: r.now().Sub(start)}
		if failure != nil {
			st.failures++
			switch {
			case st.stopped != "":
			case ctx.Err() != nil:
				// Failing because the run is being interrupted is not a
				// failure of the host's change; runBatch records the
				// interruption, and a resume runs the host again.
				end.Interrupted = true
			case shouldStop(st.failures, st.plan.Strategy.MaxFailures):
				st.stopped = fmt.Sprintf("batch %d: %s failed: %s", batch, name, firstLine(failure.Error()))
				st.outcome = record.OutcomeFailed
			}
		}
		rec.FinishHost(name, end)
	})
	r.emit(st, Event{Kind: EventHostFinished, Batch: batch, Host: name, Duration: r.now().Sub(start), Err: failure})
}

// recordLost stops the run because its record could not be written: a run
// whose record is not kept cannot be resumed. When another process owns
// the environment now, the balancer is left alone from here on.
func (st *runState) recordLost(ctx context.Context, err error) {
	st.update(false, func(*record.Run) { st.superseded = st.superseded || errors.Is(err, ErrSuperseded) })
	st.stop(interruptedOr(ctx, record.OutcomeFailed), oneLine(err.Error()))
}

// commit writes the record now; once ctx is cancelled the write is made on
// the cleanup context, so that an interruption is recorded as one.
func (r *Runner) commit(ctx context.Context, st *runState, event string) error {
	if ctx.Err() != nil {
		cctx, cancel := r.cleanupContext(ctx)
		defer cancel()
		ctx = cctx
	}
	err := st.journal.commit(ctx, event)
	if err != nil {
		st.recordLost(ctx, err)
	}
	return err
}

// repair applies the balancer invariants once a host's pipeline has ended.
// Isolation bypasses the MinUp guard (a failed host is no capacity);
// restoring goes through it, which releases the guard's mark.
func (r *Runner) repair(ctx context.Context, st *runState, batch int, h Host, prog hostProgress) error {
	fix := balancerFixAfter(prog)
	if fix == fixNothing || r.Balancer == nil || st.isSuperseded() {
		return nil
	}
	// The repair must happen even when the run was interrupted.
	cctx, cancel := r.cleanupContext(ctx)
	defer cancel()
	var err error
	switch fix {
	case fixRestore:
		err = st.guarded.Enable(cctx, h.BalancerServer, lb.EnableOptions{Timeout: time.Minute})
	case fixIsolate:
		err = r.Balancer.Drain(cctx, h.BalancerServer, lb.DrainOptions{Timeout: 10 * time.Second, KillSessions: true})
	}
	msg := fmt.Sprintf("%s %s in the balancer", fix, h.BalancerServer)
	if err != nil {
		msg = fmt.Sprintf("%s failed: %v", msg, err)
		st.update(true, func(rec *record.Run) { rec.NoteError(h.Name, "balancer "+msg) })
	}
	r.emit(st, Event{Kind: EventBalancerFix, Batch: batch, Host: h.Name, Message: msg, Err: err})
	if fix == fixIsolate {
		return err
	}
	// A host that could not be put back is out of service, which is safe.
	return nil
}

func (r *Runner) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := r.CleanupTimeout
	if d <= 0 {
		d = 2 * time.Minute
	}
	return context.WithTimeout(context.WithoutCancel(ctx), d)
}

// step runs one step and records it: the single place where steps are
// timed, logged and recorded (host is "" for preflight steps, which are
// reported as problems instead).
func (r *Runner) step(ctx context.Context, st *runState, host string, batch int, s Step, env *stepEnv) (string, error) {
	start := r.now()
	r.emit(st, Event{Kind: EventStepStarted, Batch: batch, Host: env.host.Name, Step: s.Kind()})
	var out string
	var err error
	if env.balancer == nil && (s.Kind() == "balancer.drain" || s.Kind() == "balancer.enable") {
		out = "no balancer configured"
	} else {
		out, err = s.run(ctx, env)
	}
	r.stepDone(st, host, batch, s.Kind(), start, env, out, err)
	return out, err
}

// stepDone reports and records a step that ended.
func (r *Runner) stepDone(st *runState, host string, batch int, kind string, start time.Time, env *stepEnv, out string, err error) {
	d := r.now().Sub(start)
	r.emit(st, Event{Kind: EventStepFinished, Batch: batch, Host: env.host.Name, Step: kind, Duration: d, Err: err, Message: out})
	if host != "" {
		sr := record.NewStep(kind, start, d, out, err)
		st.update(true, func(rec *record.Run) { rec.AddStep(host, sr) })
	}
}

// keepOut confirms, before step changes a host that drain took out of
// service, that the balancer still has it out, and drains it again (through
// the MinUp guard, as drain did) when the balancer put it back: a restart or
// a reload without a server-state file forgets maintenance. The check alone
// leaves no trace; a drain made again, or a failed one, is recorded on the
// host as a balancer.drain step.
func (r *Runner) keepOut(ctx context.Context, st *runState, batch int, env *stepEnv, drain *drainStep, step Step) error {
	start := r.now()
	server := env.host.BalancerServer
	found, again, err := lb.KeepOut(ctx, env.balancer, server, drain.opts)
	if err == nil && !again {
		return nil
	}
	r.emit(st, Event{Time: start, Kind: EventStepStarted, Batch: batch, Host: env.host.Name, Step: drain.Kind()})
	var out string
	if err != nil {
		err = fmt.Errorf("before %s: %w", step.Kind(), err)
	} else {
		out = fmt.Sprintf("balancer had put %s back in service (%s/%s: restarted or reloaded?); drained again before %s",
			server, found.Admin, found.Health, step.Kind())
		r.emit(st, Event{Kind: EventBalancerFix, Batch: batch, Host: env.host.Name, Message: out})
		st.mu.Lock()
		st.notes = append(st.notes, env.host.Name+": "+out)
		st.mu.Unlock()
	}
	r.stepDone(st, env.host.Name, batch, drain.Kind(), start, env, out, err)
	return err
}

// gate runs the checks, soak and approval between two batches. Its
// result is written with the next batch's intent, or with the run's end;
// a wait for an approval is written before it begins, together with the
// batch's end, so that whoever decides sees it in Git.
func (r *Runner) gate(ctx context.Context, st *runState, done, next Batch) {
	g := st.plan.Gate
	if g.empty() || st.gatePassed(done.Number) {
		return
	}
	gr := &record.Gate{Status: record.StepOK, At: r.now().UTC()}
	if g.Soak > 0 {
		gr.Soak = g.Soak.String()
	}
	env := &stepEnv{conn: r.Local, http: r.http(), commandTimeout: st.env.SSH.CommandTimeout,
		data: TemplateData{Release: st.plan.Release, Environment: st.plan.Environment}}
	fail := func(outcome record.Outcome, format string, args ...any) {
		gr.Status, gr.Error = record.StepFailed, fmt.Sprintf(format, args...)
		st.stop(outcome, fmt.Sprintf("gate after batch %d: %s", done.Number, gr.Error))
	}
	checks := func(phase string) bool {
		for _, s := range g.Checks {
			start := r.now()
			out, err := s.run(ctx, env)
			gr.Checks = append(gr.Checks, record.NewStep(s.Kind(), start, r.now().Sub(start), out, err))
			r.emit(st, Event{Kind: EventGate, Batch: done.Number, Step: s.Kind(), Duration: r.now().Sub(start), Err: err, Message: phase})
			if err != nil {
				fail(interruptedOr(ctx, record.OutcomeFailed), "%s %s failed: %v", phase, s.Kind(), err)
				return false
			}
		}
		return true
	}
	ok := checks("check")
	if ok && g.Soak > 0 {
		r.emit(st, Event{Kind: EventGate, Batch: done.Number, Message: "soaking for " + g.Soak.String()})
		if err := sleep(ctx, g.Soak); err != nil {
			fail(record.OutcomeInterrupted, "interrupted while soaking")
			ok = false
		} else {
			ok = checks("check after soak:")
		}
	}
	if ok && g.Approval == ApprovalPrompt {
		timeout := g.ApprovalTimeout
		if timeout <= 0 {
			timeout = DefaultApprovalTimeout
		}
		since := r.now().UTC()
		// Whoever decides from elsewhere reads in Git that the run waits.
		st.update(false, func(rec *record.Run) {
			rec.SetWaiting(&record.Wait{Gate: done.Number, Since: since, Until: since.Add(timeout)})
		})
		r.emit(st, Event{Kind: EventGate, Batch: done.Number, Message: fmt.Sprintf("waiting for approval (until %s)", since.Add(timeout).Format(time.RFC3339))})
		approved, by := false, ""
		err := r.commit(ctx, st, fmt.Sprintf("gate %d waiting for approval", done.Number))
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, timeout)
			approved, by, err = r.Approver.Approve(actx, GateRequest{
				Environment: st.plan.Environment, Release: st.plan.Release, Run: st.rec.ID, AfterBatch: done.Number,
				Batches: len(st.plan.Batches), Done: st.doneHosts(), Next: hostNames(next.Hosts), Until: since.Add(timeout),
			})
			cancel()
		}
		st.update(false, func(rec *record.Run) { rec.SetWaiting(nil) })
		switch {
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			fail(record.OutcomeAborted, "no decision within %s; the hosts done so far stay in service", timeout)
		case err != nil && st.isStopped():
			// The wait could not be recorded: the run stopped already.
			gr.Status, gr.Error = record.StepFailed, err.Error()
		case err != nil:
			fail(interruptedOr(ctx, record.OutcomeAborted), "approval: %v", err)
		case !approved:
			fail(record.OutcomeAborted, "not approved by %s", by)
		default:
			gr.ApprovedBy = by
		}
	}
	st.update(false, func(rec *record.Run) { rec.SetGate(done.Number, gr) })
	r.emit(st, Event{Kind: EventGate, Batch: done.Number, Message: "gate " + string(gr.Status), Err: errorOrNil(gr.Error)})
}

func interruptedOr(ctx context.Context, o record.Outcome) record.Outcome {
	if ctx.Err() != nil {
		return record.OutcomeInterrupted
	}
	return o
}

func errorOrNil(msg string) error {
	if msg == "" {
		return nil
	}
	return errors.New(msg)
}

// finish settles the outcome, reads the final balancer state and writes
// the record's last version, which also releases the run's lock.
func (r *Runner) finish(ctx context.Context, st *runState, refusal string) error {
	st.journal.close()
	cctx, cancel := r.cleanupContext(ctx)
	defer cancel()
	var balancer map[string]string
	if r.Balancer != nil && st.outcome != record.OutcomeRefused {
		if list, err := r.Balancer.Servers(cctx); err == nil {
			byServer := map[string]lb.Server{}
			for _, s := range list {
				byServer[s.Name] = s
			}
			balancer = map[string]string{}
			for host, server := range st.servers {
				if s, ok := byServer[server]; ok {
					balancer[host] = string(s.Admin) + "/" + string(s.Health)
				}
			}
		}
	}
	var notes []string
	if r.Notes != nil {
		notes = r.Notes()
	}
	st.update(false, func(rec *record.Run) {
		notes = slices.Concat(st.notes, notes)
		switch {
		case st.outcome != "":
		case st.failures > 0:
			st.outcome = record.OutcomeFailed
			st.stopped = fmt.Sprintf("%d hosts failed (tolerated by max_failures %d)", st.failures, st.plan.Strategy.MaxFailures)
		default:
			st.outcome = record.OutcomeSucceeded
		}
		reason := st.stopped
		if refusal != "" {
			reason = refusal
		}
		rec.Finish(record.End{Outcome: st.outcome, Reason: reason, At: r.now(), Balancer: balancer, Notes: notes})
	})
	saveErr := st.journal.commit(cctx, "")
	st.mu.Lock()
	outcome, reason := st.rec.Outcome, st.rec.Reason
	st.mu.Unlock()
	r.emit(st, Event{Kind: EventRunFinished, Message: string(outcome), Err: saveErr})
	if outcome == record.OutcomeSucceeded {
		if saveErr != nil {
			return &RunError{Outcome: record.OutcomeFailed, Reason: "every host succeeded but the record was not saved: " + saveErr.Error()}
		}
		return nil
	}
	return &RunError{Outcome: outcome, Reason: reason}
}

// update changes the record; progress says the change is a host's, which
// the journal writes in the background.
func (st *runState) update(progress bool, f func(rec *record.Run)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	f(st.rec)
	st.journal.changed(progress)
}

func (st *runState) isSuperseded() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.superseded
}

func (st *runState) isStopped() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.stopped != ""
}

// stop records the first reason the run stopped; later ones are effects of it.
func (st *runState) stop(o record.Outcome, reason string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stopLocked(o, reason)
}

func (st *runState) stopLocked(o record.Outcome, reason string) {
	if st.stopped == "" {
		st.stopped, st.outcome = reason, o
	}
}

// gatePassed reports whether the gate after batch n was passed already,
// before a resume.
func (st *runState) gatePassed(n int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rec.GatePassed(n)
}

func (st *runState) doneHosts() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rec.HostsWith(record.HostSucceeded)
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Runner) emit(st *runState, e Event) {
	if r.Observe == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = r.now()
	}
	st.obsMu.Lock()
	defer st.obsMu.Unlock()
	r.Observe(e)
}

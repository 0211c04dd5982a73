package playbook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
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

// Recorder keeps the run record somewhere durable. The runner calls Save at
// every state change, before the next irreversible action; an error stops
// the run, because a run whose record cannot be kept cannot be resumed. An
// error wrapping ErrSuperseded says another process owns the run or the
// environment now: the runner then also leaves the balancer alone.
type Recorder interface {
	Save(ctx context.Context, rec *Record) error
}

// ErrSuperseded is a save refused because this process no longer holds
// the environment: its lock was broken, or a resume took the run over.
var ErrSuperseded = errors.New("this process no longer holds the environment's lock")

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
	// CleanupTimeout bounds the balancer repairs made after a host failed or
	// the run was interrupted; they run even when ctx is cancelled.
	CleanupTimeout time.Duration
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

// NewRecord starts the record of a run of plan.
func NewRecord(plan *Plan, id, revision, by, from string, now time.Time) *Record {
	rec := &Record{
		ID: id, Environment: plan.Environment, Kind: "run", Release: plan.Release, Revision: revision,
		StartedBy: by, StartedFrom: from, StartedAt: now.UTC(), Outcome: OutcomeRunning,
		Strategy: plan.Strategy.String(),
	}
	for _, p := range plan.Packages {
		rec.Packages = append(rec.Packages, p.NEVRA())
	}
	for _, b := range plan.Batches {
		br := BatchRecord{Number: b.Number}
		for _, hp := range b.Hosts {
			br.Hosts = append(br.Hosts, hp.Host.Name)
			rec.Hosts = append(rec.Hosts, HostRecord{Name: hp.Host.Name, Address: hp.Host.Address, Batch: b.Number,
				Status: HostPending, Before: changesFrom(hp.Changes)})
		}
		rec.Batches = append(rec.Batches, br)
	}
	for _, hp := range plan.UpToDate {
		rec.Hosts = append(rec.Hosts, HostRecord{Name: hp.Host.Name, Address: hp.Host.Address, Status: HostUpToDate,
			Before: changesFrom(hp.Changes)})
	}
	return rec
}

// NewInSyncRecord records that the fleet already runs plan's release (plan
// has no batches): every host up to date, nothing changed, succeeded. A
// sync writes it when the manifest moved to what the hosts have, so that
// history and rollback know the release is out there.
func NewInSyncRecord(plan *Plan, id, revision, by, from string, now time.Time) *Record {
	rec := NewRecord(plan, id, revision, by, from, now)
	at := now.UTC()
	rec.Outcome, rec.FinishedAt, rec.Duration = OutcomeSucceeded, &at, formatDuration(0)
	// The run ends as it starts: the balancer's state is the one observed.
	for i, hp := range plan.UpToDate {
		rec.Hosts[i].Balancer = hp.Balancer
	}
	return rec
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
	rec      *Record
	hosts    map[string]*HostRecord
	servers  map[string]string // host name -> balancer server
	guarded  lb.Balancer       // the balancer behind the MinUp guard, for drain steps
	failures int
	stopped  string // why no further host starts; "" while running
	outcome  Outcome
	// superseded: another process owns the environment now, and this one
	// must not touch the balancer any more.
	superseded bool

	// Saves are group commits: every change bumps version, and a save
	// that finds a newer version already saved has nothing to do.
	saveMu  sync.Mutex
	version int
	saved   int
}

// Run executes plan on env's hosts and keeps rec up to date (rec comes from
// NewRecord). It returns nil when every host succeeded, a *RefusedError when
// it stopped before changing any host, and a *RunError otherwise; in every
// case rec says host by host what happened.
func (r *Runner) Run(ctx context.Context, env *Environment, plan *Plan, rec *Record) error {
	st := &runState{plan: plan, env: env, rec: rec, hosts: map[string]*HostRecord{}, servers: map[string]string{}}
	for i := range rec.Hosts {
		st.hosts[rec.Hosts[i].Name] = &rec.Hosts[i]
		// A resumed run counts the failures of the process before it.
		if rec.Hosts[i].Status == HostFailed {
			st.failures++
		}
	}
	if st.failures > 0 && shouldStop(st.failures, plan.Strategy.MaxFailures) {
		st.stopped, st.outcome = fmt.Sprintf("%d hosts failed before the run was resumed", st.failures), OutcomeFailed
	}
	for _, hp := range append(plan.Hosts(), plan.UpToDate...) {
		st.servers[hp.Host.Name] = hp.Host.BalancerServer
	}
	if r.Balancer != nil {
		st.guarded = lb.WithMinimum(r.Balancer, r.MinUp)
	}
	r.emit(st, Event{Kind: EventRunStarted, Batches: len(plan.Batches), Message: fmt.Sprintf("%s to %s: %d hosts in %d batches",
		plan.Environment, plan.Release, len(plan.Hosts()), len(plan.Batches))})

	if problems := r.preflight(ctx, st); len(problems) > 0 {
		if ctx.Err() != nil {
			st.stop(OutcomeInterrupted, "interrupted before any host was changed")
			return r.finish(ctx, st, "")
		}
		err := &RefusedError{Problems: problems}
		st.outcome = OutcomeRefused
		r.finish(ctx, st, err.Error())
		return err
	}
	if err := st.save(ctx, r.Recorder); err != nil {
		err := &RefusedError{Problems: []string{err.Error()}}
		st.outcome = OutcomeRefused
		r.finish(ctx, st, err.Error())
		return err
	}

	for i, b := range plan.Batches {
		if st.isStopped() {
			break
		}
		r.emit(st, Event{Kind: EventBatchStarted, Batch: b.Number, Batches: len(plan.Batches), Message: strings.Join(hostNames(b.Hosts), ", ")})
		r.runBatch(ctx, st, b)
		if st.isStopped() || i == len(plan.Batches)-1 {
			continue
		}
		r.gate(ctx, st, b, plan.Batches[i+1])
	}
	return r.finish(ctx, st, "")
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
			_, err = r.step(ctx, st, nil, 0, s, env)
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
		if st.finished(hp.Host.Name) {
			continue // by the process that started a resumed run
		}
		slots <- struct{}{}
		// The first hosts of a batch start together. A later one starts
		// only if nothing stopped the run while it waited for a slot.
		if ctx.Err() != nil || i >= limit && st.isStopped() {
			st.markUntouched(hp.Host.Name)
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
		st.stop(OutcomeInterrupted, fmt.Sprintf("interrupted during batch %d", b.Number))
	}
}

func (r *Runner) runHost(ctx context.Context, st *runState, batch int, hp HostPlan) {
	name := hp.Host.Name
	start := r.now()
	st.update(func() {
		hr := st.hosts[name]
		hr.Status, hr.StartedAt = HostRunning, &start
	})
	var prog hostProgress
	var failure error
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
		_, drain := s.(*drainStep)
		_, enable := s.(*enableStep)
		if drain || enable || s.changesHost() {
			// Git holds the run's state before every irreversible action,
			// so a killed run can be picked up from the record alone.
			if err := r.checkpoint(ctx, st); err != nil {
				prog.failed, failure = true, fmt.Errorf("not started %s: %w", s.Kind(), err)
				break
			}
		}
		prog.drainAttempted = prog.drainAttempted || drain
		prog.changed = prog.changed || s.changesHost()
		if _, err := r.step(ctx, st, st.hosts[name], batch, s, env); err != nil {
			prog.failed, failure = true, fmt.Errorf("%s: %w", s.Kind(), err)
			break
		}
		prog.enabled = prog.enabled || enable
	}
	if err := r.repair(ctx, st, batch, hp.Host, prog); err != nil {
		// A failed host may still be serving: stop whatever max_failures says.
		st.stop(OutcomeFailed, fmt.Sprintf("batch %d: %s failed and could not be taken out of the balancer: %v", batch, name, firstLine(err.Error())))
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
	st.update(func() {
		hr := st.hosts[name]
		hr.Duration = formatDuration(r.now().Sub(start))
		hr.After = versionMap(st.plan.Packages, after)
		if failure == nil {
			hr.Status = HostSucceeded
			return
		}
		hr.Status, hr.Error = HostFailed, failure.Error()
		st.failures++
		switch {
		case st.stopped != "":
		case ctx.Err() != nil:
			// Failing because the run is being interrupted is not a
			// failure of the host's change; runBatch records the
			// interruption, and a resume runs the host again.
			hr.Interrupted = true
		case shouldStop(st.failures, st.plan.Strategy.MaxFailures):
			st.stopped = fmt.Sprintf("batch %d: %s failed: %s", batch, name, firstLine(failure.Error()))
			st.outcome = OutcomeFailed
		}
	})
	r.emit(st, Event{Kind: EventHostFinished, Batch: batch, Host: name, Duration: r.now().Sub(start), Err: failure})
	r.checkpoint(ctx, st)
}

// checkpoint saves the record; a failure stops the run. Once ctx is
// cancelled the save is made on the cleanup context, so that an
// interruption is recorded as one rather than as a failed save.
func (r *Runner) checkpoint(ctx context.Context, st *runState) error {
	sctx := ctx
	if ctx.Err() != nil {
		cctx, cancel := r.cleanupContext(ctx)
		defer cancel()
		sctx = cctx
	}
	err := st.save(sctx, r.Recorder)
	if err == nil {
		return nil
	}
	st.update(func() { st.superseded = st.superseded || errors.Is(err, ErrSuperseded) })
	st.stop(interruptedOr(ctx, OutcomeFailed), err.Error())
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
		st.update(func() { st.hosts[h.Name].Error += "; balancer " + msg })
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
// timed, logged and recorded (hr is nil for preflight steps, which are
// reported as problems instead).
func (r *Runner) step(ctx context.Context, st *runState, hr *HostRecord, batch int, s Step, env *stepEnv) (string, error) {
	host := env.host.Name
	start := r.now()
	r.emit(st, Event{Kind: EventStepStarted, Batch: batch, Host: host, Step: s.Kind()})
	var out string
	var err error
	if env.balancer == nil && (s.Kind() == "balancer.drain" || s.Kind() == "balancer.enable") {
		out = "no balancer configured"
	} else {
		out, err = s.run(ctx, env)
	}
	d := r.now().Sub(start)
	r.emit(st, Event{Kind: EventStepFinished, Batch: batch, Host: host, Step: s.Kind(), Duration: d, Err: err, Message: out})
	if hr != nil {
		sr := stepRecord(s, start, d, out, err)
		st.update(func() { hr.Steps = append(hr.Steps, sr) })
	}
	return out, err
}

func stepRecord(s Step, start time.Time, d time.Duration, out string, err error) StepRecord {
	sr := StepRecord{Step: s.Kind(), Status: StepOK, StartedAt: start.UTC(), Duration: formatDuration(d), Output: out}
	if err != nil {
		sr.Status, sr.Error = StepFailed, err.Error()
	}
	return sr
}

// gate runs the checks, soak and approval between two batches.
func (r *Runner) gate(ctx context.Context, st *runState, done, next Batch) {
	g := st.plan.Gate
	if g.empty() || st.gatePassed(done.Number) {
		return
	}
	gr := &GateRecord{Status: StepOK, At: r.now().UTC()}
	if g.Soak > 0 {
		gr.Soak = g.Soak.String()
	}
	env := &stepEnv{conn: r.Local, http: r.http(), commandTimeout: st.env.SSH.CommandTimeout,
		data: TemplateData{Release: st.plan.Release, Environment: st.plan.Environment}}
	fail := func(outcome Outcome, format string, args ...any) {
		gr.Status, gr.Error = StepFailed, fmt.Sprintf(format, args...)
		st.stop(outcome, fmt.Sprintf("gate after batch %d: %s", done.Number, gr.Error))
	}
	checks := func(phase string) bool {
		for _, s := range g.Checks {
			start := r.now()
			out, err := s.run(ctx, env)
			gr.Checks = append(gr.Checks, stepRecord(s, start, r.now().Sub(start), out, err))
			r.emit(st, Event{Kind: EventGate, Batch: done.Number, Step: s.Kind(), Duration: r.now().Sub(start), Err: err, Message: phase})
			if err != nil {
				fail(interruptedOr(ctx, OutcomeFailed), "%s %s failed: %v", phase, s.Kind(), err)
				return false
			}
		}
		return true
	}
	ok := checks("check")
	if ok && g.Soak > 0 {
		r.emit(st, Event{Kind: EventGate, Batch: done.Number, Message: "soaking for " + g.Soak.String()})
		if err := sleep(ctx, g.Soak); err != nil {
			fail(OutcomeInterrupted, "interrupted while soaking")
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
		st.update(func() { st.rec.Waiting = &WaitRecord{Gate: done.Number, Since: since, Until: since.Add(timeout)} })
		r.emit(st, Event{Kind: EventGate, Batch: done.Number, Message: fmt.Sprintf("waiting for approval (until %s)", since.Add(timeout).Format(time.RFC3339))})
		approved, by, err := false, "", r.checkpoint(ctx, st)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, timeout)
			approved, by, err = r.Approver.Approve(actx, GateRequest{
				Environment: st.plan.Environment, Release: st.plan.Release, Run: st.rec.ID, AfterBatch: done.Number,
				Batches: len(st.plan.Batches), Done: st.doneHosts(), Next: hostNames(next.Hosts), Until: since.Add(timeout),
			})
			cancel()
		}
		st.update(func() { st.rec.Waiting = nil })
		switch {
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			fail(OutcomeAborted, "no decision within %s; the hosts done so far stay in service", timeout)
		case err != nil:
			fail(interruptedOr(ctx, OutcomeAborted), "approval: %v", err)
		case !approved:
			fail(OutcomeAborted, "not approved by %s", by)
		default:
			gr.ApprovedBy = by
		}
	}
	st.update(func() { st.rec.Batches[done.Number-1].Gate = gr })
	r.emit(st, Event{Kind: EventGate, Batch: done.Number, Message: "gate " + string(gr.Status), Err: errorOrNil(gr.Error)})
	r.checkpoint(ctx, st)
}

func interruptedOr(ctx context.Context, o Outcome) Outcome {
	if ctx.Err() != nil {
		return OutcomeInterrupted
	}
	return o
}

func errorOrNil(msg string) error {
	if msg == "" {
		return nil
	}
	return errors.New(msg)
}

// finish settles the outcome, reads the final balancer state and saves.
func (r *Runner) finish(ctx context.Context, st *runState, refusal string) error {
	cctx, cancel := r.cleanupContext(ctx)
	defer cancel()
	var servers map[string]lb.Server
	if r.Balancer != nil && st.outcome != OutcomeRefused {
		if list, err := r.Balancer.Servers(cctx); err == nil {
			servers = map[string]lb.Server{}
			for _, s := range list {
				servers[s.Name] = s
			}
		}
	}
	now := r.now().UTC()
	st.update(func() {
		rec := st.rec
		for i := range rec.Hosts {
			hr := &rec.Hosts[i]
			if hr.Status == HostPending || hr.Status == HostRunning {
				hr.Status = HostUntouched
			}
			if s, ok := servers[st.servers[hr.Name]]; ok {
				hr.Balancer = string(s.Admin) + "/" + string(s.Health)
			}
		}
		switch {
		case st.outcome != "":
		case st.failures > 0:
			st.outcome = OutcomeFailed
			st.stopped = fmt.Sprintf("%d hosts failed (tolerated by max_failures %d)", st.failures, st.plan.Strategy.MaxFailures)
		default:
			st.outcome = OutcomeSucceeded
		}
		rec.Outcome = st.outcome
		rec.Reason = st.stopped
		if refusal != "" {
			rec.Reason = refusal
		}
		rec.FinishedAt = &now
		rec.Duration = formatDuration(now.Sub(rec.StartedAt))
		rec.Next = nextSteps(rec)
	})
	saveErr := st.save(cctx, r.Recorder)
	r.emit(st, Event{Kind: EventRunFinished, Message: string(st.rec.Outcome), Err: saveErr})
	if st.outcome == OutcomeSucceeded {
		if saveErr != nil {
			return &RunError{Outcome: OutcomeFailed, Reason: "every host succeeded but the record was not saved: " + saveErr.Error()}
		}
		return nil
	}
	return &RunError{Outcome: st.outcome, Reason: st.rec.Reason}
}

func (st *runState) update(f func()) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.version++
	f()
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
func (st *runState) stop(o Outcome, reason string) {
	st.update(func() {
		if st.stopped == "" {
			st.stopped, st.outcome = reason, o
		}
	})
}

func (st *runState) markUntouched(host string) {
	st.update(func() { st.hosts[host].Status = HostUntouched })
}

// finished reports whether the host's part of the run is over: it
// succeeded or failed, possibly in the process a resume took over from.
func (st *runState) finished(host string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.hosts[host].Status
	return s == HostSucceeded || s == HostFailed
}

// gatePassed reports whether the gate after batch n was passed already,
// before a resume.
func (st *runState) gatePassed(n int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	g := st.rec.Batches[n-1].Gate
	return g != nil && g.Status == StepOK
}

func (st *runState) doneHosts() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for _, h := range st.rec.Hosts {
		if h.Status == HostSucceeded {
			out = append(out, h.Name)
		}
	}
	return out
}

// save writes the record as it is now. Saves are serialised so Git sees
// them in order, and one that finds its state already written by a later
// save returns at once: parallel hosts share commits instead of queueing.
func (st *runState) save(ctx context.Context, rec Recorder) error {
	if rec == nil {
		return nil
	}
	st.mu.Lock()
	want := st.version
	st.mu.Unlock()
	st.saveMu.Lock()
	defer st.saveMu.Unlock()
	if st.saved >= want && want > 0 {
		return nil
	}
	// The commit happens on a copy, so hosts keep recording their steps
	// while Git writes.
	st.mu.Lock()
	version, snapshot := st.version, st.rec.clone()
	st.mu.Unlock()
	if err := rec.Save(ctx, snapshot); err != nil {
		return fmt.Errorf("save run record %s: %w", snapshot.ID, err)
	}
	st.saved = version
	return nil
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

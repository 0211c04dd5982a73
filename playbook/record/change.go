package record

import (
	"fmt"
	"slices"
	"time"
)

// Start is what a run is before anything happened: who starts what.
type Start struct {
	ID, Environment, Kind, Release, Revision string
	Packages                                 []string // NEVRAs
	Strategy                                 string
	Message                                  string
	By, From                                 string
	At                                       time.Time
}

// Planned is one host as the plan has it.
type Planned struct {
	Name, Address string
	// Before maps package name to the versions installed when planned;
	// nil when not known.
	Before map[string]string
	// Balancer is the server's state as observed, for NewInSync.
	Balancer string
}

// New starts the record of a run: batches of planned hosts, in order, and
// the hosts left alone because they are up to date.
func New(s Start, batches [][]Planned, upToDate []Planned) *Run {
	kind := s.Kind
	if kind == "" {
		kind = "run"
	}
	r := &Run{
		ID: s.ID, Environment: s.Environment, Kind: kind, Release: s.Release, Revision: s.Revision,
		Packages: slices.Clone(s.Packages), Message: s.Message, StartedBy: s.By, StartedFrom: s.From,
		StartedAt: s.At.UTC(), Outcome: OutcomeRunning, Strategy: s.Strategy,
	}
	for i, b := range batches {
		br := Batch{Number: i + 1}
		for _, h := range b {
			br.Hosts = append(br.Hosts, h.Name)
			r.Hosts = append(r.Hosts, Host{Name: h.Name, Address: h.Address, Batch: i + 1, Status: HostPending, Before: h.Before})
		}
		r.Batches = append(r.Batches, br)
	}
	for _, h := range upToDate {
		r.Hosts = append(r.Hosts, Host{Name: h.Name, Address: h.Address, Status: HostUpToDate, Before: h.Before})
	}
	return r
}

// NewInSync records that the fleet already runs the release: every host up
// to date with the balancer state observed, nothing changed, succeeded. A
// sync writes it when the manifest moved to what the hosts have, so that
// history and rollback know the release is out there.
func NewInSync(s Start, upToDate []Planned) *Run {
	r := New(s, nil, upToDate)
	for i, h := range upToDate {
		r.Hosts[i].Balancer = h.Balancer
	}
	at := s.At.UTC()
	r.Outcome, r.FinishedAt, r.Duration = OutcomeSucceeded, &at, FormatDuration(0)
	return r
}

// lookup finds host name's entry.
func (r *Run) lookup(name string) (*Host, bool) {
	if r.index == nil {
		r.index = make(map[string]int, len(r.Hosts))
		for i, h := range r.Hosts {
			r.index[h.Name] = i
		}
	}
	i, ok := r.index[name]
	if !ok {
		return nil, false
	}
	return &r.Hosts[i], true
}

// host returns the entry of host name; it panics for a host the run does
// not have, which is a bug in the caller.
func (r *Run) host(name string) *Host {
	h, ok := r.lookup(name)
	if !ok {
		panic(fmt.Sprintf("record %s: no host %q", r.ID, name))
	}
	return h
}

// touch notes that host name's file must be written again: always once the
// host has started, so that its file, which readers prefer to the run's own
// line for the host, is never older than that line.
func (r *Run) touch(name string, starts bool) {
	if r.changed == nil {
		r.changed = map[string]bool{}
	}
	h := r.host(name)
	if starts || h.StartedAt != nil || len(h.Steps) > 0 {
		r.changed[name] = true
	}
}

// Host returns a copy of host name's entry.
func (r *Run) Host(name string) (Host, bool) {
	if h, ok := r.lookup(name); ok {
		return *h, true
	}
	return Host{}, false
}

// Count is how many hosts have status s.
func (r *Run) Count(s HostStatus) int {
	n := 0
	for _, h := range r.Hosts {
		if h.Status == s {
			n++
		}
	}
	return n
}

// HostsWith lists, in record order, the hosts with status s.
func (r *Run) HostsWith(s HostStatus) []string {
	var out []string
	for _, h := range r.Hosts {
		if h.Status == s {
			out = append(out, h.Name)
		}
	}
	return out
}

// GatePassed reports whether the gate after batch n passed.
func (r *Run) GatePassed(n int) bool {
	g := r.Batches[n-1].Gate
	return g != nil && g.Status == StepOK
}

// StartBatch declares batch n in flight: its hosts that have not finished
// become running. It reports whether that changed anything.
func (r *Run) StartBatch(n int, at time.Time) bool {
	b := &r.Batches[n-1]
	changed := false
	for _, name := range b.Hosts {
		if h := r.host(name); h.Status == HostPending || h.Status == HostUntouched {
			h.Status = HostRunning
			r.touch(name, false)
			changed = true
		}
	}
	if b.StartedAt == nil {
		at = at.UTC()
		b.StartedAt = &at
		changed = true
	}
	return changed
}

// StartHost records that host name's steps begin.
func (r *Run) StartHost(name string, at time.Time) {
	h := r.host(name)
	at = at.UTC()
	h.Status, h.StartedAt = HostRunning, &at
	r.touch(name, true)
}

// AddStep appends a step the host ran.
func (r *Run) AddStep(name string, s Step) {
	h := r.host(name)
	h.Steps = append(h.Steps, s)
	r.touch(name, true)
}

// NoteError adds to host name's error, such as a failed repair in the
// balancer after the host failed.
func (r *Run) NoteError(name, msg string) {
	h := r.host(name)
	if h.Error != "" {
		msg = h.Error + "; " + msg
	}
	h.Error = msg
	r.touch(name, false)
}

// HostEnd is how a host's part of the run ended.
type HostEnd struct {
	Err error
	// Interrupted: the host failed because the run was interrupted, not
	// because of its change; a resume runs it again.
	Interrupted bool
	After       map[string]string
	Duration    time.Duration
}

// FinishHost records the end of host name's steps.
func (r *Run) FinishHost(name string, e HostEnd) {
	h := r.host(name)
	h.Duration, h.After = FormatDuration(e.Duration), e.After
	h.Status, h.Error, h.Interrupted = HostSucceeded, "", false
	if e.Err != nil {
		h.Status, h.Error, h.Interrupted = HostFailed, e.Err.Error(), e.Interrupted
	}
	r.touch(name, true)
}

// MarkUntouched records that the run stopped before host name started.
func (r *Run) MarkUntouched(name string) {
	r.host(name).Status = HostUntouched
	r.touch(name, false)
}

// SetWaiting records that the run waits at a gate (nil: no longer).
func (r *Run) SetWaiting(w *Wait) { r.Waiting = w }

// SetGate records how the gate after batch n went.
func (r *Run) SetGate(n int, g *Gate) { r.Batches[n-1].Gate = g }

// End is how the run ended.
type End struct {
	Outcome Outcome
	Reason  string
	At      time.Time
	// Balancer maps host name to its server's state at the end, as
	// "admin/health"; hosts it lacks keep what they had.
	Balancer map[string]string
	// Notes are added to the run's.
	Notes []string
}

// Finish records the end of the run: hosts that never started are
// untouched, and Next says what to do. A refusal on a record whose hosts
// were changed by a process before this one (a refused resume) is recorded
// as interrupted: the run can still be resumed once the cause is fixed.
func (r *Run) Finish(e End) {
	for i := range r.Hosts {
		h := &r.Hosts[i]
		if h.Status == HostPending || h.Status == HostRunning {
			h.Status = HostUntouched
			r.touch(h.Name, false)
		}
		if s, ok := e.Balancer[h.Name]; ok && s != h.Balancer {
			h.Balancer = s
			r.touch(h.Name, false)
		}
	}
	if e.Outcome == OutcomeRefused && r.Count(HostSucceeded)+r.Count(HostFailed) > 0 {
		e.Outcome, e.Reason = OutcomeInterrupted, "resume "+e.Reason
	}
	at := e.At.UTC()
	r.Outcome, r.Reason, r.Waiting = e.Outcome, e.Reason, nil
	r.FinishedAt, r.Duration = &at, FormatDuration(at.Sub(r.StartedAt))
	r.Next = nextSteps(r)
	r.Notes = append(r.Notes, e.Notes...)
}

// CheckResumable says whether the run can be continued: one whose process
// died (still "running" in Git) or that was interrupted.
func (r *Run) CheckResumable() error {
	switch r.Outcome {
	case OutcomeRunning, OutcomeInterrupted:
		return nil
	}
	return fmt.Errorf("run %s ended %s; there is nothing to resume: start a new run with `lieutenant run --env %s`",
		r.ID, r.Outcome, r.Environment)
}

// Resume reopens the record for the process that continues the run, and
// returns the hosts that were in flight when the previous one stopped:
// every host of a batch in flight that had not finished, and hosts failed
// only because the run was interrupted. Their steps run again, which
// finishes them (install is idempotent) or repairs them (a drained host is
// verified and put back). Hosts that finished keep their entries and are
// not run again.
func (r *Run) Resume(by, from string, at time.Time) (inFlight []string) {
	for i := range r.Hosts {
		h := &r.Hosts[i]
		switch {
		case h.Status == HostRunning, h.Status == HostFailed && h.Interrupted:
			inFlight = append(inFlight, h.Name)
			h.Status, h.Error, h.Interrupted = HostPending, "", false
			r.touch(h.Name, false)
		case h.Status == HostUntouched:
			h.Status = HostPending
			r.touch(h.Name, false)
		}
	}
	r.Outcome, r.Reason, r.Next = OutcomeRunning, "", nil
	r.FinishedAt, r.Duration, r.Waiting = nil, "", nil
	r.Resumed = append(r.Resumed, Resumption{By: by, From: from, At: at.UTC(), Hosts: inFlight})
	return inFlight
}

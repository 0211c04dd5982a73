package playbook

import (
	"fmt"
	"time"
)

// CheckResumable says whether the run rec records can be continued: one
// whose process died (still "running" in Git) or that was interrupted.
func (rec *Record) CheckResumable() error {
	switch rec.Outcome {
	case OutcomeRunning, OutcomeInterrupted:
		return nil
	}
	return fmt.Errorf("run %s ended %s; there is nothing to resume: start a new run with `lieutenant run --env %s`",
		rec.ID, rec.Outcome, rec.Environment)
}

// Resume reopens rec for the process that continues it, and returns the
// hosts that were in flight when the previous one stopped: their steps run
// again, which finishes them (install is idempotent) or repairs them (a
// drained host is verified and put back). Hosts that finished keep their
// entries and are not run again.
func (rec *Record) Resume(by, from string, at time.Time) (inFlight []string) {
	for i := range rec.Hosts {
		h := &rec.Hosts[i]
		switch {
		case h.Status == HostRunning, h.Status == HostFailed && h.Interrupted:
			// An interruption fails the hosts it stops mid-way; their
			// own failures stay failures.
			inFlight = append(inFlight, h.Name)
			h.Status, h.Error, h.Interrupted = HostPending, "", false
		case h.Status == HostUntouched:
			h.Status = HostPending
		}
	}
	rec.Outcome, rec.Reason, rec.Next = OutcomeRunning, "", nil
	rec.FinishedAt, rec.Duration, rec.Waiting = nil, "", nil
	rec.Resumed = append(rec.Resumed, ResumeRecord{By: by, From: from, At: at.UTC(), Hosts: inFlight})
	return inFlight
}

// ResumePlan is the plan that finishes the run rec records: the record's
// batches in their order, each host with its changes as observed now. The
// runner skips the hosts the record shows finished and the gates it shows
// passed. It performs no I/O.
func ResumePlan(dep *Deployment, obs *Observed, rec *Record) (*Plan, error) {
	fresh, err := MakePlan(dep, obs)
	if err != nil {
		return nil, err
	}
	if fresh.Release != rec.Release {
		return nil, fmt.Errorf("resume %s: the manifest at %s has release %s, the run was deploying %s", rec.ID, shortHash(rec.Revision), fresh.Release, rec.Release)
	}
	hosts := map[string]HostPlan{}
	for _, hp := range append(fresh.Hosts(), fresh.UpToDate...) {
		hosts[hp.Host.Name] = hp
	}
	plan := *fresh
	plan.Batches, plan.UpToDate = nil, nil
	inBatch := map[string]bool{}
	for _, b := range rec.Batches {
		batch := Batch{Number: b.Number}
		for _, name := range b.Hosts {
			hp, ok := hosts[name]
			if !ok {
				return nil, fmt.Errorf("resume %s: host %s of batch %d is not in the inventory at %s", rec.ID, name, b.Number, shortHash(rec.Revision))
			}
			batch.Hosts = append(batch.Hosts, hp)
			inBatch[name] = true
		}
		plan.Batches = append(plan.Batches, batch)
	}
	for _, hp := range append(fresh.Hosts(), fresh.UpToDate...) {
		if !inBatch[hp.Host.Name] {
			plan.UpToDate = append(plan.UpToDate, hp)
		}
	}
	return &plan, nil
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

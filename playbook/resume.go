package playbook

import (
	"fmt"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

// ResumePlan is the plan that finishes the run rec records (reopened with
// rec.Resume): the record's batches in their order, each with the hosts
// that have not finished, as observed now; hosts that finished are left
// out, so nothing (capacity checks, preflight) counts them as about to
// change. The runner skips the gates the record shows passed. It performs
// no I/O.
func ResumePlan(dep *Deployment, obs *Observed, rec *record.Run) (*Plan, error) {
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
			inBatch[name] = true
			if h, _ := rec.Host(name); !h.Finished() {
				batch.Hosts = append(batch.Hosts, hp)
			} else {
				plan.Finished = append(plan.Finished, hp)
			}
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

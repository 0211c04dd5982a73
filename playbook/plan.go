package playbook

import (
	"fmt"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// Plan is what a run will do, computed without any I/O from a deployment and
// (unless offline) the versions the hosts have now.
type Plan struct {
	Environment string
	Release     string
	Packages    []Package
	Strategy    Strategy
	Batches     []Batch
	// UpToDate hosts already have every package at the wanted version and
	// are not touched.
	UpToDate []HostPlan
	// Finished hosts (a resumed run's) are those the record shows done by
	// the process before: not run again, but their end state is recorded.
	Finished  []HostPlan
	Preflight []Step
	Steps     []Step
	Gate      Gate
	// Offline plans do not know what the hosts have.
	Offline bool
}

// Batch is a group of hosts that are changed together.
type Batch struct {
	Number int // from 1
	Hosts  []HostPlan
}

// HostPlan is one host and what changes on it.
type HostPlan struct {
	Host    Host
	Changes []Change
	// Balancer is the host's server state as "admin/health" ("" when not
	// known: offline, or no balancer).
	Balancer string
	// Repair is set for a host that has the release but is out of service
	// (typically left out by a failed run): its steps run again, which
	// verifies it and puts it back.
	Repair bool
}

// Action is what happens to one package on one host.
type Action string

const (
	ActionInstall   Action = "install"
	ActionUpgrade   Action = "upgrade"
	ActionDowngrade Action = "downgrade"
	ActionReinstall Action = "reinstall"
	ActionKeep      Action = "keep"
	ActionUnknown   Action = "unknown" // offline: installed version not read
)

// Change is one package on one host: what it has and what it will have.
type Change struct {
	Package string `json:"package"`
	From    string `json:"from"` // "-": not installed; "?": unknown (offline)
	To      string `json:"to"`
	Action  Action `json:"action"`
}

// Installed maps host name -> package name -> versions installed.
type Installed map[string]map[string][]Package

// MakePlan cuts the selected hosts into batches and works out each host's
// changes from what was observed. With obs == nil the plan is offline: every
// selected host is planned and changes are unknown. A host that already has
// the release is left alone, unless the balancer has it out of service: then
// its steps run again to verify it and put it back. Hosts the balancer has
// out of service come first, so that the earliest batches bring them back
// (draining them costs no capacity) before hosts in service are taken out:
// a fleet a stopped run left half out of service can always be brought back
// by the next run. It performs no I/O.
func MakePlan(dep *Deployment, obs *Observed) (*Plan, error) {
	var installed Installed
	if obs != nil {
		installed = obs.Installed
	}
	pb := dep.Playbook
	plan := &Plan{
		Environment: dep.Environment.Name,
		Release:     dep.Manifest.Release,
		Packages:    dep.Manifest.Packages,
		Strategy:    pb.Strategy,
		Preflight:   pb.Preflight,
		Steps:       pb.Steps,
		Gate:        pb.Gate,
		Offline:     installed == nil,
	}
	installs := false
	for _, s := range pb.Steps {
		if _, ok := s.(*installStep); ok {
			installs = true
		}
	}
	var todo, out []HostPlan
	for _, h := range dep.Hosts {
		hp := HostPlan{Host: h}
		server, known := obs.server(h)
		if known {
			hp.Balancer = string(server.Admin) + "/" + string(server.Health)
		}
		var have map[string][]Package
		if installed != nil {
			var ok bool
			if have, ok = installed[h.Name]; !ok {
				return nil, fmt.Errorf("plan %s: installed packages of %s were not read", dep.Environment.Name, h.Name)
			}
		}
		changed := false
		for _, want := range dep.Manifest.Packages {
			c := change(want, have[want.Name], installed == nil)
			changed = changed || c.Action != ActionKeep
			hp.Changes = append(hp.Changes, c)
		}
		hp.Repair = !changed && known && !server.Serving()
		// Without an install step the playbook is a restart or a command
		// for every host, so no host is up to date.
		switch {
		case known && !server.Serving() && (changed || !installs || hp.Repair):
			out = append(out, hp)
		case changed || !installs || hp.Repair:
			todo = append(todo, hp)
		default:
			plan.UpToDate = append(plan.UpToDate, hp)
		}
	}
	todo = append(out, todo...)
	start := 0
	for i, n := range BatchSizes(len(todo), pb.Strategy.Batches) {
		plan.Batches = append(plan.Batches, Batch{Number: i + 1, Hosts: todo[start : start+n]})
		start += n
	}
	return plan, nil
}

func change(want Package, have []Package, offline bool) Change {
	c := Change{Package: want.Name, To: want.EVR()}
	switch {
	case offline:
		c.From, c.Action = "?", ActionUnknown
	case len(have) == 0:
		c.From, c.Action = "-", ActionInstall
	default:
		c.From = versionsOf(have)
		switch {
		case hasExact(have, want):
			c.Action = ActionKeep
		case len(have) == 1 && CompareEVR(have[0], want) == 0:
			// Same version, another arch.
			c.Action = ActionReinstall
		case CompareEVR(newest(have), want) > 0:
			c.Action = ActionDowngrade
		default:
			// Older, or the same version for another arch, or several
			// versions at once: installing the exact one fixes all three.
			c.Action = ActionUpgrade
		}
	}
	return c
}

// BatchSizes splits total hosts like Ansible's serial: each size is a count
// or a percentage of total (rounded down, at least 1), the last size repeats,
// and no batch is larger than what remains.
func BatchSizes(total int, sizes []BatchSize) []int {
	if len(sizes) == 0 {
		sizes = Halves()
	}
	var out []int
	for remaining, i := total, 0; remaining > 0; i++ {
		s := sizes[min(i, len(sizes)-1)]
		n := s.Count
		if s.Percent > 0 {
			n = total * s.Percent / 100
		}
		n = min(max(n, 1), remaining)
		out = append(out, n)
		remaining -= n
	}
	return out
}

// Hosts returns every host the plan will touch, batch by batch.
func (p *Plan) Hosts() []HostPlan {
	var out []HostPlan
	for _, b := range p.Batches {
		out = append(out, b.Hosts...)
	}
	return out
}

// CheckCapacity says whether the backend (every server of it, as the
// balancer reports them now) can spare the servers this plan drains at once
// without going below minUp in service.
func (p *Plan) CheckCapacity(backend []lb.Server, minUp int) error {
	if !p.drains() {
		return nil
	}
	batches := make([][]string, len(p.Batches))
	for i, b := range p.Batches {
		for _, hp := range b.Hosts {
			batches[i] = append(batches[i], hp.Host.BalancerServer)
		}
	}
	return checkDrainCapacity(backend, batches, p.Strategy.MaxParallel, minUp)
}

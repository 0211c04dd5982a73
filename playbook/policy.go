package playbook

import (
	"fmt"
	"strings"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// The run's decisions are pure functions of what happened so far, so each
// can be tested as a table; only Runner performs effects.

// hostProgress is what a host's pipeline did before it ended.
type hostProgress struct {
	failed         bool
	drainAttempted bool // balancer.drain started (its effect may be partial)
	enabled        bool // balancer.enable succeeded
	changed        bool // a step that may change the host started
}

// balancerFix is what the runner must do to the host's balancer server once
// its pipeline ended.
type balancerFix int

const (
	fixNothing balancerFix = iota
	// fixRestore puts back in service a host that was taken out but not
	// changed: it is exactly as healthy as before the run.
	fixRestore
	// fixIsolate takes out of service a failed host that may have changed:
	// a host whose upgrade or verification failed never serves traffic.
	fixIsolate
)

func (f balancerFix) String() string {
	return [...]string{"nothing", "restore", "isolate"}[f]
}

// balancerFixAfter keeps the run's two balancer invariants: a failed host
// that may have changed stays out; a host taken out but not changed goes
// back. A passing host was enabled by its own balancer.enable step.
func balancerFixAfter(p hostProgress) balancerFix {
	switch {
	case p.failed && p.changed:
		// Also when it was never drained or already enabled again: isolate
		// is idempotent for a server already in maintenance.
		return fixIsolate
	case p.drainAttempted && !p.enabled:
		return fixRestore
	}
	return fixNothing
}

// shouldStop says whether the run stops launching hosts: more failures than
// the strategy tolerates.
func shouldStop(failures, maxFailures int) bool { return failures > maxFailures }

// checkDrainCapacity refuses a plan whose batches would take more servers
// out of service at once than the backend can spare. backend is every
// server as the balancer reports it now; batches are the servers each batch
// drains, in order, at most maxParallel (0: all) at once. A server out of
// service now costs nothing to drain, and counts as in service once its
// batch has passed (that is what its steps do).
func checkDrainCapacity(backend []lb.Server, batches [][]string, maxParallel, minUp int) error {
	serving := map[string]bool{}
	count := 0
	var out []string
	for _, s := range backend {
		serving[s.Name] = s.Serving()
		if s.Serving() {
			count++
		} else {
			out = append(out, fmt.Sprintf("%s (%s/%s)", s.Name, s.Admin, s.Health))
		}
	}
	for i, batch := range batches {
		drains := 0
		for _, name := range batch {
			if in, known := serving[name]; in || !known {
				drains++
			}
		}
		if maxParallel > 0 {
			drains = min(drains, maxParallel)
		}
		if count-drains < minUp {
			msg := fmt.Sprintf("batch %d drains %d servers at once but only %d of %d are in service and min_up is %d",
				i+1, drains, count, len(backend), minUp)
			if len(out) > 0 {
				msg += "; out of service now: " + strings.Join(out, ", ")
			}
			return fmt.Errorf("%s; use smaller batches (strategy.batches) or max_parallel, or bring servers back first", msg)
		}
		for _, name := range batch {
			if in, known := serving[name]; known && !in {
				serving[name] = true
				count++
			}
		}
	}
	return nil
}

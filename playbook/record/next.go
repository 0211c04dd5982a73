package record

import (
	"fmt"
	"strings"
)

// nextSteps tells the operator, from the record alone, what to do after a
// run that did not succeed.
func nextSteps(r *Run) []string {
	switch r.Outcome {
	case OutcomeSucceeded, OutcomeRunning:
		return nil
	case OutcomeRefused:
		return []string{"Nothing was changed on any host. Fix the problems above, then run again."}
	}
	var out []string
	var untouched, done []string
	for _, h := range r.Hosts {
		switch h.Status {
		case HostFailed:
			where := "it was left as it is"
			if h.Balancer != "" {
				where = "balancer state " + h.Balancer
				if strings.HasPrefix(h.Balancer, "maint") {
					where += ": kept out of service"
				}
			}
			out = append(out, fmt.Sprintf("%s (%s) failed (%s); %s. Look at the host, and at its step output in the run record.",
				h.Name, h.Address, firstLine(h.Error), where))
		case HostUntouched:
			untouched = append(untouched, h.Name)
		case HostSucceeded:
			done = append(done, h.Name)
		}
	}
	if len(done) > 0 {
		out = append(out, fmt.Sprintf("At %s and in service: %s.", r.Release, strings.Join(done, ", ")))
	}
	if len(untouched) > 0 {
		out = append(out, fmt.Sprintf("Not touched, still on the previous release: %s.", strings.Join(untouched, ", ")))
	}
	if r.Outcome == OutcomeInterrupted {
		out = append(out, fmt.Sprintf("To finish the run: lieutenant resume %s (hosts in flight get all their steps again; finished hosts and passed gates are not repeated).", r.ID))
	}
	out = append(out, fmt.Sprintf("To continue once the cause is fixed: lieutenant run --env %s (hosts at %s and in service are skipped; "+
		"hosts left out of service are verified again and put back, first). To go back: lieutenant rollback --env %s (one manifest commit, then a run).", r.Environment, r.Release, r.Environment))
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

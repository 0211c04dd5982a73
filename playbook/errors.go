package playbook

import (
	"fmt"
	"sort"
	"strings"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

// RefusedError is returned when a run stops before changing any host:
// unreachable hosts, unknown host keys, an unreachable balancer, too little
// capacity, a gate that needs an approval nobody can give.
type RefusedError struct {
	Problems []string
}

func (e *RefusedError) Error() string {
	if len(e.Problems) == 1 {
		return "refused before changing any host: " + e.Problems[0]
	}
	return "refused before changing any host:\n  " + strings.Join(e.Problems, "\n  ")
}

// RunError is returned when a run changed hosts and did not succeed; the
// record it returns with says host by host what happened.
type RunError struct {
	Outcome record.Outcome
	Reason  string
}

func (e *RunError) Error() string { return fmt.Sprintf("run %s: %s", e.Outcome, e.Reason) }

// hostErrors collects one error per host, for messages that list them all.
type hostErrors map[string]error

func (h hostErrors) lines() []string {
	names := make([]string, 0, len(h))
	for n := range h {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n + ": " + h[n].Error()
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// oneLine joins the lines of s, for a reason that must read as one line.
func oneLine(s string) string {
	return strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
}

package playbook

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Playbook is a taboot-style release script made declarative: which hosts,
// in which batches, which steps on each host, and the gate between batches.
type Playbook struct {
	Hosts     []string
	Strategy  Strategy
	Preflight []Step
	Steps     []Step
	Gate      Gate
	hostsNode *yaml.Node
}

// Strategy says how hosts are cut into batches and how much may fail.
type Strategy struct {
	// Batches are the batch sizes in order, like Ansible's serial; the last
	// one repeats until every host is in a batch. Halves is {50%, 100%}.
	Batches []BatchSize
	// MaxParallel bounds how many hosts of a batch run at once; 0 means the
	// whole batch.
	MaxParallel int
	// MaxFailures is how many hosts may fail before the run stops.
	MaxFailures int
}

// String reads as the playbook would say it, for plans and records:
// "batches 50%, 100%; max_parallel 10; max_failures 0".
func (s Strategy) String() string {
	sizes := make([]string, len(s.Batches))
	for i, b := range s.Batches {
		sizes[i] = b.String()
	}
	d := "batches " + strings.Join(sizes, ", ")
	if s.MaxParallel > 0 {
		d += fmt.Sprintf("; max_parallel %d", s.MaxParallel)
	}
	return d + fmt.Sprintf("; max_failures %d", s.MaxFailures)
}

// BatchSize is a number of hosts or a percentage of the selected hosts.
type BatchSize struct {
	Count   int
	Percent int
}

func (b BatchSize) String() string {
	if b.Percent > 0 {
		return strconv.Itoa(b.Percent) + "%"
	}
	return strconv.Itoa(b.Count)
}

// Halves is the default strategy: half the hosts, then the rest.
func Halves() []BatchSize { return []BatchSize{{Percent: 50}, {Percent: 100}} }

// Approval says whether a person must approve each gate.
type Approval string

const (
	ApprovalNone   Approval = "none"
	ApprovalPrompt Approval = "prompt"
)

// Gate is what must hold between two batches before the next one starts.
type Gate struct {
	Checks   []Step // run from the machine lieutenant runs on
	Soak     time.Duration
	Approval Approval
	// ApprovalTimeout ends a wait for approval as aborted, with the hosts
	// done so far left in service.
	ApprovalTimeout time.Duration
}

// DefaultApprovalTimeout is how long a gate waits for a decision unless the
// playbook says otherwise: less than a CI job's usual limit, so the run
// ends cleanly and releases its lock.
const DefaultApprovalTimeout = time.Hour

func (g Gate) empty() bool {
	return len(g.Checks) == 0 && g.Soak == 0 && g.Approval == ApprovalNone
}

func parsePlaybook(file string, data []byte, p *problems) *Playbook {
	d := decoder{file: file, problems: p}
	pb := &Playbook{Strategy: Strategy{Batches: Halves()}, Gate: Gate{Approval: ApprovalNone, ApprovalTimeout: DefaultApprovalTimeout}}
	root := d.parseDocument(data)
	if root == nil {
		return pb
	}
	seen := d.mapping(root, "", map[string]func(k, v *yaml.Node){
		"hosts": func(_, v *yaml.Node) {
			pb.Hosts = d.strings(v, "hosts")
			pb.hostsNode = v
			if len(pb.Hosts) == 0 && v.Kind == yaml.SequenceNode {
				d.errorf(v, "hosts", "is empty; name a group, a host or a pattern such as \"web-*\"")
			}
		},
		"strategy":  func(_, v *yaml.Node) { d.strategy(v, &pb.Strategy) },
		"preflight": func(_, v *yaml.Node) { pb.Preflight = d.steps(v, "preflight", placePreflight) },
		"steps":     func(_, v *yaml.Node) { pb.Steps = d.steps(v, "steps", placeHost) },
		"gate":      func(_, v *yaml.Node) { d.gate(v, &pb.Gate) },
	})
	d.require(root, "", seen, "hosts", "steps")
	if seen["steps"] {
		d.checkStepOrder(stepsNode(root), pb.Steps)
	}
	return pb
}

func stepsNode(root *yaml.Node) *yaml.Node {
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "steps" {
			return root.Content[i]
		}
	}
	return root
}

func (d decoder) steps(n *yaml.Node, p string, place stepPlace) []Step {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, p, "must be a list of steps, not %s", describeNode(n))
		return nil
	}
	if len(n.Content) == 0 && place == placeHost {
		d.errorf(n, p, "is empty; a playbook needs at least one step")
	}
	out := make([]Step, 0, len(n.Content))
	for i, item := range n.Content {
		if s := d.step(item, index(p, i), place); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// checkStepOrder enforces the shape that keeps traffic safe: a drained host
// is enabled again by the playbook itself, after it was drained.
func (d decoder) checkStepOrder(root *yaml.Node, steps []Step) {
	drain, enable := -1, -1
	for i, s := range steps {
		switch s.Kind() {
		case "balancer.drain":
			if drain >= 0 {
				d.errorf(root, "steps", "balancer.drain appears twice")
			}
			drain = i
		case "balancer.enable":
			if enable >= 0 {
				d.errorf(root, "steps", "balancer.enable appears twice")
			}
			enable = i
		}
	}
	switch {
	case drain >= 0 && enable < 0:
		d.errorf(root, "steps", "balancer.drain has no balancer.enable after it; add `- balancer.enable` once the host is verified")
	case enable >= 0 && drain < 0:
		d.errorf(root, "steps", "balancer.enable has no balancer.drain before it")
	case enable >= 0 && enable < drain:
		d.errorf(root, "steps", "balancer.enable comes before balancer.drain")
	}
}

func (d decoder) strategy(n *yaml.Node, s *Strategy) {
	d.mapping(n, "strategy", map[string]func(k, v *yaml.Node){
		"batches": func(_, v *yaml.Node) {
			if b := d.batches(v); b != nil {
				s.Batches = b
			}
		},
		"max_parallel": func(_, v *yaml.Node) {
			if m, ok := d.integer(v, "strategy.max_parallel"); ok {
				if m < 1 {
					d.errorf(v, "strategy.max_parallel", "must be 1 or more (leave it out to run a whole batch at once)")
				}
				s.MaxParallel = m
			}
		},
		"max_failures": func(_, v *yaml.Node) {
			if m, ok := d.integer(v, "strategy.max_failures"); ok {
				if m < 0 {
					d.errorf(v, "strategy.max_failures", "must be 0 or more")
				}
				s.MaxFailures = m
			}
		},
	})
}

// batches reads `halves`, one size (3 or "25%") or a list of sizes.
func (d decoder) batches(n *yaml.Node) []BatchSize {
	const p = "strategy.batches"
	if n.Kind == yaml.ScalarNode && n.Value == "halves" {
		return Halves()
	}
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
		if len(items) == 0 {
			d.errorf(n, p, "is empty; use halves, a size such as 2 or \"25%%\", or a list of sizes")
			return nil
		}
	}
	var out []BatchSize
	for i, item := range items {
		ip := p
		if n.Kind == yaml.SequenceNode {
			ip = index(p, i)
		}
		if item.Kind != yaml.ScalarNode {
			d.errorf(item, ip, "must be a number of hosts or a percentage such as \"50%%\", not %s", describeNode(item))
			continue
		}
		b, err := parseBatchSize(item.Value)
		if err != nil {
			d.errorf(item, ip, "%v", err)
			continue
		}
		out = append(out, b)
	}
	if len(out) != len(items) {
		return nil
	}
	return out
}

func parseBatchSize(s string) (BatchSize, error) {
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.Atoi(pct)
		if err != nil || v < 1 || v > 100 {
			return BatchSize{}, fmt.Errorf("%q is not a percentage between 1%% and 100%%", s)
		}
		return BatchSize{Percent: v}, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return BatchSize{}, fmt.Errorf("%q is not a batch size: use halves, a number of hosts such as 2, or a percentage such as \"25%%\"", s)
	}
	if v < 1 {
		return BatchSize{}, fmt.Errorf("a batch of %d hosts would never finish; use 1 or more", v)
	}
	return BatchSize{Count: v}, nil
}

func (d decoder) gate(n *yaml.Node, g *Gate) {
	d.mapping(n, "gate", map[string]func(k, v *yaml.Node){
		"checks": func(_, v *yaml.Node) { g.Checks = d.steps(v, "gate.checks", placeGate) },
		"soak":   func(_, v *yaml.Node) { g.Soak = d.duration(v, "gate.soak") },
		"approval_timeout": func(_, v *yaml.Node) {
			if t, err := time.ParseDuration(v.Value); err == nil && t == 0 {
				d.errorf(v, "gate.approval_timeout", "must be longer than 0, e.g. 4h")
			} else if t := d.duration(v, "gate.approval_timeout"); t > 0 {
				g.ApprovalTimeout = t
			}
		},
		"approval": func(_, v *yaml.Node) {
			switch a := Approval(d.str(v, "gate.approval")); a {
			case ApprovalNone, ApprovalPrompt:
				g.Approval = a
			case "":
			default:
				d.errorf(v, "gate.approval", "unknown approval %q (known: prompt, none)", a)
			}
		},
	})
}

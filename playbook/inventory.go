package playbook

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Inventory is the hosts an environment has and the groups they form.
type Inventory struct {
	Hosts  []Host // in file order, which is the order batches take them in
	Groups map[string][]string
	file   string
	byName map[string]int
	lines  map[string]*yaml.Node // for errors about selections
	// selectable is false when the hosts or groups could not be read; that
	// problem is reported, and a selection would only repeat it.
	selectable bool
}

// Host is one server of the inventory.
type Host struct {
	Name           string `json:"name" yaml:"name"`
	Address        string `json:"address" yaml:"address"`
	Port           int    `json:"port,omitempty" yaml:"port,omitempty"` // 0: the environment's ssh.port, else 22
	User           string `json:"user,omitempty" yaml:"user,omitempty"` // "": the environment's ssh.user
	BalancerServer string `json:"balancer_server,omitempty" yaml:"balancer_server,omitempty"`
}

var (
	hostNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	dnsNameRe  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)
	serverRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	groupRe    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
)

// parseInventory reads an inventory. It stops early, with what it has, once
// ctx is done; the caller reports that.
func parseInventory(ctx context.Context, file string, data []byte, p *problems) *Inventory {
	d := decoder{file: file, problems: p}
	inv := &Inventory{file: file, Groups: map[string][]string{}, byName: map[string]int{}, lines: map[string]*yaml.Node{}}
	root := d.parseDocument(data)
	if root == nil {
		return inv
	}
	tooMany := false
	seen := d.mapping(root, "", map[string]func(k, v *yaml.Node){
		"hosts": func(k, v *yaml.Node) {
			if v.Kind != yaml.MappingNode {
				d.errorf(v, "hosts", "must map host names to {address: ...}, not %s", describeNode(v))
				return
			}
			if n := len(v.Content) / 2; n > maxHosts {
				d.errorf(k, "hosts", "lists %d hosts; at most %d are supported in one inventory (split the environment)", n, maxHosts)
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, body := v.Content[i], v.Content[i+1]
				if !hostNameRe.MatchString(k.Value) {
					d.errorf(k, "hosts."+k.Value, "host names use letters, digits and ._- only")
					continue
				}
				if _, dup := inv.byName[k.Value]; dup {
					d.errorf(k, "hosts."+k.Value, "is given twice")
					continue
				}
				h, ok := d.host(body, k.Value)
				if !ok {
					continue
				}
				inv.byName[h.Name] = len(inv.Hosts)
				inv.Hosts = append(inv.Hosts, h)
			}
			if len(v.Content) == 0 {
				d.errorf(v, "hosts", "is empty; list at least one host")
			}
		},
		"groups": func(k, v *yaml.Node) {
			inv.lines["groups"] = k
			if v.Kind != yaml.MappingNode {
				d.errorf(v, "groups", "must map group names to lists of host names or patterns, not %s", describeNode(v))
				return
			}
			if n := len(v.Content) / 2; n > maxGroups {
				d.errorf(k, "groups", "lists %d groups; at most %d are supported in one inventory", n, maxGroups)
				tooMany = true
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, body := v.Content[i], v.Content[i+1]
				if !groupRe.MatchString(k.Value) {
					d.errorf(k, "groups."+k.Value, "group names use letters, digits and ._- only")
					continue
				}
				if _, dup := inv.Groups[k.Value]; dup {
					d.errorf(k, "groups."+k.Value, "is given twice")
					continue
				}
				inv.Groups[k.Value] = d.strings(body, "groups."+k.Value)
				inv.lines["groups."+k.Value] = body
			}
		},
	})
	d.require(root, "", seen, "hosts")
	// Groups are checked once all hosts are known, so order in the file does
	// not matter; one resolver resolves each group once.
	if len(inv.Hosts) == 0 || tooMany {
		return inv // the hosts or groups problem says it all
	}
	if err := inv.checkGlobWork(nil); err != nil {
		d.errorf(inv.lines["groups"], "groups", "%v", err)
		return inv
	}
	inv.selectable = true
	r := newResolver(inv)
	for _, g := range keysOf(inv.Groups) {
		if ctx.Err() != nil {
			return inv
		}
		if _, err := r.group(g); err != nil {
			d.errorf(inv.lines["groups."+g], "groups."+g, "%v", err)
		}
		if _, clash := inv.byName[g]; clash {
			d.errorf(inv.lines["groups."+g], "groups."+g, "is also a host name; rename one so selections are unambiguous")
		}
	}
	return inv
}

func (d decoder) host(n *yaml.Node, name string) (Host, bool) {
	p := "hosts." + name
	h := Host{Name: name, BalancerServer: name}
	seen := d.mapping(n, p, map[string]func(k, v *yaml.Node){
		"address": func(_, v *yaml.Node) {
			h.Address = d.str(v, join(p, "address"))
			if h.Address != "" && !validAddress(h.Address) {
				d.errorf(v, join(p, "address"), "%q is not an IP address or DNS name", h.Address)
			}
		},
		"port": func(_, v *yaml.Node) { h.Port = d.port(v, join(p, "port")) },
		"user": func(_, v *yaml.Node) {
			h.User = d.str(v, join(p, "user"))
			if h.User != "" && !sshUserRe.MatchString(h.User) {
				d.errorf(v, join(p, "user"), "%q is not a valid user name", h.User)
			}
		},
		"balancer_server": func(_, v *yaml.Node) {
			h.BalancerServer = d.str(v, join(p, "balancer_server"))
			if h.BalancerServer != "" && !serverRe.MatchString(h.BalancerServer) {
				d.errorf(v, join(p, "balancer_server"), "%q is not a valid server name", h.BalancerServer)
			}
		},
	})
	if n.Kind != yaml.MappingNode {
		return h, false
	}
	d.require(n, p, seen, "address")
	return h, h.Address != ""
}

func validAddress(s string) bool {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Zone() == "" // a zone is a local interface name, not an address to reach
	}
	return len(s) <= 253 && dnsNameRe.MatchString(s)
}

// Host returns the inventory host of that name.
func (inv *Inventory) Host(name string) (Host, bool) {
	i, ok := inv.byName[name]
	if !ok {
		return Host{}, false
	}
	return inv.Hosts[i], true
}

// Limits that keep validating any inventory quick and small: group
// expansion costs a few machine words per item and host (see hostSet), and
// wildcard matching the patterns' length times the host names' length.
const (
	maxHosts  = 10000
	maxGroups = 10000
	// maxGlobWork bounds the bytes of distinct wildcard patterns times the
	// bytes of host names: about a second of matching at worst.
	maxGlobWork = 1 << 27
	// maxListed bounds the problems one selection lists, so that a group of
	// thousands of bad items still reads as one line.
	maxListed = 10
)

// Select resolves a taboot-style selection: each item is a group name, a
// host name or a glob over host names ("web-*"); an item starting with "!"
// removes what it matches. Hosts come back in inventory order. Every item
// must match something, so a typo cannot silently shrink a rollout.
func (inv *Inventory) Select(items []string) ([]Host, error) {
	if err := inv.checkGlobWork(items); err != nil {
		return nil, err
	}
	set, err := newResolver(inv).selection(items, true)
	if err != nil {
		return nil, err
	}
	var out []Host
	for i, h := range inv.Hosts {
		if set.has(i) {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("selects no hosts (%s)", strings.Join(items, ", "))
	}
	return out, nil
}

// hostSet holds one bit per host of Inventory.Hosts: a group costs
// len(Hosts)/8 bytes and including it a few words per item, however deep
// the nesting.
type hostSet []uint64

func (inv *Inventory) newSet() hostSet { return make(hostSet, (len(inv.Hosts)+63)/64) }
func (s hostSet) add(i int)            { s[i/64] |= 1 << (i % 64) }
func (s hostSet) has(i int) bool       { return s[i/64]&(1<<(i%64)) != 0 }
func (s hostSet) union(o hostSet) {
	for i := range s {
		s[i] |= o[i]
	}
}
func (s hostSet) minus(o hostSet) {
	for i := range s {
		s[i] &^= o[i]
	}
}
func (s hostSet) empty() bool { return !slices.ContainsFunc(s, func(w uint64) bool { return w != 0 }) }

// resolver expands selections over one inventory. Each group is resolved
// and each wildcard pattern matched once (memoized), so expansion takes
// linear time: `g0: [g1, g1]`, `g1: [g2, g2]`, ... is not exponential.
type resolver struct {
	inv      *Inventory
	done     map[string]groupResult
	visiting map[string]int // group -> its depth in stack
	stack    []string
	cycles   map[string]string // group -> message, for groups on a cycle
	globs    map[string]hostSet
}

type groupResult struct {
	set hostSet
	err error
}

// errInCycle marks an item that closes a cycle; the cycle is reported for
// each group on it instead.
var errInCycle = errors.New("in a cycle")

func newResolver(inv *Inventory) *resolver {
	return &resolver{inv: inv, done: map[string]groupResult{}, visiting: map[string]int{}, cycles: map[string]string{}, globs: map[string]hostSet{}}
}

func isWildcard(pattern string) bool { return strings.ContainsAny(pattern, `*?[\`) }

// checkGlobWork refuses wildcard patterns, in the groups and in a selection,
// that would take too long to match against every host name.
func (inv *Inventory) checkGlobWork(selection []string) error {
	hostLen := 0
	for _, h := range inv.Hosts {
		hostLen += len(h.Name)
	}
	seen := map[string]bool{}
	patternLen := 0
	count := func(items []string) {
		for _, item := range items {
			p := strings.TrimPrefix(item, "!")
			if isWildcard(p) && !seen[p] {
				seen[p] = true
				patternLen += len(p)
			}
		}
	}
	for _, items := range inv.Groups {
		count(items)
	}
	count(selection)
	if patternLen*hostLen > maxGlobWork {
		return fmt.Errorf("%d wildcard patterns (%d bytes) are too many to match against %d hosts: at most %d bytes of distinct patterns with *, ? or [ for host names of %d bytes in all; name hosts or groups instead", len(seen), patternLen, len(inv.Hosts), maxGlobWork/hostLen, hostLen)
	}
	return nil
}

// selection resolves a list of items: everything the items without "!"
// match, minus everything the "!" items match, whatever their order (as
// Ansible does). Every item must match something. top is true for a
// selection outside the inventory (a playbook's hosts), which is told what is
// wrong with a group it names; inside, each group reports its own problems.
func (r *resolver) selection(items []string, top bool) (hostSet, error) {
	include, exclude := r.inv.newSet(), r.inv.newSet()
	var problems []string
	for _, item := range items {
		pattern, negated := strings.CutPrefix(item, "!")
		matched, err := r.match(pattern, top)
		switch {
		case errors.Is(err, errInCycle):
		case err != nil:
			problems = append(problems, err.Error())
		case matched.empty():
			problems = append(problems, fmt.Sprintf("%q matches no host or group in %s", item, r.inv.file))
		case negated:
			exclude.union(matched)
		default:
			include.union(matched)
		}
	}
	if len(problems) > 0 {
		return nil, listProblems(problems)
	}
	include.minus(exclude)
	return include, nil
}

// listProblems joins distinct problems into one line, at most maxListed.
func listProblems(problems []string) error {
	seen := map[string]bool{}
	var out []string
	for _, p := range problems {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if len(out) > maxListed {
		out = append(out[:maxListed], fmt.Sprintf("and %d more", len(out)-maxListed))
	}
	return errors.New(strings.Join(out, "; "))
}

// match returns the hosts a single pattern names: a group, a host name or a
// wildcard pattern over host names.
func (r *resolver) match(pattern string, top bool) (hostSet, error) {
	if _, ok := r.inv.Groups[pattern]; ok {
		set, err := r.group(pattern)
		switch {
		case err == nil, errors.Is(err, errInCycle):
			return set, err
		case top:
			return nil, fmt.Errorf("group %q: %w", pattern, err)
		case r.cycles[pattern] != "" && r.cycles[r.stack[len(r.stack)-1]] != "":
			return nil, errInCycle // the cycle both are on says it
		}
		return nil, fmt.Errorf("group %q is invalid", pattern)
	}
	set := r.inv.newSet()
	if !isWildcard(pattern) {
		if i, ok := r.inv.byName[pattern]; ok {
			set.add(i)
		}
		return set, nil
	}
	if set, ok := r.globs[pattern]; ok {
		return set, nil
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("%q is not a valid pattern: %v", pattern, err)
	}
	for i, h := range r.inv.Hosts {
		if ok, _ := path.Match(pattern, h.Name); ok {
			set.add(i)
		}
	}
	r.globs[pattern] = set
	return set, nil
}

// group resolves a group once; groups on a cycle and groups that include an
// invalid group are invalid.
func (r *resolver) group(name string) (hostSet, error) {
	if res, ok := r.done[name]; ok {
		return res.set, res.err
	}
	if depth, ok := r.visiting[name]; ok {
		cycle := strings.Join(append(slices.Clone(r.stack[depth:]), name), " -> ")
		for _, g := range r.stack[depth:] {
			if r.cycles[g] == "" {
				r.cycles[g] = fmt.Sprintf("group %q includes itself (%s)", g, cycle)
			}
		}
		return nil, errInCycle
	}
	r.visiting[name] = len(r.stack)
	r.stack = append(r.stack, name)
	set, err := r.selection(r.inv.Groups[name], false)
	r.stack = r.stack[:len(r.stack)-1]
	delete(r.visiting, name)
	if msg := r.cycles[name]; msg != "" {
		if err != nil {
			msg += "; " + err.Error()
		}
		set, err = nil, errors.New(msg)
	} else if err == nil && set.empty() {
		err = fmt.Errorf("selects no hosts (%s)", strings.Join(r.inv.Groups[name], ", "))
	}
	r.done[name] = groupResult{set: set, err: err}
	return set, err
}

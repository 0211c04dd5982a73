package playbook

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
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

func parseInventory(file string, data []byte, p *problems) *Inventory {
	d := decoder{file: file, problems: p}
	inv := &Inventory{file: file, Groups: map[string][]string{}, byName: map[string]int{}, lines: map[string]*yaml.Node{}}
	root := d.parseDocument(data)
	if root == nil {
		return inv
	}
	seen := d.mapping(root, "", map[string]func(k, v *yaml.Node){
		"hosts": func(_, v *yaml.Node) {
			if v.Kind != yaml.MappingNode {
				d.errorf(v, "hosts", "must map host names to {address: ...}, not %s", describeNode(v))
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
		"groups": func(_, v *yaml.Node) {
			if v.Kind != yaml.MappingNode {
				d.errorf(v, "groups", "must map group names to lists of host names or patterns, not %s", describeNode(v))
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
	// Groups are checked once all hosts are known, so order in the file does not matter.
	for _, g := range keysOf(inv.Groups) {
		if _, err := inv.Select(inv.Groups[g]); err != nil {
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

// Select resolves a taboot-style selection: each item is a group name, a
// host name or a glob over host names ("web-*"); an item starting with "!"
// removes what it matches. Hosts come back in inventory order. Every item
// must match something, so a typo cannot silently shrink a rollout.
func (inv *Inventory) Select(items []string) ([]Host, error) {
	names, err := inv.resolve(items, map[string]bool{})
	if err != nil {
		return nil, err
	}
	chosen := map[string]bool{}
	for _, n := range names {
		chosen[n] = true
	}
	var out []Host
	for _, h := range inv.Hosts {
		if chosen[h.Name] {
			out = append(out, h)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("selects no hosts (%s)", strings.Join(items, ", "))
	}
	return out, nil
}

// resolve returns the host names a list of items selects: everything the
// items without "!" match, minus everything the "!" items match, whatever
// their order (as Ansible does). Every item must match something.
func (inv *Inventory) resolve(items []string, visiting map[string]bool) ([]string, error) {
	var include, exclude []string
	var problems []string
	for _, item := range items {
		pattern, negated := strings.CutPrefix(item, "!")
		matched, err := inv.match(pattern, visiting)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case len(matched) == 0:
			problems = append(problems, fmt.Sprintf("%q matches no host or group in %s", item, inv.file))
		case negated:
			exclude = append(exclude, matched...)
		default:
			include = append(include, matched...)
		}
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return without(include, exclude), nil
}

// match returns the host names a single pattern names; groups may include
// groups, and a cycle is an error.
func (inv *Inventory) match(pattern string, visiting map[string]bool) ([]string, error) {
	if members, ok := inv.Groups[pattern]; ok {
		if visiting[pattern] {
			return nil, fmt.Errorf("group %q includes itself", pattern)
		}
		visiting[pattern] = true
		defer delete(visiting, pattern)
		names, err := inv.resolve(members, visiting)
		if err != nil {
			return nil, fmt.Errorf("group %q: %w", pattern, err)
		}
		return names, nil
	}
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("%q is not a valid pattern: %v", pattern, err)
	}
	var out []string
	for _, h := range inv.Hosts {
		if ok, _ := path.Match(pattern, h.Name); ok {
			out = append(out, h.Name)
		}
	}
	return out, nil
}

func without(list, remove []string) []string {
	drop := map[string]bool{}
	for _, r := range remove {
		drop[r] = true
	}
	out := list[:0:0]
	for _, s := range list {
		if !drop[s] {
			out = append(out, s)
		}
	}
	return out
}

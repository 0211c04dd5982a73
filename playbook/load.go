package playbook

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// Deployment is everything one environment's rollout is made from, read and
// cross-checked from one revision of the deploy repository.
type Deployment struct {
	Environment   *Environment
	HistoryBranch string
	Manifest      *Manifest
	Inventory     *Inventory
	Playbook      *Playbook
	// Hosts are the inventory hosts the playbook selects, in inventory order.
	Hosts []Host
}

// UnknownEnvironmentError names an environment lieutenant.yaml lacks.
type UnknownEnvironmentError struct {
	Name  string
	Known []string
}

func (e *UnknownEnvironmentError) Error() string {
	return fmt.Sprintf("environment %q is not in %s (known: %s)", e.Name, ConfigFile, strings.Join(e.Known, ", "))
}

// LoadConfig reads lieutenant.yaml.
func LoadConfig(fsys fs.FS) (*Config, error) {
	var p problems
	cfg := readConfig(fsys, &p)
	return cfg, p.err()
}

func readConfig(fsys fs.FS, p *problems) *Config {
	data, ok := readFile(fsys, ConfigFile, p)
	if !ok {
		return &Config{Environments: map[string]*Environment{}}
	}
	return parseConfig(ConfigFile, data, p)
}

func readFile(fsys fs.FS, name string, p *problems) ([]byte, bool) {
	if name == "" {
		return nil, false // already reported as a missing field
	}
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg = "file not found in the repository at this revision (is it committed?)"
		}
		p.list = append(p.list, FieldError{File: name, Msg: msg})
		return nil, false
	}
	return data, true
}

// Load reads and checks the files of one environment. Every problem in every
// file is reported at once, in a *ValidationError.
func Load(fsys fs.FS, env string) (*Deployment, error) {
	var p problems
	cfg := readConfig(fsys, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	e, ok := cfg.Environments[env]
	if !ok {
		return nil, &UnknownEnvironmentError{Name: env, Known: cfg.Order}
	}
	dep := loadEnvironment(fsys, cfg, e, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return dep, nil
}

// ValidateAll checks lieutenant.yaml and the files of every environment.
func ValidateAll(fsys fs.FS) (*Config, error) {
	var p problems
	cfg := readConfig(fsys, &p)
	loaded := map[string]bool{}
	for _, name := range cfg.Order {
		e := cfg.Environments[name]
		// Environments often share a playbook; report its problems once.
		before := len(p.list)
		loadEnvironment(fsys, cfg, e, &p)
		p.list = dedupe(p.list, before, loaded)
	}
	return cfg, p.err()
}

func dedupe(list []FieldError, from int, seen map[string]bool) []FieldError {
	out := list[:from]
	for _, fe := range list[from:] {
		key := fe.Error()
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, fe)
	}
	return out
}

func loadEnvironment(fsys fs.FS, cfg *Config, e *Environment, p *problems) *Deployment {
	dep := &Deployment{Environment: e, HistoryBranch: cfg.HistoryBranch}
	if data, ok := readFile(fsys, e.Manifest, p); ok {
		dep.Manifest = parseManifest(e.Manifest, data, p)
	}
	if data, ok := readFile(fsys, e.Inventory, p); ok {
		dep.Inventory = parseInventory(e.Inventory, data, p)
	}
	if data, ok := readFile(fsys, e.Playbook, p); ok {
		dep.Playbook = parsePlaybook(e.Playbook, data, p)
	}
	if dep.Inventory == nil || dep.Playbook == nil || len(dep.Playbook.Hosts) == 0 {
		return dep
	}
	hosts, err := dep.Inventory.Select(dep.Playbook.Hosts)
	if err != nil {
		p.add(e.Playbook, dep.Playbook.hostsNode, "hosts", "%v (environment %s, inventory %s)", err, e.Name, e.Inventory)
		return dep
	}
	dep.Hosts = hosts
	servers := map[string]string{}
	for _, h := range hosts {
		if other, dup := servers[h.BalancerServer]; dup {
			p.add(e.Inventory, nil, "hosts."+h.Name+".balancer_server", "%q is also the balancer server of %s; each host needs its own", h.BalancerServer, other)
		}
		servers[h.BalancerServer] = h.Name
	}
	if dep.Manifest != nil {
		for _, s := range dep.Playbook.Steps {
			if in, ok := s.(*installStep); ok && in.manager == "rpm" {
				for _, pkg := range dep.Manifest.Packages {
					if pkg.Arch == "" {
						p.add(e.Manifest, nil, "packages", "%s has no arch; manager: rpm in %s needs one to find the file", pkg.NEVRA(), e.Playbook)
					}
				}
			}
		}
	}
	return dep
}

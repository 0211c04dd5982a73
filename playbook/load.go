package playbook

import (
	"context"
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

// maxFileSize bounds each file of the deploy repository: real ones are a
// few kilobytes, and every check stays quick on anything up to it.
const maxFileSize = 1 << 20

func readFile(fsys fs.FS, name string, p *problems) ([]byte, bool) {
	if name == "" {
		return nil, false // already reported as a missing field
	}
	tooBig := func(size int64) bool {
		if size <= maxFileSize {
			return false
		}
		p.list = append(p.list, FieldError{File: name, Msg: fmt.Sprintf("is %d bytes; files of the deploy repository may be at most %d (1 MiB), make it smaller", size, maxFileSize)})
		return true
	}
	// Stat first, so that a huge file is refused without being read.
	if info, err := fs.Stat(fsys, name); err == nil && tooBig(info.Size()) {
		return nil, false
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
	if tooBig(int64(len(data))) {
		return nil, false
	}
	return data, true
}

// Load reads and checks the files of one environment. Every problem in every
// file is reported at once, in a *ValidationError. It needs no context: each
// file is at most maxFileSize and every check is linear in it.
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
	dep := loadEnvironment(context.Background(), fsys, cfg, e, &p)
	if err := p.err(); err != nil {
		return nil, err
	}
	return dep, nil
}

// ValidateAll checks lieutenant.yaml and the files of every environment. It
// stops as soon as ctx is done, with ctx's error.
func ValidateAll(ctx context.Context, fsys fs.FS) (*Config, error) {
	var p problems
	cfg := readConfig(fsys, &p)
	loaded := map[string]bool{}
	for _, name := range cfg.Order {
		e := cfg.Environments[name]
		// Environments often share a playbook; report its problems once.
		before := len(p.list)
		loadEnvironment(ctx, fsys, cfg, e, &p)
		if err := ctx.Err(); err != nil {
			return cfg, fmt.Errorf("validate environment %s: %w", name, err)
		}
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

func loadEnvironment(ctx context.Context, fsys fs.FS, cfg *Config, e *Environment, p *problems) *Deployment {
	dep := &Deployment{Environment: e, HistoryBranch: cfg.HistoryBranch}
	if data, ok := readFile(fsys, e.Manifest, p); ok {
		dep.Manifest = parseManifest(e.Manifest, data, p)
	}
	if data, ok := readFile(fsys, e.Inventory, p); ok {
		dep.Inventory = parseInventory(ctx, e.Inventory, data, p)
	}
	if data, ok := readFile(fsys, e.Playbook, p); ok {
		dep.Playbook = parsePlaybook(e.Playbook, data, p)
	}
	if ctx.Err() != nil || dep.Inventory == nil || !dep.Inventory.selectable || dep.Playbook == nil || len(dep.Playbook.Hosts) == 0 {
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

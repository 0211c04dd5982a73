package playbook

import (
	"path"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// ConfigFile is the file at the root of a deploy repository that ties
// environments to their manifest, inventory, playbook, balancer and SSH
// settings.
const ConfigFile = "lieutenant.yaml"

// DefaultHistoryBranch holds run records when lieutenant.yaml names none.
const DefaultHistoryBranch = "lieutenant/runs"

// Config is lieutenant.yaml.
type Config struct {
	HistoryBranch string
	Environments  map[string]*Environment
	// Order is the environments' names in the order the file lists them.
	Order []string
}

// Environment is one deploy target: which files describe it and how to reach it.
type Environment struct {
	Name      string
	Manifest  string // paths inside the repository
	Inventory string
	Playbook  string
	Balancer  BalancerConfig
	SSH       SSHConfig
}

// BalancerConfig selects and configures the load-balancer adapter.
type BalancerConfig struct {
	Type    string // haproxy, command or none
	API     string // haproxy: runtime API address (ipv4@host:port, host:port, unix@/path)
	Backend string // haproxy: backend name
	// MinUp is the fewest servers that must stay in service; a drain that
	// would go below it is refused.
	MinUp int
	// Drain, Enable and State are the command adapter's argv lists; the
	// argument "{server}" is replaced by the server name.
	Drain, Enable, State []string
}

// SSHConfig is how lieutenant reaches the hosts of an environment.
type SSHConfig struct {
	User           string
	Port           int
	Sudo           bool
	KnownHosts     []string
	IdentityFiles  []string
	Agent          bool
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	// MaxHandshakes bounds the SSH connections being opened at once; 0
	// means the transport's default.
	MaxHandshakes int
}

var (
	envNameRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	branchRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)
	sshUserRe  = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*\$?$`)
	backendRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]*$`)
	addrCharRe = regexp.MustCompile(`^[A-Za-z0-9_.:@/\[\]-]+$`)
)

func parseConfig(file string, data []byte, p *problems) *Config {
	d := decoder{file: file, problems: p}
	cfg := &Config{HistoryBranch: DefaultHistoryBranch, Environments: map[string]*Environment{}}
	root := d.parseDocument(data)
	if root == nil {
		return cfg
	}
	seen := d.mapping(root, "", map[string]func(k, v *yaml.Node){
		"history_branch": func(_, v *yaml.Node) {
			b := d.str(v, "history_branch")
			if !validBranch(b) {
				d.errorf(v, "history_branch", "%q is not a valid branch name; use one such as lieutenant/runs", b)
				return
			}
			cfg.HistoryBranch = b
		},
		"environments": func(_, v *yaml.Node) {
			if v.Kind != yaml.MappingNode {
				d.errorf(v, "environments", "must be a mapping of environment names to settings, not %s", describeNode(v))
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, body := v.Content[i], v.Content[i+1]
				name := k.Value
				if !envNameRe.MatchString(name) {
					d.errorf(k, "environments."+name, "environment names use lowercase letters, digits, - and _ only")
					continue
				}
				if cfg.Environments[name] != nil {
					d.errorf(k, "environments."+name, "is given twice")
					continue
				}
				cfg.Environments[name] = d.environment(body, name)
				cfg.Order = append(cfg.Order, name)
			}
		},
	})
	d.require(root, "", seen, "environments")
	if seen["environments"] && len(cfg.Order) == 0 {
		d.errorf(root, "environments", "names no environment; add one, for example `production:`")
	}
	return cfg
}

// validBranch follows git check-ref-format, narrowed to plain names.
func validBranch(b string) bool {
	if !branchRe.MatchString(b) || b == "HEAD" || strings.HasSuffix(b, "/") || strings.HasSuffix(b, ".lock") {
		return false
	}
	for _, part := range strings.Split(b, "/") {
		if part == "" || strings.HasPrefix(part, ".") || strings.HasSuffix(part, ".lock") {
			return false
		}
	}
	return !strings.Contains(b, "..")
}

func (d decoder) environment(n *yaml.Node, name string) *Environment {
	p := "environments." + name
	env := &Environment{
		Name:     name,
		Balancer: BalancerConfig{Type: "none"},
		SSH:      SSHConfig{Agent: true, ConnectTimeout: 10 * time.Second, CommandTimeout: 10 * time.Minute},
	}
	repoPath := func(field string, dst *string) func(_, v *yaml.Node) {
		return func(_, v *yaml.Node) {
			s := d.str(v, join(p, field))
			if s == "" {
				return
			}
			if path.IsAbs(s) || path.Clean(s) != s || strings.HasPrefix(s, "../") || s == ".." || s == "." {
				d.errorf(v, join(p, field), "%q must be a path inside the repository, such as releases/%s.yaml", s, name)
				return
			}
			*dst = s
		}
	}
	seen := d.mapping(n, p, map[string]func(k, v *yaml.Node){
		"manifest":  repoPath("manifest", &env.Manifest),
		"inventory": repoPath("inventory", &env.Inventory),
		"playbook":  repoPath("playbook", &env.Playbook),
		"balancer":  func(_, v *yaml.Node) { env.Balancer = d.balancer(v, join(p, "balancer")) },
		"ssh":       func(_, v *yaml.Node) { d.ssh(v, join(p, "ssh"), &env.SSH) },
	})
	d.require(n, p, seen, "manifest", "inventory", "playbook")
	return env
}

func (d decoder) balancer(n *yaml.Node, p string) BalancerConfig {
	b := BalancerConfig{}
	argv := func(field string, dst *[]string) func(_, v *yaml.Node) {
		return func(_, v *yaml.Node) {
			if v.Kind != yaml.SequenceNode {
				d.errorf(v, join(p, field), `must be a command as a list of arguments, such as ["/usr/local/bin/f5", "drain", "{server}"]`)
				return
			}
			*dst = d.strings(v, join(p, field))
		}
	}
	seen := d.mapping(n, p, map[string]func(k, v *yaml.Node){
		"type": func(_, v *yaml.Node) { b.Type = d.str(v, join(p, "type")) },
		"api": func(_, v *yaml.Node) {
			b.API = d.str(v, join(p, "api"))
			if b.API != "" && !addrCharRe.MatchString(b.API) {
				d.errorf(v, join(p, "api"), "%q is not an address such as 127.0.0.1:9999 or unix@/run/haproxy/admin.sock", b.API)
			}
		},
		"backend": func(_, v *yaml.Node) {
			b.Backend = d.str(v, join(p, "backend"))
			if b.Backend != "" && !backendRe.MatchString(b.Backend) {
				d.errorf(v, join(p, "backend"), "%q is not a valid HAProxy backend name", b.Backend)
			}
		},
		"min_up": func(_, v *yaml.Node) {
			if m, ok := d.integer(v, join(p, "min_up")); ok {
				if m < 0 {
					d.errorf(v, join(p, "min_up"), "must be 0 or more")
				}
				b.MinUp = m
			}
		},
		"drain":  argv("drain", &b.Drain),
		"enable": argv("enable", &b.Enable),
		"state":  argv("state", &b.State),
	})
	d.require(n, p, seen, "type")
	switch b.Type {
	case "haproxy":
		d.require(n, p, seen, "api", "backend")
		for _, f := range []string{"drain", "enable", "state"} {
			if seen[f] {
				d.errorf(n, join(p, f), "belongs to type: command, not haproxy")
			}
		}
		if b.API != "" && b.Backend != "" {
			if _, err := lb.NewHAProxy(b.API, b.Backend); err != nil {
				d.errorf(n, p, "%v", err)
			}
		}
	case "command":
		d.require(n, p, seen, "drain", "enable", "state")
		for _, f := range []string{"api", "backend"} {
			if seen[f] {
				d.errorf(n, join(p, f), "belongs to type: haproxy, not command")
			}
		}
		if seen["drain"] && seen["enable"] && seen["state"] {
			if _, err := lb.NewCommand(lb.CommandConfig{Drain: b.Drain, Enable: b.Enable, State: b.State}); err != nil {
				d.errorf(n, p, "%v", err)
			}
		}
	case "none":
		if seen["min_up"] {
			d.errorf(n, join(p, "min_up"), "has no effect without a balancer")
		}
	case "":
	default:
		d.errorf(n, join(p, "type"), "unknown balancer type %q (known: haproxy, command, none)", b.Type)
	}
	return b
}

func (d decoder) ssh(n *yaml.Node, p string, s *SSHConfig) {
	d.mapping(n, p, map[string]func(k, v *yaml.Node){
		"user": func(_, v *yaml.Node) {
			s.User = d.str(v, join(p, "user"))
			if s.User != "" && !sshUserRe.MatchString(s.User) {
				d.errorf(v, join(p, "user"), "%q is not a valid user name", s.User)
			}
		},
		"port": func(_, v *yaml.Node) { s.Port = d.port(v, join(p, "port")) },
		"sudo": func(_, v *yaml.Node) { s.Sudo = d.boolean(v, join(p, "sudo")) },
		"known_hosts": func(_, v *yaml.Node) {
			s.KnownHosts = d.strings(v, join(p, "known_hosts"))
		},
		"identity_files": func(_, v *yaml.Node) {
			s.IdentityFiles = d.strings(v, join(p, "identity_files"))
		},
		"agent":           func(_, v *yaml.Node) { s.Agent = d.boolean(v, join(p, "agent")) },
		"connect_timeout": func(_, v *yaml.Node) { s.ConnectTimeout = d.positiveDuration(v, join(p, "connect_timeout")) },
		"command_timeout": func(_, v *yaml.Node) { s.CommandTimeout = d.positiveDuration(v, join(p, "command_timeout")) },
		"max_handshakes": func(_, v *yaml.Node) {
			if n, ok := d.integer(v, join(p, "max_handshakes")); ok && n < 1 {
				d.errorf(v, join(p, "max_handshakes"), "%d: want at least 1", n)
			} else {
				s.MaxHandshakes = n
			}
		},
	})
}

func (d decoder) port(n *yaml.Node, p string) int {
	v, ok := d.integer(n, p)
	if ok && (v < 1 || v > 65535) {
		d.errorf(n, p, "%d is not a TCP port (1-65535)", v)
		return 0
	}
	return v
}

func (d decoder) positiveDuration(n *yaml.Node, p string) time.Duration {
	v := d.duration(n, p)
	if v == 0 && n.Kind == yaml.ScalarNode {
		if _, err := time.ParseDuration(n.Value); err == nil {
			d.errorf(n, p, "must be longer than 0s")
		}
	}
	return v
}

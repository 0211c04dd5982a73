package releases

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"

	formatcfg "github.com/go-git/go-git/v5/plumbing/format/config"
)

// Signature is a person as Git records them in commits.
type Signature struct {
	Name  string `json:"name" yaml:"name"`
	Email string `json:"email" yaml:"email"`
}

func (s Signature) String() string { return s.Name + " <" + s.Email + ">" }

// Operator says who started a run and from where, for the run record.
type Operator struct {
	Name  string `json:"name" yaml:"name"`   // Git identity, see Identity
	Email string `json:"email" yaml:"email"` // Git identity, see Identity
	User  string `json:"user" yaml:"user"`   // login name on the machine
	Host  string `json:"host" yaml:"host"`   // host name of the machine
}

// Who names the operator in records, locks and decisions: "Name <email>".
func (o Operator) Who() string { return o.Name + " <" + o.Email + ">" }

// Where is the machine and login the operator works from: "user@host".
func (o Operator) Where() string { return o.User + "@" + o.Host }

// Identity is who history commits are made as, chosen the way `git commit`
// chooses an author: GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL, then author.* and
// user.* from the repository's config, the global config
// (GIT_CONFIG_GLOBAL, or ~/.gitconfig and $XDG_CONFIG_HOME/git/config) and
// the system config (GIT_CONFIG_SYSTEM or /etc/gitconfig, unless
// GIT_CONFIG_NOSYSTEM). Where git would refuse to commit, the fallback is
// $USER and $USER@hostname, so an unattended run still records something
// true. Config include directives are not followed.
func (r *Repo) Identity() Signature {
	name, email := os.Getenv("GIT_AUTHOR_NAME"), os.Getenv("GIT_AUTHOR_EMAIL")
	configs := []*formatcfg.Config{r.localConfig()}
	for _, file := range userConfigFiles() {
		configs = append(configs, readConfigFile(file))
	}
	for _, cfg := range configs {
		if name != "" && email != "" {
			break
		}
		n, e := identityFromConfig(cfg)
		if name == "" {
			name = n
		}
		if email == "" {
			email = e
		}
	}
	login, host := loginName(), hostName()
	if name == "" {
		name = login
	}
	if email == "" {
		email = login + "@" + host
	}
	return Signature{Name: sanitizeIdent(name, login), Email: sanitizeIdent(email, login+"@"+host)}
}

// Operator returns the Git identity together with the login and host name,
// for the "who and from where" of a run record.
func (r *Repo) Operator() Operator {
	id := r.Identity()
	return Operator{Name: id.Name, Email: id.Email, User: loginName(), Host: hostName()}
}

// localConfig is the repository's own config; go-git's storage finds it in
// the common dir, also for linked work trees.
func (r *Repo) localConfig() *formatcfg.Config {
	var raw *formatcfg.Config
	_ = r.locked(func() error {
		cfg, err := r.storage.Config()
		if err == nil && cfg.Raw != nil {
			raw = cfg.Raw
		}
		return nil
	})
	if raw == nil {
		raw = formatcfg.New()
	}
	return raw
}

// userConfigFiles lists the global and system config files in order of
// precedence, highest first, honouring the variables git honours.
func userConfigFiles() []string {
	var files []string
	if c := os.Getenv("GIT_CONFIG_GLOBAL"); c != "" {
		files = append(files, c)
	} else {
		home, _ := os.UserHomeDir()
		if home != "" {
			files = append(files, filepath.Join(home, ".gitconfig"))
		}
		if xdg := os.Getenv("XDG_CONFIG_HOME"); xdg != "" {
			files = append(files, filepath.Join(xdg, "git", "config"))
		} else if home != "" {
			files = append(files, filepath.Join(home, ".config", "git", "config"))
		}
	}
	if !envBool("GIT_CONFIG_NOSYSTEM") {
		if c := os.Getenv("GIT_CONFIG_SYSTEM"); c != "" {
			files = append(files, c)
		} else {
			files = append(files, "/etc/gitconfig")
		}
	}
	return files
}

func envBool(name string) bool {
	switch strings.ToLower(os.Getenv(name)) {
	case "", "0", "false", "no", "off":
		return false
	}
	return true
}

// readConfigFile parses one config file. A missing or unreadable file
// yields an empty config: git treats a missing file the same way, and an
// identity is never worth failing a deploy for.
func readConfigFile(file string) *formatcfg.Config {
	cfg := formatcfg.New()
	f, err := os.Open(file)
	if err != nil {
		return cfg
	}
	defer f.Close()
	if err := formatcfg.NewDecoder(f).Decode(cfg); err != nil {
		return formatcfg.New()
	}
	return cfg
}

// identityFromConfig reads author.name/email, falling back to
// user.name/email.
func identityFromConfig(cfg *formatcfg.Config) (name, email string) {
	// Later values win, as in git; a section may appear several times.
	get := func(section, key string) string {
		v := ""
		for _, s := range cfg.Sections {
			if s.IsName(section) && s.Options.Has(key) {
				v = s.Option(key)
			}
		}
		return v
	}
	name, email = get("author", "name"), get("author", "email")
	if name == "" {
		name = get("user", "name")
	}
	if email == "" {
		email = get("user", "email")
	}
	return name, email
}

func loginName() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "unknown"
}

func hostName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// sanitizeIdent removes what git strips from identities and what
// `git fsck --strict` rejects in them: angle brackets and line breaks, and
// leading or trailing whitespace and punctuation.
func sanitizeIdent(s, fallback string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '<', '>', '\n', '\r', 0:
			return -1
		}
		return r
	}, s)
	s = strings.Trim(s, " \t.,:;\"'")
	if s == "" {
		return fallback
	}
	return s
}

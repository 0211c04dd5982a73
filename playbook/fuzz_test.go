package playbook

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// The fuzz targets' property: parsing any input never panics and never
// hangs, and either yields a value that passes the package's own checks or
// problems that each name the file and read as one line.

// fuzzDeadline is far above what any input up to the fuzzer's sizes takes;
// the exponential group expansion took minutes on 463 bytes.
const fuzzDeadline = 5 * time.Second

func within(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(fuzzDeadline):
		t.Fatalf("took longer than %s", fuzzDeadline)
	}
}

// seedFiles adds the valid repository's files under dir, and extra inputs.
func seedFiles(f *testing.F, dir string, extra ...string) {
	f.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "valid", dir))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, e := range extra {
		f.Add([]byte(e))
	}
}

// checkProblems asserts that every problem names file and is one line.
func checkProblems(t *testing.T, p *problems, file string) {
	t.Helper()
	for _, fe := range p.list {
		if fe.File != file {
			t.Errorf("problem %q names file %q, want %q", fe.Error(), fe.File, file)
		}
		if msg := fe.Error(); strings.ContainsAny(msg, "\r\n") {
			t.Errorf("problem is not one line: %q", msg)
		}
	}
}

// fuzzFile fuzzes one file's parser: problems must name file and be one
// line each, and a result without problems must pass valid.
func fuzzFile[T any](f *testing.F, file string, parse func(data []byte, p *problems) T, valid func(t *testing.T, v T)) {
	f.Fuzz(func(t *testing.T, data []byte) {
		var p problems
		var v T
		within(t, func() { v = parse(data, &p) })
		checkProblems(t, &p, file)
		if len(p.list) == 0 {
			valid(t, v)
		}
	})
}

func FuzzManifest(f *testing.F) {
	seedFiles(f, "releases/*.yaml",
		"release: &r 1\npackages: [*r]\n",
		"release: 1\npackages: [hello-web-1.1.0-1.x86_64.rpm, {name: a, version: 1, release: 1, arch: x86-64}]\n")
	const file = "releases/production.yaml"
	parse := func(data []byte, p *problems) *Manifest { return parseManifest(file, data, p) }
	fuzzFile(f, file, parse, func(t *testing.T, m *Manifest) {
		if m.Release == "" || len(m.Packages) == 0 {
			t.Errorf("valid manifest without a release or packages: %+v", m)
		}
		for _, pkg := range m.Packages {
			if err := pkg.Validate(); err != nil {
				t.Errorf("accepted package fails Validate: %v", err)
			}
		}
	})
}

func FuzzNEVRA(f *testing.F) {
	for _, s := range []string{"hello-web-1.1.0-1.x86_64", "hello-worker-2.0.1-3.el9", "bash-2:5.1.8-6.el9.aarch64",
		"python3.11-libs-3.11.7-1~rc1.el9", "hello-web-1.1.0-1.x86-64", "hello-web-1.1.0-1.x86_64.rpm", "a-1-1.src"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseNEVRA(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("error is not one line: %q", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Errorf("ParseNEVRA(%q) accepted %+v, which fails Validate: %v", s, p, err)
		}
		// Epoch 0 is written as no epoch, so compare as rpm does.
		back, err := ParseNEVRA(p.NEVRA())
		if err != nil || back.Name != p.Name || back.Arch != p.Arch || CompareEVR(back, p) != 0 || back.NEVRA() != p.NEVRA() {
			t.Errorf("ParseNEVRA(%q) = %+v, but its NEVRA %q parses as %+v, %v", s, p, p.NEVRA(), back, err)
		}
	})
}

func FuzzInventory(f *testing.F) {
	var exp strings.Builder
	exp.WriteString("hosts:\n  web-1: {address: 10.0.0.1}\ngroups:\n")
	for i := 0; i < 30; i++ {
		exp.WriteString("  g" + strconv.Itoa(i) + ": [g" + strconv.Itoa(i+1) + ", g" + strconv.Itoa(i+1) + "]\n")
	}
	exp.WriteString("  g30: [web-1]\n")
	seedFiles(f, "inventory/*.yaml", exp.String(),
		"hosts:\n  a: {address: 10.0.0.1}\ngroups:\n  x: [y, '!a*']\n  y: [x, 'a[']\n")
	const file = "inventory/production.yaml"
	parse := func(data []byte, p *problems) *Inventory { return parseInventory(context.Background(), file, data, p) }
	fuzzFile(f, file, parse, func(t *testing.T, inv *Inventory) {
		if len(inv.Hosts) == 0 {
			t.Fatal("valid inventory without hosts")
		}
		within(t, func() {
			for name := range inv.Groups {
				if hosts, err := inv.Select([]string{name}); err != nil || len(hosts) == 0 {
					t.Errorf("group %q of a valid inventory: %v, %v", name, hosts, err)
				}
			}
		})
		for _, h := range inv.Hosts {
			if !validAddress(h.Address) {
				t.Errorf("host %s has an invalid address %q", h.Name, h.Address)
			}
		}
	})
}

func FuzzPlaybook(f *testing.F) {
	seedFiles(f, "playbooks/*.yaml",
		"hosts: web\nsteps:\n  - command.run: '{{define \"x\"}}{{.Release}}{{end}}'\n",
		"hosts: web\nsteps:\n  - &a sleep: 1s\n")
	const file = "playbooks/web.yaml"
	parse := func(data []byte, p *problems) *Playbook { return parsePlaybook(file, data, p) }
	fuzzFile(f, file, parse, func(t *testing.T, pb *Playbook) {
		if len(pb.Hosts) == 0 || len(pb.Steps) == 0 || len(pb.Strategy.Batches) == 0 {
			t.Errorf("valid playbook without hosts, steps or batches: %+v", pb)
		}
	})
}

func FuzzConfig(f *testing.F) {
	seedFiles(f, ConfigFile, "environments:\n  &p production: {manifest: a, inventory: b, playbook: c}\n")
	parse := func(data []byte, p *problems) *Config { return parseConfig(ConfigFile, data, p) }
	fuzzFile(f, ConfigFile, parse, func(t *testing.T, cfg *Config) {
		if len(cfg.Order) == 0 || len(cfg.Order) != len(cfg.Environments) {
			t.Errorf("valid configuration with environments %v and %d settings", cfg.Order, len(cfg.Environments))
		}
		for _, e := range cfg.Environments {
			if e.Manifest == "" || e.Inventory == "" || e.Playbook == "" {
				t.Errorf("environment %s lacks a file: %+v", e.Name, e)
			}
		}
	})
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"http://{{ .Host.Address }}:8080/health", "{{ .Release }}", "echo {{- .Host.Name -}}",
		"{{define \"x\"}}{{end}}", "{{block \"x\" .}}{{end}}", "{{ range 100000000000 }}x{{ end }}", "{{/* c */}}", "{{ .Host }}"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, src string, withHost bool) {
		var tm tmpl
		var err error
		within(t, func() { tm, err = parseTemplate(src, withHost) })
		if err != nil {
			return
		}
		data := sampleData()
		if !withHost {
			data.Host = TemplateHost{}
		}
		within(t, func() {
			if _, err := tm.render(data); err != nil {
				t.Errorf("accepted template %q does not render: %v", src, err)
			}
			if _, err := tm.render(data.shellQuoted()); err != nil {
				t.Errorf("accepted template %q does not render quoted: %v", src, err)
			}
		})
	})
}

// FuzzRepository replaces one file of the valid repository and validates
// the whole of it, as `lieutenant validate` does.
func FuzzRepository(f *testing.F) {
	base := validRepo(f)
	names := keysOf(base)
	// The first byte picks the file the rest replaces.
	for i, name := range names {
		f.Add(append([]byte{byte(i)}, base[name].Data...))
	}
	f.Add([]byte("\x00hosts:\n  web-1: {address: 10.0.0.1}\ngroups:\n  web: [g0, g0]\n  g0: [g1, g1]\n  g1: [web-1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		repo := maps.Clone(base)
		replaced := names[int(data[0])%len(names)]
		repo[replaced] = &fstest.MapFile{Data: data[1:]}
		var cfg *Config
		var err error
		within(t, func() { cfg, err = ValidateAll(context.Background(), repo) })
		if err == nil {
			for _, env := range cfg.Order {
				if _, err := Load(repo, env); err != nil {
					t.Errorf("validate passes but loading %s fails: %v", env, err)
				}
			}
			return
		}
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("ValidateAll = %v, want a *ValidationError", err)
		}
		for _, fe := range ve.Problems {
			if fe.File == "" || strings.ContainsAny(fe.Error(), "\r\n") {
				t.Errorf("problem without a file or on several lines: %q", fe.Error())
			}
		}
	})
}

package playbook

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// validRepo is testdata/valid as an in-memory tree that cases modify.
func validRepo(t testing.TB) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	root := "testdata/valid"
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		m[filepath.ToSlash(rel)] = &fstest.MapFile{Data: data}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./playbook -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update if the change is intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestLoadValid(t *testing.T) {
	dep, err := Load(validRepo(t), "production")
	if err != nil {
		t.Fatal(err)
	}
	if got := dep.Manifest.Release; got != "2026.11.3" {
		t.Errorf("release = %q", got)
	}
	var nevras []string
	for _, p := range dep.Manifest.Packages {
		nevras = append(nevras, p.NEVRA())
	}
	if got, want := strings.Join(nevras, " "), "hello-web-1.1.0-1.x86_64 hello-worker-2.0.1-3.el9"; got != want {
		t.Errorf("packages = %s, want %s", got, want)
	}
	var hosts []string
	for _, h := range dep.Hosts {
		hosts = append(hosts, h.Name)
	}
	if got, want := strings.Join(hosts, " "), "web-1 web-2 web-3 web-4 web-5"; got != want {
		t.Errorf("selected hosts = %s, want %s", got, want)
	}
	env := dep.Environment
	if env.Balancer.Type != "haproxy" || env.Balancer.MinUp != 2 || !env.SSH.Sudo || env.SSH.User != "deploy" {
		t.Errorf("environment = %+v", env)
	}
	web5, _ := dep.Inventory.Host("web-5")
	if tgt := env.Target(web5); tgt.Port != 2222 || tgt.User != "admin" {
		t.Errorf("web-5 target = %+v, want port 2222 user admin", tgt)
	}
	web1, _ := dep.Inventory.Host("web-1")
	if tgt := env.Target(web1); tgt.Port != 22 || tgt.User != "deploy" {
		t.Errorf("web-1 target = %+v, want defaults port 22 user deploy", tgt)
	}
	var kinds []string
	for _, s := range dep.Playbook.Steps {
		kinds = append(kinds, s.Kind())
	}
	if got, want := strings.Join(kinds, " "), "balancer.drain packages.install service.restart http.check balancer.enable"; got != want {
		t.Errorf("steps = %s, want %s", got, want)
	}
	if g := dep.Playbook.Gate; g.Approval != ApprovalPrompt || g.Soak.String() != "30s" || len(g.Checks) != 1 {
		t.Errorf("gate = %+v", g)
	}
	if _, err := ValidateAll(context.Background(), validRepo(t)); err != nil {
		t.Errorf("ValidateAll: %v", err)
	}
}

func TestLoadUnknownEnvironment(t *testing.T) {
	_, err := Load(validRepo(t), "prod")
	var ue *UnknownEnvironmentError
	if !errors.As(err, &ue) || err.Error() != `environment "prod" is not in lieutenant.yaml (known: production, staging)` {
		t.Fatalf("err = %v", err)
	}
}

// TestValidationErrors checks the messages a user sees for bad input. Each
// case replaces files of the valid repository; the golden file holds every
// problem reported, which must all come out in one go.
func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
	}{
		{"invalid-yaml", map[string]string{"releases/production.yaml": "release: 1\npackages: [\n"}},
		{"shell-metacharacter-in-package", map[string]string{"releases/production.yaml": `
release: 2026.11.3
packages:
  - "hello; rm -rf /"
  - {name: "hello-web$(id)", version: 1.0, release: "1"}
  - hello-web-1.0.0-1.x86_64
  - hello-web-1.1.0-1.x86_64
  - "hello-worker-2.0-1 .x86_64"
`}},
		{"manifest-missing-fields", map[string]string{"releases/production.yaml": `
packages:
  - {name: hello-web, version: 1.0}
  - just-a-name
releas: 2026.11.3
`}},
		{"inventory-host-without-address", map[string]string{"inventory/production.yaml": `
hosts:
  web-1: {address: 10.0.1.11}
  web-2: {balancer_server: web2}
  web-3: {address: "10.0.1.13; reboot", port: 70000}
  "bad host": {address: 10.0.1.14}
groups:
  web: ["web-*", "app-*"]
`}},
		{"playbook-selects-no-hosts", map[string]string{"playbooks/web.yaml": `
hosts: [app, "db-*9"]
steps:
  - service.restart: hello-web
`}},
		{"unknown-steps-and-fields", map[string]string{"playbooks/web.yaml": `
hosts: web
strategy: {batches: [0, "150%", lots], max_parallel: 0, max_failure: 1}
preflight:
  - service.restart: hello-web
steps:
  - balancer.drain: {timout: 60s}
  - packages.install: {manager: apt}
  - servce.restart: hello-web
  - service.restart: "hello web; reboot"
  - http.check: {url: "http://{{ .Host.Adress }}:8080/health", status: 2000}
  - sleep: 5
  - command.run: ""
gate:
  approval: sometimes
  soak: forever
`}},
		{"drain-without-enable", map[string]string{"playbooks/web.yaml": `
hosts: web
steps:
  - balancer.drain
  - packages.install
`}},
		{"config-problems", map[string]string{"lieutenant.yaml": `
environments:
  production:
    manifest: ../elsewhere/production.yaml
    inventory: inventory/production.yaml
    balancer: {type: f5, min_up: -1}
    ssh: {port: "twenty-two", command_timeout: 0s}
  Staging:
    manifest: releases/staging.yaml
`}},
		{"missing-files", map[string]string{"lieutenant.yaml": `
environments:
  production:
    manifest: releases/prod.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yml
`}},
		{"hostile-templates-and-yaml", map[string]string{
			"playbooks/web.yaml": `
hosts: web
steps:
  - command.run: "echo {{ range 100000000000 }}x{{ end }}"
  - command.run: "{{ printf \"%s\" .Release }}"
  - http.check: {url: "http://{{ .Host.Address }}:8080/{{ if .Release }}x{{ end }}"}
gate:
  checks:
    - http.check: {url: "http://{{ .Host.Address }}/version"}
`,
			"releases/production.yaml": "release: &r 2026.11.3\npackages: [*r]\n---\nrelease: again\n",
			"inventory/staging.yaml": `
base: &base {address: 10.0.2.11}
hosts:
  web-1: {<<: *base}
  web-2: {address: 10.0.2.12}
`,
		}},
		{"hostile-inventory-values", map[string]string{"inventory/staging.yaml": `
hosts:
  web-1: {address: 10.0.2.11}
  web-2: {address: "fe80::1%eth0;touch /tmp/pwn", balancer_server: --all}
groups:
  web: ["web-*"]
  web: ["web-1"]
`}},
		// The README refuses anchors, aliases and merge keys, even an anchor
		// nothing refers to, in every file.
		{"yaml-anchors-and-aliases", map[string]string{
			"releases/production.yaml": "release: &unused 2026.11.3\npackages: [hello-web-1.1.0-1.x86_64]\n",
			"playbooks/web.yaml": `
hosts: web
steps:
  - &restart {service.restart: hello-web}
  - *restart
`,
		}},
		{"yaml-anchors-in-config", map[string]string{
			"lieutenant.yaml": `
environments:
  &prod production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
  staging: {<<: {manifest: releases/staging.yaml}, inventory: inventory/staging.yaml, playbook: playbooks/web.yaml}
`,
		}},
		// Templates substitute the listed fields only: no {{define}},
		// {{block}}, {{template}}, comments, or a whole struct.
		{"templates-define-block-template", map[string]string{"playbooks/web.yaml": `
hosts: web
steps:
  - command.run: '{{define "x"}}{{ .Release }}{{end}}echo hi'
  - command.run: '{{define ""}}{{ .Release }}{{end}}'
  - command.run: '{{block "x" .}}{{ .Release }}{{end}}'
  - command.run: '{{template "x"}}'
  - command.run: 'echo {{/* note */}}{{ .Release }}'
  - command.run: 'echo {{ .Host }}'
  - command.run: 'echo {{- .Host.Name -}} {{ .Environment }}'
`}},
		// dnf would fail only once the host is drained.
		{"rpm-file-names-and-arches", map[string]string{"releases/production.yaml": `
release: 2026.11.3
packages:
  - hello-web-1.1.0-1.x86_64.rpm
  - hello-worker-2.0.1-3.el9.x86-64
  - {name: hello-a, version: 1.0, release: "1", arch: x86-64}
  - {name: hello-b, version: 1.0, release: "1", arch: amd65}
  - {name: hello-c, version: 1.0, release: "1.rpm"}
  - {name: hello-d, version: 1.0, release: "1", arch: src}
  - hello-e-1.0-1.X86_64
  - hello-f-1.0-1.aarch64
`}},
		// "" read as "not given": a host without an address vanished
		// silently, and an empty release passed.
		{"empty-strings", map[string]string{
			"releases/production.yaml": "release: \"\"\npackages: [hello-web-1.1.0-1.x86_64]\n",
			"inventory/staging.yaml":   "hosts:\n  web-1: {address: \"\"}\n  web-2: {address: 10.0.2.12, user: ''}\ngroups:\n  web: [web-1, web-2]\n",
		}},
		// Each problem once, at its group, however many groups include it.
		{"group-problems", map[string]string{"inventory/staging.yaml": `
hosts:
  web-1: {address: 10.0.2.11}
groups:
  web: [g0]
  g0: [g1, g1, "!nothing-*"]
  g1: [g2, g2]
  g2: [app-1, app-1, "web-["]
  loop: [loop2]
  loop2: [loop, web-1]
  empty: [web-1, "!web-*"]
`}},
		{"balancer-and-branch", map[string]string{"lieutenant.yaml": `
history_branch: "a//b/.x"
environments:
  production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
    balancer: {type: command, drain: [/usr/local/bin/lb, "drain {server}"], enable: [], state: [/usr/local/bin/lb, state, "{server}"]}
  staging:
    manifest: .
    inventory: inventory/staging.yaml
    playbook: playbooks/web.yaml
    balancer: {type: haproxy, api: "tcp://127.0.0.1:9999", backend: "-web"}
`}},
		{"wrong-types", map[string]string{"playbooks/web.yaml": `
hosts: {web: true}
strategy: halves
steps: balancer.drain
gate: [soak]
`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := validRepo(t)
			for name, data := range tc.files {
				repo[name] = &fstest.MapFile{Data: []byte(strings.TrimPrefix(data, "\n"))}
			}
			_, err := ValidateAll(context.Background(), repo)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("ValidateAll = %v, want a *ValidationError", err)
			}
			golden(t, "errors-"+tc.name, err.Error()+"\n")
		})
	}
}

func TestSelect(t *testing.T) {
	var p problems
	inv := parseInventory(context.Background(), "inventory.yaml", []byte(`
hosts:
  web-1: {address: 10.0.0.1}
  web-2: {address: 10.0.0.2}
  web-3: {address: 10.0.0.3}
  db-1: {address: 10.0.0.4}
groups:
  web: ["web-*"]
  canary: ["web-1"]
  rest: [web, "!canary"]
  all: [web, "db-*"]
  loop: [loop2]
  loop2: [loop]
`), &p)
	cases := []struct {
		items   []string
		want    string
		wantErr string
	}{
		{items: []string{"web"}, want: "web-1 web-2 web-3"},
		{items: []string{"!web-1", "web-*"}, want: "web-2 web-3"}, // exclusions win whatever the order
		{items: []string{"web-*", "!web-1"}, want: "web-2 web-3"},
		{items: []string{"rest"}, want: "web-2 web-3"},
		{items: []string{"all", "!rest"}, want: "web-1 db-1"},
		{items: []string{"db-1", "web-2"}, want: "web-2 db-1"}, // inventory order
		{items: []string{"web", "!web"}, wantErr: "selects no hosts"},
		{items: []string{"web", "app-*"}, wantErr: `"app-*" matches no host or group`},
		{items: []string{"loop"}, wantErr: "includes itself"},
		{items: []string{"web-["}, wantErr: "not a valid pattern"},
	}
	for _, tc := range cases {
		hosts, err := inv.Select(tc.items)
		var names []string
		for _, h := range hosts {
			names = append(names, h.Name)
		}
		got := strings.Join(names, " ")
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("Select(%q) = %q, %v; want error %q", tc.items, got, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("Select(%q) = %q, %v; want %q", tc.items, got, err, tc.want)
		}
	}
}

// validateWithin runs ValidateAll with files replaced, failing the test if
// it takes longer than limit: the bugs these tests guard against hung for
// minutes.
func validateWithin(t *testing.T, limit time.Duration, files map[string]string) error {
	t.Helper()
	repo := validRepo(t)
	for name, data := range files {
		repo[name] = &fstest.MapFile{Data: []byte(data)}
	}
	done := make(chan error, 1)
	go func() {
		_, err := ValidateAll(context.Background(), repo)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("ValidateAll took longer than %s", limit)
		return nil
	}
}

// TestGroupExpansionIsLinear: g0: [g1, g1], g1: [g2, g2], ... doubled the
// work at each level (25 levels took 1 min 52 s and 1.37 GB); each group
// is now resolved once.
func TestGroupExpansionIsLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("hosts:\n  web-1: {address: 10.0.2.11}\n  web-2: {address: 10.0.2.12}\ngroups:\n  web: [g0, \"!web-2\"]\n")
	const levels = 60
	for i := 0; i < levels; i++ {
		fmt.Fprintf(&b, "  g%d: [g%d, g%d, \"web-*\"]\n", i, i+1, i+1)
	}
	fmt.Fprintf(&b, "  g%d: [web-1, web-2]\n", levels)
	err := validateWithin(t, 10*time.Second, map[string]string{"inventory/staging.yaml": b.String()})
	if err != nil {
		t.Fatalf("ValidateAll = %v, want the inventory to be valid", err)
	}
	var p problems
	inv := parseInventory(context.Background(), "inventory/staging.yaml", []byte(b.String()), &p)
	hosts, err := inv.Select([]string{"web"})
	if err != nil || len(hosts) != 1 || hosts[0].Name != "web-1" {
		t.Errorf("Select(web) = %v, %v; want web-1", hosts, err)
	}
}

// TestLimits: every size that could make validation slow is refused with its
// limit, naming the file.
func TestLimits(t *testing.T) {
	hosts := func(n int, name string) string {
		var b strings.Builder
		b.WriteString("hosts:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  %s%d: {address: 10.0.0.1}\n", name, i)
		}
		return b.String()
	}
	groups := func(n int, item func(i int) string) string {
		var b strings.Builder
		b.WriteString("groups:\n  web: [web-1]\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "  g%d: [%s]\n", i, item(i))
		}
		return b.String()
	}
	cases := []struct {
		name, file, data, want string
	}{
		{"file", "inventory/staging.yaml", "# " + strings.Repeat("x", 1<<20) + "\n",
			"inventory/staging.yaml: is 1048579 bytes; files of the deploy repository may be at most 1048576 (1 MiB), make it smaller"},
		{"playbook file", "playbooks/web.yaml", strings.Repeat("# comment\n", 110000),
			"playbooks/web.yaml: is 1100000 bytes; files of the deploy repository may be at most 1048576 (1 MiB)"},
		{"hosts", "inventory/staging.yaml", hosts(10001, "web-"),
			"inventory/staging.yaml:1: hosts: lists 10001 hosts; at most 10000 are supported in one inventory (split the environment)"},
		{"groups", "inventory/staging.yaml", hosts(1, "web-") + groups(10000, func(int) string { return "web-0" }),
			"inventory/staging.yaml:3: groups: lists 10001 groups; at most 10000 are supported in one inventory"},
		{"wildcards", "inventory/staging.yaml", hosts(10000, "web-") + groups(2000, func(i int) string { return fmt.Sprintf(`"web-%d*"`, i) }),
			"inventory/staging.yaml:10002: groups: 2000 wildcard patterns (16890 bytes) are too many to match against 10000 hosts: at most 1701 bytes of distinct patterns with *, ? or [ for host names of 78890 bytes in all; name hosts or groups instead"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := validateWithin(t, 10*time.Second, map[string]string{tc.file: tc.data})
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("ValidateAll = %v, want a *ValidationError with only %q", err, tc.want)
			}
		})
	}
}

// TestValidateAllStopsWhenCancelled: validate stops at the first signal.
func TestValidateAllStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ValidateAll(ctx, validRepo(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ValidateAll(cancelled) = %v, want context.Canceled", err)
	}
}

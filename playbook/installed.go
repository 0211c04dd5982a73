package playbook

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// rpmQueryFormat prints one tab-separated line per installed package; the
// conditional gives epoch 0 on rpm versions without %{EPOCHNUM}.
const rpmQueryFormat = `%{NAME}\t%|EPOCH?{%{EPOCH}}:{0}|\t%{VERSION}\t%{RELEASE}\t%{ARCH}\n`

// maxRPMQueryOutput bounds what rpm -q may answer, which is read whole: a
// line per installed version of each package, far below this.
const maxRPMQueryOutput = 1 << 20

// QueryInstalled asks rpm which versions of the manifest's packages a host
// has. A package that is not installed maps to no entries; a package
// installed more than once (an install-only package such as a kernel) maps to
// every version.
func QueryInstalled(ctx context.Context, conn transport.Runner, sudo bool, pkgs []Package) (map[string][]Package, error) {
	args := []string{"rpm", "-q", "--qf", rpmQueryFormat}
	for _, p := range pkgs {
		args = append(args, p.Name)
	}
	res, err := conn.Run(ctx, transport.Command{Args: args, Sudo: sudo, MaxOutput: maxRPMQueryOutput})
	var exit *transport.ExitError
	// rpm -q exits with the number of packages it did not find; that is an
	// answer, not a failure. 127 means rpm itself is missing.
	if err != nil && (!errors.As(err, &exit) || exit.Status == 127 || exit.Status > len(pkgs)) {
		return nil, fmt.Errorf("query installed packages with rpm: %w", err)
	}
	return parseRPMQuery(string(res.Stdout), pkgs)
}

func parseRPMQuery(out string, pkgs []Package) (map[string][]Package, error) {
	installed := make(map[string][]Package, len(pkgs))
	answered := map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" {
			continue
		}
		if name, ok := strings.CutPrefix(line, "package "); ok && strings.HasSuffix(name, " is not installed") {
			answered[strings.TrimSuffix(name, " is not installed")] = true
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("query installed packages with rpm: unexpected output line %q", line)
		}
		p := Package{Name: f[0], Epoch: f[1], Version: f[2], Release: f[3], Arch: f[4]}
		if p.Epoch == "0" {
			p.Epoch = ""
		}
		installed[p.Name] = append(installed[p.Name], p)
		answered[p.Name] = true
	}
	for _, p := range pkgs {
		if !answered[p.Name] {
			return nil, fmt.Errorf("query installed packages with rpm: no answer for %s in output %q", p.Name, tail(out, 5, 300))
		}
	}
	return installed, nil
}

// versionsOf renders what a host has of one package: "1.0.0-1", "-" when
// absent, several versions oldest first, joined with ",".
func versionsOf(have []Package) string {
	if len(have) == 0 {
		return "-"
	}
	sorted := append([]Package(nil), have...)
	sort.Slice(sorted, func(i, j int) bool { return CompareEVR(sorted[i], sorted[j]) < 0 })
	v := make([]string, len(sorted))
	for i, p := range sorted {
		v[i] = p.EVR()
	}
	return strings.Join(v, ",")
}

// newest returns the highest version installed; have is not empty.
func newest(have []Package) Package {
	n := have[0]
	for _, p := range have[1:] {
		if CompareEVR(p, n) > 0 {
			n = p
		}
	}
	return n
}

// versionMap renders installed versions for a record.
func versionMap(pkgs []Package, installed map[string][]Package) map[string]string {
	if installed == nil {
		return nil
	}
	m := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		m[p.Name] = versionsOf(installed[p.Name])
	}
	return m
}

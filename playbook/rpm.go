package playbook

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Package is one exact RPM the manifest wants installed.
type Package struct {
	Name    string `json:"name" yaml:"name"`
	Epoch   string `json:"epoch,omitempty" yaml:"epoch,omitempty"`
	Version string `json:"version" yaml:"version"`
	Release string `json:"release" yaml:"release"`
	Arch    string `json:"arch,omitempty" yaml:"arch,omitempty"`
}

// The grammar RPM itself accepts for each part, narrowed to what real
// packages use. Everything that reaches a remote command passes these, so no
// part can carry a shell metacharacter, a space or a leading dash.
var (
	rpmNameRe    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._+-]*$`)
	rpmVersionRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._+~^]*$`) // also the release
	rpmEpochRe   = regexp.MustCompile(`^[0-9]{1,9}$`)
)

// knownArches are the architectures dnf installs packages of (dnf's
// arch.py, plus riscv64, loongarch64 and rpm 4.18's x86_64_v2 to v4). ParseNEVRA splits them off, and a
// package's arch must be one of them, or dnf would fail only once the host
// is drained. "el9" in "1.el9" is part of the release, not an arch.
var knownArches = map[string]bool{
	"noarch": true, "x86_64": true, "x86_64_v2": true, "x86_64_v3": true, "x86_64_v4": true, "amd64": true, "ia32e": true,
	"i386": true, "i486": true, "i586": true, "i686": true, "athlon": true, "geode": true,
	"aarch64": true, "armv5tel": true, "armv5tejl": true, "armv6l": true, "armv6hl": true,
	"armv7l": true, "armv7hl": true, "armv7hnl": true,
	"ppc": true, "ppc64": true, "ppc64le": true, "ppc64p7": true, "ppc64iseries": true, "ppc64pseries": true,
	"s390": true, "s390x": true, "riscv64": true, "loongarch64": true, "ia64": true,
	"sparc": true, "sparcv8": true, "sparcv9": true, "sparcv9v": true, "sparc64": true, "sparc64v": true,
	"alpha": true, "alphaev4": true, "alphaev45": true, "alphaev5": true, "alphaev56": true,
	"alphaev6": true, "alphaev67": true, "alphaev68": true, "alphaev7": true, "alphapca56": true,
	"sh3": true, "sh4": true, "sh4a": true,
	// Source packages: split off so that Validate can say they cannot be installed.
	"src": true, "nosrc": true,
}

// commonArches are the ones a hint lists; knownArches has them all.
const commonArches = "noarch, x86_64, aarch64, i686, ppc64le, s390x, armv7hl, riscv64, ..."

const nevraExample = "for example hello-web-1.1.0-1.x86_64"

// ParseNEVRA splits "name-[epoch:]version-release[.arch]" as RPM prints it.
// The arch is split off only when it is one of the known architectures.
func ParseNEVRA(s string) (Package, error) {
	var p Package
	if strings.HasSuffix(s, ".rpm") {
		return p, fmt.Errorf("%q is a file name; drop the .rpm suffix (%s)", s, nevraExample)
	}
	// "hello-web-1.1.0-1.x86-64" would otherwise parse as version "1.x86"
	// and release "64", and fail only in dnf.
	if _, tail, ok := cutLast(s, "."); ok {
		if want, typo := archTypo(tail); typo {
			return p, fmt.Errorf("%q: arch %q is not an RPM architecture (did you mean %q?)", s, tail, want)
		}
	}
	rest, release, ok := cutLast(s, "-")
	if !ok {
		return p, fmt.Errorf("%q is not name-version-release[.arch] (%s)", s, nevraExample)
	}
	name, version, ok := cutLast(rest, "-")
	if !ok {
		return p, fmt.Errorf("%q is not name-version-release[.arch] (%s)", s, nevraExample)
	}
	if e, v, ok := strings.Cut(version, ":"); ok {
		if e == "" {
			return p, fmt.Errorf("%q has an empty epoch before ':'", s)
		}
		p.Epoch, version = e, v
	}
	if r, a, ok := cutLast(release, "."); ok && knownArches[a] {
		release, p.Arch = r, a
	}
	p.Name, p.Version, p.Release = name, version, release
	// Without this, a typo such as "hello-web-latest" would parse as name
	// "hello", version "web", release "latest".
	if version == "" || version[0] < '0' || version[0] > '9' {
		return p, fmt.Errorf("%q: version %q does not start with a digit; write name-version-release[.arch], or use the {name, version, release} form", s, version)
	}
	return p, p.Validate()
}

// installableArches are the known architectures but source packages', sorted.
func installableArches() []string {
	return slices.DeleteFunc(keysOf(knownArches), func(a string) bool { return a == "src" || a == "nosrc" })
}

// archTypo reports whether s is a misspelt architecture, and which one: the
// wrong case or "-" for "_", or one edit away from a common one. Other
// near misses are left alone: releases end in words such as "alpha1".
func archTypo(s string) (string, bool) {
	if knownArches[s] {
		return "", false
	}
	norm := strings.ReplaceAll(strings.ToLower(s), "-", "_")
	for _, a := range installableArches() {
		if norm == a {
			return a, true
		}
	}
	for _, a := range []string{"x86_64", "aarch64", "noarch", "ppc64le", "s390x", "armv7hl", "riscv64", "loongarch64"} {
		if editDistance(s, a) <= 1 {
			return a, true
		}
	}
	return "", false
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i <= 0 || i == len(s)-1 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// Validate checks each part against RPM's grammar.
func (p Package) Validate() error {
	var bad []string
	check := func(part, value string, re *regexp.Regexp, optional bool) {
		if value == "" && optional {
			return
		}
		if !re.MatchString(value) {
			bad = append(bad, fmt.Sprintf("%s %q", part, value))
		}
	}
	check("name", p.Name, rpmNameRe, false)
	check("epoch", p.Epoch, rpmEpochRe, true)
	check("version", p.Version, rpmVersionRe, false)
	check("release", p.Release, rpmVersionRe, false)
	if len(bad) > 0 {
		return fmt.Errorf("invalid package %s: RPM allows letters, digits and %s only", strings.Join(bad, ", "), "._+~^ (and - in names)")
	}
	switch {
	case p.Arch == "rpm" || p.Arch == "" && strings.HasSuffix(p.Release, ".rpm"):
		return fmt.Errorf("package %s names a file; drop the .rpm suffix (%s)", p.NEVRA(), nevraExample)
	case p.Arch == "src" || p.Arch == "nosrc":
		return fmt.Errorf("package %s is a source package, which cannot be installed; name the binary package's arch (%s)", p.NEVRA(), commonArches)
	case p.Arch != "" && !knownArches[p.Arch]:
		installable := installableArches()
		return fmt.Errorf("package %s: arch %q is not an RPM architecture%s (known: %s)", p.NEVRA(), p.Arch, suggest(p.Arch, installable), strings.Join(installable, ", "))
	}
	return nil
}

// EVR is "[epoch:]version-release", the form compared and displayed.
func (p Package) EVR() string {
	evr := p.Version + "-" + p.Release
	if p.Epoch != "" && p.Epoch != "0" {
		evr = p.Epoch + ":" + evr
	}
	return evr
}

// NEVRA is the exact spec handed to dnf/yum: name-[epoch:]version-release[.arch].
func (p Package) NEVRA() string {
	s := p.Name + "-" + p.EVR()
	if p.Arch != "" {
		s += "." + p.Arch
	}
	return s
}

func (p Package) String() string { return p.NEVRA() }

// CompareEVR orders two packages of the same name as rpm does: epoch, then
// version, then release, each with rpmvercmp.
func CompareEVR(a, b Package) int {
	ea, eb := a.Epoch, b.Epoch
	if ea == "" {
		ea = "0"
	}
	if eb == "" {
		eb = "0"
	}
	if c := rpmvercmp(ea, eb); c != 0 {
		return c
	}
	if c := rpmvercmp(a.Version, b.Version); c != 0 {
		return c
	}
	return rpmvercmp(a.Release, b.Release)
}

// rpmvercmp is rpm's version comparison (lib/rpmvercmp.c): segments of
// digits compare numerically, letters lexically, a digit segment is newer than
// a letter one, "~" sorts before anything (pre-releases) and "^" after the
// base version but before any longer one (snapshots).
func rpmvercmp(a, b string) int {
	if a == b {
		return 0
	}
	isAlnum := func(c byte) bool {
		return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	for len(a) > 0 || len(b) > 0 {
		for len(a) > 0 && !isAlnum(a[0]) && a[0] != '~' && a[0] != '^' {
			a = a[1:]
		}
		for len(b) > 0 && !isAlnum(b[0]) && b[0] != '~' && b[0] != '^' {
			b = b[1:]
		}
		// Tilde sorts before everything, even the end of the string.
		if len(a) > 0 && a[0] == '~' || len(b) > 0 && b[0] == '~' {
			if len(a) == 0 || a[0] != '~' {
				return 1
			}
			if len(b) == 0 || b[0] != '~' {
				return -1
			}
			a, b = a[1:], b[1:]
			continue
		}
		// Caret sorts after the end of the string but before anything else.
		if len(a) > 0 && a[0] == '^' || len(b) > 0 && b[0] == '^' {
			if len(a) == 0 {
				return -1
			}
			if len(b) == 0 {
				return 1
			}
			if a[0] != '^' {
				return 1
			}
			if b[0] != '^' {
				return -1
			}
			a, b = a[1:], b[1:]
			continue
		}
		if len(a) == 0 || len(b) == 0 {
			break
		}
		numeric := isDigit(a[0])
		seg := func(s string) (string, string) {
			i := 0
			for i < len(s) && (numeric && isDigit(s[i]) || !numeric && isAlnum(s[i]) && !isDigit(s[i])) {
				i++
			}
			return s[:i], s[i:]
		}
		var sa, sb string
		sa, a = seg(a)
		sb, b = seg(b)
		if sb == "" {
			// Segments of different kinds: the numeric one is newer.
			if numeric {
				return 1
			}
			return -1
		}
		if numeric {
			sa = strings.TrimLeft(sa, "0")
			sb = strings.TrimLeft(sb, "0")
			if len(sa) != len(sb) {
				if len(sa) > len(sb) {
					return 1
				}
				return -1
			}
		}
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
	}
	switch {
	case len(a) == 0 && len(b) == 0:
		return 0
	case len(a) == 0:
		return -1
	}
	return 1
}

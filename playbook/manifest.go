package playbook

import (
	"regexp"

	"gopkg.in/yaml.v3"
)

// Manifest is the release: a name and the exact packages every host of the
// environment must have. It is the desired state.
type Manifest struct {
	Release  string
	Packages []Package
}

// releaseRe keeps release names printable in tables, commit messages and
// file names.
var releaseRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+:-]{0,127}$`)

func parseManifest(file string, data []byte, p *problems) *Manifest {
	d := decoder{file: file, problems: p}
	m := &Manifest{}
	root := d.parseDocument(data)
	if root == nil {
		return m
	}
	seen := d.mapping(root, "", map[string]func(k, v *yaml.Node){
		"release": func(_, v *yaml.Node) {
			m.Release = d.str(v, "release")
			if m.Release != "" && !releaseRe.MatchString(m.Release) {
				d.errorf(v, "release", "%q is not a release name: use letters, digits and ._+:- (for example 2026.11.3)", m.Release)
			}
		},
		"packages": func(_, v *yaml.Node) {
			if v.Kind != yaml.SequenceNode {
				d.errorf(v, "packages", "must be a list of packages such as hello-web-1.1.0-1.x86_64, not %s", describeNode(v))
				return
			}
			byName := map[string]int{}
			for i, item := range v.Content {
				pkg, ok := d.pkg(item, index("packages", i))
				if !ok {
					continue
				}
				if prev, dup := byName[pkg.Name]; dup {
					d.errorf(item, index("packages", i), "package %s is listed twice (also at packages[%d]); a manifest pins one version per package", pkg.Name, prev)
					continue
				}
				byName[pkg.Name] = i
				m.Packages = append(m.Packages, pkg)
			}
			if len(v.Content) == 0 {
				d.errorf(v, "packages", "is empty; list at least one package")
			}
		},
	})
	d.require(root, "", seen, "release", "packages")
	return m
}

// pkg reads one package, either "name-version-release[.arch]" or a mapping.
func (d decoder) pkg(n *yaml.Node, p string) (Package, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		pkg, err := ParseNEVRA(n.Value)
		if err != nil {
			d.errorf(n, p, "%v", err)
			return pkg, false
		}
		return pkg, true
	}
	var pkg Package
	str := func(dst *string) func(k, v *yaml.Node) {
		return func(k, v *yaml.Node) { *dst = d.str(v, join(p, k.Value)) }
	}
	seen := d.mapping(n, p, map[string]func(k, v *yaml.Node){
		"name":    str(&pkg.Name),
		"epoch":   str(&pkg.Epoch),
		"version": str(&pkg.Version),
		"release": str(&pkg.Release),
		"arch":    str(&pkg.Arch),
	})
	if n.Kind != yaml.MappingNode {
		return pkg, false
	}
	d.require(n, p, seen, "name", "version", "release")
	if !seen["name"] || !seen["version"] || !seen["release"] {
		return pkg, false
	}
	if err := pkg.Validate(); err != nil {
		d.errorf(n, p, "%v", err)
		return pkg, false
	}
	return pkg, true
}

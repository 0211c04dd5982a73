package playbook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem in one file, located well enough to fix it
// without reading the parser: file, line and the path of the field.
type FieldError struct {
	File  string
	Line  int
	Field string // e.g. "environments.production.balancer.min_up"; "" for the whole file
	Msg   string
}

func (e FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field == "" {
		return loc + ": " + e.Msg
	}
	return loc + ": " + e.Field + ": " + e.Msg
}

// ValidationError holds every problem found in a set of files, so a user
// fixes them all in one go instead of one per attempt.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// problems collects FieldErrors while files are decoded.
type problems struct{ list []FieldError }

func (p *problems) add(file string, n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.list = append(p.list, FieldError{File: file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil when nothing was collected, so callers can return it as is.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sort.SliceStable(p.list, func(i, j int) bool {
		a, b := p.list[i], p.list[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
	return &ValidationError{Problems: p.list}
}

// decoder walks a yaml.Node tree of one file. yaml.v3's own strict mode stops
// at the first unknown key; walking the nodes reports every problem with its
// line.
type decoder struct {
	file string
	*problems
}

func (d decoder) errorf(n *yaml.Node, field, format string, args ...any) {
	d.add(d.file, n, field, format, args...)
}

// parseDocument parses YAML text into its root node; nil after a reported
// syntax error or an empty document.
func (d decoder) parseDocument(data []byte) *yaml.Node {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		d.errorf(nil, "", "file is empty")
		return nil
	}
	if err == nil {
		var next yaml.Node
		if nerr := dec.Decode(&next); !errors.Is(nerr, io.EOF) {
			line := 0
			if nerr == nil {
				line = next.Line
			}
			d.problems.list = append(d.problems.list, FieldError{File: d.file, Line: line, Msg: "holds more than one YAML document (---); put one document in each file"})
			return nil
		}
	}
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if _, rest, ok := strings.Cut(msg, "line "); ok {
			num, after, _ := strings.Cut(rest, ":")
			if l, err := strconv.Atoi(num); err == nil {
				line = l
				msg = strings.TrimSpace(after)
			}
		}
		d.problems.list = append(d.problems.list, FieldError{File: d.file, Line: line, Msg: "invalid YAML: " + msg})
		return nil
	}
	if len(doc.Content) == 0 {
		d.errorf(nil, "", "file is empty")
		return nil
	}
	if d.refuseReferences(doc.Content[0], "") {
		return nil
	}
	return doc.Content[0]
}

// refuseReferences reports every anchor, alias and merge key under n, as the
// README promises, and whether there was one. The rest of such a file is not
// decoded: what an alias stands for is not written where it is used, so any
// further message about it would point at the wrong place.
func (d decoder) refuseReferences(n *yaml.Node, path string) bool {
	found := false
	if n.Anchor != "" {
		d.errorf(n, path, "YAML anchors (&%s) are not supported; write the value out", n.Anchor)
		found = true
	}
	switch n.Kind {
	case yaml.AliasNode:
		d.errorf(n, path, "YAML aliases (*%s) are not supported; write the value out", n.Value)
		return true
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" {
				d.errorf(k, path, "YAML merge keys (<<) are not supported; write the fields out")
				found = true
				continue // what it merges, often an alias, is part of this one problem
			}
			// Keys are walked too: a key can carry an anchor or be an alias.
			found = d.refuseReferences(k, path) || found
			found = d.refuseReferences(v, join(path, k.Value)) || found
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			found = d.refuseReferences(item, index(path, i)) || found
		}
	}
	return found
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// mapping calls fields[key] for each key of a mapping node, reports unknown
// and duplicate keys (with a suggestion for likely typos) and returns the keys
// seen. A nil fields map accepts any key (used for maps keyed by names).
func (d decoder) mapping(n *yaml.Node, path string, fields map[string]func(key, val *yaml.Node)) map[string]bool {
	seen := map[string]bool{}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping of keys to values, not %s", describeNode(n))
		return seen
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			d.errorf(k, join(path, k.Value), "is given twice")
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			d.errorf(k, join(path, k.Value), "unknown field%s (known: %s)", suggest(k.Value, keysOf(fields)), strings.Join(keysOf(fields), ", "))
			continue
		}
		f(k, v)
	}
	return seen
}

// require reports each required key that a mapping lacks.
func (d decoder) require(n *yaml.Node, path string, seen map[string]bool, keys ...string) {
	for _, k := range keys {
		if !seen[k] {
			d.errorf(n, join(path, k), "is required")
		}
	}
}

func keysOf[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if n.Tag == "!!null" {
		return "empty"
	}
	return fmt.Sprintf("%q", n.Value)
}

func (d decoder) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errorf(n, path, "must be %s, not %s", want, describeNode(n))
		return false
	}
	return true
}

// str reads a string. An empty one is refused: every field that takes a
// string needs a value, and "" would otherwise read as "not given", silently.
func (d decoder) str(n *yaml.Node, path string) string {
	if !d.scalar(n, path, "a string") {
		return ""
	}
	if n.Value == "" {
		d.errorf(n, path, "is empty")
	}
	return n.Value
}

func (d decoder) integer(n *yaml.Node, path string) (int, bool) {
	if !d.scalar(n, path, "a whole number") {
		return 0, false
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil {
		d.errorf(n, path, "must be a whole number, not %q", n.Value)
		return 0, false
	}
	return v, true
}

func (d decoder) boolean(n *yaml.Node, path string) bool {
	if !d.scalar(n, path, "true or false") {
		return false
	}
	switch n.Value {
	case "true":
		return true
	case "false":
		return false
	}
	d.errorf(n, path, "must be true or false, not %q", n.Value)
	return false
}

// duration accepts Go durations ("90s", "1m30s"); a bare number is refused
// because "60" could mean seconds or milliseconds.
func (d decoder) duration(n *yaml.Node, path string) time.Duration {
	if !d.scalar(n, path, `a duration such as "30s" or "2m"`) {
		return 0
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		d.errorf(n, path, `must be a duration such as "30s" or "2m", not %q`, n.Value)
		return 0
	}
	return v
}

// strings accepts one string or a list of strings.
func (d decoder) strings(n *yaml.Node, path string) []string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a string or a list of strings, not %s", describeNode(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		if s := d.str(item, index(path, i)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// suggest returns ` (did you mean "x"?)` when a known key is one or two edits
// away from an unknown one: most unknown keys are typos.
func suggest(got string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(got, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

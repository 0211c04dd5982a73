package playbook

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// TemplateData is what step templates can use: {{ .Host.Address }},
// {{ .Release }}, ...
type TemplateData struct {
	Host        TemplateHost
	Release     string
	Environment string
}

// TemplateHost is the host fields a template can use.
type TemplateHost struct {
	Name, Address, Port, User, BalancerServer string
}

func newTemplateData(env, release string, h Host, defaultUser string, defaultPort int) TemplateData {
	port := h.Port
	if port == 0 {
		port = defaultPort
	}
	if port == 0 {
		port = 22
	}
	user := h.User
	if user == "" {
		user = defaultUser
	}
	return TemplateData{
		Host:        TemplateHost{Name: h.Name, Address: h.Address, Port: strconv.Itoa(port), User: user, BalancerServer: h.BalancerServer},
		Release:     release,
		Environment: env,
	}
}

// shellQuoted returns the data with every value quoted for a POSIX shell, so
// a template in a shell command cannot be broken out of by inventory values.
func (t TemplateData) shellQuoted() TemplateData {
	q := transport.Quote
	return TemplateData{
		Host: TemplateHost{
			Name: q(t.Host.Name), Address: q(t.Host.Address), Port: q(t.Host.Port),
			User: q(t.Host.User), BalancerServer: q(t.Host.BalancerServer),
		},
		Release:     q(t.Release),
		Environment: q(t.Environment),
	}
}

// sampleData is used to try every template while validating.
func sampleData() TemplateData {
	return TemplateData{
		Host:        TemplateHost{Name: "web-1", Address: "192.0.2.1", Port: "22", User: "deploy", BalancerServer: "web-1"},
		Release:     "1.0",
		Environment: "production",
	}
}

// tmpl is a parsed template and its source, for plans and errors.
type tmpl struct {
	src string
	t   *template.Template
}

// templateFields are the values a template can substitute, all strings.
var templateFields = []string{".Host.Name", ".Host.Address", ".Host.Port", ".Host.User", ".Host.BalancerServer", ".Release", ".Environment"}

// parseTemplate parses a step's template. Templates only substitute
// fields: no functions, conditions, loops or {{define}}, so validating a
// playbook can neither hang nor exhaust memory on hostile input, and what a
// plan shows is all the template can do. withHost is false for gate checks,
// which run once and not for a host.
func parseTemplate(src string, withHost bool) (tmpl, error) {
	t, err := template.New("").Option("missingkey=error").Parse(src)
	if err != nil {
		return tmpl{}, fmt.Errorf("invalid template %q: %w", src, err)
	}
	invalid := func(format string, args ...any) (tmpl, error) {
		return tmpl{}, fmt.Errorf("invalid template %q: %s", src, fmt.Sprintf(format, args...))
	}
	const fieldsOnly = "templates substitute fields only, such as {{ .Host.Address }}"
	fields := strings.Join(templateFields, " ")
	actions := 0
	for _, n := range t.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
		case *parse.ActionNode:
			actions++
			field, ok := onlyField(n)
			switch {
			case !ok:
				return invalid("%s: %s", n, fieldsOnly)
			case !slices.Contains(templateFields, field):
				return invalid("%s is not a field (fields: %s)", field, fields)
			case !withHost && strings.HasPrefix(field, ".Host."):
				return invalid("%s: gate checks run once, not per host, so they cannot use .Host", n)
			}
		default:
			return invalid("%s: %s", n, fieldsOnly)
		}
	}
	// {{define}}, {{block}} and comments leave no node in the tree: every
	// "{{" must open one of the field actions seen.
	if strings.Count(src, "{{") != actions {
		return invalid("{{define}}, {{block}} and comments are not supported; %s", fieldsOnly)
	}
	return tmpl{src: src, t: t}, nil
}

// onlyField returns the field an action is made of, such as ".Host.Address",
// and whether it is a lone field reference.
func onlyField(n *parse.ActionNode) (string, bool) {
	if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
		return "", false
	}
	f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
	if !ok || len(f.Ident) == 0 {
		return "", false
	}
	return f.String(), true
}

func (t tmpl) render(data TemplateData) (string, error) {
	if t.t == nil {
		return t.src, nil
	}
	var b bytes.Buffer
	if err := t.t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render %q: %w", t.src, err)
	}
	return b.String(), nil
}

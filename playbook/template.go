package playbook

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"text/template"

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

func parseTemplate(src string) (tmpl, error) {
	t, err := template.New("").Option("missingkey=error").Parse(src)
	if err != nil {
		return tmpl{}, fmt.Errorf("invalid template %q: %w", src, err)
	}
	if err := t.Execute(new(bytes.Buffer), sampleData()); err != nil {
		// "template: :1:15: executing ... at <.Host.Adress>: can't evaluate
		// field Adress in type playbook.TemplateHost" -> the useful part.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		msg, _, _ = strings.Cut(msg, " in type ")
		return tmpl{}, fmt.Errorf("invalid template %q: %s (fields: .Host.Name .Host.Address .Host.Port .Host.User .Host.BalancerServer .Release .Environment)", src, msg)
	}
	return tmpl{src: src, t: t}, nil
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

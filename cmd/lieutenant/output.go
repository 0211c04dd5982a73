package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// operatorStream is one of the operator's output streams. Everything
// lieutenant prints goes through one, so that nothing from a host or a
// record can take over the operator's terminal (termSafe), and no secret of
// lieutenant's is shown (transport.Secrets, read when it is made). A stream that
// fails (a pipe closed by `| head`, a terminal that hung up) is given up:
// later writes are dropped and reported as written, so that no command
// stops for losing its audience; lostNote says so for the run's record.
type operatorStream struct {
	name    string
	w       io.Writer
	secrets transport.Secrets

	mu     sync.Mutex
	lostAt time.Time
	err    error // the write that failed; nil while the stream works
}

func newOperatorStream(name string, w io.Writer) *operatorStream {
	return &operatorStream{name: name, w: w, secrets: transport.SecretsFromEnv()}
}

func (o *operatorStream) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		if _, err := io.WriteString(o.w, o.secrets.Redact(string(termSafe(p)))); err != nil {
			o.err, o.lostAt = err, time.Now()
		}
	}
	return len(p), nil
}

// lostNote is "" while the stream works, else when and how it was lost.
func (o *operatorStream) lostNote() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		return ""
	}
	return fmt.Sprintf("the output to %s was lost at %s (%v); the run went on without it",
		o.name, o.lostAt.UTC().Format(time.RFC3339), o.err)
}

// lostOutput notes which of the operator's streams were lost.
func lostOutput(s streams) []string {
	var notes []string
	for _, w := range []io.Writer{s.out, s.err} {
		if o, ok := w.(*operatorStream); ok {
			if n := o.lostNote(); n != "" {
				notes = append(notes, n)
			}
		}
	}
	return notes
}

// termSafe makes p safe to print on a terminal: control characters, with
// which a host's output could clear the screen, move the cursor or retitle
// the window, are shown as \u001b; newline and tab, which layouts need,
// are kept, and a carriage return before a newline is dropped. Bytes that
// are not UTF-8 become U+FFFD, as encoding/json makes them. In JSON, which
// escapes C0 itself, \u007f for DEL or a C1 character is the same string.
func termSafe(p []byte) []byte {
	i := 0
	for i < len(p) && (p[i] >= 0x20 && p[i] < 0x7f || p[i] == '\n' || p[i] == '\t') {
		i++
	}
	if i == len(p) {
		return p
	}
	out := append(make([]byte, 0, len(p)+16), p[:i]...)
	for i < len(p) {
		r, size := utf8.DecodeRune(p[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = utf8.AppendRune(out, utf8.RuneError)
		case r == '\r' && i+1 < len(p) && p[i+1] == '\n':
			// A CRLF line end (output of Windows-minded tools): dropped.
		case r == '\n' || r == '\t':
			out = append(out, byte(r))
		case unicode.IsControl(r):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, p[i:i+size]...)
		}
		i += size
	}
	return out
}

// writeTable renders rows as plain aligned columns, like kubectl: easy to
// read and to grep.
func writeTable(w io.Writer, header []string, rows [][]string) {
	var buf bytes.Buffer
	t := tablewriter.NewTable(&buf,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders: tw.BorderNone,
			Symbols: tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{
				Separators: tw.Separators{BetweenRows: tw.Off, BetweenColumns: tw.Off},
				Lines:      tw.Lines{ShowHeaderLine: tw.Off},
			},
		})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
		tablewriter.WithRowAutoWrap(tw.WrapNone),
		tablewriter.WithPadding(tw.Padding{Right: "  ", Overwrite: true}),
	)
	upper := make([]any, len(header))
	for i, h := range header {
		upper[i] = strings.ToUpper(h)
	}
	t.Header(upper...)
	for _, r := range rows {
		cells := make([]any, len(r))
		for i, c := range r {
			// Made safe here already so that columns are measured as printed.
			cells[i] = string(termSafe([]byte(c)))
		}
		_ = t.Append(cells...)
	}
	_ = t.Render()
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func printPlan(w io.Writer, plan *playbook.Plan, snap *releases.Snapshot) {
	fmt.Fprintf(w, "Plan for %s: release %s from %s (%s %q)\n", plan.Environment, plan.Release, snap.Rev, snap.ShortHash, snap.Subject)
	fmt.Fprintf(w, "Packages: %s\n\n", packageList(plan.Packages))
	var rows [][]string
	for _, b := range plan.Batches {
		for _, hp := range b.Hosts {
			rows = append(rows, hostRows(fmt.Sprint(b.Number), hp, plan.Offline)...)
		}
	}
	for _, hp := range plan.UpToDate {
		rows = append(rows, hostRows("-", hp, plan.Offline)...)
	}
	header := []string{"batch", "host", "address", "balancer", "package", "installed", "wanted", "action"}
	if plan.Offline {
		header = slices.Delete(header, 3, 4)
	}
	writeTable(w, header, rows)
	if plan.Offline {
		fmt.Fprintln(w, "\nOffline: installed versions and balancer states were not read; hosts already at the release would be skipped by a run.")
	}
	var repair []string
	for _, hp := range plan.Hosts() {
		if hp.Repair {
			repair = append(repair, hp.Host.Name)
		}
	}
	if len(repair) > 0 {
		fmt.Fprintf(w, "\nAt the release but out of service; their steps run again to verify them and put them back: %s\n", strings.Join(repair, ", "))
	}
	if len(plan.UpToDate) > 0 {
		fmt.Fprintf(w, "\nUp to date and in service, not touched: %s\n", strings.Join(names(plan.UpToDate), ", "))
	}
	fmt.Fprintf(w, "\nStrategy: %s -> %d batches\n", plan.Strategy, len(plan.Batches))
	if len(plan.Preflight) > 0 {
		fmt.Fprintln(w, "Before anything changes, on every host:")
		printSteps(w, plan.Preflight)
	}
	fmt.Fprintln(w, "On each host, in order:")
	printSteps(w, plan.Steps)
	if g := gateLine(plan.Gate); g != "" && len(plan.Batches) > 1 {
		fmt.Fprintf(w, "Between batches: %s\n", g)
	}
}

func hostRows(batch string, hp playbook.HostPlan, offline bool) [][]string {
	var rows [][]string
	for i, c := range hp.Changes {
		row := []string{batch, hp.Host.Name, hp.Host.Address, orDash(hp.Balancer), c.Package, c.From, c.To, string(c.Action)}
		if i > 0 {
			row[0], row[1], row[2], row[3] = "", "", "", ""
		}
		if offline {
			row = slices.Delete(row, 3, 4)
		}
		rows = append(rows, row)
	}
	return rows
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func names(hs []playbook.HostPlan) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.Host.Name
	}
	return out
}

func packageList(ps []playbook.Package) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.NEVRA()
	}
	return strings.Join(out, ", ")
}

func printSteps(w io.Writer, steps []playbook.Step) {
	for i, s := range steps {
		fmt.Fprintf(w, "  %d. %-17s %s\n", i+1, s.Kind(), s.Describe())
	}
}

func gateLine(g playbook.Gate) string {
	var parts []string
	for _, c := range g.Checks {
		parts = append(parts, c.Describe())
	}
	if g.Soak > 0 {
		parts = append(parts, "soak "+g.Soak.String()+" then check again")
	}
	if g.Approval == playbook.ApprovalPrompt {
		parts = append(parts, "approval (prompt, or --yes)")
	}
	return strings.Join(parts, "; ")
}

// printPlanSummary is the short plan a run prints before it starts.
func printPlanSummary(w io.Writer, plan *playbook.Plan, snap *releases.Snapshot) {
	fmt.Fprintf(w, "Rolling %s to %s (%s): %s\n", plan.Environment, plan.Release, snap, packageList(plan.Packages))
	for _, b := range plan.Batches {
		fmt.Fprintf(w, "  batch %d: %s\n", b.Number, strings.Join(names(b.Hosts), ", "))
	}
	if len(plan.UpToDate) > 0 {
		fmt.Fprintf(w, "  up to date: %s\n", strings.Join(names(plan.UpToDate), ", "))
	}
}

// progressPrinter is the live view: one line per step and per host, which
// reads the same on a terminal and in a CI log.
func progressPrinter(w io.Writer, batches int) func(playbook.Event) {
	return func(e playbook.Event) {
		ts := e.Time.Format("15:04:05")
		switch e.Kind {
		case playbook.EventBatchStarted:
			fmt.Fprintf(w, "%s batch %d/%d: %s\n", ts, e.Batch, batches, e.Message)
		case playbook.EventStepFinished:
			status := "ok"
			detail := ""
			if e.Err != nil {
				status, detail = "FAILED", "  "+firstLine(e.Err.Error())
			}
			fmt.Fprintf(w, "%s   %-12s %-17s %-6s %8s%s\n", ts, e.Host, e.Step, status, round(e.Duration), detail)
		case playbook.EventHostFinished:
			if e.Err != nil {
				fmt.Fprintf(w, "%s   %-12s FAILED after %s: %s\n", ts, e.Host, round(e.Duration), firstLine(e.Err.Error()))
			} else {
				fmt.Fprintf(w, "%s   %-12s done in %s\n", ts, e.Host, round(e.Duration))
			}
		case playbook.EventBalancerFix:
			fmt.Fprintf(w, "%s   %-12s balancer: %s\n", ts, e.Host, e.Message)
		case playbook.EventGate:
			line := e.Message
			if e.Step != "" {
				status := "ok"
				if e.Err != nil {
					status = "FAILED: " + firstLine(e.Err.Error())
				}
				line = fmt.Sprintf("%s %s %s", e.Message, e.Step, status)
			}
			fmt.Fprintf(w, "%s gate after batch %d: %s\n", ts, e.Batch, line)
		case playbook.EventRecordFailed:
			fmt.Fprintf(w, "%s record: the hosts' progress was not written (tried again with the next write): %s\n", ts, firstLine(e.Err.Error()))
		case playbook.EventRunFinished:
			if e.Err != nil {
				fmt.Fprintf(w, "%s run %s, but the record was not saved: %v\n", ts, e.Message, e.Err)
			}
		}
	}
}

func round(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// printResult is the summary after a run: host by host, then what to do,
// then where the record is (recordAt's answer).
func printResult(w io.Writer, rec *record.Run, where string) {
	fmt.Fprintln(w)
	var rows [][]string
	for _, h := range rec.Hosts {
		rows = append(rows, []string{h.Name, batchOf(h), string(h.Status), versions(h.Before), versions(h.After),
			h.Balancer, h.Duration, firstLine(h.Error)})
	}
	writeTable(w, []string{"host", "batch", "result", "before", "after", "balancer", "took", "error"}, rows)
	fmt.Fprintf(w, "\nRun %s: %s", rec.ID, rec.Outcome)
	if rec.Duration != "" {
		fmt.Fprintf(w, " in %s", rec.Duration)
	}
	if rec.Reason != "" {
		fmt.Fprintf(w, " (%s)", rec.Reason)
	}
	fmt.Fprintln(w)
	for _, n := range rec.Next {
		fmt.Fprintf(w, "  - %s\n", n)
	}
	for _, n := range rec.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	if where != "" {
		fmt.Fprintf(w, "Record: %s\n", where)
	}
}

func batchOf(h record.Host) string {
	if h.Batch == 0 {
		return "-"
	}
	return fmt.Sprint(h.Batch)
}

func versions(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	if len(m) == 1 {
		for _, v := range m {
			return v
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// planView is the JSON form of a plan, for scripts.
type planView struct {
	Environment string       `json:"environment"`
	Release     string       `json:"release"`
	Revision    string       `json:"revision"`
	Packages    []string     `json:"packages"`
	Offline     bool         `json:"offline"`
	Batches     [][]hostView `json:"batches"`
	UpToDate    []hostView   `json:"up_to_date"`
	Steps       []stepView   `json:"steps"`
	Gate        string       `json:"gate,omitempty"`
}

type hostView struct {
	Name    string            `json:"name"`
	Address string            `json:"address"`
	Changes []playbook.Change `json:"changes"`
}

type stepView struct {
	Step     string `json:"step"`
	Describe string `json:"does"`
}

func planJSON(plan *playbook.Plan, snap *releases.Snapshot) planView {
	v := planView{Environment: plan.Environment, Release: plan.Release, Revision: snap.Hash, Offline: plan.Offline,
		Batches: [][]hostView{}, UpToDate: []hostView{}, Gate: gateLine(plan.Gate)}
	for _, p := range plan.Packages {
		v.Packages = append(v.Packages, p.NEVRA())
	}
	view := func(hps []playbook.HostPlan) []hostView {
		out := []hostView{}
		for _, hp := range hps {
			out = append(out, hostView{Name: hp.Host.Name, Address: hp.Host.Address, Changes: hp.Changes})
		}
		return out
	}
	for _, b := range plan.Batches {
		v.Batches = append(v.Batches, view(b.Hosts))
	}
	v.UpToDate = view(plan.UpToDate)
	for _, s := range plan.Steps {
		v.Steps = append(v.Steps, stepView{Step: s.Kind(), Describe: s.Describe()})
	}
	return v
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

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
			cells[i] = c
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

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

// openHistory opens the repository and the history branch lieutenant.yaml
// names at the manifest revision, for commands that need no valid
// environment: only lieutenant.yaml must read. With env set, it must name
// one of its environments.
func openHistory(c *cli.Context, env string) (*source, *playbook.Config, *releases.History, error) {
	src, snap, err := openRepo(c)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := playbook.LoadConfig(snap)
	if err == nil && env != "" {
		if _, ok := cfg.Environments[env]; !ok {
			err = &playbook.UnknownEnvironmentError{Name: env, Known: cfg.Order}
		}
	}
	var hist *releases.History
	if err == nil {
		hist, err = src.history(c.Context, cfg.HistoryBranch)
	}
	if err != nil {
		src.Close()
		return nil, nil, nil, err
	}
	return src, cfg, hist, nil
}

// openRun opens the history and reads the record of the run the command
// line names.
func openRun(c *cli.Context) (*source, *releases.History, *record.Run, error) {
	id, err := runArg(c)
	if err != nil {
		return nil, nil, nil, err
	}
	src, _, hist, err := openHistory(c, "")
	if err != nil {
		return nil, nil, nil, err
	}
	rec, err := hist.FindRun(c.Context, id)
	if err != nil {
		src.Close()
		return nil, nil, nil, err
	}
	return src, hist, rec, nil
}

// onDeployment is the action of a command that works on one environment
// (--env) read from the manifest revision.
func onDeployment(fn func(c *cli.Context, d *deployment) error) cli.ActionFunc {
	return onDeploymentInspecting(false, fn)
}

// onDeploymentInspecting is onDeployment; with inspect, the hosts are
// inspected while the manifest branch is fetched (for run, which always
// inspects them).
func onDeploymentInspecting(inspect bool, fn func(c *cli.Context, d *deployment) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := checkUsage(c); err != nil {
			return err
		}
		d, err := openDeployment(c, inspect)
		if err != nil {
			return err
		}
		defer d.Close()
		return fn(c, d)
	}
}

func historyCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "history",
		Usage: "list an environment's runs, newest first, from the history branch",
		Description: `Reads the run records on the history branch (fetched from the remote when there is one).
The same story is in plain Git: git log lieutenant/runs -- runs/ENV

EXAMPLE:
   lieutenant history --env production
   lieutenant history --env production --limit 0 --output json`,
		Flags: []cli.Flag{envFlag(), &cli.IntFlag{Name: "limit", Value: 20, Usage: "show this many runs; 0: all"}, outputFlag()},
		// Only lieutenant.yaml must read: the history of an environment
		// whose files are broken at the tip is what one wants to see.
		Action: func(c *cli.Context) error {
			if err := checkUsage(c); err != nil {
				return err
			}
			env := c.String("env")
			src, _, hist, err := openHistory(c, env)
			if err != nil {
				return err
			}
			defer src.Close()
			recs, err := hist.Records(c.Context, env)
			if err != nil {
				return err
			}
			slices.Reverse(recs)
			if n := c.Int("limit"); n > 0 && len(recs) > n {
				recs = recs[:n]
			}
			if c.String("output") == "json" {
				views := make([]runSummary, len(recs))
				for i, r := range recs {
					views[i] = summarize(r)
				}
				return writeJSON(s.out, views)
			}
			if len(recs) == 0 {
				fmt.Fprintf(s.out, "No runs of %s recorded on %s yet.\n", env, src.repo.Tracking(hist.Branch()))
				return nil
			}
			var rows [][]string
			for _, r := range recs {
				v := summarize(r)
				rows = append(rows, []string{v.ID, v.Kind, v.Release, shortCommit(v.Commit), v.By, v.Started.Local().Format("2006-01-02 15:04"),
					v.Duration, string(v.Outcome), fmt.Sprintf("%d/%d", v.HostsOK, v.HostsPlanned), fmt.Sprint(v.HostsFailed)})
			}
			writeTable(s.out, []string{"run", "kind", "release", "commit", "by", "started", "took", "outcome", "hosts ok", "failed"}, rows)
			return nil
		},
	}
}

// runSummary is one line of history, and its JSON form.
type runSummary struct {
	ID           string         `json:"id"`
	Environment  string         `json:"environment"`
	Kind         string         `json:"kind"`
	Release      string         `json:"release"`
	Commit       string         `json:"manifest_commit"`
	By           string         `json:"started_by"`
	Started      time.Time      `json:"started_at"`
	Duration     string         `json:"duration,omitempty"`
	Outcome      record.Outcome `json:"outcome"`
	HostsPlanned int            `json:"hosts_planned"`
	HostsOK      int            `json:"hosts_ok"`
	HostsFailed  int            `json:"hosts_failed"`
	Resumed      int            `json:"resumed"`
}

func summarize(r *record.Run) runSummary {
	v := runSummary{ID: r.ID, Environment: r.Environment, Kind: r.Kind, Release: r.Release, Commit: r.Revision,
		By: r.StartedBy, Started: r.StartedAt, Duration: r.Duration, Outcome: r.Outcome, Resumed: len(r.Resumed)}
	for _, h := range r.Hosts {
		if h.Batch > 0 {
			v.HostsPlanned++
		}
		switch h.Status {
		case record.HostSucceeded:
			v.HostsOK++
		case record.HostFailed:
			v.HostsFailed++
		}
	}
	if r.Outcome == record.OutcomeRunning && r.Waiting != nil {
		v.Outcome = "waiting"
	}
	return v
}

func shortCommit(h string) string {
	if len(h) > 7 {
		return h[:7]
	}
	return h
}

func showCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show one run: who, what, and host by host what happened",
		ArgsUsage: "RUN",
		Description: `Reads the run's record from the history branch. The full record is the YAML file
itself: git show lieutenant/runs:runs/ENV/RUN.yaml; --output json prints it as JSON.

EXAMPLE:
   lieutenant show 2026-11-28T10-00-00Z-3f2a`,
		Flags: []cli.Flag{outputFlag()},
		Action: func(c *cli.Context) error {
			src, hist, rec, err := openRun(c)
			if err != nil {
				return err
			}
			defer src.Close()
			if c.String("output") == "json" {
				return writeJSON(s.out, rec)
			}
			printRun(s.out, rec)
			path, _ := record.Path(rec.Environment, rec.ID)
			printResult(s.out, rec, src.recordAt(hist.Branch(), path))
			return nil
		},
	}
}

// printRun is the header of show: the facts of the run before its hosts.
func printRun(w io.Writer, rec *record.Run) {
	fmt.Fprintf(w, "Run %s: %s of %s to release %s (manifest commit %s)\n", rec.ID, rec.Kind, rec.Environment, rec.Release, shortCommit(rec.Revision))
	fmt.Fprintf(w, "  packages:   %s\n", strings.Join(rec.Packages, ", "))
	fmt.Fprintf(w, "  started:    %s by %s from %s\n", rec.StartedAt.Local().Format(time.RFC3339), rec.StartedBy, rec.StartedFrom)
	if rec.Message != "" {
		fmt.Fprintf(w, "  message:    %s\n", rec.Message)
	}
	for _, r := range rec.Resumed {
		fmt.Fprintf(w, "  resumed:    %s by %s from %s (in flight: %s)\n", r.At.Local().Format(time.RFC3339), r.By, r.From, orNone(r.Hosts))
	}
	for _, b := range rec.Batches {
		if g := b.Gate; g != nil {
			line := string(g.Status)
			if g.ApprovedBy != "" {
				line += ", approved by " + g.ApprovedBy
			}
			if g.Error != "" {
				line += ": " + g.Error
			}
			fmt.Fprintf(w, "  gate %d:     %s\n", b.Number, line)
		}
	}
	if wt := rec.Waiting; wt != nil {
		fmt.Fprintf(w, "  waiting:    at the gate after batch %d since %s, until %s: lieutenant approve %s / lieutenant abort %s\n",
			wt.Gate, wt.Since.Local().Format(time.RFC3339), wt.Until.Local().Format(time.RFC3339), rec.ID, rec.ID)
	}
}

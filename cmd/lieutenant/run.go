package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

func runCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "roll the environment's manifest out, batch by batch, and record the run in Git",
		Description: `Reads the environment at --rev, checks every host (SSH with verified host keys, rpm),
the balancer and the preflight steps, and only then changes anything. Hosts already at
the manifest's versions are skipped. Batches run one after the other with the gate
between them; a failed host stays out of the balancer and no later batch starts.
The run record is committed to the history branch at every state change.

A gate with approval: prompt asks on the terminal; --yes approves ahead. With no
terminal and no --yes such a run refuses to start rather than wait for nobody.

EXAMPLE:
   lieutenant run --env production
   lieutenant run --env production --yes --output json   # CI`,
		Flags: append([]cli.Flag{
			envFlag(),
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "approve every gate ahead"},
			outputFlag(),
		}, sshFlags()...),
		Action: func(c *cli.Context) error {
			if err := checkUsage(c); err != nil {
				return err
			}
			return runDeployment(c, s)
		},
	}
}

func runDeployment(c *cli.Context, s streams) error {
	ctx := c.Context
	d, err := openDeployment(c)
	if err != nil {
		return err
	}
	defer d.Close()
	hist, err := d.repo.History(d.dep.HistoryBranch)
	if err != nil {
		return err
	}
	conn, balancer, obs, err := d.observe(c)
	if err != nil {
		return err
	}
	defer conn.Close()
	plan, err := playbook.MakePlan(d.dep, obs)
	if err != nil {
		return err
	}
	if len(plan.Batches) == 0 {
		if c.String("output") == "json" {
			return writeJSON(s.out, map[string]any{"environment": plan.Environment, "release": plan.Release,
				"manifest_commit": d.snap.Hash, "outcome": "nothing-to-do", "up_to_date": names(plan.UpToDate)})
		}
		fmt.Fprintf(s.out, "Nothing to do: all %d hosts of %s have release %s and are in service (%s at %s).\n",
			len(plan.UpToDate), plan.Environment, plan.Release, d.snap.Rev, d.snap.ShortHash)
		return nil
	}
	printPlanSummary(s.err, plan, d.snap)

	now := time.Now()
	id := releases.NewRunID(now)
	local, err := transport.NewLocal().Connect(ctx, transport.Host{Name: "localhost"})
	if err != nil {
		return err
	}
	op := d.repo.Operator()
	rec := playbook.NewRecord(plan, id, d.snap.Hash, fmt.Sprintf("%s <%s>", op.Name, op.Email), op.User+"@"+op.Host, now)
	recorder, err := releases.NewRecorder(hist, rec)
	if err != nil {
		return err
	}
	runner := &playbook.Runner{
		Connector: conn,
		Balancer:  balancer,
		MinUp:     d.dep.Environment.Balancer.MinUp,
		Local:     local,
		HTTP:      httpClient(),
		Approver:  approver(c, s, op.Name),
		Recorder:  recorder,
		Observe:   progressPrinter(s.err, len(plan.Batches)),
	}
	runErr := runner.Run(ctx, d.dep.Environment, plan, rec)
	if c.String("output") == "json" {
		if err := writeJSON(s.out, rec); err != nil {
			return err
		}
	} else {
		path := ""
		if recorder.Saved() {
			path = recorder.Path()
		}
		printResult(s.out, rec, hist.Branch(), path)
	}
	return runErr
}

// approver asks on the terminal, approves ahead with --yes, and is nil when
// neither is possible, which makes a plan that needs approval refuse to
// start.
func approver(c *cli.Context, s streams, operator string) playbook.Approver {
	if c.Bool("yes") {
		return yesApprover{by: operator + " (--yes)"}
	}
	in, ok := s.in.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return nil
	}
	return newPromptApprover(in, s.err, operator)
}

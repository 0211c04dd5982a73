package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

func planCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "plan",
		Usage: "show what a run would do: per host the installed and wanted versions, the batches and the steps",
		Description: `Reads the environment at --rev, connects to every selected host over SSH (verifying
its host key) and asks rpm which versions are installed. Changes nothing.
With --offline nothing is contacted, not even the Git remote: a clone's manifest branch
is read as last fetched, and installed versions show as "?".

EXAMPLE:
   lieutenant plan --env production
   lieutenant plan --env production --offline --output json`,
		Flags: append([]cli.Flag{
			envFlag(),
			&cli.BoolFlag{Name: "offline", Usage: "contact nothing (hosts, balancer, Git remote); installed versions are unknown"},
			outputFlag(),
		}, sshFlags()...),
		Action: onDeployment(func(c *cli.Context, d *deployment) error {
			var obs *playbook.Observed
			if !c.Bool("offline") {
				conn, _, observed, err := d.observe(c)
				if err != nil {
					return err
				}
				defer conn.Close()
				obs = observed
			}
			plan, err := playbook.MakePlan(d.dep, obs)
			if err != nil {
				return err
			}
			var capacity error
			if obs != nil && obs.Backend != nil {
				capacity = plan.CheckCapacity(obs.Backend, d.dep.Environment.Balancer.MinUp)
			}
			if c.String("output") == "json" {
				return writeJSON(s.out, planJSON(plan, d.snap))
			}
			printPlan(s.out, plan, d.snap)
			if capacity != nil {
				fmt.Fprintf(s.out, "\nWarning: a run would be refused: %v\n", capacity)
			}
			return nil
		}),
	}
}

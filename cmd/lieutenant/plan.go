package main

import (
	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

func planCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "plan",
		Usage: "show what a run would do: per host the installed and wanted versions, the batches and the steps",
		Description: `Reads the environment at --rev, connects to every selected host over SSH (verifying
its host key) and asks rpm which versions are installed. Changes nothing.
With --offline no host is contacted and installed versions show as "?".

EXAMPLE:
   lieutenant plan --env production
   lieutenant plan --env production --offline --output json`,
		Flags: append([]cli.Flag{
			envFlag(),
			&cli.BoolFlag{Name: "offline", Usage: "do not contact hosts; installed versions are unknown"},
			outputFlag(),
		}, sshFlags()...),
		Action: func(c *cli.Context) error {
			if err := checkUsage(c); err != nil {
				return err
			}
			d, err := openDeployment(c)
			if err != nil {
				return err
			}
			defer d.Close()
			var installed playbook.Installed
			if !c.Bool("offline") {
				conn, err := d.connector(c)
				if err != nil {
					return err
				}
				defer conn.Close()
				if installed, err = d.inspect(c.Context, conn, false); err != nil {
					return err
				}
			}
			plan, err := playbook.MakePlan(d.dep, installed)
			if err != nil {
				return err
			}
			if c.String("output") == "json" {
				return writeJSON(s.out, planJSON(plan, d.snap))
			}
			printPlan(s.out, plan, d.snap)
			return nil
		},
	}
}

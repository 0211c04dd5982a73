package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

func validateCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "validate",
		Usage: "check lieutenant.yaml and every environment's manifest, inventory and playbook",
		Description: `Reads the files at --rev (committed files only, never the work tree) and reports
every problem at once, each with its file, line and field. Contacts no host.

EXAMPLE:
   lieutenant validate
   lieutenant --rev origin/main validate`,
		Action: func(c *cli.Context) error {
			if err := checkUsage(c); err != nil {
				return err
			}
			repo, snap, err := openRepo(c)
			if err != nil {
				return err
			}
			defer repo.Close()
			cfg, err := playbook.ValidateAll(snap)
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "ok: %s and %d environments (%s) at %s (%s)\n", playbook.ConfigFile,
				len(cfg.Order), strings.Join(cfg.Order, ", "), snap.Rev, snap.ShortHash)
			return nil
		},
	}
}

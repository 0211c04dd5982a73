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
every problem at once, each with its file, line and field. Contacts no host. In a clone it
checks HEAD, what you are about to push, and fetches nothing unless --remote or --branch is
given (or --repo is a URL).

EXAMPLE:
   lieutenant validate
   lieutenant --rev origin/main validate`,
		Action: func(c *cli.Context) error {
			if err := checkUsage(c); err != nil {
				return err
			}
			// What is about to be pushed: HEAD.
			repo, snap, err := openRepoAt(c, true, false)
			if err != nil {
				return err
			}
			defer repo.Close()
			cfg, err := playbook.ValidateAll(c.Context, snap)
			if err != nil {
				return err
			}
			if err := repo.checkHistoryBranch(cfg.HistoryBranch); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "ok: %s and %d environments (%s) at %s (%s)\n", playbook.ConfigFile,
				len(cfg.Order), strings.Join(cfg.Order, ", "), snap.Rev, snap.ShortHash)
			return nil
		},
	}
}

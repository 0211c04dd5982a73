package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

// approveCommand is `lieutenant approve RUN`, or with approve false
// `lieutenant abort RUN`: a decision recorded in Git, which the waiting run
// reads within seconds wherever it runs.
func approveCommand(s streams, approve bool) *cli.Command {
	name, decision, effect := "abort", releases.Aborted, "stops at the gate; the hosts done so far stay in service"
	usage := "stop a run waiting at its gate, from anywhere: the decision is recorded in Git"
	if approve {
		name, decision, effect = "approve", releases.Approved, "goes on with the next batch"
		usage = "let a run waiting at its gate go on, from anywhere: the decision is recorded in Git"
	}
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "RUN",
		Description: fmt.Sprintf(`Writes approvals/ENV/RUN.yaml on the history branch, naming who decided and from where.
The run %s. The first decision on a gate stands.

EXAMPLE:
   lieutenant %s -m "dashboards look fine" 2026-11-28T10-00-00Z-3f2a`, effect, name),
		Flags: []cli.Flag{&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "why, for the record"}},
		Action: func(c *cli.Context) error {
			src, hist, rec, err := openRun(c)
			if err != nil {
				return err
			}
			defer src.Close()
			id := rec.ID
			if rec.Outcome != record.OutcomeRunning {
				return fmt.Errorf("run %s is not running: it ended %s", id, rec.Outcome)
			}
			if rec.Waiting == nil {
				return fmt.Errorf("run %s is not waiting at a gate; %s it once `lieutenant show %s` says it waits (to stop it now, interrupt its process)", id, name, id)
			}
			gate := rec.Waiting.Gate
			op := src.repo.Operator()
			d := releases.Decision{Environment: rec.Environment, Run: id, Gate: gate, Decision: decision,
				By: op.Who(), From: op.Where(),
				At: time.Now().UTC().Truncate(time.Second), Message: c.String("message")}
			if err := hist.Decide(c.Context, d); err != nil {
				return err
			}
			fmt.Fprintf(s.out, "Run %s: %s at the gate after batch %d by %s; the run %s.\n", id, decision, gate, d.By, effect)
			return nil
		},
	}
}

func lockCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "lock",
		Usage: "show or break the per-environment locks held in Git",
		Subcommands: withUsageErrors("lock ",
			&cli.Command{
				Name:  "status",
				Usage: "who holds each environment's lock, since when, for which release",
				// Not envFlag: here --env is optional.
				Flags: []cli.Flag{&cli.GenericFlag{Name: "environment", Aliases: []string{"env", "e"}, Value: &onceValue{what: "environment"}, Usage: "only this environment"}, outputFlag()},
				Action: func(c *cli.Context) error {
					if err := checkUsage(c); err != nil {
						return err
					}
					src, cfg, hist, err := openHistory(c, c.String("env"))
					if err != nil {
						return err
					}
					defer src.Close()
					envs := cfg.Order
					if e := c.String("env"); e != "" {
						envs = []string{e}
					}
					var locks []releases.Lock
					var rows [][]string
					for _, env := range envs {
						l, err := hist.ReadLock(c.Context, env)
						if err != nil {
							return err
						}
						if l == nil {
							rows = append(rows, []string{env, "free", "", "", "", "", ""})
							continue
						}
						locks = append(locks, *l)
						holder := l.From + " pid " + fmt.Sprint(l.PID)
						if (&releases.LockedError{Lock: *l}).HolderGone() {
							holder += " (gone: lieutenant resume " + l.Run + ")"
						}
						rows = append(rows, []string{env, "locked", l.Run, l.Kind + " of " + l.Release, l.HeldBy, holder, l.Since.Local().Format(time.RFC3339)})
					}
					if c.String("output") == "json" {
						return writeJSON(s.out, append([]releases.Lock{}, locks...))
					}
					writeTable(s.out, []string{"environment", "lock", "run", "doing", "held by", "from", "since"}, rows)
					return nil
				},
			},
			&cli.Command{
				Name:  "release",
				Usage: "break an environment's lock (--force); the commit records who did",
				Description: `For a lock whose run cannot be resumed. A run that died can usually be finished
instead, under its own lock: lieutenant resume RUN.`,
				Flags: []cli.Flag{envFlag(), &cli.BoolFlag{Name: "force", Usage: "required: break the lock whoever holds it"},
					&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "why, for the commit"}},
				Action: func(c *cli.Context) error {
					if err := checkUsage(c); err != nil {
						return err
					}
					if !c.Bool("force") {
						return usagef("lock release breaks another run's lock: pass --force to mean it (or finish that run with lieutenant resume RUN)")
					}
					env := c.String("env")
					src, _, hist, err := openHistory(c, env)
					if err != nil {
						return err
					}
					defer src.Close()
					op := src.repo.Operator()
					by := op.Who() + " from " + op.Where()
					broken, err := hist.BreakLock(c.Context, env, by, c.String("message"))
					if err != nil {
						return err
					}
					if broken == nil {
						fmt.Fprintf(s.out, "%s was not locked.\n", env)
						return nil
					}
					fmt.Fprintf(s.out, "Released the lock of %s held by run %s (%s, %s) by force, as %s.\n", env, broken.Run, broken.HeldBy, broken.From, by)
					if gone := (&releases.LockedError{Lock: *broken}).HolderGone(); !gone {
						fmt.Fprintf(s.err, "lieutenant: if run %s is still going, it keeps changing hosts; stop it first\n", broken.Run)
					}
					return nil
				},
			},
		),
	}
}

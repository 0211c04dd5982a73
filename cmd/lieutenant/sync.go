package main

import (
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

func syncCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "sync",
		Usage: "deploy the environment's manifest if it differs from the last successful run's (for CI)",
		Description: `Idempotent, for CI on a manifest merge and on a schedule. When the manifest at the tip of
the manifest branch has the packages the environment's last successful run deployed,
sync prints "in sync at RELEASE (COMMIT)", contacts no host and exits 0. Otherwise it
deploys exactly like lieutenant run, as a run of kind sync.

--heal also checks every host over SSH and, when some have drifted from the manifest
(other versions installed, or out of the balancer), redeploys to those hosts through the
same drain, install, verify and enable steps.

EXAMPLE:
   lieutenant --repo git@github.com:acme/deploy.git sync --env production
   lieutenant sync --env production --heal`,
		Flags:  append(append(deployFlags(), &cli.BoolFlag{Name: "heal", Usage: "also redeploy to hosts that drifted from the manifest"}), sshFlags()...),
		Action: onDeployment(func(c *cli.Context, d *deployment) error { return d.sync(c, s) }),
	}
}

func (d *deployment) sync(c *cli.Context, s streams) error {
	hist, recs, err := d.records(c.Context)
	if err != nil {
		return err
	}
	last := lastSucceeded(recs)
	synced := last != nil && inSync(last, d.dep)
	if synced && !c.Bool("heal") {
		if c.String("output") == "json" {
			return writeJSON(s.out, map[string]any{"environment": d.dep.Environment.Name, "release": last.Release,
				"manifest_commit": d.snap.Hash, "outcome": "in-sync", "last_run": last.ID})
		}
		fmt.Fprintf(s.out, "in sync at %s (%s): deployed by run %s\n", last.Release, d.snap.ShortHash, last.ID)
		return nil
	}
	return d.deploy(c, s, hist, runSpec{Kind: "sync", RecordInSync: !synced})
}

// lastSucceeded is the newest successful run among recs (oldest first).
func lastSucceeded(recs []*record.Run) *record.Run {
	for _, r := range slices.Backward(recs) {
		if r.Outcome == record.OutcomeSucceeded {
			return r
		}
	}
	return nil
}

// samePackages reports whether rec deployed exactly m's packages.
func samePackages(rec *record.Run, m *playbook.Manifest) bool {
	want := make([]string, len(m.Packages))
	for i, p := range m.Packages {
		want[i] = p.NEVRA()
	}
	return slices.Equal(slices.Sorted(slices.Values(rec.Packages)), slices.Sorted(slices.Values(want)))
}

// inSync reports whether rec, a successful run, deployed what dep asks
// for now: the same release and packages to the same hosts. A host added
// to the inventory is a change to deploy, as a new manifest is.
func inSync(rec *record.Run, dep *playbook.Deployment) bool {
	if rec.Release != dep.Manifest.Release || !samePackages(rec, dep.Manifest) {
		return false
	}
	var had, want []string
	for _, h := range rec.Hosts {
		had = append(had, h.Name)
	}
	for _, h := range dep.Hosts {
		want = append(want, h.Name)
	}
	slices.Sort(had)
	slices.Sort(want)
	return slices.Equal(had, want)
}

func resumeCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:      "resume",
		Usage:     "finish a run whose process died (kill -9, lost CI runner), from its record in Git",
		ArgsUsage: "RUN",
		Description: `Reads the run's record from the history branch and the manifest at the run's commit,
checks every host's real state (installed versions over SSH, the balancer), runs the
steps again on the hosts that were in flight (which finishes or repairs them), never
repeats a host that finished, and goes on with the remaining batches and gates under
the run's own lock. The record lists every process that worked on the run.

EXAMPLE:
   lieutenant resume 2026-11-28T10-00-00Z-3f2a --yes`,
		Flags: append(deployFlags()[1:], sshFlags()...),
		Action: func(c *cli.Context) error {
			src, hist, rec, err := openRun(c)
			if err != nil {
				return err
			}
			defer src.Close()
			id := rec.ID
			if err := rec.CheckResumable(); err != nil {
				return err
			}
			l, err := hist.ReadLock(c.Context, rec.Environment)
			if err != nil {
				return err
			}
			var takeOver *releases.Lock
			if l != nil && l.Run == id {
				if l.OnThisMachine() && l.Alive() {
					return fmt.Errorf("run %s is still going: its process %d on this machine is alive; stop it or wait for it", id, l.PID)
				}
				// The dead process's lock becomes this one's; should that
				// process be alive elsewhere after all, its next save fails.
				takeOver = l
			}
			// The history branch is only as trustworthy as those who can
			// push to it: what runs must come from the manifest branch.
			if err := src.repo.CheckAncestor(rec.Revision, src.tip.Hash); err != nil {
				return fmt.Errorf("resume %s: the run's manifest commit: %w; if the run deployed from another branch or revision, name it with --branch or --rev", id, err)
			}
			snap, err := src.repo.Snapshot(c.Context, rec.Revision)
			if err != nil {
				return fmt.Errorf("resume %s: the manifest commit of the run: %w", id, err)
			}
			d, err := src.deployment(snap, rec.Environment)
			if err != nil {
				return err
			}
			if d.dep.HistoryBranch != hist.Branch() {
				if hist, err = d.history(c.Context, d.dep.HistoryBranch); err != nil {
					return err
				}
			}
			return d.deploy(c, s, hist, runSpec{Resume: rec, TakeOver: takeOver})
		},
	}
}

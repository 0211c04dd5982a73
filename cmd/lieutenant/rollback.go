package main

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

func rollbackCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "rollback",
		Usage: "put the previous release back: one manifest commit, then a run of kind rollback",
		Description: `Under the environment's lock, commits to the manifest branch the environment's manifest as
it was for the last successful run before the current one (or for --to RUN), pushes it,
and deploys it: dnf installs the exact older versions, through the same drain, verify
and enable steps. Since the manifest itself goes back, a later sync does not undo the
rollback; roll forward with a new manifest commit. The commit message carries
[skip ci], so the pipeline that runs sync on merges does not race the rollback.

EXAMPLE:
   lieutenant rollback --env production
   lieutenant rollback --env production --to 2026-11-20T09-12-00Z-a1b2`,
		Flags:  append(append(deployFlags(), &cli.StringFlag{Name: "to", Usage: "the run whose manifest to restore (default: the last successful one before the current)"}), sshFlags()...),
		Action: onDeployment(func(c *cli.Context, d *deployment) error { return d.rollback(c, s) }),
	}
}

// rollbackTarget picks the run whose manifest a rollback restores: to,
// when given, or the newest successful run that deployed other packages
// than the manifest has now (so after a failed release it is the last good
// one, and after a good one the one before) from a commit onBranch accepts.
func rollbackTarget(recs []*record.Run, to string, current *playbook.Manifest, onBranch func(commit string) bool) (*record.Run, error) {
	if to != "" {
		i := slices.IndexFunc(recs, func(r *record.Run) bool { return r.ID == to })
		switch {
		case i < 0:
			return nil, fmt.Errorf("--to %s: no run of that id in this environment (see lieutenant history)", to)
		case recs[i].Outcome != record.OutcomeSucceeded:
			return nil, fmt.Errorf("--to %s: that run ended %s; roll back to a run that succeeded", to, recs[i].Outcome)
		}
		return recs[i], nil
	}
	for _, r := range slices.Backward(recs) {
		if r.Outcome == record.OutcomeSucceeded && !samePackages(r, current) && onBranch(r.Revision) {
			return r, nil
		}
	}
	return nil, fmt.Errorf("no successful run deployed anything but release %s: there is nothing to roll back to", current.Release)
}

func (d *deployment) rollback(c *cli.Context, s streams) error {
	ctx := c.Context
	env := d.dep.Environment.Name
	hist, recs, err := d.records(ctx)
	if err != nil {
		return err
	}
	onBranch := func(commit string) bool { return d.repo.CheckAncestor(commit, d.snap.Hash) == nil }
	target, err := rollbackTarget(recs, c.String("to"), d.dep.Manifest, onBranch)
	if err != nil {
		return err
	}
	if err := d.repo.CheckAncestor(target.Revision, d.snap.Hash); err != nil {
		return fmt.Errorf("rollback to run %s: its manifest commit: %w", target.ID, err)
	}
	old, err := d.repo.Snapshot(ctx, target.Revision)
	if err != nil {
		return fmt.Errorf("rollback to run %s: its manifest commit: %w", target.ID, err)
	}
	oldDep, err := playbook.Load(old, env)
	if err != nil {
		return fmt.Errorf("rollback to run %s at %s: %w", target.ID, old.ShortHash, err)
	}
	manifest, err := old.ReadFile(oldDep.Environment.Manifest)
	if err != nil {
		return err
	}
	branch, err := d.manifestBranch()
	if err != nil {
		return err
	}
	id := releases.NewRunID(time.Now())
	// The lock comes first: a rollback commit nobody deploys would tell the
	// next reader of the manifest something false.
	held, err := d.takeLock(c, hist, releases.Lock{Environment: env, Run: id, Kind: "rollback", Release: target.Release, Commit: target.Revision})
	if err != nil {
		return err
	}
	defer held.release(ctx, s)

	path := d.dep.Environment.Manifest
	if cur, err := d.snap.ReadFile(path); err == nil && bytes.Equal(cur, manifest) {
		fmt.Fprintf(s.err, "The manifest on %s already has release %s; deploying it.\n", branch, target.Release)
	}
	manifests, err := d.repo.History(branch)
	if err != nil {
		return err
	}
	op := d.repo.Operator()
	msg := fmt.Sprintf("Roll %s back to %s\n\nRestores %s as deployed by run %s (manifest commit %s), by %s with lieutenant rollback.\nThe rollback deploys it itself: [skip ci]\n",
		env, target.Release, path, target.ID, shortCommit(target.Revision), op.Who())
	if m := c.String("message"); m != "" {
		msg += "\n" + m + "\n"
	}
	commit, err := manifests.Put(ctx, path, manifest, msg)
	if err != nil {
		return fmt.Errorf("rollback: commit the manifest: %w", err)
	}
	snap, err := d.repo.Snapshot(ctx, commit)
	if err != nil {
		return err
	}
	nd, err := d.source.deployment(snap, env)
	if err != nil {
		return fmt.Errorf("rollback: the manifest branch with release %s restored does not validate: %w", target.Release, err)
	}
	held.lock.Commit = snap.Hash
	fmt.Fprintf(s.err, "Committed %s to %s: %s now has release %s (run %s's manifest).\n", snap.ShortHash, branch, path, target.Release, target.ID)
	return nd.deploy(c, s, hist, runSpec{Kind: "rollback", ID: id, Held: held})
}

// manifestBranch is the branch a rollback commits to: the remote's
// manifest branch, or without a remote --branch or the one HEAD is on.
func (d *deployment) manifestBranch() (string, error) {
	if d.branch != "" {
		return d.branch, nil
	}
	return d.repo.HeadBranch()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

func runCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "roll the environment's manifest out, batch by batch, and record the run in Git",
		Description: `Reads the environment at --rev, checks every host (SSH with verified host keys,
rpm), takes the environment's lock in Git, checks the balancer and the preflight steps,
and only then changes anything. Hosts already at the manifest's versions are skipped.
Batches run one after the other with the gate between them; a failed host stays out of
the balancer and no later batch starts. Each batch's intent is committed (and pushed,
with a remote) to the history branch before any of its hosts is touched, and the hosts'
steps follow in the background, so a killed run can be finished with lieutenant resume.

A gate with approval: prompt asks on the terminal and, from anywhere, takes
lieutenant approve RUN / lieutenant abort RUN; --yes approves ahead.

EXAMPLE:
   lieutenant run --env production
   lieutenant run --env production --yes --output json   # CI`,
		Flags: append(deployFlags(), sshFlags()...),
		Action: onDeploymentInspecting(true, func(c *cli.Context, d *deployment) error {
			hist, err := d.history(c.Context, d.dep.HistoryBranch)
			if err != nil {
				return err
			}
			return d.deploy(c, s, hist, runSpec{Kind: "run"})
		}),
	}
}

// deployFlags are the flags of every command that deploys.
func deployFlags() []cli.Flag {
	return []cli.Flag{
		envFlag(),
		&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "approve every gate ahead"},
		&cli.DurationFlag{Name: "lock-wait", Usage: "wait this long for another run's lock (default: fail at once)"},
		&cli.StringFlag{Name: "message", Aliases: []string{"m"}, Usage: "why, for the lock and the record"},
		outputFlag(),
	}
}

func (d *deployment) plan(obs *playbook.Observed, resume *record.Run) (*playbook.Plan, error) {
	if resume != nil {
		return playbook.ResumePlan(d.dep, obs, resume)
	}
	return playbook.MakePlan(d.dep, obs)
}

func (d *deployment) nothingToDo(c *cli.Context, s streams, kind string, plan *playbook.Plan) error {
	if c.String("output") == "json" {
		return writeJSON(s.out, map[string]any{"environment": plan.Environment, "release": plan.Release,
			"manifest_commit": d.snap.Hash, "outcome": "nothing-to-do", "up_to_date": names(plan.UpToDate)})
	}
	if kind == "sync" {
		fmt.Fprintf(s.out, "in sync at %s (%s): all %d hosts have it and are in service\n", plan.Release, d.snap.ShortHash, len(plan.UpToDate))
		return nil
	}
	fmt.Fprintf(s.out, "Nothing to do: all %d hosts of %s have release %s and are in service (%s at %s).\n",
		len(plan.UpToDate), plan.Environment, plan.Release, d.snap.Rev, d.snap.ShortHash)
	return nil
}

// runSpec says which run deploy makes: a new one of Kind, or the rest of
// the run Resume records.
type runSpec struct {
	Kind   string
	ID     string // "" for a new ID
	Resume *record.Run
	// Held is the environment's lock when the caller took it already.
	Held *heldLock
	// TakeOver is the dead process's lock that a resume takes over.
	TakeOver *releases.Lock
	// RecordInSync records a run even when every host has the release
	// already (sync, when the manifest moved to what the fleet runs).
	RecordInSync bool
}

// heldLock is an environment's lock this process holds.
type heldLock struct {
	hist    *releases.History
	lock    releases.Lock
	outcome string // for the unlock commit's message
	// recorder is the run's, whose last save releases the lock.
	recorder *releases.Recorder
}

// newLock is the lock of run id for the command line's operator.
func (src *source) newLock(c *cli.Context, l releases.Lock) releases.Lock {
	op := src.repo.Operator()
	l.HeldBy, l.From, l.PID, l.Token = op.Who(), op.Where(), os.Getpid(), releases.NewLockToken()
	l.Since, l.Message = time.Now().UTC().Truncate(time.Second), c.String("message")
	return l
}

// takeLock takes env's lock for run l.Run in Git, waiting up to
// --lock-wait.
func (src *source) takeLock(c *cli.Context, hist *releases.History, l releases.Lock) (*heldLock, error) {
	l = src.newLock(c, l)
	if err := explainLocked(c, hist, hist.Lock(c.Context, l, c.Duration("lock-wait"), lockPoll)); err != nil {
		return nil, err
	}
	return &heldLock{hist: hist, lock: l, outcome: "refused"}, nil
}

// lockPoll is how often a run waiting for a lock (--lock-wait) reads it
// again.
const lockPoll = 2 * time.Second

// explainLocked adds to a *LockedError what the holder's record says: a
// holder whose record says it ended will never unlock.
func explainLocked(c *cli.Context, hist *releases.History, err error) error {
	var locked *releases.LockedError
	if errors.As(err, &locked) {
		if rec, ferr := hist.FindRun(c.Context, locked.Lock.Run); ferr == nil && rec.CheckResumable() != nil {
			locked.HolderEnded = string(rec.Outcome)
		}
	}
	return err
}

// release gives the lock back, even when ctx was cancelled by a signal,
// unless the run's last record already did.
func (h *heldLock) release(ctx context.Context, s streams) {
	if h.recorder != nil && h.recorder.Released() {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	env := h.lock.Environment
	if err := h.hist.Unlock(cctx, h.lock, h.outcome); err != nil {
		fmt.Fprintf(s.err, "lieutenant: could not release the lock of %s: %v; release it with `lieutenant lock release --env %s --force`\n", env, err, env)
	}
}

// started is a run whose record is in Git, under the environment's lock.
type started struct {
	plan *playbook.Plan
	rec  *record.Run
	held *heldLock
}

// deploy runs d's plan under the environment's lock, which is released
// however the run ends, unless the process is killed: then lieutenant
// resume finishes the run under the same lock.
//
// The hosts are inspected once, before the lock: a run with nothing to do
// takes no lock and writes nothing. The lock is then taken in the same
// commit as the run's first record, which names the first batch's hosts as
// in flight, and that commit is refused if another run of the environment
// was recorded since the inspection; only then are the hosts inspected
// again.
func (d *deployment) deploy(c *cli.Context, s streams, hist *releases.History, spec runSpec) error {
	ctx := c.Context
	if u := c.String("ssh-user"); u != "" {
		d.dep.Environment.SSH.User = u // as the connector does, so that the early inspection compares
	}
	conn, balancer, early := d.early.take(d.dep)
	if !early {
		var err error
		if conn, balancer, err = d.adapters(c); err != nil {
			return err
		}
	}
	defer conn.Close()
	run, err := d.start(c, s, hist, spec, conn, balancer, early)
	if err != nil || run == nil {
		return err
	}
	defer run.held.release(ctx, s)
	rec, plan := run.rec, run.plan
	local, err := transport.NewLocal().Connect(ctx, transport.Host{Name: "localhost"})
	if err != nil {
		return err
	}
	runner := &playbook.Runner{
		Connector: conn,
		Balancer:  balancer,
		MinUp:     d.dep.Environment.Balancer.MinUp,
		Local:     local,
		HTTP:      httpClient(),
		Approver:  approver(c, s, hist, d.repo.Operator().Name),
		Recorder:  run.held.recorder,
		Observe:   progressPrinter(s.err, len(plan.Batches)),
		// A lost stdout or stderr does not stop the run; its record says so.
		Notes: func() []string { return lostOutput(s) },
	}
	runErr := runner.Run(ctx, d.dep.Environment, plan, rec)
	run.held.outcome = string(rec.Outcome)
	if c.String("output") == "json" {
		if err := writeJSON(s.out, rec); err != nil {
			return err
		}
	} else {
		where := ""
		if run.held.recorder.Saved() {
			path, _ := record.Path(rec.Environment, rec.ID)
			where = d.recordAt(hist.Branch(), path)
		}
		printResult(s.out, rec, where)
	}
	for _, n := range lostOutput(s) {
		fmt.Fprintf(s.err, "lieutenant: %s\n", n) // reaches stderr if stdout was the one lost
	}
	return runErr
}

// start inspects the hosts, plans, and writes the run's first record
// together with the lock; nil when there is nothing to do. Waiting for
// another run's lock (--lock-wait) reads the lock again and again, not the
// hosts: they are inspected again only once a run was recorded since.
func (d *deployment) start(c *cli.Context, s streams, hist *releases.History, spec runSpec, conn *transport.SSH, balancer lb.Balancer, early bool) (*started, error) {
	ctx := c.Context
	op := d.repo.Operator()
	now := time.Now()
	id, kind := spec.ID, spec.Kind
	if id == "" {
		id = releases.NewRunID(now)
	}
	var inFlight []string
	if spec.Resume != nil {
		id, kind = spec.Resume.ID, spec.Resume.Kind
		inFlight = spec.Resume.Resume(op.Who(), op.Where(), now)
	}
	held := spec.Held
	lock := releases.Lock{Environment: d.dep.Environment.Name, Run: id, Kind: kind, Release: d.dep.Manifest.Release, Commit: d.snap.Hash}
	if held == nil {
		lock = d.newLock(c, lock)
	}
	deadline := time.Now().Add(c.Duration("lock-wait"))
	var plan *playbook.Plan
	var rec *record.Run
	var first record.Commit
	var inspected string
	var written []string // the hosts whose files first holds
	for inspections := 0; ; {
		if plan == nil {
			var obs *playbook.Observed
			var err error
			if early && inspections == 0 {
				// Inspected while the branch was fetched, with these files.
				inspected, obs, err = d.early.inspected, d.early.obs, d.early.err
			} else if inspected, err = hist.TipHash(ctx); err == nil {
				obs, err = playbook.Inspect(ctx, conn, balancer, d.dep, 0)
			}
			inspections++
			if err != nil {
				return nil, err
			}
			if plan, err = d.plan(obs, spec.Resume); err != nil {
				return nil, err
			}
			if len(plan.Batches) == 0 {
				return nil, d.nothingToStart(c, s, hist, spec, plan, record.Start{ID: id, Kind: kind, Revision: d.snap.Hash,
					Message: c.String("message"), By: op.Who(), From: op.Where(), At: now})
			}
			if rec = spec.Resume; rec == nil {
				rec = playbook.NewRecord(plan, record.Start{ID: id, Kind: kind, Revision: d.snap.Hash,
					Message: c.String("message"), By: op.Who(), From: op.Where(), At: time.Now()})
			}
			plan.Declare(rec, time.Now())
			written = rec.Changes()
			files, err := rec.Files(true, written)
			if err != nil {
				return nil, err
			}
			first = record.Commit{Files: files, Outcome: rec.Outcome, Message: rec.Headline(fmt.Sprintf("started, %d batches", len(plan.Batches)))}
		}
		var err error
		if held != nil {
			held.recorder = releases.NewRecorder(hist, &held.lock)
			err = held.recorder.Save(ctx, first)
		} else {
			err = hist.BeginRun(ctx, lock, releases.Begin{TakeOver: spec.TakeOver, Inspected: inspected}, first)
		}
		var locked *releases.LockedError
		switch {
		case err == nil:
		case errors.Is(err, releases.ErrInspectionStale) && inspections < 5:
			fmt.Fprintf(s.err, "Another run of %s was recorded while the hosts were inspected: inspecting them again.\n", lock.Environment)
			plan = nil
			rec.Unsaved(written) // for a resumed record, written again with the next plan
			continue
		case errors.As(err, &locked) && time.Now().Add(lockPoll).Before(deadline):
			if err := hist.Await(ctx, lockPoll); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, explainLocked(c, hist, err)
		}
		if held == nil {
			held = &heldLock{hist: hist, lock: lock, outcome: "refused", recorder: releases.NewRecorder(hist, &lock)}
		}
		if spec.Resume != nil {
			fmt.Fprintf(s.err, "Resuming run %s of %s to %s (%s); in flight when it stopped: %s\n",
				rec.ID, lock.Environment, rec.Release, d.snap.ShortHash, orNone(inFlight))
		} else {
			printPlanSummary(s.err, plan, d.snap)
		}
		return &started{plan: plan, rec: rec, held: held}, nil
	}
}

// nothingToStart ends a run whose plan has no batch: it needs no lock and
// leaves no trace in history unless asked to (sync, when the manifest moved
// to what the fleet runs).
func (d *deployment) nothingToStart(c *cli.Context, s streams, hist *releases.History, spec runSpec, plan *playbook.Plan, start record.Start) error {
	if spec.RecordInSync && spec.Held == nil {
		rec := playbook.NewInSyncRecord(plan, start)
		files, err := rec.Files(true, nil)
		if err == nil {
			err = releases.NewRecorder(hist, nil).Save(c.Context, record.Commit{Files: files, Outcome: rec.Outcome, Message: rec.Headline("")})
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(s.err, "Recorded as run %s: the fleet already had %s.\n", start.ID, plan.Release)
	}
	if spec.Held != nil {
		spec.Held.outcome = "nothing to do"
	}
	return d.nothingToDo(c, s, start.Kind, plan)
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return fmt.Sprint(names)
}

// approver approves ahead with --yes; otherwise it takes a decision
// recorded in Git (lieutenant approve/abort, from anywhere) and, on a
// terminal, the operator's answer, whichever comes first.
func approver(c *cli.Context, s streams, hist *releases.History, operator string) playbook.Approver {
	if c.Bool("yes") {
		return yesApprover{by: operator + " (--yes)"}
	}
	git := &announcingApprover{Approver: &releases.GitApprover{History: hist}, out: s.err}
	in, ok := s.in.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return git
	}
	return firstApprover{newPromptApprover(in, s.err, operator), git}
}

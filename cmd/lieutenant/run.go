package main

import (
	"context"
	"errors"
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
		Description: `Takes the environment's lock in Git, reads the environment at --rev, checks every host
(SSH with verified host keys, rpm), the balancer and the preflight steps, and only then
changes anything. Hosts already at the manifest's versions are skipped. Batches run one
after the other with the gate between them; a failed host stays out of the balancer and
no later batch starts. The run record is committed (and pushed, with a remote) to the
history branch at every state change, so a killed run can be finished with
lieutenant resume.

A gate with approval: prompt asks on the terminal and, from anywhere, takes
lieutenant approve RUN / lieutenant abort RUN; --yes approves ahead.

EXAMPLE:
   lieutenant run --env production
   lieutenant run --env production --yes --output json   # CI`,
		Flags: append(deployFlags(), sshFlags()...),
		Action: onDeployment(func(c *cli.Context, d *deployment) error {
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

func (d *deployment) plan(obs *playbook.Observed, resume *playbook.Record) (*playbook.Plan, error) {
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
	Resume *playbook.Record
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
}

// takeLock takes env's lock for run l.Run in Git, waiting up to
// --lock-wait, or with from set takes it over from the dead process of
// the same run that holds it as from.
func (src *source) takeLock(c *cli.Context, hist *releases.History, l releases.Lock, from *releases.Lock) (*heldLock, error) {
	op := src.repo.Operator()
	l.HeldBy, l.From, l.PID, l.Token = op.Who(), op.Where(), os.Getpid(), releases.NewLockToken()
	l.Since, l.Message = time.Now().UTC().Truncate(time.Second), c.String("message")
	var err error
	if from != nil {
		err = hist.TakeOver(c.Context, l, *from)
	} else {
		err = hist.Lock(c.Context, l, c.Duration("lock-wait"), 2*time.Second)
	}
	var locked *releases.LockedError
	if errors.As(err, &locked) {
		// A holder whose record says it ended will never unlock.
		if rec, ferr := hist.FindRun(c.Context, locked.Lock.Run); ferr == nil && rec.CheckResumable() != nil {
			locked.HolderEnded = string(rec.Outcome)
		}
	}
	if err != nil {
		return nil, err
	}
	return &heldLock{hist: hist, lock: l, outcome: "refused"}, nil
}

// release gives the lock back, even when ctx was cancelled by a signal.
func (h *heldLock) release(ctx context.Context, s streams) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	env := h.lock.Environment
	if err := h.hist.Unlock(cctx, h.lock, h.outcome); err != nil {
		fmt.Fprintf(s.err, "lieutenant: could not release the lock of %s: %v; release it with `lieutenant lock release --env %s --force`\n", env, err, env)
	}
}

// deploy runs d's plan under the environment's lock, which is released
// however the run ends, unless the process is killed: then lieutenant
// resume finishes the run under the same lock.
func (d *deployment) deploy(c *cli.Context, s streams, hist *releases.History, spec runSpec) error {
	ctx := c.Context
	op := d.repo.Operator()
	by, from := op.Who(), op.Where()
	now := time.Now()
	id, kind := spec.ID, spec.Kind
	if id == "" {
		id = releases.NewRunID(now)
	}
	if spec.Resume != nil {
		id, kind = spec.Resume.ID, spec.Resume.Kind
	}
	env := d.dep.Environment.Name
	conn, balancer, obs, err := d.observe(c)
	if err != nil {
		return err
	}
	defer conn.Close()
	resume := spec.Resume
	plan, err := d.plan(obs, resume)
	if err != nil {
		return err
	}
	// Nothing to do needs no lock, and leaves no trace in history unless
	// asked to.
	if len(plan.Batches) == 0 && spec.Held == nil {
		if spec.RecordInSync && resume == nil {
			rec := playbook.NewInSyncRecord(plan, id, d.snap.Hash, by, from, now)
			rec.Kind, rec.Message = kind, c.String("message")
			recorder, err := releases.NewRecorder(hist, rec)
			if err == nil {
				err = recorder.Save(ctx, rec)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(s.err, "Recorded as run %s: the fleet already had %s.\n", id, plan.Release)
		}
		return d.nothingToDo(c, s, kind, plan)
	}
	held := spec.Held
	if held == nil {
		held, err = d.takeLock(c, hist, releases.Lock{Environment: env, Run: id, Kind: kind, Release: d.dep.Manifest.Release, Commit: d.snap.Hash}, spec.TakeOver)
		if err != nil {
			return err
		}
		defer held.release(ctx, s)
		// Another run may have changed hosts before the lock was ours:
		// plan from what the hosts have now. The connections are reused.
		if obs, err = playbook.Inspect(ctx, conn, balancer, d.dep, 0); err != nil {
			return err
		}
		if plan, err = d.plan(obs, resume); err != nil {
			return err
		}
	}
	if len(plan.Batches) == 0 {
		held.outcome = "nothing to do"
		return d.nothingToDo(c, s, kind, plan)
	}

	rec := resume
	if rec != nil {
		inFlight := rec.Resume(by, from, time.Now())
		fmt.Fprintf(s.err, "Resuming run %s of %s to %s (%s); in flight when it stopped: %s\n",
			rec.ID, env, rec.Release, d.snap.ShortHash, orNone(inFlight))
	} else {
		printPlanSummary(s.err, plan, d.snap)
		rec = playbook.NewRecord(plan, id, d.snap.Hash, by, from, time.Now())
		rec.Kind, rec.Message = kind, c.String("message")
	}
	local, err := transport.NewLocal().Connect(ctx, transport.Host{Name: "localhost"})
	if err != nil {
		return err
	}
	recorder, err := releases.NewRecorder(hist, rec)
	if err != nil {
		return err
	}
	recorder.HoldingLock(held.lock)
	runner := &playbook.Runner{
		Connector: conn,
		Balancer:  balancer,
		MinUp:     d.dep.Environment.Balancer.MinUp,
		Local:     local,
		HTTP:      httpClient(),
		Approver:  approver(c, s, hist, op.Name),
		Recorder:  recorder,
		Observe:   progressPrinter(s.err, len(plan.Batches)),
	}
	runErr := runner.Run(ctx, d.dep.Environment, plan, rec)
	held.outcome = string(rec.Outcome)
	if c.String("output") == "json" {
		if err := writeJSON(s.out, rec); err != nil {
			return err
		}
	} else {
		where := ""
		if recorder.Saved() {
			where = d.recordAt(hist.Branch(), recorder.Path())
		}
		printResult(s.out, rec, where)
	}
	return runErr
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

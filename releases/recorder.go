package releases

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

// Recorder keeps one run's record on the history branch; it implements
// playbook.Recorder. Every Save is one commit of the record's files that
// changed, so `git log -p` on the branch tells how the run went. The save
// of a run that ended also releases the run's lock, in the same commit.
type Recorder struct {
	hist     *History
	lock     *Lock
	saved    atomic.Bool
	released atomic.Bool
}

// NewRecorder returns the Recorder for a run that holds lock l (nil for a
// record written without a lock, such as sync's record of a fleet already
// at its release). With a lock, every save of a running run checks, in the
// same compare-and-swap, that the lock is still held: a run whose lock was
// broken or taken over stops before its next change. The last save, which
// only tells what happened, is made unless a resume took the run over.
func NewRecorder(hist *History, l *Lock) *Recorder {
	return &Recorder{hist: hist, lock: l}
}

// Save commits the files of c.
func (r *Recorder) Save(ctx context.Context, c record.Commit) error {
	final := c.Outcome != record.OutcomeRunning
	message := c.Message
	if final && r.lock != nil {
		message += fmt.Sprintf("\n%s: unlocked by run %s (%s)\n", r.lock.Environment, r.lock.Run, c.Outcome)
	}
	_, err := r.hist.Commit(ctx, describe(c.Files), func(tip Tip) (map[string][]byte, error) {
		files := withFiles(nil, c.Files)
		if r.lock == nil {
			return files, nil
		}
		if !final {
			return files, r.lock.Guard()(tip)
		}
		if err := r.lock.notTakenOver()(tip); err != nil {
			return nil, err
		}
		// The run's last word releases its lock, unless it was broken and
		// someone else holds the environment now.
		if held, err := r.hist.heldLock(tip, r.lock.Environment); err == nil && r.lock.is(held) {
			p, _ := LockPath(r.lock.Environment)
			files[p] = nil
		}
		return files, nil
	}, message)
	if err != nil {
		return err
	}
	r.saved.Store(true)
	if final && r.lock != nil {
		r.released.Store(true)
	}
	return nil
}

// Saved reports whether the record was written at least once.
func (r *Recorder) Saved() bool { return r.saved.Load() }

// Released reports whether the run's last save released its lock (or found
// it no longer its own), so that nobody needs to unlock any more.
func (r *Recorder) Released() bool { return r.released.Load() }

// ErrInspectionStale is BeginRun's refusal when a run of the environment
// was recorded after the fleet was inspected: the plan may be built on
// versions that are gone. Inspect again and plan again.
var ErrInspectionStale = errors.New("another run of the environment was recorded since the hosts were inspected")

// Begin is how BeginRun takes the environment.
type Begin struct {
	// TakeOver is the lock of the dead process a resume replaces; nil for
	// a new run, which needs the environment free.
	TakeOver *Lock
	// Inspected is the history branch's tip (its commit hash) when the
	// hosts were inspected, "" when not known. The commit is refused with
	// ErrInspectionStale if a record of the environment changed since.
	Inspected string
}

// BeginRun takes environment l.Environment's lock for run l.Run and writes
// the run's first files (its plan and the first batch's intent) in one
// commit: nobody can see the lock without the run, nor the run without its
// lock. It fails with a *LockedError when another run holds the
// environment.
func (h *History) BeginRun(ctx context.Context, l Lock, how Begin, c record.Commit) error {
	lockFiles, err := h.lockEdits(l, how.TakeOver)
	if err != nil {
		return err
	}
	var inspected *plumbing.Hash
	if how.Inspected != "" {
		if inspected, err = h.runsTreeAt(how.Inspected, l.Environment); err != nil {
			return err
		}
	}
	_, err = h.Commit(ctx, describe(c.Files)+" and the lock of "+l.Environment, func(tip Tip) (map[string][]byte, error) {
		files, err := lockFiles(tip)
		if err != nil {
			return nil, err
		}
		if inspected != nil {
			now, err := h.runsTreeOf(tip, l.Environment)
			if err != nil {
				return nil, err
			}
			if *now != *inspected {
				return nil, ErrInspectionStale
			}
		}
		return withFiles(files, c.Files), nil
	}, lockMessage(l, how.TakeOver)+"\n"+c.Message)
	return err
}

// withFiles adds a record's files to the edits of a commit.
func withFiles(edits map[string][]byte, files []record.File) map[string][]byte {
	if edits == nil {
		edits = make(map[string][]byte, len(files)+1)
	}
	for _, f := range files {
		edits[f.Path] = f.Data
	}
	return edits
}

// describe names the files of a write for messages: the first, and how
// many more.
func describe(files []record.File) string {
	switch len(files) {
	case 0:
		return "nothing"
	case 1:
		return files[0].Path
	}
	return fmt.Sprintf("%s and %d more files", files[0].Path, len(files)-1)
}

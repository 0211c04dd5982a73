package releases

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

// Recorder keeps one run's record on the history branch: every Save is a
// commit of runs/<env>/<id>.yaml, so `git log` on the branch tells how the
// run went, step by step. It implements playbook.Recorder.
type Recorder struct {
	hist        *History
	path        string
	guard       Guard // while the run runs
	finishGuard Guard // for its last save
	saved       atomic.Bool
}

// HoldingLock makes every save of a running run check, in the same
// compare-and-swap, that l is still held: a run whose lock was broken or
// taken over stops before its next change. The final save, which only
// tells what happened, is made unless a resume took the run over.
func (r *Recorder) HoldingLock(l Lock) { r.guard, r.finishGuard = l.Guard(), l.notTakenOver() }

// NewRecorder returns the Recorder for rec's run (its ID and Environment
// must be set).
func NewRecorder(hist *History, rec *playbook.Record) (*Recorder, error) {
	p, err := RecordPath(rec.Environment, rec.ID)
	if err != nil {
		return nil, err
	}
	return &Recorder{hist: hist, path: p}, nil
}

// Path is where the record lives on the branch.
func (r *Recorder) Path() string { return r.path }

// Save commits the record as it is now.
func (r *Recorder) Save(ctx context.Context, rec *playbook.Record) error {
	data, err := rec.Marshal()
	if err != nil {
		return fmt.Errorf("encode run record %s: %w", rec.ID, err)
	}
	guard := r.guard
	if rec.Outcome != playbook.OutcomeRunning {
		guard = r.finishGuard
	}
	put := func([]byte) ([]byte, error) { return data, nil }
	if _, err = r.hist.UpdateIf(ctx, r.path, guard, put, recordMessage(rec)); err != nil {
		return err
	}
	r.saved.Store(true)
	return nil
}

// Saved reports whether the record was written at least once.
func (r *Recorder) Saved() bool { return r.saved.Load() }

// recordMessage makes `git log --oneline lieutenant/runs` read as the story
// of the runs.
func recordMessage(rec *playbook.Record) string {
	planned, done, failed := 0, 0, 0
	for _, b := range rec.Batches {
		planned += len(b.Hosts)
	}
	for _, h := range rec.Hosts {
		switch h.Status {
		case playbook.HostSucceeded:
			done++
		case playbook.HostFailed:
			failed++
		}
	}
	msg := fmt.Sprintf("%s %s: %s, %d/%d hosts done", rec.Environment, rec.Release, rec.Outcome, done, planned)
	if failed > 0 {
		msg += fmt.Sprintf(", %d failed", failed)
	}
	return msg + "\n\nRun " + rec.ID + " of manifest commit " + rec.Revision + ".\n"
}

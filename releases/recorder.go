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
	hist  *History
	path  string
	saved atomic.Bool
}

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
	if _, err = r.hist.Put(ctx, r.path, data, recordMessage(rec)); err != nil {
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

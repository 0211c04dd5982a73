package playbook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

// Recorder keeps the run record durable. Save writes one commit of the
// record's files and returns once it is durable (pushed, with a remote);
// writes arrive one at a time, in order. An error wrapping ErrSuperseded
// says another process owns the run or the environment now: the runner
// then also leaves the balancer alone.
type Recorder interface {
	Save(ctx context.Context, c record.Commit) error
}

// ErrSuperseded is a save refused because this process no longer holds
// the environment's lock: it was broken, or a resume took the run over.
var ErrSuperseded = errors.New("this process no longer holds the environment's lock")

// DefaultProgressInterval is the least time between two writes of the
// hosts' progress: few enough writes for a hosted Git remote, which
// throttles frequent pushes to one branch, and fresh enough for someone
// following the run in Git.
const DefaultProgressInterval = 2 * time.Second

// journal writes the run's record through the Recorder. A commit is
// synchronous: the run waits for it where a decision depends on it (a
// batch's intent, a gate, the end), and it stops the run when it fails.
// Progress (hosts starting, their steps, their end) is noted without
// waiting: a writer in the background coalesces it into one write at a
// time, at most one every interval, so no host ever waits for Git. Writes
// never overlap, so at most one push is in flight.
type journal struct {
	st       *runState
	rec      Recorder
	interval time.Duration

	writeMu sync.Mutex // one write at a time
	// Guarded by st.mu:
	version   int // bumped by every change of the record
	runSaved  int // the version the run's file was last written at
	lastWrite time.Time
	// held: a commit follows shortly (a batch ended), so progress waits
	// for it instead of making it wait for a push in flight.
	held bool

	// failed reports a progress write that did not land.
	onFail func(err error)

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newJournal(st *runState, rec Recorder, interval time.Duration) *journal {
	if interval <= 0 {
		interval = DefaultProgressInterval
	}
	// Version 0, the record as Run got it, is what the Recorder has: the
	// caller wrote it with the lock.
	return &journal{st: st, rec: rec, interval: interval, lastWrite: time.Now(),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// start runs the background writer until close.
func (j *journal) start(ctx context.Context) {
	if j.rec == nil {
		close(j.done)
		return
	}
	// Progress outlives an interruption: what happened is still written.
	ctx = context.WithoutCancel(ctx)
	go func() {
		defer close(j.done)
		for {
			select {
			case <-j.stop:
				return
			case <-j.wake:
			}
			j.st.mu.Lock()
			wait := time.Until(j.lastWrite.Add(j.interval))
			j.st.mu.Unlock()
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-j.stop:
					t.Stop()
					return
				case <-t.C:
				}
			}
			j.progress(ctx)
		}
	}()
}

// close stops the background writer; what it had not written is left for
// the next commit.
func (j *journal) close() {
	select {
	case <-j.stop:
	default:
		close(j.stop)
	}
	<-j.done
}

// changed is called, with st.mu held, after every change of the record;
// progress says that only the hosts' files changed, for the background
// writer to pick up.
func (j *journal) changed(progress bool) {
	j.version++
	if progress {
		select {
		case j.wake <- struct{}{}:
		default:
		}
	}
}

// progress writes the hosts' files that changed, unless a commit wrote
// them meanwhile.
func (j *journal) progress(ctx context.Context) {
	j.writeMu.Lock()
	defer j.writeMu.Unlock()
	st := j.st
	st.mu.Lock()
	if j.held || st.superseded {
		// A commit follows; or another process owns the run, and every
		// write of this one's progress would be refused.
		st.mu.Unlock()
		return
	}
	hosts := st.rec.Changes()
	if len(hosts) == 0 {
		st.mu.Unlock()
		return
	}
	files, err := st.rec.Files(false, hosts)
	c := record.Commit{Files: files, Outcome: st.rec.Outcome, Message: st.rec.Headline(progressEvent(st.rec))}
	st.mu.Unlock()
	if err == nil {
		err = j.rec.Save(ctx, c)
	}
	st.mu.Lock()
	j.lastWrite = time.Now()
	if err == nil {
		st.mu.Unlock()
		return
	}
	// Written with the next write; a lost lock stops the run.
	st.rec.Unsaved(hosts)
	if errors.Is(err, ErrSuperseded) {
		st.superseded = true
		st.stopLocked(record.OutcomeFailed, oneLine(err.Error()))
	}
	st.mu.Unlock()
	if j.onFail != nil {
		j.onFail(err)
	}
}

func progressEvent(rec *record.Run) string {
	return fmt.Sprintf("%s, progress", rec.Outcome)
}

// hold stops progress writes until the next commit, which is about to
// come: it would otherwise wait for a progress push started just before.
func (j *journal) hold() {
	j.st.mu.Lock()
	j.held = true
	j.st.mu.Unlock()
}

// commit writes the record as it is now (the run's file and the hosts'
// files that changed) and returns once it is durable. Nothing to write,
// nothing written.
func (j *journal) commit(ctx context.Context, event string) error {
	if j.rec == nil {
		return nil
	}
	j.writeMu.Lock()
	defer j.writeMu.Unlock()
	st := j.st
	st.mu.Lock()
	j.held = false
	version := j.version
	hosts := st.rec.Changes()
	if version == j.runSaved && len(hosts) == 0 {
		st.mu.Unlock()
		return nil
	}
	files, err := st.rec.Files(true, hosts)
	c := record.Commit{Files: files, Outcome: st.rec.Outcome, Message: st.rec.Headline(event)}
	st.mu.Unlock()
	if err == nil {
		err = j.rec.Save(ctx, c)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	j.lastWrite = time.Now()
	if err != nil {
		st.rec.Unsaved(hosts)
		return fmt.Errorf("save run record %s: %w", st.rec.ID, err)
	}
	j.runSaved = version
	return nil
}

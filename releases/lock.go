package releases

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

// Lock is the file that gives one run an environment: locks/<env>.yaml on
// the history branch. Taking it is a compare-and-swap write of the branch,
// so with a remote two machines cannot both hold it. Field names are the
// file format.
type Lock struct {
	Environment string    `yaml:"environment" json:"environment"`
	Run         string    `yaml:"run" json:"run"`
	Kind        string    `yaml:"kind" json:"kind"`
	HeldBy      string    `yaml:"held_by" json:"held_by"`
	From        string    `yaml:"from" json:"from"`
	PID         int       `yaml:"pid" json:"pid"`
	Since       time.Time `yaml:"since" json:"since"`
	Release     string    `yaml:"release" json:"release"`
	Commit      string    `yaml:"manifest_commit" json:"manifest_commit"`
	Message     string    `yaml:"message,omitempty" json:"message,omitempty"`
	// Token names the holding process: a resume takes the lock over with
	// a token of its own, so the process it replaced, should it still be
	// alive somewhere, can neither record another step nor unlock.
	Token string `yaml:"token" json:"-"`
}

// NewLockToken returns a fresh, random lock token.
func NewLockToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails since Go 1.24
	return hex.EncodeToString(b[:])
}

// ErrLockLost is a write refused because the run no longer holds its
// environment's lock: it was broken by force or taken over by a resume.
var ErrLockLost = fmt.Errorf("%w (broken with lock release --force, or taken over by a resume; see lieutenant lock status)", playbook.ErrSuperseded)

// LockedError says that another run holds the environment.
type LockedError struct {
	Lock Lock
	// HolderEnded is the outcome of the holding run when its record says
	// it ended: its process stopped before it could unlock.
	HolderEnded string
}

func (e *LockedError) Error() string {
	l := e.Lock
	msg := fmt.Sprintf("%s is locked by run %s (%s of release %s, %s from %s, pid %d) since %s",
		l.Environment, l.Run, l.Kind, l.Release, l.HeldBy, l.From, l.PID, l.Since.UTC().Format(time.RFC3339))
	if l.Message != "" {
		msg += ": " + l.Message
	}
	if e.HolderEnded != "" {
		return msg + fmt.Sprintf("; that run ended %s but its process stopped before it released the lock: release it with `lieutenant lock release --env %s --force`", e.HolderEnded, l.Environment)
	}
	if e.HolderGone() {
		return msg + fmt.Sprintf("; that process is gone: finish the run with `lieutenant resume %s`", l.Run)
	}
	return msg + fmt.Sprintf("; wait with --lock-wait, or if its process died, finish it with `lieutenant resume %s`", l.Run)
}

// HolderGone reports whether the lock's process was on this machine and
// no longer exists. Elsewhere it cannot be told, and the answer is false.
func (e *LockedError) HolderGone() bool {
	return e.Lock.OnThisMachine() && !e.Lock.Alive()
}

// OnThisMachine reports whether the lock was taken on this machine.
func (l Lock) OnThisMachine() bool {
	_, host, ok := strings.Cut(l.From, "@")
	return ok && host == hostName() && l.PID > 0
}

// Alive reports whether the lock's process exists on this machine; only
// meaningful when OnThisMachine.
func (l Lock) Alive() bool {
	p, err := os.FindProcess(l.PID)
	if err != nil {
		return false
	}
	// Signal 0 checks existence; EPERM means it exists as another user.
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, os.ErrPermission)
}

// MalformedError is a file on the history branch that lieutenant cannot
// read, such as a lock or record edited by hand.
type MalformedError struct {
	Branch, Path string
	Err          error
	Fix          string
}

func (e *MalformedError) Error() string {
	msg := fmt.Sprintf("%s:%s is malformed: %v", e.Branch, e.Path, e.Err)
	if e.Fix != "" {
		msg += "; " + e.Fix
	}
	return msg
}

func (e *MalformedError) Unwrap() error { return e.Err }

// LockPath is where environment env's lock lives: locks/<env>.yaml.
func LockPath(env string) (string, error) {
	if err := checkRecordElem(env); err != nil {
		return "", fmt.Errorf("lock path: environment %w", err)
	}
	return path.Join("locks", env+".yaml"), nil
}

func (h *History) parseLock(p, env string, data []byte) (*Lock, error) {
	var l Lock
	err := yaml.Unmarshal(data, &l)
	if err == nil && (l.Run == "" || l.Environment != env) {
		err = fmt.Errorf("want a lock of environment %s with a run id", env)
	}
	if err != nil {
		return nil, &MalformedError{Branch: h.branch, Path: p, Err: err,
			Fix: fmt.Sprintf("fix it, or remove it with `lieutenant lock release --env %s --force`", env)}
	}
	return &l, nil
}

// ReadLock returns env's lock on the branch tip, nil when it is free.
func (h *History) ReadLock(ctx context.Context, env string) (*Lock, error) {
	p, err := LockPath(env)
	if err != nil {
		return nil, err
	}
	return getParsed(ctx, h, p, func(data []byte) (*Lock, error) { return h.parseLock(p, env, data) })
}

// TryLock takes l.Environment for run l.Run, or fails with a *LockedError
// naming the holder. Taking a lock this process (l.Token) holds already
// changes nothing.
func (h *History) TryLock(ctx context.Context, l Lock) error {
	return h.lock(ctx, l, nil)
}

// TakeOver takes l.Environment's lock from the process of the same run
// that holds it as from (a dead one, which resume replaces; from.Token may
// be empty in a lock an older lieutenant wrote). It fails with a
// *LockedError if the lock is not that any more.
func (h *History) TakeOver(ctx context.Context, l Lock, from Lock) error {
	return h.lock(ctx, l, &from)
}

func (h *History) lock(ctx context.Context, l Lock, from *Lock) error {
	edits, err := h.lockEdits(l, from)
	if err != nil {
		return err
	}
	_, err = h.Commit(ctx, "the lock of "+l.Environment, edits, lockMessage(l, from))
	return err
}

// lockMessage is the commit message of a lock taken (from nil) or taken
// over from a dead process.
func lockMessage(l Lock, from *Lock) string {
	if from != nil {
		return fmt.Sprintf("%s: run %s taken over (%s)\n\n%s from %s resumes it.\n", l.Environment, l.Run, l.Kind, l.HeldBy, l.From)
	}
	return fmt.Sprintf("%s: locked by run %s (%s of %s)\n\n%s from %s.\n", l.Environment, l.Run, l.Kind, l.Release, l.HeldBy, l.From)
}

// lockEdits are the edits that take l.Environment for run l.Run: the lock
// file written when the environment is free, or held by this process
// already, or (from not nil) held by the dead process from of the same run.
// Otherwise they fail with a *LockedError.
func (h *History) lockEdits(l Lock, from *Lock) (Edits, error) {
	p, err := LockPath(l.Environment)
	if err != nil {
		return nil, err
	}
	if l.Token == "" {
		return nil, fmt.Errorf("lock %s: no token", l.Environment)
	}
	data, err := yaml.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("encode lock: %w", err)
	}
	return func(tip Tip) (map[string][]byte, error) {
		held, err := h.heldLock(tip, l.Environment)
		switch {
		case err != nil:
			return nil, err
		case held == nil:
		case l.is(held):
		case from != nil && from.is(held):
		default:
			return nil, &LockedError{Lock: *held}
		}
		return map[string][]byte{p: data}, nil
	}, nil
}

// heldLock reads env's lock at tip: nil when the environment is free.
func (h *History) heldLock(tip Tip, env string) (*Lock, error) {
	p, err := LockPath(env)
	if err != nil {
		return nil, err
	}
	cur, err := tip.ReadFile(p)
	if err != nil || cur == nil {
		return nil, err
	}
	return h.parseLock(p, env, cur)
}

// runsTreeAt is the tree of env's run records at commit (zero when there
// are none).
func (h *History) runsTreeAt(commit, env string) (*plumbing.Hash, error) {
	var tree plumbing.Hash
	if plumbing.NewHash(commit).IsZero() {
		return &tree, nil
	}
	err := h.repo.locked(func() error {
		c, err := object.GetCommit(h.repo.storage, plumbing.NewHash(commit))
		if err != nil {
			return fmt.Errorf("read history commit %s: %w", commit, err)
		}
		t, err := h.runsTreeOf(treeTip{h.repo, c.TreeHash}, env)
		if err == nil {
			tree = *t
		}
		return err
	})
	return &tree, err
}

func (h *History) runsTreeOf(tip Tip, env string) (*plumbing.Hash, error) {
	if err := checkRecordElem(env); err != nil {
		return nil, fmt.Errorf("run records: environment %w", err)
	}
	t, err := tip.TreeHash(path.Join("runs", env))
	return &t, err
}

// is reports whether held is l: the same run, taken by the same process.
func (l Lock) is(held *Lock) bool {
	return held != nil && held.Run == l.Run && held.Token == l.Token
}

// Guard returns the check that the lock l is still held as it was taken,
// for writes that must not happen without it (see UpdateIf).
func (l Lock) Guard() Guard {
	return l.check(l.is)
}

// notTakenOver is the check that no other process of l's run holds the
// environment: a process that was taken over must not overwrite what the
// process that replaced it records.
func (l Lock) notTakenOver() Guard {
	return l.check(func(held *Lock) bool { return held == nil || held.Run != l.Run || held.Token == l.Token })
}

// check is a Guard passing when ok accepts the environment's lock as the
// tip has it (nil: none, or unreadable).
func (l Lock) check(ok func(held *Lock) bool) Guard {
	return func(tip Tip) error {
		p, err := LockPath(l.Environment)
		if err != nil {
			return err
		}
		data, err := tip.ReadFile(p)
		if err != nil {
			return err
		}
		var held *Lock
		if data != nil {
			var parsed Lock
			if yaml.Unmarshal(data, &parsed) == nil {
				held = &parsed
			}
		}
		if !ok(held) {
			return fmt.Errorf("%s: %w", l.Environment, ErrLockLost)
		}
		return nil
	}
}

// Lock takes the lock like TryLock, waiting up to wait for a holder to
// release it, and reading the branch again every poll.
func (h *History) Lock(ctx context.Context, l Lock, wait, poll time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := h.TryLock(ctx, l)
		var locked *LockedError
		if !errors.As(err, &locked) || !time.Now().Add(poll).Before(deadline) {
			return err
		}
		if err := h.Await(ctx, poll); err != nil {
			return err
		}
	}
}

// Await waits for poll, then reads the branch again: what a writer waiting
// for another's lock does between two tries.
func (h *History) Await(ctx context.Context, poll time.Duration) error {
	if err := sleep(ctx, poll); err != nil {
		return err
	}
	return h.Refresh(ctx)
}

// Unlock releases l's lock if this process still holds it; a lock someone
// else holds now (after a forced release or a takeover) is left alone.
func (h *History) Unlock(ctx context.Context, l Lock, outcome string) error {
	p, err := LockPath(l.Environment)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("%s: unlocked by run %s (%s)\n", l.Environment, l.Run, outcome)
	_, err = h.Update(ctx, p, func(cur []byte) ([]byte, error) {
		if cur == nil {
			return nil, nil
		}
		held, err := h.parseLock(p, l.Environment, cur)
		if err == nil && !l.is(held) {
			return cur, nil
		}
		return nil, err
	}, msg)
	return err
}

// BreakLock removes env's lock whoever holds it, readable or not, and
// records in the commit who broke it. It returns the lock it removed (nil
// when it was free or unreadable).
func (h *History) BreakLock(ctx context.Context, env, by, reason string) (*Lock, error) {
	p, err := LockPath(env)
	if err != nil {
		return nil, err
	}
	var broken *Lock
	msg := fmt.Sprintf("%s: lock released by force by %s\n", env, by)
	if held, err := h.ReadLock(ctx, env); err == nil && held != nil {
		msg += fmt.Sprintf("\nIt was held by run %s (%s, %s from %s) since %s.\n", held.Run, held.Kind, held.HeldBy, held.From, held.Since.UTC().Format(time.RFC3339))
	}
	if reason != "" {
		msg += "\n" + reason + "\n"
	}
	_, err = h.Update(ctx, p, func(cur []byte) ([]byte, error) {
		broken = nil
		if cur != nil {
			broken, _ = h.parseLock(p, env, cur)
		}
		return nil, nil
	}, msg)
	return broken, err
}

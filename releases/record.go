package releases

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

// runIDTime is the timestamp part of a run ID: UTC, with dashes for colons
// so that it is a valid file name everywhere and sorts chronologically.
const runIDTime = "2006-01-02T15-04-05Z"

// NewRunID returns a run ID such as "2026-11-28T10-00-00Z-3f2a": the UTC
// time of now to the second and four random hex digits, so two runs started
// in the same second (on two machines) get different record files.
func NewRunID(now time.Time) string {
	var b [2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails since Go 1.24
	return now.UTC().Format(runIDTime) + "-" + hex.EncodeToString(b[:])
}

// isRunID reports whether name is a run ID as NewRunID makes them: only
// files so named are runs, whatever else someone put next to them.
func isRunID(name string) bool {
	stamp, suffix, ok := strings.Cut(name, "Z-")
	if !ok || len(suffix) != 4 || strings.ToLower(suffix) != suffix {
		return false
	}
	if _, err := hex.DecodeString(suffix); err != nil {
		return false
	}
	_, err := time.Parse(runIDTime, stamp+"Z")
	return err == nil
}

func checkRecordElem(e string) error {
	if e == "" {
		return fmt.Errorf("is empty")
	}
	if err := checkPathElem(e); err != nil {
		return fmt.Errorf("%q is not a plain name: %w", e, err)
	}
	return nil
}

// Records returns the records of env's runs on the branch tip, oldest
// first, as their run files have them: enough for lists and decisions,
// without the steps of the hosts that have files of their own (FindRun
// reads those). Only files named by a run id are runs: anything else
// under runs/<env>/ is skipped with a warning (see WithWarnings); a run's
// file that does not parse is an error.
func (h *History) Records(ctx context.Context, env string) ([]*record.Run, error) {
	if err := checkRecordElem(env); err != nil {
		return nil, fmt.Errorf("run records: environment %w", err)
	}
	snap, err := h.snapshot(ctx)
	if errors.Is(err, ErrNoHistory) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read history branch %s: %w", h.branch, err)
	}
	entries, err := snap.ReadDir(path.Join("runs", env))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	runFiles := map[string]bool{}
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && e.Type().IsRegular() && isRunID(id) {
			runFiles[id] = true
		}
	}
	var recs []*record.Run
	for _, e := range entries {
		p := path.Join("runs", env, e.Name())
		id, isYAML := strings.CutSuffix(e.Name(), ".yaml")
		switch {
		case isYAML && runFiles[id]:
			rec, err := h.readRecord(snap, p, false)
			if err != nil {
				return nil, err
			}
			recs = append(recs, rec)
		case runFiles[e.Name()] && e.IsDir():
			// The run's host files, which FindRun reads.
		default:
			h.warnf("%s:%s is not a run record (runs/%s/ holds RUN.yaml and RUN/ for run ids such as %s); ignored",
				h.branch, p, env, exampleRunID)
		}
	}
	return recs, nil
}

// exampleRunID shows what a run ID looks like, in messages.
const exampleRunID = "2026-11-28T10-00-00Z-3f2a"

// FindRun returns the whole record of run id, host files included,
// whichever environment it was.
func (h *History) FindRun(ctx context.Context, id string) (*record.Run, error) {
	if !isRunID(id) {
		return nil, fmt.Errorf("run %q: not a run id (run ids look like %s; see lieutenant history --env ENV)", id, exampleRunID)
	}
	snap, err := h.snapshot(ctx)
	if errors.Is(err, ErrNoHistory) {
		return nil, fmt.Errorf("run %s: no run was recorded yet (%s does not exist)", id, h.where())
	}
	if err != nil {
		return nil, fmt.Errorf("read history branch %s: %w", h.branch, err)
	}
	envs, err := snap.ReadDir("runs")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, env := range envs {
		p := path.Join("runs", env.Name(), id+".yaml")
		if _, err := snap.Stat(p); err == nil {
			return h.readRecord(snap, p, true)
		}
	}
	return nil, fmt.Errorf("run %s: no record runs/*/%s.yaml on %s (see lieutenant history --env ENV)", id, id, h.where())
}

// readRecord reads the run file at p and, withHosts, its hosts' files.
func (h *History) readRecord(snap *Snapshot, p string, withHosts bool) (*record.Run, error) {
	data, err := snap.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var hosts map[string][]byte
	if withHosts {
		hosts, err = h.hostFiles(snap, strings.TrimSuffix(p, ".yaml"))
	}
	var rec *record.Run
	if err == nil {
		rec, err = record.Parse(data, hosts)
	}
	if err == nil && (rec.ID+".yaml" != path.Base(p) || path.Base(path.Dir(p)) != rec.Environment) {
		err = fmt.Errorf("want a run record whose id and environment match its path")
	}
	if err != nil {
		return nil, &MalformedError{Branch: h.branch, Path: p, Err: err, Fix: "restore it with git from the branch's log"}
	}
	return rec, nil
}

// hostFiles reads the host files in dir, by host name; none when there is
// no such directory (a record written before hosts had files). What is not
// a YAML file there is no host's, and is skipped with a warning.
func (h *History) hostFiles(snap *Snapshot, dir string) (map[string][]byte, error) {
	entries, err := snap.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	hosts := map[string][]byte{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".yaml")
		if !ok || !e.Type().IsRegular() {
			h.warnf("%s:%s/%s is not a host's file of the run (HOST.yaml); ignored", h.branch, dir, e.Name())
			continue
		}
		if hosts[name], err = snap.ReadFile(path.Join(dir, e.Name())); err != nil {
			return nil, err
		}
	}
	return hosts, nil
}

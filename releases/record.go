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
// reads those).
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
	var recs []*record.Run
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		rec, err := h.readRecord(snap, path.Join("runs", env, e.Name()), false)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// FindRun returns the whole record of run id, host files included,
// whichever environment it was.
func (h *History) FindRun(ctx context.Context, id string) (*record.Run, error) {
	if err := checkRecordElem(id); err != nil {
		return nil, fmt.Errorf("run %w", err)
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
		hosts, err = hostFiles(snap, strings.TrimSuffix(p, ".yaml"))
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
// no such directory (a record written before hosts had files).
func hostFiles(snap *Snapshot, dir string) (map[string][]byte, error) {
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
			return nil, fmt.Errorf("%s/%s is not a host file", dir, e.Name())
		}
		if hosts[name], err = snap.ReadFile(path.Join(dir, e.Name())); err != nil {
			return nil, err
		}
	}
	return hosts, nil
}

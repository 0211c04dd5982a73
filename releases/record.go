package releases

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"time"
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

// RecordPath returns where the record of run runID of environment env lives
// on the history branch: runs/<env>/<runID>.yaml. Both must be single,
// plain path elements, since they come from configuration and flags.
func RecordPath(env, runID string) (string, error) {
	if err := checkRecordElem(env); err != nil {
		return "", fmt.Errorf("run record path: environment %w", err)
	}
	if err := checkRecordElem(runID); err != nil {
		return "", fmt.Errorf("run record path: run id %w", err)
	}
	return path.Join("runs", env, runID+".yaml"), nil
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

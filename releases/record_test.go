package releases_test

import (
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

func TestNewRunID(t *testing.T) {
	now := time.Date(2026, 11, 28, 11, 0, 0, 0, time.FixedZone("CET", 3600))
	id := releases.NewRunID(now)
	if !regexp.MustCompile(`^2026-11-28T10-00-00Z-[0-9a-f]{4}$`).MatchString(id) {
		t.Errorf("NewRunID = %q, want the UTC time and 4 hex digits", id)
	}
	if _, err := record.Path("production", id); err != nil {
		t.Errorf("a run ID is not a valid record name: %v", err)
	}
	seen := map[string]bool{}
	for range 50 {
		seen[releases.NewRunID(now)] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 run IDs in one second gave only %d distinct ones", len(seen))
	}
	// Run IDs sort by time, so a directory listing is a timeline.
	ids := []string{
		releases.NewRunID(now.Add(time.Hour)),
		releases.NewRunID(now),
		releases.NewRunID(now.Add(24 * time.Hour)),
	}
	sorted := slices.Sorted(slices.Values(ids))
	if !slices.Equal(sorted, []string{ids[1], ids[0], ids[2]}) {
		t.Errorf("run IDs do not sort by time: %v", sorted)
	}
}

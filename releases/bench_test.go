package releases_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// BenchmarkPut measures one history commit (blob, three trees, commit and
// the ref compare-and-swap) on a branch that already holds a few hundred
// run records in one directory, as a busy environment's history does.
func BenchmarkPut(b *testing.B) {
	const existing = 300
	ctx := context.Background()
	dir := testenv.NewGitRepo(b, deployFiles)
	h := history(b, openRepo(b, dir))
	start := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	record := []byte("outcome: success\nhosts:\n  web-1: {before: hello-web-1.0.0-1, after: hello-web-1.1.0-1}\n")
	for i := range existing {
		p, _ := releases.RecordPath("production", releases.NewRunID(start.Add(time.Duration(i)*time.Minute)))
		if _, err := h.Put(ctx, p, record, "seed"); err != nil {
			b.Fatal(err)
		}
	}
	i := existing
	for b.Loop() {
		p, _ := releases.RecordPath("production", releases.NewRunID(start.Add(time.Duration(i)*time.Minute)))
		if _, err := h.Put(ctx, p, record, fmt.Sprintf("production: run %d", i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	if got := testenv.Git(b, dir, "rev-list", "--count", "lieutenant/runs"); got != fmt.Sprint(i) {
		b.Fatalf("history has %s commits, want %d", got, i)
	}
}

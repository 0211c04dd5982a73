package releases

import (
	"bytes"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The lock and approval files are written by lieutenant, and may be edited
// by hand on the history branch. Their parsers never panic, and what they
// accept is what their writers (yaml.Marshal of the struct, as lockEdits
// and Decide write it) write back to a file that parses to the same.

func FuzzParseLock(f *testing.F) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	h := &History{branch: DefaultHistoryBranch}
	fuzzParser(f, []Lock{
		{Environment: "production", Run: "2026-11-28T10-00-00Z-3f2a", Kind: "sync", HeldBy: "Jane Doe <jane@example.com>", From: "jane@build-7",
			PID: 48113, Since: at, Release: "2026.11.3", Commit: "4e0aa6ca464f13509dabb4fa24249b8a52bb23ba", Message: "https://ci/7104", Token: "9f1c2ab34d5e6f70"},
		{Environment: "production", Run: "r"},
	}, []string{"run: [oops\n", "environment: staging\nrun: x\n"}, func(data []byte) (*Lock, error) {
		return h.parseLock("locks/production.yaml", "production", data)
	})
}

func FuzzParseDecision(f *testing.F) {
	at := time.Date(2026, 11, 28, 10, 3, 12, 0, time.UTC)
	h := &History{branch: DefaultHistoryBranch}
	fuzzParser(f, []Decision{
		{Environment: "production", Run: "2026-11-28T10-00-00Z-3f2a", Gate: 1, Decision: Approved, By: "Jane Doe <jane@example.com>",
			From: "jane@laptop", At: at, Message: "dashboards look fine"},
		{Environment: "production", Run: "2026-11-28T10-00-00Z-3f2a", Gate: 2, Decision: Aborted, At: at},
	}, []string{"gate: 0\ndecision: approved\n", "gate: [\n"}, func(data []byte) (*Decision, error) {
		return h.parseDecision("approvals/production/2026-11-28T10-00-00Z-3f2a.yaml", data)
	})
}

// fuzzParser fuzzes parse from the files of seeds as lieutenant writes
// them and from broken ones: what parse accepts is written to a file that
// parses to something written the same way.
func fuzzParser[T any](f *testing.F, seeds []T, broken []string, parse func([]byte) (*T, error)) {
	for _, s := range seeds {
		data, err := yaml.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, b := range broken {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := parse(data)
		if err != nil {
			return
		}
		written, err := yaml.Marshal(*v)
		if err != nil {
			t.Fatalf("what parsed cannot be written: %v", err)
		}
		again, err := parse(written)
		if err != nil {
			t.Fatalf("what was written does not parse: %v\n%s", err, written)
		}
		if rewritten, err := yaml.Marshal(*again); err != nil || !bytes.Equal(written, rewritten) {
			t.Fatalf("does not round-trip (%v):\n%s---\n%s", err, written, rewritten)
		}
	})
}

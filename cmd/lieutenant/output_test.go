package main

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

func TestTermSafe(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"web-1  ok  52ms\n", "web-1  ok  52ms\n"},
		{"a\tb\nc", "a\tb\nc"},
		{"\x1b[2Jcleared", `\u001b[2Jcleared`},
		{"\x1b]0;owned\x07title", `\u001b]0;owned\u0007title`},
		{"line\r\nnext\roverwritten", "line\nnext\\u000doverwritten"},
		{"del\x7f c1\u009b[2J", `del\u007f c1\u009b[2J`},
		{"latin1 \xe9t\xe9", "latin1 \ufffdt\ufffd"},
		{"café 日本 ✓", "café 日本 ✓"},
		{"", ""},
	} {
		if got := string(termSafe([]byte(c.in))); got != c.want {
			t.Errorf("termSafe(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// failingWriter is a stream whose reader went away.
type failingWriter struct{ writes int }

func (f *failingWriter) Write([]byte) (int, error) {
	f.writes++
	return 0, &writeError{syscall.EPIPE}
}

type writeError struct{ err error }

func (e *writeError) Error() string { return "write /dev/stdout: " + e.err.Error() }

// A stream that failed is given up, not failed on: later writes are
// dropped, report success, and the loss is noted once.
func TestOperatorStreamGivesUpALostStream(t *testing.T) {
	w := &failingWriter{}
	o := newOperatorStream("standard output", w)
	if o.lostNote() != "" {
		t.Fatalf("lost before any write: %s", o.lostNote())
	}
	for range 3 {
		if n, err := io.WriteString(o, "line\n"); n != 5 || err != nil {
			t.Fatalf("write = %d, %v; want 5, nil", n, err)
		}
	}
	if w.writes != 1 {
		t.Errorf("%d writes reached the lost stream, want 1", w.writes)
	}
	if n := o.lostNote(); !strings.Contains(n, "output to standard output was lost at ") || !strings.Contains(n, "broken pipe") {
		t.Errorf("note %q", n)
	}
	if got := lostOutput(streams{out: o, err: newOperatorStream("standard error", io.Discard)}); len(got) != 1 {
		t.Errorf("lostOutput = %q, want the one lost stream", got)
	}
}

// hostile is what a host or a record could hold to take over the
// operator's terminal: clear the screen, retitle the window, ring, and a
// DEL and a C1 CSI, which encoding/json leaves as they are.
const hostile = "\x1b[2J\x1b]0;owned\x07\x7f\u009b[31m"

// What a record holds reaches the operator's terminal as visible text, in
// show's header and table and in history; JSON stays valid and says the
// same string.
func TestRecordFieldsCannotTakeOverTheTerminal(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	const id = "2026-11-28T10-00-00Z-3f2a"
	rec := record.New(record.Start{ID: id, Environment: "production", Kind: "run", Release: "2026.11.3" + hostile,
		Message: "why" + hostile, By: "ann" + hostile, From: "box", At: at}, [][]record.Planned{{{Name: "web-1", Address: "10.0.1.11"}}}, nil)
	rec.StartHost("web-1", at)
	rec.AddStep("web-1", record.NewStep("command.run", at, time.Second, "out"+hostile, errors.New("boom"+hostile)))
	rec.FinishHost("web-1", record.HostEnd{Err: errors.New("command.run: boom" + hostile), Duration: time.Second})
	rec.Finish(record.End{Outcome: record.OutcomeFailed, Reason: "batch 1: web-1 failed" + hostile, At: at.Add(time.Second)})
	files, err := rec.Files(true, []string{"web-1"})
	if err != nil {
		t.Fatal(err)
	}
	history := map[string]string{}
	for _, f := range files {
		history[f.Path] = string(f.Data)
	}
	dir := exampleRepo(t, nil)
	testenv.Git(t, dir, "fetch", "-q", testenv.NewGitRepo(t, history), "HEAD:lieutenant/runs")

	raw := func(s string) bool { return strings.ContainsAny(s, "\x1b\x07\x7f\u009b") }
	for _, args := range [][]string{{"show", id}, {"history", "--env", "production"}, {"show", "nope" + hostile}} {
		stdout, stderr, _ := lieutenant(t, dir, args...)
		if raw(stdout) || raw(stderr) {
			t.Errorf("lieutenant %s printed control characters:\n%q\n%q", args[0], stdout, stderr)
		}
	}
	stdout, _, code := lieutenant(t, dir, "show", id)
	if code != exitOK || !strings.Contains(stdout, `why\u001b[2J\u001b]0;owned\u0007\u007f\u009b[31m`) || !strings.Contains(stdout, `boom\u001b[2J`) {
		t.Errorf("show (exit %d) does not show the escapes as text:\n%s", code, stdout)
	}
	stdout, _, _ = lieutenant(t, dir, "show", "-o", "json", id)
	var got record.Run
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || raw(stdout) {
		t.Fatalf("show -o json: %v, raw control characters: %v\n%s", err, raw(stdout), stdout)
	}
	if got.Message != rec.Message || got.Hosts[0].Error != rec.Hosts[0].Error {
		t.Errorf("JSON changed the strings: %q, %q", got.Message, got.Hosts[0].Error)
	}
}

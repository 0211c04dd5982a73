package testenv

import (
	"context"
	"testing"
	"time"
)

// LateTimer returns a context whose deadline passes after d while its own
// timer never fires (Done stays open, Err stays nil): the moment, under
// load, in which the OS has already cut a dial short for the deadline with a
// bare "i/o timeout". Code that must report the deadline, not a network
// fault, is tested with it.
func LateTimer(parent context.Context, d time.Duration) context.Context {
	return lateTimer{Context: parent, deadline: time.Now().Add(d), done: make(chan struct{})}
}

type lateTimer struct {
	context.Context
	deadline time.Time
	done     chan struct{}
}

func (c lateTimer) Deadline() (time.Time, bool) { return c.deadline, true }
func (c lateTimer) Done() <-chan struct{}       { return c.done }
func (c lateTimer) Err() error                  { return nil }

// WaitFor polls cond until it holds, and fails the test when timeout
// passes first; what names the awaited state in the failure.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an outcome
	}
}

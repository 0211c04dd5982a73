package testenv

import (
	"context"
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

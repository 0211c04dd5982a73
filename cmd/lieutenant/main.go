// Command lieutenant rolls a Git-committed RPM manifest out to a fleet
// behind a load balancer, batch by batch, and records every run in Git.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	stopOnSignals(cancel)
	code := run(ctx, os.Args, streams{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	os.Exit(code)
}

// stopOnSignals cancels the run on the first SIGINT, SIGTERM or SIGHUP:
// hosts in flight are repaired in the balancer, the record is saved and the
// lock released. A second SIGINT or SIGTERM then gets the default behaviour
// and ends the process at once; a second SIGHUP is ignored, since a closed
// terminal sends one from the shell and one from the kernel.
//
// SIGPIPE is caught so that a write to a closed stdout or stderr fails
// with EPIPE instead of killing the process (see os/signal, "SIGPIPE"):
// the operator's streams then drop the output and the run goes on.
// Caught, not ignored: programs lieutenant starts get the default back.
func stopOnSignals(cancel context.CancelCauseFunc) {
	sigs := []os.Signal{syscall.SIGPIPE, syscall.SIGTERM}
	quitOnSecond := []os.Signal{syscall.SIGTERM}
	for _, s := range []os.Signal{os.Interrupt, syscall.SIGHUP} {
		// nohup, or a background job of a script, starts lieutenant with
		// these ignored; Notify (or Reset) would undo that.
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
			if s == os.Interrupt {
				quitOnSecond = append(quitOnSecond, s)
			}
		}
	}
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, sigs...)
	go func() {
		stopping := false
		for s := range ch {
			if s == syscall.SIGPIPE || stopping {
				continue
			}
			stopping = true
			cancel(fmt.Errorf("%v signal received", s))
			signal.Reset(quitOnSecond...)
		}
	}()
}

// run is main without the process: tests call it with their own streams.
// The output streams are the operator's (see operatorStream).
func run(ctx context.Context, args []string, s streams) int {
	s.out, s.err = newOperatorStream("standard output", s.out), newOperatorStream("standard error", s.err)
	app := newApp(s)
	err := app.RunContext(ctx, args)
	if err != nil {
		fmt.Fprintln(s.err, describeError(err))
	}
	return exitCode(err)
}

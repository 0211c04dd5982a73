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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		// The first signal stops the run gracefully (hosts in flight are
		// repaired in the balancer and the record is saved); a second one
		// gets the default behaviour and ends the process at once.
		stop()
	}()
	code := run(ctx, os.Args, streams{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	os.Exit(code)
}

// run is main without the process: tests call it with their own streams.
func run(ctx context.Context, args []string, s streams) int {
	app := newApp(s)
	err := app.RunContext(ctx, args)
	if err != nil {
		fmt.Fprintln(s.err, describeError(err))
	}
	return exitCode(err)
}

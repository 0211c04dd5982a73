// Command hello-web is the demo service the test fleet rolls out, packaged as
// RPMs by testenv/fleet/mkrpms. Its version and health are fixed when it is
// built, so each RPM behaves the same on every host:
//
//	go build -ldflags "-X main.version=1.2.0 -X main.healthy=false" ./testenv/helloweb/cmd/hello-web
//
// On SIGTERM or SIGINT it exits at once, dropping open connections: a restart
// must really replace the process, and draining is the load balancer's job,
// which lieutenant does before it restarts a host.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

// Set with -ldflags -X at build time, which only works on package-level
// string variables; nothing writes them at run time.
var (
	version = "dev"
	healthy = "true"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		// The flag package has printed the usage already.
	default:
		fmt.Fprintln(os.Stderr, "hello-web:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. It reports readiness on stdout only after the
// port is bound, so whoever reads that line can connect right away.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hello-web", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", ":8080", "address to listen on; port 0 picks a free port and logs it")
	host := fs.String("host", "", "host name shown on the page (default: the system's host name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("parse arguments: unexpected %q", fs.Args())
	}
	ok, err := strconv.ParseBool(healthy)
	if err != nil {
		return fmt.Errorf("parse build-time healthy %q: %w", healthy, err)
	}
	if *host == "" {
		if *host, err = os.Hostname(); err != nil {
			return fmt.Errorf("get host name: %w", err)
		}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	addr := *listen
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		addr = ln.Addr().String()
	}
	note := ""
	if !ok {
		note = " (built unhealthy: /health answers 503)"
	}
	fmt.Fprintf(stdout, "hello-web %s listening on %s%s\n", version, addr, note)

	srv := &http.Server{
		Handler:           helloweb.Handler(*host, version, ok),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
		// Close, not Shutdown: see the package comment.
		if err := srv.Close(); err != nil {
			return fmt.Errorf("close server on %s: %w", addr, err)
		}
		<-done
		return nil
	}
}

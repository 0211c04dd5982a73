package transporttest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/transport"
)

// DialCounter is implemented by Connectors that count the connections they
// open (transport.SSH, testenv.FakeFleet). RunConnectorConformance uses it
// to check that a host gets one connection however often it is asked for.
type DialCounter interface {
	Dials() int
}

// RunConnectorConformance checks that the Connectors newConnector returns
// keep the transport.Connector contract. newConnector is called in every
// subtest, with the subtest's t, and must return a fresh Connector (nothing
// connected yet, not closed; closing it is the caller's cleanup) and at
// least one host it can reach. The suite runs only `echo ARG...` and `true`
// on them (see RunConformance).
func RunConnectorConformance(t *testing.T, newConnector func(t *testing.T) (transport.Connector, []transport.Host)) {
	fresh := func(t *testing.T) (transport.Connector, []transport.Host) {
		t.Helper()
		c, hosts := newConnector(t)
		if c == nil || len(hosts) == 0 {
			t.Fatalf("newConnector returned connector %v and %d hosts; the suite needs one and at least one host", c, len(hosts))
		}
		return c, hosts
	}

	t.Run("ConnectTwiceSharesConnection", func(t *testing.T) {
		c, hosts := fresh(t)
		before := dials(c)
		for _, h := range hosts {
			for i := range 2 {
				r, err := c.Connect(ctxFor(t), h)
				if err != nil {
					t.Fatalf("Connect(%s) #%d: %v", h.Name, i+1, err)
				}
				checkEcho(t, r, fmt.Sprintf("%s-%d", h.Name, i))
			}
		}
		checkDials(t, c, before, len(hosts))
	})

	t.Run("ConcurrentConnect", func(t *testing.T) {
		c, hosts := fresh(t)
		before := dials(c)
		const n = 16
		ctx := ctxFor(t)
		var wg sync.WaitGroup
		errs := make(chan error, n*len(hosts))
		for _, h := range hosts {
			for i := range n {
				wg.Go(func() {
					r, err := c.Connect(ctx, h)
					if err != nil {
						errs <- fmt.Errorf("Connect(%s): %w", h.Name, err)
						return
					}
					word := fmt.Sprintf("%s-%d", h.Name, i)
					res, err := r.Run(ctx, cmd("echo", word))
					switch {
					case err != nil:
						errs <- fmt.Errorf("echo on %s: %w", h.Name, err)
					case string(res.Stdout) != word+"\n":
						errs <- fmt.Errorf("echo on %s: stdout %q, want %q", h.Name, res.Stdout, word+"\n")
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		checkDials(t, c, before, len(hosts))
	})

	t.Run("ConnectAfterClose", func(t *testing.T) {
		c, hosts := fresh(t)
		// The first host has a live connection when Close comes, the
		// others (if any) never had one: both must be refused.
		connected := hosts[0]
		if _, err := c.Connect(ctxFor(t), connected); err != nil {
			t.Fatalf("Connect(%s): %v", connected.Name, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close: %v, want nil", err)
		}
		for _, h := range hosts {
			r, err := c.Connect(ctxFor(t), h)
			if !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Connect(%s) after Close: runner %v, err %v; want an error wrapping transport.ErrClosed", h.Name, r, err)
				continue
			}
			if !strings.Contains(err.Error(), h.Name) {
				t.Errorf("Connect(%s) after Close: error %q does not name the host", h.Name, err)
			}
		}
	})

	t.Run("RunAfterClose", func(t *testing.T) {
		c, hosts := fresh(t)
		runners := make([]transport.Runner, len(hosts))
		for i, h := range hosts {
			r, err := c.Connect(ctxFor(t), h)
			if err != nil {
				t.Fatalf("Connect(%s): %v", h.Name, err)
			}
			checkEcho(t, r, "before-close")
			runners[i] = r
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for i, r := range runners {
			res, err := r.Run(ctxFor(t), cmd("echo", "after-close"))
			if !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Run on %s after Close: err = %v, want one wrapping transport.ErrClosed", hosts[i].Name, err)
			}
			if len(res.Stdout) != 0 {
				t.Errorf("Run on %s after Close: stdout %q: the command ran", hosts[i].Name, res.Stdout)
			}
		}
	})

	t.Run("ConnectEndedContext", func(t *testing.T) {
		c, hosts := fresh(t)
		before := dials(c)
		cancelled, cancel := context.WithCancel(t.Context())
		cancel()
		expired, cancel2 := context.WithTimeout(t.Context(), -1)
		defer cancel2()
		// Once with no connection yet, once with a live one: the live
		// connection must not be handed out under an ended ctx either.
		for _, state := range []string{"not connected", "connected"} {
			for _, h := range hosts {
				for _, tc := range []struct {
					ctx  context.Context
					want error
				}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
					if _, err := c.Connect(tc.ctx, h); !errors.Is(err, tc.want) {
						t.Errorf("Connect(%s, %s) with an ended ctx: err = %v, want one wrapping %v", h.Name, state, err, tc.want)
					}
				}
			}
			// A Connect that failed only because its ctx had ended leaves
			// nothing behind that stops the next one.
			for _, h := range hosts {
				r, err := c.Connect(ctxFor(t), h)
				if err != nil {
					t.Fatalf("Connect(%s) after Connects with ended contexts: %v", h.Name, err)
				}
				checkEcho(t, r, "after-ended-ctx")
			}
		}
		checkDials(t, c, before, len(hosts))
	})
}

// dials is c's dial count, or -1 when c does not count them.
func dials(c transport.Connector) int {
	if d, ok := c.(DialCounter); ok {
		return d.Dials()
	}
	return -1
}

// checkDials checks, when c counts dials, that it dialled each host once.
func checkDials(t *testing.T, c transport.Connector, before, hosts int) {
	t.Helper()
	if before < 0 {
		return
	}
	if got := dials(c) - before; got != hosts {
		t.Errorf("%d dials for %d hosts, want one per host: Connect must reuse a host's connection", got, hosts)
	}
}

// checkEcho runs `echo word` on r and checks its output.
func checkEcho(t *testing.T, r transport.Runner, word string) {
	t.Helper()
	res, err := r.Run(ctxFor(t), cmd("echo", word))
	if err != nil {
		t.Fatalf("echo %s: %v", word, err)
	}
	if got := string(res.Stdout); got != word+"\n" {
		t.Fatalf("echo %s: stdout %q, want %q", word, got, word+"\n")
	}
}

package lb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// WithMinimum returns b with its drains refused (ErrBelowMinimum, nothing
// changed) when taking the server out would leave fewer than minUp servers
// Serving. With minUp <= 0 it returns b itself.
//
// Counting what the balancer shows is not enough when drains run in
// parallel: between the decision to let a drain through and the balancer
// showing that server as draining, a second drain would count it as still in
// service. The guard therefore remembers the servers whose drain it let
// through ("leaving") and counts them as out until Enable succeeds for them,
// taking the decision and the mark under one mutex. A leaving mark is dropped
// early only when the drain is known to have changed nothing or to have been
// undone (ErrUnknownServer, ErrDrainTimeout); after any other failed drain the
// server stays counted as out, which can refuse a later drain but never lets
// one leave too few servers.
//
// The guard only sees drains that go through it: use one guard per backend,
// shared by every goroutine of a run.
func WithMinimum(b Balancer, minUp int) Balancer {
	if minUp <= 0 {
		return b
	}
	return &minimumGuard{Balancer: b, minUp: minUp, leaving: map[string]bool{}}
}

type minimumGuard struct {
	Balancer // Servers passes through

	minUp   int
	mu      sync.Mutex
	leaving map[string]bool // drains let through and not yet enabled again
	// The last view of the backend and when its read began. A decision
	// may use a view whose read began after the decision was asked for:
	// a hundred drains asked for at once share one read of a backend of a
	// thousand servers, instead of queueing a read each.
	seen     []Server
	seenFrom time.Time
}

func (g *minimumGuard) Drain(ctx context.Context, server string, opts DrainOptions) error {
	if err := g.admit(ctx, server); err != nil {
		return fmt.Errorf("drain %s: %w", server, err)
	}
	err := g.Balancer.Drain(ctx, server, opts)
	if errors.Is(err, ErrUnknownServer) || errors.Is(err, ErrDrainTimeout) {
		g.release(server)
	}
	return err
}

// admit takes the decision and, when the drain may go, marks the server as
// leaving, both under the mutex so that parallel drains decide one at a
// time. The view it decides on was read after it was asked for: servers
// out since then are either in it or marked leaving, and a server back in
// service since is counted as out, which is on the safe side.
func (g *minimumGuard) admit(ctx context.Context, server string) error {
	asked := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.seenFrom.After(asked) {
		from := time.Now()
		servers, err := g.Balancer.Servers(ctx)
		if err != nil {
			return fmt.Errorf("counting servers in service: %w", err)
		}
		g.seen, g.seenFrom = servers, from
	}
	if err := allowDrain(g.seen, server, g.leaving, g.minUp); err != nil {
		return err
	}
	g.leaving[server] = true
	return nil
}

func (g *minimumGuard) release(server string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.leaving, server)
}

func (g *minimumGuard) Enable(ctx context.Context, server string, opts EnableOptions) error {
	if err := g.Balancer.Enable(ctx, server, opts); err != nil {
		return err
	}
	g.release(server)
	return nil
}

// allowDrain decides whether target may be drained: servers is what the
// balancer shows, leaving the servers already let through that it may not
// show as out yet. A target that is already out (not Serving, or leaving)
// costs nothing, so draining it again is always allowed.
func allowDrain(servers []Server, target string, leaving map[string]bool, minUp int) error {
	t, ok := Find(servers, target)
	if !ok {
		return unknownServer(servers)
	}
	up := 0
	for _, s := range servers {
		if s.Serving() && !leaving[s.Name] {
			up++
		}
	}
	if !t.Serving() || leaving[target] {
		return nil
	}
	if up-1 < minUp {
		return fmt.Errorf("%d of %d servers in service, %d would remain, minimum is %d: %w",
			up, len(servers), up-1, minUp, ErrBelowMinimum)
	}
	return nil
}

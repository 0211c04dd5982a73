package lb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// WithMinimum returns b with its drains refused (ErrBelowMinimum, nothing
// changed) when taking the server out would leave fewer than minUp servers
// Serving. With minUp <= 0 no drain is refused.
//
// Reads of the backend through the guard are shared: a Servers call (and a
// drain's decision) may be answered by a read that began after it was asked
// for, so the checks of KeepOut made by a whole batch at once cost one read.
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
	return &minimumGuard{Balancer: b, minUp: max(minUp, 0), leaving: map[string]bool{}}
}

type minimumGuard struct {
	Balancer

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

// Servers returns a view of the backend read after the call was asked for,
// shared with the calls and drain decisions asked for meanwhile.
func (g *minimumGuard) Servers(ctx context.Context) ([]Server, error) {
	asked := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.read(ctx, asked); err != nil {
		return nil, err
	}
	return slices.Clone(g.seen), nil
}

// read makes g.seen a view whose read began after asked; g.mu must be held.
func (g *minimumGuard) read(ctx context.Context, asked time.Time) error {
	if g.seenFrom.After(asked) {
		return nil
	}
	from := time.Now()
	servers, err := g.Balancer.Servers(ctx)
	if err != nil {
		return err
	}
	g.seen, g.seenFrom = servers, from
	return nil
}

func (g *minimumGuard) Drain(ctx context.Context, server string, opts DrainOptions) error {
	if g.minUp == 0 {
		return g.Balancer.Drain(ctx, server, opts)
	}
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
	if err := g.read(ctx, asked); err != nil {
		return fmt.Errorf("counting servers in service: %w", err)
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
// show as out yet. A target that is already out costs nothing, so draining
// it again is allowed. A leaving target the balancer shows Serving is back
// in service (a balancer restart forgets maintenance): it is counted in
// again, and taking it out again must leave the minimum.
func allowDrain(servers []Server, target string, leaving map[string]bool, minUp int) error {
	t, ok := Find(servers, target)
	if !ok {
		return unknownServer(servers)
	}
	if !t.Serving() {
		return nil
	}
	up := 0
	for _, s := range servers {
		if s.Serving() && (!leaving[s.Name] || s.Name == target) {
			up++
		}
	}
	if up-1 < minUp {
		return fmt.Errorf("%d of %d servers in service, %d would remain, minimum is %d: %w",
			up, len(servers), up-1, minUp, ErrBelowMinimum)
	}
	return nil
}

// KeepOut confirms that server is still out of service as a drain left it:
// in maintenance, or draining with no session and nothing queued. When the
// balancer put it back (a restart or a reload without a server-state file
// forgets maintenance), KeepOut drains it again with opts, through b, so a
// WithMinimum guard refuses that drain as it would any other. It returns
// the server as it found it and whether it drained it again.
//
// Through a guard shared by the run, the checks asked for together share
// one read of the backend.
func KeepOut(ctx context.Context, b Balancer, server string, opts DrainOptions) (found Server, drainedAgain bool, err error) {
	servers, err := b.Servers(ctx)
	if err != nil {
		return Server{}, false, fmt.Errorf("confirm %s is out of service: %w", server, err)
	}
	s, ok := Find(servers, server)
	if !ok {
		return Server{}, false, fmt.Errorf("confirm %s is out of service: %w", server, unknownServer(servers))
	}
	if s.Admin == AdminMaint || s.Admin == AdminDrain && s.Sessions == 0 && s.Queued == 0 {
		return s, false, nil
	}
	if err := b.Drain(ctx, server, opts); err != nil {
		return s, false, fmt.Errorf("%s is back in service (%s/%s, %d sessions): %w", server, s.Admin, s.Health, s.Sessions, err)
	}
	return s, true, nil
}

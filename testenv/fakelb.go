package testenv

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// FakeBalancer is an in-memory lb.Balancer with the same contract as the real
// adapters (it passes lbtest.RunConformance), for tests of code that drives a
// balancer. It records every Drain and Enable (Calls), can fail or block a
// call (SetHook), and gives tests the controls a real fleet would: a health
// check that passes or fails (SetHealthy) and sessions that stay open
// (HoldSession).
//
// Like HAProxy, it reports a server in maintenance as down, and a server that
// was just enabled as down until its first check after the enable, which
// comes CheckDelay later (default 0: at once).
type FakeBalancer struct {
	mu         sync.Mutex
	order      []string
	servers    map[string]*fakeLBServer
	changed    chan struct{} // closed and replaced on every change, to wake waiters
	checkDelay time.Duration
	hook       func(ctx context.Context, call FakeCall) error
	calls      []FakeCall
}

type fakeLBServer struct {
	admin     lb.Admin
	healthy   bool // what the health check finds
	noCheck   bool // the balancer does not check this server
	sessions  int
	killEpoch int       // bumped when sessions are shut down, so their releases do not count
	checkAt   time.Time // after an enable, the check reports from then on
}

// FakeCall is one Drain or Enable the fake received.
type FakeCall struct {
	Op     string // "drain" or "enable"
	Server string
	Drain  lb.DrainOptions  // for "drain"
	Enable lb.EnableOptions // for "enable"
	Err    error            // what the call returned; nil while it runs
}

// String reads like "drain web1", or the error of a failed call, which
// starts the same way ("enable web2: ...").
func (c FakeCall) String() string {
	if c.Err != nil {
		return c.Err.Error()
	}
	return c.Op + " " + c.Server
}

// NewFakeBalancer returns a fake whose servers are all ready, healthy, checked
// and idle.
func NewFakeBalancer(servers ...string) *FakeBalancer {
	f := &FakeBalancer{servers: map[string]*fakeLBServer{}, changed: make(chan struct{})}
	for _, name := range servers {
		if _, dup := f.servers[name]; dup {
			panic("testenv: NewFakeBalancer: server " + name + " given twice")
		}
		f.order = append(f.order, name)
		f.servers[name] = &fakeLBServer{admin: lb.AdminReady, healthy: true}
	}
	return f
}

var _ lb.Balancer = (*FakeBalancer)(nil)

// notify wakes every waiter; f.mu must be held.
func (f *FakeBalancer) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *FakeBalancer) get(name string) *fakeLBServer {
	s, ok := f.servers[name]
	if !ok {
		panic("testenv: FakeBalancer has no server " + name)
	}
	return s
}

// SetHealthy makes the server's health check pass or fail from now on.
func (f *FakeBalancer) SetHealthy(server string, healthy bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(server).healthy = healthy
	f.notify()
}

// SetNoCheck makes the balancer stop checking the server (HealthNoCheck), or
// check it again.
func (f *FakeBalancer) SetNoCheck(server string, noCheck bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(server).noCheck = noCheck
	f.notify()
}

// SetAdmin puts the server in an admin state directly, as an operator would,
// to set a scene; it is not recorded in Calls.
func (f *FakeBalancer) SetAdmin(server string, admin lb.Admin) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.get(server).admin = admin
	f.notify()
}

// Restart does what restarting the balancer (or reloading it without a
// server-state file) does to its servers: every one is back ready, out of
// maintenance and drain, and its open sessions are cut. Like HAProxy, it
// starts them up without waiting for a check. A drain or an enable under
// way is not interrupted; it sees the new state at its next look.
func (f *FakeBalancer) Restart() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.servers {
		s.admin = lb.AdminReady
		s.sessions = 0
		s.killEpoch++
		s.checkAt = time.Time{}
	}
	f.notify()
}

// SetCheckDelay sets how long after an enable the first health check
// reports; until then the server shows down.
func (f *FakeBalancer) SetCheckDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checkDelay = d
}

// SetHook installs fn, called at the start of every Drain and Enable before
// anything changes (with call.Err nil). A non-nil error fails the call with
// it and changes nothing; fn may also block, e.g. to hold a drain at a point
// a test controls. fn runs without the fake's lock.
func (f *FakeBalancer) SetHook(fn func(ctx context.Context, call FakeCall) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = fn
}

// Calls returns the Drain and Enable calls so far, in the order they started.
func (f *FakeBalancer) Calls() []FakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Server returns the server's state as Servers would, for assertions.
func (f *FakeBalancer) Server(name string) lb.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view(name, time.Now())
}

// HoldSession opens a session on the server; release ends it (once; later
// calls do nothing). A session the balancer shut down is already gone.
func (f *FakeBalancer) HoldSession(server string) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.get(server)
	s.sessions++
	epoch := s.killEpoch
	f.notify()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			if s.killEpoch == epoch && s.sessions > 0 {
				s.sessions--
				f.notify()
			}
		})
	}
}

// view is the server as the balancer reports it at now; f.mu must be held.
func (f *FakeBalancer) view(name string, now time.Time) lb.Server {
	s := f.servers[name]
	v := lb.Server{Name: name, Admin: s.admin, Sessions: s.sessions}
	switch {
	case s.admin == lb.AdminMaint:
		v.Health = lb.HealthDown // checks are paused in maintenance
	case s.noCheck:
		v.Health = lb.HealthNoCheck
	case now.Before(s.checkAt) || !s.healthy:
		v.Health = lb.HealthDown
	default:
		v.Health = lb.HealthUp
	}
	return v
}

func (f *FakeBalancer) unknown() error {
	return fmt.Errorf("backend has %s: %w", strings.Join(f.order, ", "), lb.ErrUnknownServer)
}

// Servers implements lb.Balancer.
func (f *FakeBalancer) Servers(ctx context.Context) ([]lb.Server, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	out := make([]lb.Server, 0, len(f.order))
	for _, name := range f.order {
		out = append(out, f.view(name, now))
	}
	return out, nil
}

// begin records the call and runs the hook.
func (f *FakeBalancer) begin(ctx context.Context, call FakeCall) (int, error) {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	i := len(f.calls) - 1
	hook := f.hook
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return i, err
	}
	if hook != nil {
		return i, hook(ctx, call)
	}
	return i, nil
}

func (f *FakeBalancer) end(i int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[i].Err = err
}

// Drain implements lb.Balancer.
func (f *FakeBalancer) Drain(ctx context.Context, server string, opts lb.DrainOptions) (err error) {
	i, err := f.begin(ctx, FakeCall{Op: "drain", Server: server, Drain: opts})
	defer func() {
		if err != nil {
			err = fmt.Errorf("drain %s: %w", server, err)
		}
		f.end(i, err)
	}()
	if err != nil {
		return err
	}

	f.mu.Lock()
	s, ok := f.servers[server]
	if !ok {
		f.mu.Unlock()
		return f.unknown()
	}
	if s.admin == lb.AdminMaint {
		f.mu.Unlock()
		return nil
	}
	prev := s.admin
	s.admin = lb.AdminDrain
	f.notify()
	f.mu.Unlock()

	timeout := opts.EffectiveTimeout()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if s.sessions == 0 {
			s.admin = lb.AdminMaint
			f.notify()
			f.mu.Unlock()
			return nil
		}
		changed := f.changed
		f.mu.Unlock()

		select {
		case <-changed:
		case <-timer.C:
			f.mu.Lock()
			defer f.mu.Unlock()
			n := s.sessions
			if opts.KillSessions {
				s.sessions = 0
				s.killEpoch++
				s.admin = lb.AdminMaint
				f.notify()
				return nil
			}
			s.admin = prev
			f.notify()
			return fmt.Errorf("%d sessions after %s, put back to %s: %w", n, timeout, prev, lb.ErrDrainTimeout)
		case <-ctx.Done():
			f.mu.Lock()
			defer f.mu.Unlock()
			s.admin = prev
			f.notify()
			return ctx.Err()
		}
	}
}

// Enable implements lb.Balancer.
func (f *FakeBalancer) Enable(ctx context.Context, server string, opts lb.EnableOptions) (err error) {
	i, err := f.begin(ctx, FakeCall{Op: "enable", Server: server, Enable: opts})
	defer func() {
		if err != nil {
			err = fmt.Errorf("enable %s: %w", server, err)
		}
		f.end(i, err)
	}()
	if err != nil {
		return err
	}

	f.mu.Lock()
	s, ok := f.servers[server]
	if !ok {
		f.mu.Unlock()
		return f.unknown()
	}
	if f.view(server, time.Now()).Serving() {
		f.mu.Unlock()
		return nil
	}
	wasMaint := s.admin == lb.AdminMaint
	s.admin = lb.AdminReady
	switch {
	case wasMaint && opts.Verified:
		// The caller's check stands for the first one.
		s.checkAt = time.Now()
	case wasMaint:
		// Only a check made after the enable counts.
		s.checkAt = time.Now().Add(f.checkDelay)
	}
	checkAt := s.checkAt
	f.notify()
	f.mu.Unlock()

	timeout := opts.EffectiveTimeout()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	check := time.NewTimer(time.Until(checkAt))
	defer check.Stop()
	for {
		f.mu.Lock()
		if f.view(server, time.Now()).Serving() {
			f.mu.Unlock()
			return nil
		}
		changed := f.changed
		f.mu.Unlock()

		select {
		case <-changed:
		case <-check.C:
		case <-timer.C:
			f.mu.Lock()
			defer f.mu.Unlock()
			s.admin = lb.AdminMaint
			f.notify()
			return fmt.Errorf("no passing check within %s, put back in maintenance: %w", timeout, lb.ErrNotHealthy)
		case <-ctx.Done():
			f.mu.Lock()
			defer f.mu.Unlock()
			s.admin = lb.AdminMaint
			f.notify()
			return ctx.Err()
		}
	}
}

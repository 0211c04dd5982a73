// Package lbtest holds the conformance suite every lb.Balancer passes: the
// real adapters against real balancers, and the fakes other packages test
// with, so that a fake cannot drift from the contract it stands in for.
package lbtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// Capability is something a conformance case needs beyond the Balancer.
type Capability string

const (
	// ServerList: the balancer lists its servers, so it can report their
	// state and refuse unknown names. None lacks it.
	ServerList Capability = "server-list"
	// Sessions: the harness can hold a session open on a server
	// (Harness.HoldSession).
	Sessions Capability = "sessions"
	// HealthControl: the harness can make a server's health check pass or
	// fail (Harness.SetHealthy).
	HealthControl Capability = "health-control"
)

// Harness is one fresh balancer under test and the controls the suite needs.
type Harness struct {
	Balancer lb.Balancer
	// Servers names every server of the backend, at least two; each starts
	// ready, healthy and idle. ParallelDrains drains the first two at once,
	// so a balancer wrapped in lb.WithMinimum needs that many more than its
	// minimum.
	Servers []string
	// SetHealthy makes the server's health check pass or fail from now on.
	SetHealthy func(server string, healthy bool)
	// HoldSession opens a session on the server and returns once the
	// balancer counts it; release ends it and returns once it has ended (or
	// failed, when a drain killed it).
	HoldSession func(server string) (release func())
	// Lacks declares what the adapter cannot do, with the reason; the cases
	// that need it are skipped with that reason. A nil control that is not
	// declared here fails the suite, so nothing is skipped by accident.
	Lacks map[Capability]string
	// EnableTimeout bounds an enable that must succeed: the balancer's check
	// interval times its rise count, with room (default 10s).
	EnableTimeout time.Duration
}

// RunConformance runs the Balancer contract (see lb.Balancer) against fresh
// harnesses from newHarness, one per case.
func RunConformance(t *testing.T, newHarness func(t *testing.T) Harness) {
	cases := []struct {
		name  string
		needs []Capability
		run   func(t *testing.T, h Harness)
	}{
		{"ServersListsAll", []Capability{ServerList}, testServersListsAll},
		{"DrainIdle", []Capability{ServerList}, testDrainIdle},
		{"DrainWaitsForSessions", []Capability{ServerList, Sessions}, testDrainWaitsForSessions},
		{"DrainTimeoutRestores", []Capability{ServerList, Sessions}, testDrainTimeoutRestores},
		{"DrainTimeoutKillSessions", []Capability{ServerList, Sessions}, testDrainTimeoutKill},
		{"DrainInMaintIsNoop", []Capability{ServerList}, testDrainInMaint},
		{"ParallelDrains", []Capability{ServerList}, testParallelDrains},
		{"EnableHealthy", []Capability{ServerList}, testEnableHealthy},
		{"EnableVerified", []Capability{ServerList}, testEnableVerified},
		{"EnableServingIsNoop", []Capability{ServerList}, testEnableServing},
		{"EnableUnhealthy", []Capability{ServerList, HealthControl}, testEnableUnhealthy},
		{"UnknownServer", []Capability{ServerList}, testUnknownServer},
		{"CancelledContext", nil, testCancelled},
		{"CancelDuringDrain", []Capability{ServerList, Sessions}, testCancelDuringDrain},
		{"CancelDuringEnable", []Capability{ServerList, HealthControl}, testCancelDuringEnable},
	}
	lacks := newHarness(t).Lacks
	for _, c := range cases {
		// A case the adapter cannot support by design (declared in Lacks)
		// is not run, and the log says why; an environment problem is
		// never a reason to leave a case out.
		if why := lacking(lacks, c.needs); why != "" {
			t.Logf("%s: not applicable: %s", c.name, why)
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			checkHarness(t, h)
			c.run(t, h)
		})
	}
}

// lacking says which needed capability the adapter declared it lacks.
func lacking(lacks map[Capability]string, needs []Capability) string {
	for _, need := range needs {
		if why, ok := lacks[need]; ok {
			return fmt.Sprintf("adapter lacks %s: %s", need, why)
		}
	}
	return ""
}

func checkHarness(t *testing.T, h Harness) {
	t.Helper()
	if h.Balancer == nil {
		t.Fatal("harness has no Balancer")
	}
	lacks := func(c Capability) bool { _, ok := h.Lacks[c]; return ok }
	if !lacks(ServerList) && len(h.Servers) < 2 {
		t.Fatalf("harness names %d servers; the suite needs at least 2 (or declare Lacks[%s])", len(h.Servers), ServerList)
	}
	if h.SetHealthy == nil && !lacks(HealthControl) {
		t.Fatalf("harness has no SetHealthy and does not declare Lacks[%s]", HealthControl)
	}
	if h.HoldSession == nil && !lacks(Sessions) {
		t.Fatalf("harness has no HoldSession and does not declare Lacks[%s]", Sessions)
	}
}

// Bounds of the suite. Generous where a slow machine only makes a passing
// case slower; tight only where the contract says "at once".
const (
	callLimit   = 60 * time.Second // no call of the suite may hang longer
	waitLimit   = 10 * time.Second // for a state the balancer must reach
	shortWait   = 300 * time.Millisecond
	quickLimit  = 2 * time.Second // "returns at once", with room for a program start
	releaseSLO  = 5 * time.Second // a drain ends this soon after its last session
	pollEvery   = 10 * time.Millisecond
	noSuchName  = "no-such-server"
	drainPlenty = 30 * time.Second
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callLimit)
	t.Cleanup(cancel)
	return ctx
}

func (h Harness) enableTimeout() time.Duration {
	if h.EnableTimeout > 0 {
		return h.EnableTimeout
	}
	return 10 * time.Second
}

// state returns the server as the balancer shows it now.
func state(t *testing.T, h Harness, name string) lb.Server {
	t.Helper()
	servers, err := h.Balancer.Servers(ctxFor(t))
	if err != nil {
		t.Fatalf("Servers: %v", err)
	}
	s, ok := lb.Find(servers, name)
	if !ok {
		t.Fatalf("Servers has no %q: %+v", name, servers)
	}
	return s
}

// eventually polls cond until it holds or the deadline passes. The suite
// waits this way, never by sleeping a fixed time.
func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: want %s, got %s", limit, what, got)
		}
		time.Sleep(pollEvery)
	}
}

func describe(s lb.Server) string {
	return fmt.Sprintf("%s admin=%s health=%s sessions=%d queued=%d serving=%v",
		s.Name, s.Admin, s.Health, s.Sessions, s.Queued, s.Serving())
}

func wantErr(t *testing.T, err, target error, server string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("err = %v, want one wrapping %q", err, target)
	}
	if server != "" && !strings.Contains(err.Error(), server) {
		t.Errorf("error %q does not name the server %q", err, server)
	}
}

// drainOut drains the server so a case can start from maintenance.
func drainOut(t *testing.T, h Harness, server string) {
	t.Helper()
	if err := h.Balancer.Drain(ctxFor(t), server, lb.DrainOptions{Timeout: waitLimit}); err != nil {
		t.Fatalf("Drain(%s): %v", server, err)
	}
}

func testServersListsAll(t *testing.T, h Harness) {
	servers, err := h.Balancer.Servers(ctxFor(t))
	if err != nil {
		t.Fatalf("Servers: %v", err)
	}
	var got []string
	for _, s := range servers {
		got = append(got, s.Name)
		if !s.Serving() {
			t.Errorf("fresh server not serving: %s", describe(s))
		}
		if s.Sessions != 0 || s.Queued != 0 {
			t.Errorf("fresh server not idle: %s", describe(s))
		}
	}
	want := slices.Clone(h.Servers)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("Servers lists %q, want %q", got, want)
	}
}

func testDrainIdle(t *testing.T, h Harness) {
	target := h.Servers[0]
	start := time.Now()
	if err := h.Balancer.Drain(ctxFor(t), target, lb.DrainOptions{Timeout: waitLimit}); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	t.Logf("drain of an idle server took %s", time.Since(start))
	if s := state(t, h, target); s.Admin != lb.AdminMaint || s.Serving() {
		t.Fatalf("after drain: %s, want maint and not serving", describe(s))
	}
	for _, other := range h.Servers[1:] {
		if s := state(t, h, other); !s.Serving() {
			t.Errorf("drain of %s touched %s", target, describe(s))
		}
	}
}

func testDrainWaitsForSessions(t *testing.T, h Harness) {
	target := h.Servers[0]
	release := h.HoldSession(target)
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	if s := state(t, h, target); s.Sessions < 1 {
		t.Fatalf("holding a session, Servers shows %s", describe(s))
	}

	done := make(chan error, 1)
	go func() { done <- h.Balancer.Drain(ctxFor(t), target, lb.DrainOptions{Timeout: drainPlenty}) }()
	eventually(t, waitLimit, "the server out of rotation while its session is held", func() (bool, string) {
		s := state(t, h, target)
		return !s.Serving() && s.Sessions >= 1, describe(s)
	})
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v while a session was still open", err)
	default:
	}

	released = true
	release()
	at := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(releaseSLO):
		t.Fatalf("Drain still waiting %s after the last session ended", releaseSLO)
	}
	t.Logf("drain returned %s after the session ended", time.Since(at))
	if s := state(t, h, target); s.Admin != lb.AdminMaint || s.Sessions != 0 {
		t.Fatalf("after drain: %s, want maint and no session", describe(s))
	}
}

func testDrainTimeoutRestores(t *testing.T, h Harness) {
	target := h.Servers[0]
	release := h.HoldSession(target)
	defer release()
	err := h.Balancer.Drain(ctxFor(t), target, lb.DrainOptions{Timeout: shortWait})
	wantErr(t, err, lb.ErrDrainTimeout, target)
	if s := state(t, h, target); s.Admin != lb.AdminReady || !s.Serving() {
		t.Fatalf("after a drain timeout: %s, want ready and serving as before", describe(s))
	}
}

func testDrainTimeoutKill(t *testing.T, h Harness) {
	target := h.Servers[0]
	release := h.HoldSession(target)
	defer release()
	if err := h.Balancer.Drain(ctxFor(t), target, lb.DrainOptions{Timeout: shortWait, KillSessions: true}); err != nil {
		t.Fatalf("Drain with KillSessions: %v", err)
	}
	if s := state(t, h, target); s.Admin != lb.AdminMaint || s.Sessions != 0 {
		t.Fatalf("after a killing drain: %s, want maint and no session", describe(s))
	}
}

func testDrainInMaint(t *testing.T, h Harness) {
	target := h.Servers[0]
	drainOut(t, h, target)
	start := time.Now()
	// A timeout this short fails any drain that waits for anything.
	if err := h.Balancer.Drain(ctxFor(t), target, lb.DrainOptions{Timeout: time.Nanosecond}); err != nil {
		t.Fatalf("second Drain: %v", err)
	}
	if d := time.Since(start); d > quickLimit {
		t.Errorf("drain of a server in maintenance took %s", d)
	}
	if s := state(t, h, target); s.Admin != lb.AdminMaint {
		t.Fatalf("after second drain: %s", describe(s))
	}
}

func testParallelDrains(t *testing.T, h Harness) {
	errs := make(chan error, 2)
	for _, s := range h.Servers[:2] {
		go func() { errs <- h.Balancer.Drain(ctxFor(t), s, lb.DrainOptions{Timeout: waitLimit}) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("parallel Drain: %v", err)
		}
	}
	for _, name := range h.Servers[:2] {
		if s := state(t, h, name); s.Admin != lb.AdminMaint {
			t.Errorf("after parallel drains: %s", describe(s))
		}
	}
}

func testEnableHealthy(t *testing.T, h Harness) {
	target := h.Servers[0]
	drainOut(t, h, target)
	start := time.Now()
	if err := h.Balancer.Enable(ctxFor(t), target, lb.EnableOptions{Timeout: h.enableTimeout()}); err != nil {
		t.Fatalf("Enable: %v", err)
	}
	t.Logf("enable of a healthy server took %s", time.Since(start))
	s := state(t, h, target)
	if s.Admin != lb.AdminReady || s.Health == lb.HealthDown || !s.Serving() {
		t.Fatalf("after enable: %s, want ready, up and serving", describe(s))
	}
}

// An enable the caller verified (its own check just passed) puts a healthy
// server in service like any enable.
func testEnableVerified(t *testing.T, h Harness) {
	target := h.Servers[0]
	drainOut(t, h, target)
	start := time.Now()
	if err := h.Balancer.Enable(ctxFor(t), target, lb.EnableOptions{Timeout: h.enableTimeout(), Verified: true}); err != nil {
		t.Fatalf("Enable: %v", err)
	}
	t.Logf("verified enable of a healthy server took %s", time.Since(start))
	if s := state(t, h, target); !s.Serving() {
		t.Fatalf("after a verified enable: %s, want serving", describe(s))
	}
}

func testEnableServing(t *testing.T, h Harness) {
	target := h.Servers[0]
	start := time.Now()
	if err := h.Balancer.Enable(ctxFor(t), target, lb.EnableOptions{Timeout: h.enableTimeout()}); err != nil {
		t.Fatalf("Enable of a serving server: %v", err)
	}
	if d := time.Since(start); d > quickLimit {
		t.Errorf("enable of a serving server took %s", d)
	}
	if s := state(t, h, target); !s.Serving() {
		t.Fatalf("after enable: %s", describe(s))
	}
}

func testEnableUnhealthy(t *testing.T, h Harness) {
	target := h.Servers[0]
	drainOut(t, h, target)
	h.SetHealthy(target, false)
	err := h.Balancer.Enable(ctxFor(t), target, lb.EnableOptions{Timeout: 2 * shortWait})
	wantErr(t, err, lb.ErrNotHealthy, target)
	if s := state(t, h, target); s.Admin != lb.AdminMaint || s.Serving() {
		t.Fatalf("after a failed enable: %s, want maint", describe(s))
	}

	// The failure leaves nothing behind that stops a later enable.
	h.SetHealthy(target, true)
	if err := h.Balancer.Enable(ctxFor(t), target, lb.EnableOptions{Timeout: h.enableTimeout()}); err != nil {
		t.Fatalf("Enable once healthy again: %v", err)
	}
	if s := state(t, h, target); !s.Serving() {
		t.Fatalf("after enable: %s", describe(s))
	}
}

func testUnknownServer(t *testing.T, h Harness) {
	err := h.Balancer.Drain(ctxFor(t), noSuchName, lb.DrainOptions{Timeout: shortWait})
	wantErr(t, err, lb.ErrUnknownServer, noSuchName)
	err = h.Balancer.Enable(ctxFor(t), noSuchName, lb.EnableOptions{Timeout: shortWait})
	wantErr(t, err, lb.ErrUnknownServer, noSuchName)
	for _, name := range h.Servers {
		if s := state(t, h, name); !s.Serving() {
			t.Errorf("an unknown name changed %s", describe(s))
		}
	}
}

func testCancelled(t *testing.T, h Harness) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	name := noSuchName
	if len(h.Servers) > 0 {
		name = h.Servers[0]
	}
	if _, err := h.Balancer.Servers(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Servers: err = %v, want context.Canceled", err)
	}
	if err := h.Balancer.Drain(ctx, name, lb.DrainOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Drain: err = %v, want context.Canceled", err)
	}
	if err := h.Balancer.Enable(ctx, name, lb.EnableOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Enable: err = %v, want context.Canceled", err)
	}
	if _, lacks := h.Lacks[ServerList]; !lacks {
		if s := state(t, h, name); !s.Serving() {
			t.Errorf("a cancelled call changed %s", describe(s))
		}
	}
}

func testCancelDuringDrain(t *testing.T, h Harness) {
	target := h.Servers[0]
	release := h.HoldSession(target)
	defer release()
	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Balancer.Drain(ctx, target, lb.DrainOptions{Timeout: drainPlenty}) }()
	eventually(t, waitLimit, "the drain under way", func() (bool, string) {
		s := state(t, h, target)
		return !s.Serving(), describe(s)
	})
	cancel()
	select {
	case err := <-done:
		wantErr(t, err, context.Canceled, target)
	case <-time.After(waitLimit):
		t.Fatalf("Drain still running %s after its ctx was cancelled", waitLimit)
	}
	if s := state(t, h, target); s.Admin != lb.AdminReady || !s.Serving() {
		t.Fatalf("after a cancelled drain: %s, want ready and serving as before", describe(s))
	}
}

func testCancelDuringEnable(t *testing.T, h Harness) {
	target := h.Servers[0]
	drainOut(t, h, target)
	h.SetHealthy(target, false)
	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Balancer.Enable(ctx, target, lb.EnableOptions{Timeout: drainPlenty}) }()
	eventually(t, waitLimit, "the enable under way", func() (bool, string) {
		s := state(t, h, target)
		return s.Admin != lb.AdminMaint, describe(s)
	})
	cancel()
	select {
	case err := <-done:
		wantErr(t, err, context.Canceled, target)
	case <-time.After(waitLimit):
		t.Fatalf("Enable still running %s after its ctx was cancelled", waitLimit)
	}
	if s := state(t, h, target); s.Admin != lb.AdminMaint || s.Serving() {
		t.Fatalf("after a cancelled enable: %s, want maint", describe(s))
	}
}

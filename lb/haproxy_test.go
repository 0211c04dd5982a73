package lb_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/lb/lbtest"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// haproxyFleet is a real haproxy in front of three test backends.
type haproxyFleet struct {
	hp       *testenv.HAProxy
	backends map[string]*testenv.HTTPBackend
	bal      *lb.HAProxy
}

func startHAProxyFleet(t *testing.T) haproxyFleet { return startHAProxyFleetTB(t) }

func startHAProxyFleetTB(t testing.TB) haproxyFleet {
	t.Helper()
	names := []string{"web1", "web2", "web3"}
	f := haproxyFleet{backends: map[string]*testenv.HTTPBackend{}}
	var addrs []string
	for _, n := range names {
		b := testenv.StartHTTPBackend(t, n)
		f.backends[n] = b
		addrs = append(addrs, b.Addr)
	}
	f.hp = testenv.StartHAProxy(t, addrs, testenv.HAProxyServerNames(names...))
	bal, err := lb.NewHAProxy(f.hp.APIAddr, f.hp.Backend, lb.HAProxyPollInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	f.bal = bal
	return f
}

func TestHAProxyConformance(t *testing.T) {
	lbtest.RunConformance(t, func(t *testing.T) lbtest.Harness {
		f := startHAProxyFleet(t)
		return lbtest.Harness{
			Balancer:    f.bal,
			Servers:     f.hp.Servers,
			SetHealthy:  func(s string, ok bool) { f.backends[s].SetHealthy(ok) },
			HoldSession: func(s string) func() { return f.hp.HoldSession(t, s, f.backends[s]) },
			// inter 100ms, rise 1.
			EnableTimeout: 5 * time.Second,
		}
	})
}

// A drain and an enable of an idle, healthy server, as a rollout does them,
// timed against real HAProxy (inter 100ms, rise 1).
func TestHAProxyDrainEnableCycle(t *testing.T) {
	f := startHAProxyFleet(t)
	ctx := t.Context()
	const rounds = 5
	var drains, enables time.Duration
	for range rounds {
		start := time.Now()
		if err := f.bal.Drain(ctx, "web2", lb.DrainOptions{Timeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		mid := time.Now()
		if err := f.bal.Enable(ctx, "web2", lb.EnableOptions{Timeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		drains += mid.Sub(start)
		enables += time.Since(mid)
	}
	t.Logf("mean over %d rounds: drain %s, enable %s", rounds, drains/rounds, enables/rounds)
	if !strings.Contains(f.hp.Log(), "web/web2 is UP") {
		t.Errorf("haproxy never logged web2 coming up after a check:\n%s", f.hp.Log())
	}
}

// An enable must wait for a check made after it: a server that went into
// maintenance healthy and broke meanwhile must not come back, not even for
// the moment HAProxy 2.6 would show it "UP" before its first check.
func TestHAProxyEnableIgnoresStaleUp(t *testing.T) {
	f := startHAProxyFleet(t)
	ctx := t.Context()
	if err := f.bal.Drain(ctx, "web1", lb.DrainOptions{}); err != nil {
		t.Fatal(err)
	}
	f.backends["web1"].SetHealthy(false)
	err := f.bal.Enable(ctx, "web1", lb.EnableOptions{Timeout: time.Second})
	if !errors.Is(err, lb.ErrNotHealthy) {
		t.Fatalf("Enable: err = %v, want ErrNotHealthy", err)
	}
	t.Logf("error: %v", err)
	// HAProxy logs "is UP" for the server whenever it takes traffic.
	for _, line := range strings.Split(f.hp.Log(), "\n") {
		if strings.Contains(line, "web/web1 is UP") && !strings.Contains(line, "DRAIN") {
			t.Errorf("web1 was put in service while unhealthy: %s", line)
		}
	}
}

func TestHAProxyUnreachableAPI(t *testing.T) {
	addr := fmt.Sprintf("ipv4@127.0.0.1:%d", testenv.ClosedPort(t))
	bal, err := lb.NewHAProxy(addr, "web")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	for name, call := range map[string]func() error{
		"Servers": func() error { _, err := bal.Servers(ctx); return err },
		"Drain":   func() error { return bal.Drain(ctx, "web1", lb.DrainOptions{}) },
		"Enable":  func() error { return bal.Enable(ctx, "web1", lb.EnableOptions{}) },
	} {
		err := call()
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("%s: err = %v, want one saying %s is unreachable", name, err, addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("%s: err = %v, want one wrapping ECONNREFUSED", name, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("failing on an unreachable API took %s", d)
	}
}

// A poll that the ctx deadline cuts short mid-dial reports the deadline, so
// that a drain that ran out of time says so (ErrDrainTimeout) instead of
// calling the API unreachable.
func TestHAProxyDeadlineDuringDial(t *testing.T) {
	bal, err := lb.NewHAProxy(fmt.Sprintf("ipv4@127.0.0.1:%d", testenv.HangingPort(t)), "web")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.LateTimer(t.Context(), 100*time.Millisecond)
	start := time.Now()
	_, err = bal.Servers(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "unreachable") {
		t.Errorf("err = %v, want one wrapping context.DeadlineExceeded, not calling the API unreachable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Servers took %s, want it to end at the ctx deadline", d)
	}
}

func TestHAProxyUnknownBackend(t *testing.T) {
	f := startHAProxyFleet(t)
	bal, err := lb.NewHAProxy(f.hp.APIAddr, "nope")
	if err != nil {
		t.Fatal(err)
	}
	_, err = bal.Servers(t.Context())
	if !errors.Is(err, lb.ErrUnknownBackend) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("Servers: err = %v, want ErrUnknownBackend naming the backend", err)
	}
	err = bal.Drain(t.Context(), "web1", lb.DrainOptions{})
	if !errors.Is(err, lb.ErrUnknownBackend) || !strings.Contains(err.Error(), "drain nope/web1") {
		t.Fatalf("Drain: err = %v", err)
	}
}

// A server name that would smuggle a second command into the runtime API line
// is refused before anything is sent.
func TestHAProxyRefusesInjectedName(t *testing.T) {
	f := startHAProxyFleet(t)
	err := f.bal.Drain(t.Context(), "web1;set server web/web2 state maint", lb.DrainOptions{})
	if !errors.Is(err, lb.ErrUnknownServer) {
		t.Fatalf("err = %v, want ErrUnknownServer", err)
	}
	for _, s := range []string{"web1", "web2"} {
		srv, _ := lb.Find(mustServers(t, f.bal), s)
		if !srv.Serving() {
			t.Errorf("%s changed: %+v", s, srv)
		}
	}
}

func mustServers(t *testing.T, b lb.Balancer) []lb.Server {
	t.Helper()
	s, err := b.Servers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewHAProxyRejects(t *testing.T) {
	for _, c := range []struct{ addr, backend string }{
		{"abns@x", "web"},
		{"127.0.0.1", "web"},
		{"127.0.0.1:9999", ""},
		{"127.0.0.1:9999", "web;show info"},
	} {
		if _, err := lb.NewHAProxy(c.addr, c.backend); err == nil {
			t.Errorf("NewHAProxy(%q, %q) accepted", c.addr, c.backend)
		}
	}
}

// BenchmarkHAProxyServers is one poll: a runtime API connection and a parse.
func BenchmarkHAProxyServers(b *testing.B) {
	f := startHAProxyFleetTB(b)
	ctx := b.Context()
	for b.Loop() {
		if _, err := f.bal.Servers(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHAProxyDrainEnable is a rollout's balancer work for one idle host;
// the enable waits for a real check (inter 100ms), which dominates.
func BenchmarkHAProxyDrainEnable(b *testing.B) {
	f := startHAProxyFleetTB(b)
	ctx := b.Context()
	for b.Loop() {
		if err := f.bal.Drain(ctx, "web1", lb.DrainOptions{Timeout: 5 * time.Second}); err != nil {
			b.Fatal(err)
		}
		if err := f.bal.Enable(ctx, "web1", lb.EnableOptions{Timeout: 5 * time.Second}); err != nil {
			b.Fatal(err)
		}
	}
}

// The show commands take a proxy name or id; a backend named "2" must be
// found by its name although proxy id 2 is the frontend here.
func TestHAProxyNumericBackendName(t *testing.T) {
	b1, b2 := testenv.StartHTTPBackend(t, "web1"), testenv.StartHTTPBackend(t, "web2")
	hp := testenv.StartHAProxy(t, []string{b1.Addr, b2.Addr}, testenv.HAProxyBackend("2"))
	bal, err := lb.NewHAProxy(hp.APIAddr, "2")
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Drain(t.Context(), "web1", lb.DrainOptions{}); err != nil {
		t.Fatal(err)
	}
	servers := mustServers(t, bal)
	if len(servers) != 2 || servers[0].Admin != lb.AdminMaint || !servers[1].Serving() {
		t.Fatalf("servers = %+v", servers)
	}
}

// A frontend may share its name with the backend (testenv's frontend is
// "fe"); the adapter must still find the backend's servers.
func TestHAProxyBackendNamedLikeFrontend(t *testing.T) {
	b1, b2 := testenv.StartHTTPBackend(t, "web1"), testenv.StartHTTPBackend(t, "web2")
	hp := testenv.StartHAProxy(t, []string{b1.Addr, b2.Addr}, testenv.HAProxyBackend("fe"))
	bal, err := lb.NewHAProxy(hp.APIAddr, "fe")
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Drain(t.Context(), "web2", lb.DrainOptions{}); err != nil {
		t.Fatal(err)
	}
	servers := mustServers(t, bal)
	if len(servers) != 2 || !servers[0].Serving() || servers[1].Admin != lb.AdminMaint {
		t.Fatalf("servers = %+v", servers)
	}
}

// WithMinimum wraps every balancer in production, so it keeps the contract
// over real HAProxy too. Three servers and a minimum of 1 leave room for the
// suite's drains (at most two at once).
func TestHAProxyWithMinimumConformance(t *testing.T) {
	lbtest.RunConformance(t, func(t *testing.T) lbtest.Harness {
		f := startHAProxyFleet(t)
		return lbtest.Harness{
			Balancer:      lb.WithMinimum(f.bal, 1),
			Servers:       f.hp.Servers,
			SetHealthy:    func(s string, ok bool) { f.backends[s].SetHealthy(ok) },
			HoldSession:   func(s string) func() { return f.hp.HoldSession(t, s, f.backends[s]) },
			EnableTimeout: 5 * time.Second,
		}
	})
}

// With HAProxy's checks far apart (inter 30s), an enable waits for a check
// made after it, and fails when none comes in time, leaving the server in
// maintenance; a verified enable (lieutenant's own check just passed) puts
// the server in service at once. With rise 3, one fresh check is enough.
func TestHAProxyEnableWaitsForOneFreshCheckUnlessVerified(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inter    time.Duration
		rise     int
		verified bool
		wantErr  error
	}{
		{"slow checks", 30 * time.Second, 2, false, lb.ErrNotHealthy},
		{"slow checks, verified", 30 * time.Second, 2, true, nil},
		{"rise 3", 300 * time.Millisecond, 3, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b1, b2 := testenv.StartHTTPBackend(t, "web1"), testenv.StartHTTPBackend(t, "web2")
			hp := testenv.StartHAProxy(t, []string{b1.Addr, b2.Addr}, testenv.HAProxyCheck(tc.inter, 3, tc.rise))
			bal, err := lb.NewHAProxy(hp.APIAddr, hp.Backend, lb.HAProxyPollInterval(10*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			if err := bal.Drain(t.Context(), "web1", lb.DrainOptions{}); err != nil {
				t.Fatal(err)
			}
			// rise checks at inter would take 900ms: one is enough.
			err = bal.Enable(t.Context(), "web1", lb.EnableOptions{Timeout: 700 * time.Millisecond, Verified: tc.verified})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Enable = %v, want %v", err, tc.wantErr)
			}
			// "UP 1/3": up, not checked since (slow checks).
			want := "web1=UP"
			if tc.wantErr != nil {
				want = "web1=MAINT"
			}
			if got := hp.Statuses(t); !strings.HasPrefix(got, want+" ") {
				t.Errorf("after enable: %s, want %s", got, want)
			}
		})
	}
}

// BenchmarkHAProxyEnable measures ways to put a drained server back, on
// real HAProxy at its default check timing (inter 2s fall 3 rise 2); one op
// is one enable of a healthy server out of maintenance:
//
//   - verified: lieutenant's own check passed just before, ready at once
//     (lb.EnableOptions.Verified, what a playbook with a check step gets);
//   - fresh-check: health forced down, one check made after it must pass
//     (what Enable does otherwise);
//   - rise-checks: health forced down, ready, wait for rise checks (what
//     lieutenant did before; shown for comparison);
//   - ready-unsafe: ready, wait for UP, which HAProxy 2.6 shows at once
//     before any check (the floor script's way: a broken server takes
//     traffic until its next check).
func BenchmarkHAProxyEnable(b *testing.B) {
	b1, b2 := testenv.StartHTTPBackend(b, "web1"), testenv.StartHTTPBackend(b, "web2")
	hp := testenv.StartHAProxy(b, []string{b1.Addr, b2.Addr}, testenv.HAProxyCheck(2*time.Second, 3, 2))
	bal, err := lb.NewHAProxy(hp.APIAddr, hp.Backend, lb.HAProxyPollInterval(10*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	raw := func(cmd string) {
		if _, err := hp.RunCommand(ctx, cmd); err != nil {
			b.Fatal(err)
		}
	}
	waitUp := func() {
		for !strings.HasPrefix(hp.Statuses(b), "web1=UP") {
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, c := range []struct {
		name   string
		enable func()
	}{
		{"verified", func() {
			if err := bal.Enable(ctx, "web1", lb.EnableOptions{Verified: true}); err != nil {
				b.Fatal(err)
			}
		}},
		{"fresh-check", func() {
			if err := bal.Enable(ctx, "web1", lb.EnableOptions{}); err != nil {
				b.Fatal(err)
			}
		}},
		{"rise-checks", func() {
			raw("set server web/web1 state drain")
			raw("set server web/web1 health down")
			raw("set server web/web1 state ready")
			waitUp()
		}},
		{"ready-unsafe", func() {
			raw("set server web/web1 state ready")
			waitUp()
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if err := bal.Drain(ctx, "web1", lb.DrainOptions{}); err != nil {
					b.Fatal(err)
				}
				// A random moment in HAProxy's check cycle, as in a rollout.
				time.Sleep(time.Duration(rand.N(2000)) * time.Millisecond)
				b.StartTimer()
				c.enable()
			}
		})
	}
}

// HAProxy restarted without a server-state file forgets maintenance: the
// server a drain took out is back in service. KeepOut, which a run makes
// before every step that changes a drained host, finds it there and drains
// it again through the guard.
func TestHAProxyKeepOutAfterRestart(t *testing.T) {
	f := startHAProxyFleet(t)
	ctx := t.Context()
	g := lb.WithMinimum(f.bal, 2)
	opts := lb.DrainOptions{Timeout: 5 * time.Second}
	if err := g.Drain(ctx, "web2", opts); err != nil {
		t.Fatal(err)
	}
	if _, again, err := lb.KeepOut(ctx, g, "web2", opts); err != nil || again {
		t.Fatalf("KeepOut of a drained server = %v, %v; want nothing done", again, err)
	}

	if err := f.hp.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := f.hp.Statuses(t); got != "web1=UP web2=UP web3=UP" {
		t.Fatalf("after the restart HAProxy shows %s, want every server back UP", got)
	}
	found, again, err := lb.KeepOut(ctx, g, "web2", opts)
	if err != nil || !again {
		t.Fatalf("KeepOut after a restart = %v, %v; want web2 drained again", again, err)
	}
	if found.Admin != lb.AdminReady {
		t.Errorf("KeepOut found web2 %s/%s, want ready", found.Admin, found.Health)
	}
	if got, want := f.hp.Statuses(t), "web1=UP web2=MAINT web3=UP"; got != want {
		t.Errorf("HAProxy shows %s, want %s", got, want)
	}

	// A restart that leaves too few servers in service besides web2: the
	// drain again is refused and changes nothing.
	f.backends["web3"].SetHealthy(false)
	if err := f.hp.Restart(); err != nil {
		t.Fatal(err)
	}
	_, _, err = lb.KeepOut(ctx, g, "web2", opts)
	if !errors.Is(err, lb.ErrBelowMinimum) {
		t.Fatalf("KeepOut below the minimum: %v, want ErrBelowMinimum", err)
	}
	if got, want := f.hp.Statuses(t), "web1=UP web2=UP web3=DOWN"; got != want {
		t.Errorf("HAProxy shows %s, want %s", got, want)
	}
}

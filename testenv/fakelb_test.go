package testenv_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/lb/lbtest"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

func fakeHarness(checkDelay time.Duration) func(t *testing.T) lbtest.Harness {
	return func(t *testing.T) lbtest.Harness {
		f := testenv.NewFakeBalancer("web1", "web2", "web3")
		f.SetCheckDelay(checkDelay)
		return lbtest.Harness{
			Balancer:      f,
			Servers:       []string{"web1", "web2", "web3"},
			SetHealthy:    f.SetHealthy,
			HoldSession:   f.HoldSession,
			EnableTimeout: 5 * time.Second,
		}
	}
}

func TestFakeBalancerConformance(t *testing.T) {
	lbtest.RunConformance(t, fakeHarness(0))
}

// A check that reports a little after the enable is the real balancers' case.
func TestFakeBalancerConformanceSlowCheck(t *testing.T) {
	lbtest.RunConformance(t, fakeHarness(50*time.Millisecond))
}

func TestFakeBalancerRecordsCalls(t *testing.T) {
	ctx := t.Context()
	f := testenv.NewFakeBalancer("web1", "web2")
	if err := f.Drain(ctx, "web1", lb.DrainOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Enable(ctx, "web1", lb.EnableOptions{}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	f.SetHook(func(_ context.Context, c testenv.FakeCall) error {
		if c.Op == "drain" && c.Server == "web2" {
			return boom
		}
		return nil
	})
	if err := f.Drain(ctx, "web2", lb.DrainOptions{}); !errors.Is(err, boom) {
		t.Fatalf("hooked drain: err = %v, want boom", err)
	}
	if s := f.Server("web2"); !s.Serving() {
		t.Fatalf("a failed hook changed web2: %+v", s)
	}
	var got []string
	for _, c := range f.Calls() {
		got = append(got, c.String())
	}
	want := []string{"drain web1", "enable web1", "drain web2: boom"}
	if len(got) != len(want) {
		t.Fatalf("calls = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("calls = %q, want %q", got, want)
		}
	}
}

// WithMinimum wraps every balancer in production, so it keeps the contract
// too. Three servers and a minimum of 1 leave room for the suite's drains
// (at most two at once).
func TestFakeBalancerWithMinimumConformance(t *testing.T) {
	lbtest.RunConformance(t, func(t *testing.T) lbtest.Harness {
		h := fakeHarness(50 * time.Millisecond)(t)
		h.Balancer = lb.WithMinimum(h.Balancer, 1)
		return h
	})
}

package lb_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

func TestWithMinimumRefusesAndChangesNothing(t *testing.T) {
	ctx := t.Context()
	f := testenv.NewFakeBalancer("web1", "web2", "web3")
	g := lb.WithMinimum(f, 2)
	if err := g.Drain(ctx, "web1", lb.DrainOptions{}); err != nil {
		t.Fatal(err)
	}
	err := g.Drain(ctx, "web2", lb.DrainOptions{})
	if !errors.Is(err, lb.ErrBelowMinimum) {
		t.Fatalf("second drain: err = %v, want ErrBelowMinimum", err)
	}
	t.Logf("refused: %v", err)
	if s := f.Server("web2"); !s.Serving() {
		t.Fatalf("a refused drain changed web2: %+v", s)
	}
	// Once web1 is back, web2 may go.
	if err := g.Enable(ctx, "web1", lb.EnableOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := g.Drain(ctx, "web2", lb.DrainOptions{}); err != nil {
		t.Fatalf("drain after enable: %v", err)
	}
	// Draining web2 again does not count it twice.
	if err := g.Drain(ctx, "web2", lb.DrainOptions{}); err != nil {
		t.Fatalf("second drain of web2: %v", err)
	}
	if got := len(f.Calls()); got != 4 {
		t.Errorf("the balancer saw %d calls, want 4 (the refused one never reaches it): %v", got, f.Calls())
	}
}

// Two parallel drains where only one may pass: the first is held inside the
// balancer before the balancer shows any change, which is exactly the window
// in which counting the balancer's servers alone would let both through.
func TestWithMinimumParallelDrains(t *testing.T) {
	ctx := t.Context()
	f := testenv.NewFakeBalancer("web1", "web2", "web3")
	entered := make(chan string, 2)
	proceed := make(chan struct{})
	var once sync.Once
	letGo := func() { once.Do(func() { close(proceed) }) }
	t.Cleanup(letGo)
	f.SetHook(func(ctx context.Context, c testenv.FakeCall) error {
		if c.Op == "drain" {
			entered <- c.Server
			select {
			case <-proceed:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	g := lb.WithMinimum(f, 2)

	results := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, s := range []string{"web1", "web2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := g.Drain(ctx, s, lb.DrainOptions{Timeout: 5 * time.Second})
			mu.Lock()
			results[s] = err
			mu.Unlock()
		}()
	}

	// One drain reaches the balancer and waits there; the other must be
	// refused meanwhile, without reaching it.
	var first string
	select {
	case first = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no drain reached the balancer")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(results)
		mu.Unlock()
		if n == 1 {
			break
		}
		select {
		case second := <-entered:
			letGo()
			wg.Wait()
			t.Fatalf("both drains reached the balancer (%s, then %s): %v", first, second, results)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the second drain was neither refused nor let through")
		}
		time.Sleep(5 * time.Millisecond)
	}
	letGo()
	wg.Wait()

	var passed, refused int
	for s, err := range results {
		switch {
		case err == nil:
			passed++
			if s != first {
				t.Errorf("%s passed, but %s was the one let through", s, first)
			}
		case errors.Is(err, lb.ErrBelowMinimum):
			refused++
		default:
			t.Errorf("%s: unexpected error %v", s, err)
		}
	}
	if passed != 1 || refused != 1 {
		t.Fatalf("passed %d, refused %d; want 1 and 1: %v", passed, refused, results)
	}
	select {
	case s := <-entered:
		t.Fatalf("the refused drain of %s reached the balancer", s)
	default:
	}
}

// Many goroutines drain and enable through one guard; at no time may the
// balancer show fewer than the minimum serving.
func TestWithMinimumStress(t *testing.T) {
	ctx := t.Context()
	names := []string{"web1", "web2", "web3", "web4", "web5"}
	f := testenv.NewFakeBalancer(names...)
	const minUp = 3
	g := lb.WithMinimum(f, minUp)

	stop := make(chan struct{})
	violations := make(chan int, 1)
	go func() {
		for {
			select {
			case <-stop:
				close(violations)
				return
			default:
			}
			servers, _ := f.Servers(ctx)
			n := 0
			for _, s := range servers {
				if s.Serving() {
					n++
				}
			}
			if n < minUp {
				select {
				case violations <- n:
				default:
				}
			}
		}
	}()

	var wg sync.WaitGroup
	for _, s := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := g.Drain(ctx, s, lb.DrainOptions{}); err != nil {
					if !errors.Is(err, lb.ErrBelowMinimum) {
						t.Errorf("drain %s: %v", s, err)
					}
					continue
				}
				if err := g.Enable(ctx, s, lb.EnableOptions{}); err != nil {
					t.Errorf("enable %s: %v", s, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	if n, ok := <-violations; ok {
		t.Fatalf("only %d servers serving at one point, minimum %d", n, minUp)
	}
}

func TestWithMinimumZeroRefusesNothing(t *testing.T) {
	ctx := t.Context()
	f := testenv.NewFakeBalancer("web1")
	g := lb.WithMinimum(f, 0)
	if err := g.Drain(ctx, "web1", lb.DrainOptions{}); err != nil {
		t.Fatalf("draining the last server with no minimum: %v", err)
	}
	if s := f.Server("web1"); s.Admin != lb.AdminMaint {
		t.Fatalf("web1 = %+v, want it in maintenance", s)
	}
}

// KeepOut leaves a server the drain left out alone, and drains again one
// the balancer put back (a restart forgets maintenance), through the guard.
func TestKeepOut(t *testing.T) {
	ctx := t.Context()
	f := testenv.NewFakeBalancer("web1", "web2", "web3")
	g := lb.WithMinimum(f, 2)
	if err := g.Drain(ctx, "web1", lb.DrainOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, again, err := lb.KeepOut(ctx, g, "web1", lb.DrainOptions{}); err != nil || again {
		t.Fatalf("KeepOut of a drained server = %v, %v; want nothing done", again, err)
	}
	if n := len(f.Calls()); n != 1 {
		t.Fatalf("KeepOut of a drained server called the balancer: %v", f.Calls())
	}

	f.Restart()
	found, again, err := lb.KeepOut(ctx, g, "web1", lb.DrainOptions{})
	if err != nil || !again {
		t.Fatalf("KeepOut after a restart = %v, %v; want drained again", again, err)
	}
	if found.Admin != lb.AdminReady || f.Server("web1").Admin != lb.AdminMaint {
		t.Fatalf("found %+v, now %+v; want found ready, now in maintenance", found, f.Server("web1"))
	}

	// Once more after a restart, with one server left in service besides
	// web1: the guard refuses, and web1 keeps serving.
	f.Restart()
	f.SetHealthy("web3", false)
	_, again, err = lb.KeepOut(ctx, g, "web1", lb.DrainOptions{})
	if !errors.Is(err, lb.ErrBelowMinimum) || again {
		t.Fatalf("KeepOut below the minimum = %v, %v; want ErrBelowMinimum", again, err)
	}
	if want := "web1 is back in service (ready/up, 0 sessions): drain web1: 2 of 3 servers in service, 1 would remain, minimum is 2: " + lb.ErrBelowMinimum.Error(); err.Error() != want {
		t.Errorf("error: %v\nwant   %s", err, want)
	}
	if s := f.Server("web1"); !s.Serving() {
		t.Errorf("a refused drain changed web1: %+v", s)
	}

	if _, _, err := lb.KeepOut(ctx, g, "web9", lb.DrainOptions{}); !errors.Is(err, lb.ErrUnknownServer) {
		t.Fatalf("KeepOut of an unknown server: %v, want ErrUnknownServer", err)
	}
}

// The checks a batch makes at once share reads of the backend.
func TestKeepOutSharesReads(t *testing.T) {
	ctx := t.Context()
	names := []string{"web1", "web2", "web3", "web4", "web5", "web6", "web7", "web8"}
	f := testenv.NewFakeBalancer(names...)
	c := &countingReads{Balancer: f}
	g := lb.WithMinimum(c, 1)
	for _, n := range names[:6] {
		if err := g.Drain(ctx, n, lb.DrainOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := c.reads.Load()
	var wg sync.WaitGroup
	const checks = 30
	for i := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, again, err := lb.KeepOut(ctx, g, names[i%6], lb.DrainOptions{}); err != nil || again {
				t.Errorf("KeepOut: %v, %v", again, err)
			}
		}()
	}
	wg.Wait()
	if n := c.reads.Load() - before; n > checks/3 {
		t.Errorf("%d checks at once read the backend %d times", checks, n)
	} else {
		t.Logf("%d checks at once read the backend %d times", checks, n)
	}
}

// countingReads counts Servers calls, each taking a moment as a real read does.
type countingReads struct {
	lb.Balancer
	reads atomic.Int64
}

func (c *countingReads) Servers(ctx context.Context) ([]lb.Server, error) {
	c.reads.Add(1)
	time.Sleep(5 * time.Millisecond)
	return c.Balancer.Servers(ctx)
}

package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Load sends a steady stream of GET requests and counts the failures: the
// proof of a correct drain is that a rollout under load fails none.
type Load struct {
	url    string
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	total   int
	failed  int
	skipped int      // ticks with too many requests in flight: none sent
	samples []string // the first few failures, to say why
	start   time.Time
	end     time.Time
}

// LoadResult is what a Load saw. Skipped counts requests not sent because
// too many were in flight (the machine running the test could not keep
// up): not failures through the balancer, but a lower Rate.
type LoadResult struct {
	Total, Failed, Skipped int
	Duration               time.Duration
	Samples                []string
}

// Rate is the achieved requests per second.
func (r LoadResult) Rate() float64 { return float64(r.Total) / r.Duration.Seconds() }

func (r LoadResult) String() string {
	skipped := ""
	if r.Skipped > 0 {
		skipped = fmt.Sprintf(" (%d not sent: more than 128 in flight)", r.Skipped)
	}
	return fmt.Sprintf("%d requests in %s (%.0f/s)%s, %d failed %v", r.Total, r.Duration.Round(time.Millisecond), r.Rate(), skipped, r.Failed, r.Samples)
}

// StartLoad sends rps requests per second to url until Stop (at the latest
// when the test ends). A request fails when it errors or answers anything
// but 200.
func StartLoad(t testing.TB, url string, rps int) *Load {
	l := NewLoad(url, rps)
	t.Cleanup(func() { l.Stop() })
	return l
}

// NewLoad is StartLoad for programs (make demo): the caller must Stop it.
func NewLoad(url string, rps int) *Load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{
		url:    url,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		cancel: cancel,
		done:   make(chan struct{}),
		start:  time.Now(),
	}
	go l.loop(ctx, rps)
	return l
}

func (l *Load) loop(ctx context.Context, rps int) {
	defer close(l.done)
	tick := time.NewTicker(time.Second / time.Duration(rps))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight := make(chan struct{}, 128)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case inflight <- struct{}{}:
		default:
			l.mu.Lock()
			l.skipped++
			l.mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			l.record(l.once())
		}()
	}
}

func (l *Load) once() error {
	resp, err := l.client.Get(l.url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func (l *Load) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	if err != nil {
		l.failed++
		if len(l.samples) < 5 {
			l.samples = append(l.samples, err.Error())
		}
	}
}

// Stop ends the load, waits for requests in flight and returns the counts.
func (l *Load) Stop() LoadResult {
	l.cancel()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.end.IsZero() {
		l.end = time.Now()
	}
	return LoadResult{Total: l.total, Failed: l.failed, Skipped: l.skipped, Duration: l.end.Sub(l.start), Samples: l.samples}
}

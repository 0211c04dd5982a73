package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

// DemoService is an in-process stand-in for the hello-web service on one
// host: a real HTTP server on its own loopback address whose Restart drops
// every connection and is unreachable for a moment, as a real restart is.
type DemoService struct {
	Host string
	Addr string // 127.0.0.X:PORT

	mu      sync.Mutex
	version string
	broken  []string
	sick    bool // fails /health whatever the version
	srv     *http.Server
	gap     time.Duration
}

// FailHealth makes the service fail /health from its next start on, as a
// host with a local fault (a full disk, a bad config) would.
func (d *DemoService) FailHealth(fail bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sick = fail
}

// RestartGap is how long a restart leaves the service unreachable; a real
// restart of a small service takes about this long.
const RestartGap = 200 * time.Millisecond

// StartDemoServices starts one service per host on 127.0.0.<first+i>, all
// on one port so a playbook can say http://{{ .Host.Address }}:PORT. Versions
// in broken serve pages but fail /health. t.Cleanup stops them.
func StartDemoServices(t testing.TB, hosts []string, first int, version string, broken ...string) ([]*DemoService, int) {
	t.Helper()
	var addrs []string
	for i := range hosts {
		addrs = append(addrs, "127.0.0."+strconv.Itoa(first+i))
	}
	lns, port, err := listenAllOnOnePort(addrs)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*DemoService, len(hosts))
	for i, h := range hosts {
		d := &DemoService{Host: h, Addr: lns[i].Addr().String(), version: version, broken: broken, gap: RestartGap}
		d.serve(lns[i])
		out[i] = d
		t.Cleanup(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			_ = d.srv.Close()
		})
	}
	return out, port
}

func listenAllOnOnePort(addrs []string) ([]net.Listener, int, error) {
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		first, err := net.Listen("tcp4", addrs[0]+":0")
		if err != nil {
			return nil, 0, err
		}
		port := first.Addr().(*net.TCPAddr).Port
		lns := []net.Listener{first}
		for _, a := range addrs[1:] {
			ln, err := net.Listen("tcp4", net.JoinHostPort(a, strconv.Itoa(port)))
			if err != nil {
				lastErr = err
				break
			}
			lns = append(lns, ln)
		}
		if len(lns) == len(addrs) {
			return lns, port, nil
		}
		for _, ln := range lns {
			ln.Close()
		}
	}
	return nil, 0, fmt.Errorf("no port free on all of %v: %w", addrs, lastErr)
}

func (d *DemoService) serve(ln net.Listener) {
	healthy := !d.sick && !slices.Contains(d.broken, d.version)
	d.srv = &http.Server{Handler: helloweb.Handler(d.Host, d.version, healthy), ReadHeaderTimeout: 5 * time.Second}
	srv := d.srv
	go func() { _ = srv.Serve(ln) }()
}

// Version is the version the service runs now.
func (d *DemoService) Version() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.version
}

// Restart stops the service, dropping every open connection, and starts
// version after RestartGap.
func (d *DemoService) Restart(ctx context.Context, version string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_ = d.srv.Close()
	t := time.NewTimer(d.gap)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	var ln net.Listener
	var err error
	// The old socket may take a moment to be released.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp4", d.Addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("restart hello-web on %s: %w", d.Host, err)
	}
	d.version = version
	d.serve(ln)
	return nil
}

package playbook

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// Target is how to reach an inventory host with the environment's defaults.
func (e *Environment) Target(h Host) transport.Host {
	t := transport.Host{Name: h.Name, Address: h.Address, Port: h.Port, User: h.User}
	if t.Port == 0 {
		t.Port = e.SSH.Port
	}
	if t.Port == 0 {
		t.Port = 22
	}
	if t.User == "" {
		t.User = e.SSH.User
	}
	return t
}

// DefaultParallelConnects bounds how many hosts are inspected (or run their
// preflight) at once. The transport bounds the handshakes among them (64
// by default, ssh.max_handshakes), so more hosts than that can be asked
// for their packages while others still connect.
const DefaultParallelConnects = 128

// Observed is what lieutenant saw of the fleet before planning.
type Observed struct {
	// Installed maps host -> package -> versions installed.
	Installed Installed
	// Backend is every server of the balancer's backend; nil without a
	// balancer.
	Backend []lb.Server
}

// server returns the balancer's view of a host's server.
func (o *Observed) server(h Host) (lb.Server, bool) {
	if o == nil {
		return lb.Server{}, false
	}
	return lb.Find(o.Backend, h.BalancerServer)
}

// Inspect connects to every selected host (verifying its host key), reads
// the installed versions of the manifest's packages and, when bal is not
// nil, the balancer's view of the backend. It changes nothing. Every
// unreachable host is reported, together, in a *RefusedError.
func Inspect(ctx context.Context, conn transport.Connector, bal lb.Balancer, dep *Deployment, parallel int) (*Observed, error) {
	obs := &Observed{Installed: Installed{}}
	var mu sync.Mutex
	failed := forEachHost(ctx, dep.Hosts, parallel, func(ctx context.Context, h Host) error {
		have, err := inspectHost(ctx, conn, dep.Environment, h, dep.Manifest.Packages)
		if err == nil {
			mu.Lock()
			obs.Installed[h.Name] = have
			mu.Unlock()
		}
		return err
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	problems := failed.lines()
	if bal != nil {
		servers, err := bal.Servers(ctx)
		if err != nil {
			problems = append(problems, fmt.Sprintf("balancer: %v", err))
		}
		obs.Backend = servers
	}
	if len(problems) > 0 {
		return nil, &RefusedError{Problems: problems}
	}
	return obs, nil
}

// forEachHost runs fn for every host, at most parallel at once, and
// returns the errors by host.
func forEachHost(ctx context.Context, hosts []Host, parallel int, fn func(context.Context, Host) error) hostErrors {
	if parallel <= 0 {
		parallel = DefaultParallelConnects
	}
	var mu sync.Mutex
	failed := hostErrors{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, h := range hosts {
		g.Go(func() error {
			if err := fn(gctx, h); err != nil {
				mu.Lock()
				failed[h.Name] = err
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	return failed
}

func inspectHost(ctx context.Context, conn transport.Connector, env *Environment, h Host, pkgs []Package) (map[string][]Package, error) {
	// rpm -q takes well under a second; a host that needs minutes (an rpm
	// database locked by a running dnf) is better reported than waited for.
	ctx, cancel := context.WithTimeout(ctx, env.SSH.ConnectTimeout+min(env.SSH.CommandTimeout, 2*time.Minute))
	defer cancel()
	r, err := conn.Connect(ctx, env.Target(h))
	if err != nil {
		return nil, err
	}
	return QueryInstalled(ctx, r, env.SSH.Sudo, pkgs)
}

package playbook

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"

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

// DefaultParallelConnects bounds how many hosts are contacted at once before
// a run: enough to inspect a thousand hosts in seconds, few enough not to
// trip sshd's MaxStartups on a shared bastion.
const DefaultParallelConnects = 32

// Inspect connects to every selected host (verifying its host key) and reads
// the installed versions of the manifest's packages. It changes nothing. All
// unreachable hosts are reported together in a *RefusedError.
func Inspect(ctx context.Context, conn transport.Connector, dep *Deployment, parallel int) (Installed, error) {
	if parallel <= 0 {
		parallel = DefaultParallelConnects
	}
	var mu sync.Mutex
	installed := Installed{}
	failed := hostErrors{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for _, h := range dep.Hosts {
		g.Go(func() error {
			have, err := inspectHost(gctx, conn, dep.Environment, h, dep.Manifest.Packages)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[h.Name] = err
			} else {
				installed[h.Name] = have
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(failed) > 0 {
		return nil, &RefusedError{Problems: failed.lines()}
	}
	return installed, nil
}

func inspectHost(ctx context.Context, conn transport.Connector, env *Environment, h Host, pkgs []Package) (map[string][]Package, error) {
	ctx, cancel := context.WithTimeout(ctx, env.SSH.ConnectTimeout+env.SSH.CommandTimeout)
	defer cancel()
	r, err := conn.Connect(ctx, env.Target(h))
	if err != nil {
		return nil, err
	}
	return QueryInstalled(ctx, r, env.SSH.Sudo, pkgs)
}

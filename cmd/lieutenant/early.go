package main

import (
	"context"
	"reflect"
	"slices"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// earlyInspection inspects the hosts while the manifest branch is fetched,
// from the files the clone had before the fetch: the fetch is a round trip
// to the Git remote, the inspection a round of SSH handshakes and `rpm -q`,
// and they overlap. Its result stands only if the fetched files name the
// same hosts, SSH settings, balancer and packages, so that it is what
// inspecting after the fetch would have seen; and the commit that takes the
// lock is refused if a run was recorded since (inspected is the history's
// tip as it was before the fetch), which sends the run back to inspect.
type earlyInspection struct {
	dep       *playbook.Deployment
	inspected string
	conn      *transport.SSH
	bal       lb.Balancer
	done      chan struct{}
	cancel    context.CancelFunc
	obs       *playbook.Observed
	err       error
	used      bool
}

// inspectEarly starts the inspection, or returns nil when the clone has no
// copy of the branch to read yet (or its files do not load, or --rev names
// a revision). Everything it reads from Git it reads before it returns:
// the fetch then has the repository to itself.
func (src *source) inspectEarly(c *cli.Context) *earlyInspection {
	if c.IsSet("rev") {
		return nil
	}
	branch := src.branch
	if branch == "" {
		branch = "HEAD" // the remote's, as `git clone` recorded it
	}
	snap, err := src.repo.Snapshot(c.Context, src.repo.Tracking(branch))
	if err != nil {
		return nil
	}
	dep, err := playbook.Load(snap, c.String("env"))
	if err != nil || src.checkHistoryBranch(dep.HistoryBranch) != nil {
		return nil
	}
	hist, err := src.repo.History(dep.HistoryBranch)
	if err != nil {
		return nil
	}
	tip, err := hist.TipHash(c.Context)
	if err != nil {
		return nil
	}
	d := &deployment{source: src, snap: snap, dep: dep}
	conn, bal, err := d.adapters(c)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(c.Context)
	e := &earlyInspection{dep: dep, inspected: tip, conn: conn, bal: bal, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(e.done)
		e.obs, e.err = playbook.Inspect(ctx, conn, bal, dep, 0)
	}()
	return e
}

// take returns the inspection when it is what dep would see, waiting for
// its end; the run then uses its connections. Otherwise it is dropped.
func (e *earlyInspection) take(dep *playbook.Deployment) (*transport.SSH, lb.Balancer, bool) {
	if e == nil || e.used {
		return nil, nil, false
	}
	e.used = true
	names := func(d *playbook.Deployment) []string {
		var out []string
		for _, p := range d.Manifest.Packages {
			out = append(out, p.Name)
		}
		return out
	}
	if !reflect.DeepEqual(e.dep.Hosts, dep.Hosts) || !reflect.DeepEqual(e.dep.Environment.SSH, dep.Environment.SSH) ||
		!reflect.DeepEqual(e.dep.Environment.Balancer, dep.Environment.Balancer) || !slices.Equal(names(e.dep), names(dep)) {
		e.drop()
		return nil, nil, false
	}
	<-e.done
	e.cancel()
	return e.conn, e.bal, true
}

// close drops an inspection nobody took.
func (e *earlyInspection) close() {
	if e != nil && !e.used {
		e.used = true
		e.drop()
	}
}

func (e *earlyInspection) drop() {
	e.cancel()
	<-e.done
	e.conn.Close()
}

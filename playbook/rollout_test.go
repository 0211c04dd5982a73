package playbook_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// liveFleet is four hosts whose hello-web is a real HTTP server on its own
// loopback address, behind a real HAProxy, with the deploy repository a real
// Git repository. Only the transport is simulated: installing a package
// changes the fake host's rpm database, and restarting the service restarts
// the real server at the installed version.
type liveFleet struct {
	t        *testing.T
	repo     string
	fleet    *testenv.FakeFleet
	services []*testenv.DemoService
	haproxy  *testenv.HAProxy
	balancer lb.Balancer
	// observe, when set, sees the run's events.
	observe func(playbook.Event)
}

const v120 = "hello-web-1.2.0-1.x86_64"

func newLiveFleet(t *testing.T) *liveFleet {
	hosts := []string{"web-1", "web-2", "web-3", "web-4"}
	services, port := testenv.StartDemoServices(t, hosts, 11, "1.0.0", "1.2.0")
	var addrs []string
	for _, s := range services {
		addrs = append(addrs, s.Addr)
	}
	ha := testenv.StartHAProxy(t, addrs)
	balancer, err := lb.NewHAProxy(ha.APIAddr, ha.Backend)
	if err != nil {
		t.Fatal(err)
	}
	f := &liveFleet{t: t, fleet: testenv.NewFakeFleet(v100, v110, v120), services: services, haproxy: ha, balancer: balancer}
	var inventory strings.Builder
	inventory.WriteString("hosts:\n")
	for i, name := range hosts {
		fmt.Fprintf(&inventory, "  %s: {address: 127.0.0.%d, balancer_server: %s}\n", name, 11+i, ha.Servers[i])
		host := f.fleet.AddHost(name, v100)
		svc := services[i]
		host.OnService(func(action, service string) error {
			if service != "hello-web" || action != "restart" {
				return fmt.Errorf("unexpected: %s %s", action, service)
			}
			p, err := playbook.ParseNEVRA(host.Installed()["hello-web"])
			if err != nil {
				return err
			}
			return svc.Restart(context.Background(), p.Version)
		})
	}
	f.repo = testenv.NewGitRepo(t, map[string]string{
		"lieutenant.yaml": fmt.Sprintf(`
environments:
  production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
    balancer: {type: haproxy, api: %q, backend: %s, min_up: 2}
`, ha.APIAddr, ha.Backend),
		"releases/production.yaml":  "release: 2026.11.3\npackages: [" + v110 + "]\n",
		"inventory/production.yaml": inventory.String(),
		"playbooks/web.yaml": fmt.Sprintf(`
hosts: "web-*"
strategy: {batches: halves}
steps:
  - balancer.drain: {timeout: 10s}
  - packages.install
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:%d/health", retries: 30, interval: 100ms}
  - balancer.enable: {timeout: 10s}
gate:
  checks:
    - http.check: {url: "%s/health"}
`, port, ha.FrontendURL),
	})
	return f
}

// rollout does what `lieutenant run` does, with the fake transport.
func (f *liveFleet) rollout(ctx context.Context) (*record.Run, error) {
	f.t.Helper()
	repo, err := releases.Open(f.repo)
	if err != nil {
		f.t.Fatal(err)
	}
	defer repo.Close()
	snap, err := repo.Snapshot(ctx, "HEAD")
	if err != nil {
		f.t.Fatal(err)
	}
	dep, err := playbook.Load(snap, "production")
	if err != nil {
		f.t.Fatal(err)
	}
	obs, err := playbook.Inspect(ctx, f.fleet, f.balancer, dep, 0)
	if err != nil {
		return nil, err
	}
	plan, err := playbook.MakePlan(dep, obs)
	if err != nil {
		f.t.Fatal(err)
	}
	hist, err := repo.History(dep.HistoryBranch)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := playbook.NewRecord(plan, record.Start{ID: releases.NewRunID(time.Now()), Revision: snap.Hash, By: "Test <t@example.com>", From: "t@ci", At: time.Now()})
	recorder := releases.NewRecorder(hist, nil)
	local, _ := transport.NewLocal().Connect(ctx, transport.Host{Name: "localhost"})
	r := &playbook.Runner{
		Connector: f.fleet,
		Balancer:  f.balancer,
		MinUp:     dep.Environment.Balancer.MinUp,
		Local:     local,
		Recorder:  recorder,
		Observe:   f.observe,
	}
	return rec, r.Run(ctx, dep.Environment, plan, rec)
}

func (f *liveFleet) state() string {
	f.t.Helper()
	servers, err := f.balancer.Servers(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for i, s := range servers {
		out = append(out, fmt.Sprintf("%s=%s/%s@%s", s.Name, s.Admin, s.Health, f.services[i].Version()))
	}
	return strings.Join(out, " ")
}

func (f *liveFleet) commitManifest(nevra string) {
	testenv.GitCommit(f.t, f.repo, map[string]string{"releases/production.yaml": "release: " + nevra + "\npackages: [" + nevra + "]\n"}, "release "+nevra)
}

// TestRolloutBehindRealHAProxy rolls 1.0.0 -> 1.1.0 over four hosts in
// halves while requests flow through HAProxy, then tries the broken 1.2.0.
func TestRolloutBehindRealHAProxy(t *testing.T) {
	f := newLiveFleet(t)
	ctx := context.Background()

	load := testenv.StartLoad(t, f.haproxy.FrontendURL+"/", 200)
	rec, err := f.rollout(ctx)
	res := load.Stop()
	if err != nil {
		t.Fatalf("rollout to 1.1.0: %v\n%s", err, strings.Join(rec.Next, "\n"))
	}
	if got, want := f.state(), "web1=ready/up@1.1.0 web2=ready/up@1.1.0 web3=ready/up@1.1.0 web4=ready/up@1.1.0"; got != want {
		t.Errorf("after 1.1.0: %s, want %s", got, want)
	}
	t.Logf("load during the 1.1.0 rollout: %s", res)
	checkLoad(t, res)
	// Plain git reads the record.
	path := "runs/production/" + rec.ID + ".yaml"
	shown := testenv.Git(t, f.repo, "show", "lieutenant/runs:"+path)
	for _, want := range []string{"outcome: succeeded", "release: 2026.11.3", "hello-web: 1.0.0-1", "hello-web: 1.1.0-1", "balancer: ready/up"} {
		if !strings.Contains(shown, want) {
			t.Errorf("git show %s lacks %q:\n%s", path, want, shown)
		}
	}
	host := testenv.Git(t, f.repo, "show", "lieutenant/runs:runs/production/"+rec.ID+"/web-3.yaml")
	for _, want := range []string{"status: succeeded", "step: balancer.drain", "step: packages.install", "step: balancer.enable"} {
		if !strings.Contains(host, want) {
			t.Errorf("web-3's file lacks %q:\n%s", want, host)
		}
	}
	// The story, newest first: the end, batch 2's intent, batch 1's.
	log := testenv.Git(t, f.repo, "log", "--format=%s", "lieutenant/runs")
	end := strings.Index(log, "production 2026.11.3: succeeded, 4/4 hosts done")
	second := strings.Index(log, "production 2026.11.3: batch 2/2 in flight, 2/4 hosts done")
	first := strings.Index(log, "production 2026.11.3: batch 1/2 in flight, 0/4 hosts done")
	if end != 0 || second < end || first < second {
		t.Errorf("git log lieutenant/runs:\n%s", log)
	}
	testenv.Git(t, f.repo, "fsck", "--strict")
	if st := testenv.Git(t, f.repo, "status", "--porcelain"); st != "" {
		t.Errorf("the run changed the work tree:\n%s", st)
	}

	// 1.2.0 starts but fails its health check: the first half stays out of
	// service, the second half is untouched and keeps serving 1.1.0.
	f.commitManifest(v120)
	load = testenv.StartLoad(t, f.haproxy.FrontendURL+"/", 200)
	rec, err = f.rollout(ctx)
	res = load.Stop()
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeFailed {
		t.Fatalf("rollout to 1.2.0: err = %v, want a failed run", err)
	}
	if got, want := f.state(), "web1=maint/down@1.2.0 web2=maint/down@1.2.0 web3=ready/up@1.1.0 web4=ready/up@1.1.0"; got != want {
		t.Errorf("after 1.2.0: %s, want %s", got, want)
	}
	if got, want := f.haproxy.Statuses(t), "web1=MAINT web2=MAINT web3=UP web4=UP"; got != want {
		t.Errorf("HAProxy's show stat after 1.2.0: %s, want %s", got, want)
	}
	t.Logf("load during the failed 1.2.0 rollout: %s", res)
	checkLoad(t, res)
	shown = testenv.Git(t, f.repo, "show", "lieutenant/runs:runs/production/"+rec.ID+".yaml")
	for _, want := range []string{"outcome: failed", "status: untouched", "GET http://127.0.0.11:", "status 503, want 200", "balancer: maint/down"} {
		if !strings.Contains(shown, want) {
			t.Errorf("record of the failed run lacks %q:\n%s", want, shown)
		}
	}
	testenv.Git(t, f.repo, "fsck", "--strict")
}

// TestRestartWithoutDrainLosesRequests is the control for the zero-failure
// claims above: the same rollout without balancer steps must lose requests,
// or the load generator could not see a bad drain.
func TestRestartWithoutDrainLosesRequests(t *testing.T) {
	f := newLiveFleet(t)
	port := strings.Split(f.services[0].Addr, ":")[1]
	testenv.GitCommit(t, f.repo, map[string]string{"playbooks/web.yaml": `
hosts: "web-*"
steps:
  - packages.install
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:` + port + `/health", retries: 30, interval: 100ms}
`}, "no drain")
	load := testenv.StartLoad(t, f.haproxy.FrontendURL+"/", 200)
	if _, err := f.rollout(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := load.Stop()
	t.Logf("load during a rollout without drain: %s", res)
	if res.Failed == 0 {
		t.Errorf("no request failed although services restarted in service: the load test cannot see a bad drain (%s)", res)
	}
}

// checkLoad asserts a load that proves something: enough requests at the
// rate the tests rely on, and none failed.
func checkLoad(t *testing.T, res testenv.LoadResult) {
	t.Helper()
	if res.Failed != 0 {
		t.Errorf("requests failed: %s", res)
	}
	// What proves a drain is the rate during the restarts (a restart
	// without drain loses requests at 200/s, see the control test); a
	// rollout here takes half a second.
	if res.Rate() < 150 || res.Total < 50 {
		t.Errorf("load too thin to prove a drain: %s (want >= 150 requests/s, >= 50 requests)", res)
	}
}

// TestOneHostFailsBehindRealHAProxy: one host of the first half fails its
// check while its neighbour passes. HAProxy must show the failed one in
// MAINT and every other UP, the passing neighbour at the new version and the
// second half untouched.
func TestOneHostFailsBehindRealHAProxy(t *testing.T) {
	f := newLiveFleet(t)
	f.services[0].FailHealth(true)
	load := testenv.StartLoad(t, f.haproxy.FrontendURL+"/", 200)
	rec, err := f.rollout(context.Background())
	res := load.Stop()
	var runErr *playbook.RunError
	if !errors.As(err, &runErr) || runErr.Outcome != record.OutcomeFailed {
		t.Fatalf("err = %v, want a failed run", err)
	}
	if got, want := f.haproxy.Statuses(t), "web1=MAINT web2=UP web3=UP web4=UP"; got != want {
		t.Errorf("HAProxy's show stat: %s, want %s", got, want)
	}
	if got, want := f.state(), "web1=maint/down@1.1.0 web2=ready/up@1.1.0 web3=ready/up@1.0.0 web4=ready/up@1.0.0"; got != want {
		t.Errorf("fleet: %s, want %s", got, want)
	}
	var status []string
	for _, h := range rec.Hosts {
		status = append(status, h.Name+"="+string(h.Status))
	}
	if got, want := strings.Join(status, " "), "web-1=failed web-2=succeeded web-3=untouched web-4=untouched"; got != want {
		t.Errorf("record: %s, want %s", got, want)
	}
	t.Logf("load: %s", res)
	checkLoad(t, res)
}

// HAProxy restarted without a server-state file puts every server back in
// service, drained ones too. Restarted after web-1's drain and again during
// web-2's install, it never has a server in service while its host's
// packages or service change: lieutenant drains it again first, and the
// record says so.
func TestRolloutDrainsAgainAfterHAProxyRestart(t *testing.T) {
	f := newLiveFleet(t)
	pb := testenv.Git(t, f.repo, "show", "HEAD:playbooks/web.yaml")
	testenv.GitCommit(t, f.repo, map[string]string{"playbooks/web.yaml": strings.Replace(pb,
		"strategy: {batches: halves}", "strategy: {batches: halves, max_parallel: 1}", 1)}, "one host at a time")
	var mu sync.Mutex
	var problems, atChange []string
	restarted := map[string]bool{}
	f.observe = func(e playbook.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e.Kind == playbook.EventStepStarted && (e.Step == "packages.install" || e.Step == "service.restart"):
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			reply, err := f.haproxy.RunCommand(ctx, "show stat")
			servers, perr := testenv.ParseStat(reply, f.haproxy.Backend)
			if err != nil || perr != nil {
				problems = append(problems, fmt.Sprintf("show stat: %v %v", err, perr))
				return
			}
			atChange = append(atChange, e.Host+" "+e.Step+": "+testenv.StatusLine(servers))
		case e.Kind == playbook.EventStepFinished && e.Err == nil &&
			(e.Host == "web-1" && e.Step == "balancer.drain" || e.Host == "web-2" && e.Step == "packages.install"):
			if !restarted[e.Host] {
				restarted[e.Host] = true
				if err := f.haproxy.Restart(); err != nil {
					problems = append(problems, err.Error())
				}
			}
		}
	}
	rec, err := f.rollout(context.Background())
	if err != nil {
		t.Fatalf("rollout: %v\n%s", err, strings.Join(rec.Next, "\n"))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 || len(restarted) != 2 {
		t.Fatalf("restarts %v: %v", restarted, problems)
	}
	for i, c := range atChange {
		host, _, _ := strings.Cut(c, " ")
		server := "web" + strings.TrimPrefix(host, "web-")
		if !strings.Contains(c, server+"=MAINT") {
			t.Errorf("%s changed while HAProxy had it in service: %s", host, c)
		}
		if i < 4 && strings.Count(c, "=MAINT") != 1 {
			t.Errorf("batch 1 one host at a time: %s", c)
		}
	}
	if len(atChange) != 8 {
		t.Errorf("changing steps seen: %q, want 8", atChange)
	}
	if got, want := f.state(), "web1=ready/up@1.1.0 web2=ready/up@1.1.0 web3=ready/up@1.1.0 web4=ready/up@1.1.0"; got != want {
		t.Errorf("after the rollout: %s, want %s", got, want)
	}
	for host, want := range map[string]string{
		"web-1": "balancer had put web1 back in service (ready/up: restarted or reloaded?); drained again before packages.install",
		"web-2": "balancer had put web2 back in service (ready/up: restarted or reloaded?); drained again before service.restart",
	} {
		shown := testenv.Git(t, f.repo, "show", "lieutenant/runs:runs/production/"+rec.ID+"/"+host+".yaml")
		if !strings.Contains(shown, want) || strings.Count(shown, "step: balancer.drain") != 2 {
			t.Errorf("%s's record lacks the drain made again (%q):\n%s", host, want, shown)
		}
	}
}

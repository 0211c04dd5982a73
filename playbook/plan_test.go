package playbook

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

func TestBatchSizes(t *testing.T) {
	pct := func(p int) BatchSize { return BatchSize{Percent: p} }
	n := func(c int) BatchSize { return BatchSize{Count: c} }
	cases := []struct {
		total int
		sizes []BatchSize
		want  []int
	}{
		{0, Halves(), nil},
		{1, Halves(), []int{1}},
		{2, Halves(), []int{1, 1}},
		{4, Halves(), []int{2, 2}},
		{5, Halves(), []int{2, 3}}, // the smaller half goes first: a canary
		{7, Halves(), []int{3, 4}},
		{10, []BatchSize{n(1), pct(50), pct(100)}, []int{1, 5, 4}},
		{10, []BatchSize{n(3)}, []int{3, 3, 3, 1}},
		{3, []BatchSize{n(5)}, []int{3}},
		{10, []BatchSize{pct(25)}, []int{2, 2, 2, 2, 2}},
		{3, []BatchSize{pct(10)}, []int{1, 1, 1}},
		{4, []BatchSize{n(1), n(2)}, []int{1, 2, 1}},
		{1000, Halves(), []int{500, 500}},
	}
	for _, tc := range cases {
		got := BatchSizes(tc.total, tc.sizes)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("BatchSizes(%d, %v) = %v, want %v", tc.total, tc.sizes, got, tc.want)
		}
		sum := 0
		for _, s := range got {
			sum += s
		}
		if sum != tc.total {
			t.Errorf("BatchSizes(%d, %v) covers %d hosts", tc.total, tc.sizes, sum)
		}
	}
}

func pkgs(t testing.TB, nevras ...string) []Package {
	t.Helper()
	var out []Package
	for _, n := range nevras {
		p, err := ParseNEVRA(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestMakePlan(t *testing.T) {
	dep, err := Load(validRepo(t), "production")
	if err != nil {
		t.Fatal(err)
	}
	have := func(nevras ...string) map[string][]Package {
		m := map[string][]Package{}
		for _, p := range pkgs(t, nevras...) {
			m[p.Name] = append(m[p.Name], p)
		}
		return m
	}
	installed := Installed{
		"web-1": have("hello-web-1.0.0-1.x86_64", "hello-worker-2.0.1-3.el9.x86_64"),
		"web-2": have("hello-web-1.1.0-1.x86_64", "hello-worker-2.0.1-3.el9.x86_64"), // up to date
		"web-3": have("hello-web-1.2.0-1.x86_64"),                                    // newer: downgrade; worker missing
		"web-4": have("hello-web-1.1.0-1.x86_64", "hello-worker-2.0.1-3.el9.x86_64"), // up to date
		"web-5": have("hello-web-1.1.0-1.aarch64", "hello-worker-2.0.1-3.el9.x86_64", "hello-worker-2.0.0-1.x86_64"),
	}
	plan, err := MakePlan(dep, &Observed{Installed: installed})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range plan.Batches {
		for _, hp := range b.Hosts {
			var cs []string
			for _, c := range hp.Changes {
				cs = append(cs, fmt.Sprintf("%s %s->%s %s", c.Package, c.From, c.To, c.Action))
			}
			got = append(got, fmt.Sprintf("batch %d %s: %s", b.Number, hp.Host.Name, strings.Join(cs, "; ")))
		}
	}
	want := []string{
		"batch 1 web-1: hello-web 1.0.0-1->1.1.0-1 upgrade; hello-worker 2.0.1-3.el9->2.0.1-3.el9 keep",
		"batch 2 web-3: hello-web 1.2.0-1->1.1.0-1 downgrade; hello-worker -->2.0.1-3.el9 install",
		"batch 2 web-5: hello-web 1.1.0-1->1.1.0-1 reinstall; hello-worker 2.0.0-1,2.0.1-3.el9->2.0.1-3.el9 upgrade",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var upToDate []string
	for _, hp := range plan.UpToDate {
		upToDate = append(upToDate, hp.Host.Name)
	}
	if strings.Join(upToDate, ",") != "web-2,web-4" {
		t.Errorf("up to date = %v, want web-2, web-4", upToDate)
	}

	offline, err := MakePlan(dep, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(offline.Hosts()) != 5 || len(offline.Batches) != 2 || offline.Batches[0].Hosts[0].Changes[0].Action != ActionUnknown {
		t.Errorf("offline plan = %+v, want all 5 hosts in 2 batches with unknown changes", offline.Batches)
	}

	// A host at the release that the balancer has out of service (left
	// there by a failed run) is planned again, to be verified and put back.
	backend := []lb.Server{
		{Name: "web1", Admin: lb.AdminReady, Health: lb.HealthUp}, {Name: "web2", Admin: lb.AdminMaint, Health: lb.HealthDown},
		{Name: "web3", Admin: lb.AdminReady, Health: lb.HealthUp}, {Name: "web4", Admin: lb.AdminReady, Health: lb.HealthUp},
		{Name: "web5", Admin: lb.AdminReady, Health: lb.HealthUp},
	}
	repair, err := MakePlan(dep, &Observed{Installed: installed, Backend: backend})
	if err != nil {
		t.Fatal(err)
	}
	var repaired, skipped []string
	for _, hp := range repair.Hosts() {
		if hp.Repair {
			repaired = append(repaired, hp.Host.Name+" "+hp.Balancer)
		}
	}
	for _, hp := range repair.UpToDate {
		skipped = append(skipped, hp.Host.Name)
	}
	if strings.Join(repaired, ",") != "web-2 maint/down" || strings.Join(skipped, ",") != "web-4" {
		t.Errorf("with web2 in maintenance: repaired %v, up to date %v; want web-2 repaired, web-4 up to date", repaired, skipped)
	}

	// A run stopped after draining its second half (web4, web5 out, with
	// changes still to make): the next plan brings those back first, in
	// batch 1, where draining them costs no capacity, so that min_up never
	// blocks the fleet's way back.
	stopped := slices.Clone(backend)
	stopped[1].Admin, stopped[1].Health, stopped[3].Admin, stopped[3].Health, stopped[4].Admin, stopped[4].Health = lb.AdminReady, lb.HealthUp, lb.AdminMaint, lb.HealthDown, lb.AdminMaint, lb.HealthDown
	installed["web-4"] = have("hello-web-1.0.0-1.x86_64", "hello-worker-2.0.1-3.el9.x86_64")
	back, err := MakePlan(dep, &Observed{Installed: installed, Backend: stopped})
	if err != nil {
		t.Fatal(err)
	}
	if got := batchNames(back); got != "1: web-4 web-5 | 2: web-1 web-3" {
		t.Errorf("plan with web4, web5 out of service: %s, want them first", got)
	}
	if err := back.CheckCapacity(stopped, 2); err != nil {
		t.Errorf("capacity with min_up 2: %v", err)
	}

	delete(installed, "web-3")
	if _, err := MakePlan(dep, &Observed{Installed: installed}); err == nil {
		t.Error("MakePlan with a host missing from installed: no error")
	}
}

func batchNames(p *Plan) string {
	var out []string
	for _, b := range p.Batches {
		var names []string
		for _, hp := range b.Hosts {
			names = append(names, hp.Host.Name)
		}
		out = append(out, fmt.Sprintf("%d: %s", b.Number, strings.Join(names, " ")))
	}
	return strings.Join(out, " | ")
}

func BenchmarkPlan(b *testing.B) {
	repo := validRepo(b)
	var inv strings.Builder
	inv.WriteString("hosts:\n")
	const hosts = 10000
	for i := 0; i < hosts; i++ {
		fmt.Fprintf(&inv, "  web-%d: {address: 10.%d.%d.%d}\n", i, i>>16&255, i>>8&255, i&255)
	}
	inv.WriteString("groups:\n  web: [\"web-*\"]\n")
	repo["inventory/production.yaml"].Data = []byte(inv.String())
	dep, err := Load(repo, "production")
	if err != nil {
		b.Fatal(err)
	}
	installed := Installed{}
	old := pkgs(b, "hello-web-1.0.0-1.x86_64", "hello-worker-2.0.0-1.x86_64")
	for _, h := range dep.Hosts {
		installed[h.Name] = map[string][]Package{"hello-web": old[:1], "hello-worker": old[1:]}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plan, err := MakePlan(dep, &Observed{Installed: installed})
		if err != nil || len(plan.Hosts()) != hosts {
			b.Fatalf("plan: %v", err)
		}
	}
}

func TestBalancerFixAfter(t *testing.T) {
	cases := []struct {
		name string
		p    hostProgress
		want balancerFix
	}{
		{"passed", hostProgress{drainAttempted: true, changed: true, enabled: true}, fixNothing},
		{"passed without a balancer step", hostProgress{changed: true}, fixNothing},
		{"drain failed or refused", hostProgress{failed: true, drainAttempted: true}, fixRestore},
		{"check failed before any change", hostProgress{failed: true, drainAttempted: true}, fixRestore},
		{"install failed", hostProgress{failed: true, drainAttempted: true, changed: true}, fixIsolate},
		{"verify failed after enable", hostProgress{failed: true, drainAttempted: true, changed: true, enabled: true}, fixIsolate},
		{"changed without drain and failed", hostProgress{failed: true, changed: true}, fixIsolate},
		{"failed before anything", hostProgress{failed: true}, fixNothing},
		{"connect failed", hostProgress{failed: true}, fixNothing},
	}
	for _, tc := range cases {
		if got := balancerFixAfter(tc.p); got != tc.want {
			t.Errorf("%s: balancerFixAfter(%+v) = %s, want %s", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestShouldStop(t *testing.T) {
	cases := []struct {
		failures, max int
		want          bool
	}{
		{0, 0, false}, {1, 0, true}, {1, 1, false}, {2, 1, true}, {5, 10, false},
	}
	for _, tc := range cases {
		if got := shouldStop(tc.failures, tc.max); got != tc.want {
			t.Errorf("shouldStop(%d, %d) = %v", tc.failures, tc.max, got)
		}
	}
}

func TestCheckDrainCapacity(t *testing.T) {
	up := func(n string) lb.Server { return lb.Server{Name: n, Admin: lb.AdminReady, Health: lb.HealthUp} }
	maint := func(n string) lb.Server { return lb.Server{Name: n, Admin: lb.AdminMaint, Health: lb.HealthDown} }
	down := func(n string) lb.Server { return lb.Server{Name: n, Admin: lb.AdminReady, Health: lb.HealthDown} }
	four := []lb.Server{up("web1"), up("web2"), up("web3"), up("web4")}
	halves := [][]string{{"web1", "web2"}, {"web3", "web4"}}
	cases := []struct {
		name        string
		servers     []lb.Server
		batches     [][]string
		maxParallel int
		minUp       int
		wantErr     string
	}{
		{"halves of four, min 2", four, halves, 0, 2, ""},
		{"halves of four, min 3", four, halves, 0, 3, "batch 1 drains 2 servers at once but only 4 of 4 are in service and min_up is 3"},
		{"max_parallel 1 makes min 3 possible", four, halves, 1, 3, ""},
		{"one out of service, not in the plan", []lb.Server{up("web1"), up("web2"), up("web3"), maint("web5")}, [][]string{{"web1", "web2"}}, 0, 2, "out of service now: web5 (maint/down)"},
		{"failing health counts as out", []lb.Server{up("web1"), up("web2"), up("web3"), down("web5")}, [][]string{{"web1", "web2"}}, 0, 2, "only 3 of 4 are in service"},
		{"a failing one not drained leaves enough", []lb.Server{up("web1"), up("web2"), up("web3"), down("web5")}, [][]string{{"web1"}}, 0, 2, ""},
		// web1 is being repaired: draining it costs nothing, and once batch 1
		// passed it serves again, so batch 2 can take two out.
		{"repair host comes back", []lb.Server{maint("web1"), up("web2"), up("web3"), up("web4")}, halves, 0, 2, ""},
		{"no minimum", four, [][]string{{"web1", "web2", "web3", "web4"}}, 0, 0, ""},
	}
	for _, tc := range cases {
		err := checkDrainCapacity(tc.servers, tc.batches, tc.maxParallel, tc.minUp)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.wantErr)
		}
	}
}

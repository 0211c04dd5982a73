package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// BenchmarkRolloutSSH runs `lieutenant run` over 32 hosts reached by real
// SSH behind a real HAProxy, in halves, and splits the wall time:
//
//   - inspect-ms/host: from start until the run begins: reading Git, one SSH
//     handshake per host (sshd runs on this same machine) and rpm -q.
//   - step-ms/host: the steps' critical path (per batch, the slowest host's
//     sum of step times, each measured around its remote command).
//   - overhead-ms/host: everything else: preflight, the record commits,
//     scheduling, the final balancer read.
//   - dials/host: SSH connections opened per host per run (must be 1).
//
// All per host are amortised: the total divided by the number of hosts.
func BenchmarkRolloutSSH(b *testing.B) {
	const hosts = 32
	fleet := testenv.StartSSHFleet(b, hosts, 100, web100, web100, web110)
	port, addrs := fleet.ServeHelloWeb(b)
	ha := testenv.StartHAProxy(b, addrs)
	s := &sshScene{fleet: fleet, ha: ha}
	repo := testenv.NewGitRepo(b, map[string]string{
		"lieutenant.yaml":           s.config(ha.APIAddr),
		"releases/production.yaml":  "release: r0\npackages: [" + web110 + "]\n",
		"inventory/production.yaml": fleet.Inventory(),
		"playbooks/web.yaml": fmt.Sprintf(`
hosts: "web-*"
steps:
  - balancer.drain
  - packages.install
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:%d/health", retries: 20, interval: 50ms}
  - balancer.enable
`, port),
	})
	var wall, inspect, critical time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if i > 0 {
			// Alternate between the two versions so every run changes every host.
			nevra := []string{web110, web100}[i%2]
			testenv.GitCommit(b, repo, map[string]string{"releases/production.yaml": fmt.Sprintf("release: r%d\npackages: [%s]\n", i, nevra)}, "release")
		}
		var out, errOut bytes.Buffer
		b.StartTimer()
		start := time.Now()
		code := run(context.Background(), []string{"lieutenant", "--repo", repo, "run", "--env", "production", "-o", "json"},
			streams{in: strings.NewReader(""), out: &out, err: &errOut})
		took := time.Since(start)
		b.StopTimer()
		if code != exitOK {
			b.Fatalf("run %d: exit %d\n%s", i, code, errOut.String())
		}
		var rec playbook.Record
		if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
			b.Fatal(err)
		}
		wall += took
		inspect += rec.StartedAt.Sub(start)
		critical += criticalPath(b, &rec)
		b.StartTimer()
	}
	n := time.Duration(b.N * hosts)
	b.ReportMetric(float64(inspect/n)/1e6, "inspect-ms/host")
	b.ReportMetric(float64((wall-inspect-critical)/n)/1e6, "overhead-ms/host")
	b.ReportMetric(float64(critical/n)/1e6, "step-ms/host")
	b.ReportMetric(float64(fleet.Connections())/float64(b.N*hosts), "dials/host")
}

// criticalPath is, batch after batch, the slowest host's total step time.
func criticalPath(b *testing.B, rec *playbook.Record) time.Duration {
	slowest := map[int]time.Duration{}
	for _, h := range rec.Hosts {
		var sum time.Duration
		for _, s := range h.Steps {
			d, err := time.ParseDuration(s.Duration)
			if err != nil {
				b.Fatal(err)
			}
			sum += d
		}
		slowest[h.Batch] = max(slowest[h.Batch], sum)
	}
	var total time.Duration
	for _, d := range slowest {
		total += d
	}
	return total
}

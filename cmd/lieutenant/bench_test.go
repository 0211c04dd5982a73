package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// BenchmarkRolloutSSH runs `lieutenant run` over 32 hosts reached by real
// SSH behind a real HAProxy, in halves, and splits the wall time:
//
//   - step-ms/host: the steps' own time, as their critical path (per batch,
//     the slowest host's sum of step times, each measured around its
//     remote command).
//   - overhead-ms/host: everything else, lieutenant's overhead: reading Git,
//     one SSH handshake per host, rpm -q, preflight, the record commits
//     (about five per host), scheduling, the final balancer read.
//   - inspect-ms/host: the part of the overhead before the run begins
//     (Git, handshakes, rpm -q; sshd runs on this same 2-core machine).
//   - dials/host: SSH connections opened per host per run (must be 1).
//
// Per host means amortised: the total divided by the number of hosts.
// BenchmarkOpenSSHBaseline gives the floor for the handshakes.
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
	b.ReportMetric(float64((wall-critical)/n)/1e6, "overhead-ms/host")
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

// BenchmarkOpenSSHBaseline is the floor BenchmarkRolloutSSH's inspect phase
// is measured against: OpenSSH's own client opening one connection per host,
// all 32 at once, and running the same rpm -q. One op is the whole fleet.
func BenchmarkOpenSSHBaseline(b *testing.B) {
	const hosts = 32
	bins := testenv.RequireBinaries(b, "ssh")
	fleet := testenv.StartSSHFleet(b, hosts, 100, web100, web100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		errs := make(chan error, hosts)
		for _, h := range fleet.Hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := exec.Command(bins["ssh"], "-q", "-i", fleet.Identity, "-p", fmt.Sprint(h.Port),
					"-o", "UserKnownHostsFile="+fleet.KnownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
					fleet.User+"@"+h.Address, "rpm", "-q", "--qf", "'%{NAME}\\t%{VERSION}\\n'", "hello-web").CombinedOutput()
				if err != nil {
					errs <- fmt.Errorf("%s: %v: %s", h.Name, err, out)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*hosts), "ms/host")
}

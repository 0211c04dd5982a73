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

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
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
	hostsFleet := testenv.StartSSHFleet(b, hosts, 100, web100, web100, web110)
	port, addrs := hostsFleet.ServeHelloWeb(b)
	ha := testenv.StartHAProxy(b, addrs)
	s := &sshScene{fleet: hostsFleet, ha: ha}
	repo := testenv.NewGitRepo(b, map[string]string{
		"lieutenant.yaml":           s.config(ha.APIAddr),
		"releases/production.yaml":  "release: r0\npackages: [" + web100 + "]\n",
		"inventory/production.yaml": hostsFleet.Inventory(),
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
	t := benchRollouts(b, repo, func(i int) string {
		// Alternate between the two versions so every run changes every host.
		return fmt.Sprintf("release: r%d\npackages: [%s]\n", i, []string{web110, web100}[i%2])
	}, nil)
	t.report(b, b.N*hosts, "host")
	b.ReportMetric(float64(hostsFleet.Connections())/float64(b.N*hosts), "dials/host")
}

// rolloutTimes add up the rollouts of a benchmark.
type rolloutTimes struct{ wall, inspect, critical time.Duration }

// benchRollouts commits manifest(i) and times `lieutenant run` b.N times.
// benchRollouts commits each release (and publishes it, when the repository
// has a remote), then times `lieutenant run`, with args before the command.
func benchRollouts(b *testing.B, repo string, manifest func(i int) string, publish func(), args ...string) rolloutTimes {
	var t rolloutTimes
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		testenv.GitCommit(b, repo, map[string]string{"releases/production.yaml": manifest(i)}, "release")
		if publish != nil {
			publish()
		}
		var out, errOut bytes.Buffer
		b.StartTimer()
		start := time.Now()
		argv := append(append([]string{"lieutenant", "--repo", repo}, args...), "run", "--env", "production", "-o", "json")
		code := run(context.Background(), argv, streams{in: strings.NewReader(""), out: &out, err: &errOut})
		took := time.Since(start)
		b.StopTimer()
		if code != exitOK {
			b.Fatalf("run %d: exit %d\n%s", i, code, errOut.String())
		}
		var rec record.Run
		if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
			b.Fatal(err)
		}
		if rec.ID == "" {
			b.Fatalf("run %d changed nothing, so it measures nothing:\n%s", i, out.String())
		}
		t.wall += took
		t.inspect += rec.StartedAt.Sub(start)
		t.critical += criticalPath(b, &rec)
		b.StartTimer()
	}
	return t
}

// report gives the split per unit (host or rollout), amortised over n.
func (t rolloutTimes) report(b *testing.B, n int, unit string) {
	per := func(d time.Duration) float64 { return float64(d/time.Duration(n)) / 1e6 }
	b.ReportMetric(per(t.critical), "step-ms/"+unit)
	b.ReportMetric(per(t.wall-t.critical), "overhead-ms/"+unit)
	b.ReportMetric(per(t.inspect), "inspect-ms/"+unit)
}

// criticalPath is, batch after batch, the slowest host's total step time.
func criticalPath(b *testing.B, rec *record.Run) time.Duration {
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
	hostsFleet := testenv.StartSSHFleet(b, hosts, 100, web100, web100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		errs := make(chan error, hosts)
		for _, h := range hostsFleet.Hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := exec.Command(bins["ssh"], "-q", "-i", hostsFleet.Identity, "-p", fmt.Sprint(h.Port),
					"-o", "UserKnownHostsFile="+hostsFleet.KnownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
					hostsFleet.User+"@"+h.Address, "rpm", "-q", "--qf", "'%{NAME}\\t%{VERSION}\\n'", "hello-web").CombinedOutput()
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

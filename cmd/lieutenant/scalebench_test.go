package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// BenchmarkRollout1000 rolls 1,000 simulated hosts in halves with the real
// binary: real SSH to in-process servers on loopback (testenv.SimFleet:
// each host its own address, host key checked, commands answered with the
// shims' behaviour; dnf takes 200ms and a restart 50ms), a real HAProxy
// with 1,000 checked servers at its default timing (inter 2s fall 3 rise
// 2), and the deploy repository behind a remote whose every conversation
// is 0.4 s slower (git-upload-pack and git-receive-pack wrapped). It
// reports per rollout:
//
//   - overhead-s: wall time beyond the steps' own time (per batch, the
//     slowest host's sum of step times);
//   - peak-rss-MB: lieutenant's peak resident memory;
//   - writes: commits the run wrote to the history, and record-KB: the
//     size of its files at the end;
//   - handshakes: SSH handshakes in progress at once, at most (the
//     transport's bound is 64).
func BenchmarkRollout1000(b *testing.B) {
	const hosts = 1000
	const v100, v110 = "hello-web-1.0.0-1.x86_64", "hello-web-1.1.0-1.x86_64"
	bin := buildLieutenant(b)
	sim := testenv.StartSimFleet(b, hosts, testenv.SimDelays{Install: 200 * time.Millisecond, Restart: 50 * time.Millisecond}, v100, v100, v110)
	ha := testenv.StartHAProxy(b, sim.HTTPAddrs(), testenv.HAProxyCheck(2*time.Second, 3, 2))
	config := fmt.Sprintf(`
environments:
  production:
    manifest: releases/production.yaml
    inventory: inventory/production.yaml
    playbook: playbooks/web.yaml
    balancer: {type: haproxy, api: %q, backend: %s, min_up: 100}
    ssh: {user: %s, known_hosts: %s, identity_files: [%s], agent: false}
`, ha.APIAddr, ha.Backend, sim.User, sim.KnownHosts, sim.Identity)
	playbookYAML := fmt.Sprintf(`
hosts: "web-*"
steps:
  - balancer.drain: {timeout: 30s}
  - packages.install
  - service.restart: hello-web
  - http.check: {url: "http://{{ .Host.Address }}:%d/health", retries: 20, interval: 50ms}
  - balancer.enable: {timeout: 30s}
`, sim.HTTPPort)
	seed := testenv.NewGitRepo(b, map[string]string{
		"lieutenant.yaml":           config,
		"releases/production.yaml":  "release: r0\npackages: [" + v100 + "]\n",
		"inventory/production.yaml": sim.Inventory(),
		"playbooks/web.yaml":        playbookYAML,
	})
	bare := filepath.Join(b.TempDir(), "deploy.git")
	testenv.Git(b, "", "clone", "-q", "--bare", seed, bare)
	work := filepath.Join(b.TempDir(), "work")
	testenv.Git(b, "", "clone", "-q", bare, work)
	testenv.Git(b, work, "config", "user.name", testenv.GitUserName)
	testenv.Git(b, work, "config", "user.email", testenv.GitUserEmail)
	slow := slowGitPath(b, 400*time.Millisecond)

	var overhead, steps time.Duration
	var rss, writes, size int64
	for i := 0; b.Loop(); i++ {
		version := []string{v110, v100}[i%2]
		testenv.GitCommit(b, work, map[string]string{"releases/production.yaml": fmt.Sprintf("release: r%d\npackages: [%s]\n", i+1, version)}, "release")
		testenv.Git(b, work, "push", "-q", "origin", "HEAD:refs/heads/main")
		var out, errOut bytes.Buffer
		cmd := exec.Command(bin, "--repo", work, "--branch", "main", "run", "--env", "production", "--yes", "-o", "json")
		cmd.Env = append(testenv.GitEnv(), "PATH="+slow+string(os.PathListSeparator)+os.Getenv("PATH"))
		cmd.Stdout, cmd.Stderr = &out, &errOut
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("lieutenant run: %v\n%s", err, tail(errOut.String(), 40))
		}
		wall := time.Since(start)
		var rec record.Run
		if err := json.Unmarshal(out.Bytes(), &rec); err != nil || rec.Outcome != record.OutcomeSucceeded {
			b.Fatalf("lieutenant run: %v, outcome %q\n%s", err, rec.Outcome, tail(errOut.String(), 40))
		}
		cp := criticalPath(b, &rec)
		steps += cp
		overhead += wall - cp
		rss = max(rss, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss/1024)
		n, _ := strconv.Atoi(testenv.Git(b, bare, "rev-list", "--count", "--grep", rec.ID, "lieutenant/runs"))
		writes += int64(n)
		size = recordSize(b, bare, rec.ID)
		b.Logf("run %d: %s wall, steps %s, %d writes, record %d KB; step times: %s", i, wall.Round(time.Millisecond), cp.Round(time.Millisecond), n, size/1024, stepTimes(b, &rec))
	}
	runs := time.Duration(b.N)
	_, most := sim.Handshakes()
	b.ReportMetric((overhead / runs).Seconds(), "overhead-s")
	b.ReportMetric((steps / runs).Seconds(), "steps-s")
	b.ReportMetric(float64(rss), "peak-rss-MB")
	b.ReportMetric(float64(writes)/float64(b.N), "writes")
	b.ReportMetric(float64(size)/1024, "record-KB")
	b.ReportMetric(float64(most), "handshakes")
}

// slowGitPath is a directory holding a git that waits delay before
// upload-pack and receive-pack: put first on PATH, every Git conversation
// with a path remote takes that much longer, as with a hosted remote.
func slowGitPath(b *testing.B, delay time.Duration) string {
	dir := b.TempDir()
	real, err := exec.LookPath("git")
	if err != nil {
		b.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\ncase \"$1\" in upload-pack|receive-pack) sleep %.3f ;; esac\nexec %s \"$@\"\n", delay.Seconds(), real)
	if err := os.WriteFile(filepath.Join(dir, "git"), []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

// recordSize adds up the sizes of run id's files on the history branch.
func recordSize(b *testing.B, repo, id string) int64 {
	var total int64
	for _, line := range strings.Split(testenv.Git(b, repo, "ls-tree", "-r", "-l", "lieutenant/runs", "runs/production/"), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && strings.Contains(f[4], id) {
			n, _ := strconv.ParseInt(f[3], 10, 64)
			total += n
		}
	}
	return total
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stepTimes summarises the record's step durations by kind: median and
// slowest.
func stepTimes(b *testing.B, rec *record.Run) string {
	byKind := map[string][]time.Duration{}
	var kinds []string
	for _, h := range rec.Hosts {
		for _, s := range h.Steps {
			d, err := time.ParseDuration(s.Duration)
			if err != nil {
				b.Fatal(err)
			}
			if byKind[s.Step] == nil {
				kinds = append(kinds, s.Step)
			}
			byKind[s.Step] = append(byKind[s.Step], d)
		}
	}
	var out []string
	for _, k := range kinds {
		ds := byKind[k]
		slices.Sort(ds)
		out = append(out, fmt.Sprintf("%s %s/%s", k, ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/testenv/fleet"
)

// BenchmarkFleetVsFloor rolls the docker-compose fleet (4 and 8 app hosts:
// sshd, real dnf, init-script services, HAProxy with retries 0) back and
// forth between hello-web 1.0.0 and 1.1.0, in halves, with 200 requests/s
// through HAProxy, once with lieutenant (the real binary, `lieutenant run`
// with the fleet's playbook) and once with testenv/floor/rollout, a plain
// ssh script doing the same steps with nothing around them, in turn, so the
// ratio compares runs made under the same load. It reports per rollout:
//
//   - floor-s, lieutenant-s: the median wall time of each;
//   - ratio: lieutenant-s / floor-s;
//   - cpu-ms/host: lieutenant's user+sys time, per host rolled;
//   - writes, sync-writes: lieutenant's commits to the history per rollout,
//     and those a host waited for (all but the background progress);
//   - failed: requests failed through HAProxy over all the rollouts (must
//     be 0).
//
// Sub-benchmarks: HAProxy's default check timing (inter 2s fall 3 rise 2)
// and the tests' (inter 200ms rise 1); and remote-0.4s, with the deploy
// repository on the fleet's Git server over SSH, every Git conversation
// made 0.4 s slower, as a hosted remote is. Each op is one rollout of each.
func BenchmarkFleetVsFloor(b *testing.B) {
	bin := buildLieutenant(b)
	for _, apps := range []int{4, 8} {
		b.Run(fmt.Sprintf("hosts=%d", apps), func(b *testing.B) {
			f := testenv.StartDockerFleet(b, fleet.Options{Apps: apps, Check: fleet.DefaultChecks})
			bench := &fleetBench{f: f, bin: bin}
			bench.repo = testenv.NewGitRepo(b, map[string]string{
				"lieutenant.yaml":           "environments:\n" + f.Environment("production"),
				"releases/production.yaml":  manifest("1.0.0-1"),
				"inventory/production.yaml": f.Inventory(),
				"playbooks/web.yaml":        f.Playbook(),
			})
			for _, c := range []struct {
				name   string
				check  fleet.CheckTiming
				remote time.Duration
			}{
				{"default-checks", fleet.DefaultChecks, 0},
				{"fast-checks", fleet.FastChecks, 0},
				{"remote-0.4s", fleet.DefaultChecks, 400 * time.Millisecond},
			} {
				b.Run(c.name, func(b *testing.B) {
					if err := f.SetCheckTiming(b.Context(), c.check); err != nil {
						b.Fatal(err)
					}
					bench.useRemote(b, c.remote)
					bench.run(b)
				})
			}
		})
	}
}

// buildLieutenant builds the command into a temporary directory: the
// benchmarks time the real binary as a user runs it. $LIEUTENANT_BENCH_BIN
// names another build to time instead (an older version, say).
func buildLieutenant(b *testing.B) string {
	if bin := os.Getenv("LIEUTENANT_BENCH_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.TempDir(), "lieutenant")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type fleetBench struct {
	f       *fleet.Fleet
	bin     string
	repo    string   // the clone lieutenant runs in
	args    []string // before the command: the remote's keys
	publish func(b *testing.B)
	version string // what the fleet runs now
}

// useRemote puts the deploy repository on the fleet's Git server, reached
// over SSH with every conversation delay slower, or (delay 0) keeps it on
// this machine.
func (fb *fleetBench) useRemote(b *testing.B, delay time.Duration) {
	ctx := b.Context()
	if err := fb.f.SetGitDelay(ctx, delay); err != nil {
		b.Fatal(err)
	}
	if delay == 0 {
		fb.args, fb.publish = nil, nil
		testenv.GitCommand(fb.repo, "remote", "remove", "origin").Run()
		return
	}
	testenv.GitCommand(fb.repo, "remote", "add", "origin", fb.f.GitURL).Run()
	testenv.Git(b, fb.repo, "config", "core.sshCommand", fb.f.GitSSHCommand())
	fb.args = []string{"--git-known-hosts", fb.f.KnownHosts, "--git-identity", fb.f.Identity, "--branch", "main"}
	fb.publish = func(b *testing.B) {
		testenv.Git(b, fb.repo, "push", "-q", "-f", "origin", "HEAD:refs/heads/main")
	}
	b.Cleanup(func() { fb.f.SetGitDelay(context.Background(), 0) })
}

func (fb *fleetBench) run(b *testing.B) {
	ctx := b.Context()
	if fb.version == "" {
		fb.version = "1.0.0-1"
	}
	other := func() string {
		if fb.version == "1.0.0-1" {
			return "1.1.0-1"
		}
		return "1.0.0-1"
	}
	load := testenv.StartLoad(b, fb.f.FrontendURL+"/", 200)
	var floors, lts []time.Duration
	var cpu time.Duration
	var writes, syncWrites int
	for i := 0; b.Loop(); i++ {
		floor := func() {
			v := other()
			d, err := testenv.FloorRollout(ctx, fb.f, "hello-web-"+v+".x86_64")
			if err != nil {
				b.Fatal(err)
			}
			fb.version = v
			floors = append(floors, d)
		}
		lt := func() {
			v := other()
			d, c, w, sw := fb.lieutenant(b, v)
			fb.version = v
			lts, cpu, writes, syncWrites = append(lts, d), cpu+c, writes+w, syncWrites+sw
		}
		// Each goes first every other time, so that both upgrade and
		// downgrade equally often.
		if i%2 == 0 {
			floor()
			lt()
		} else {
			lt()
			floor()
		}
	}
	res := load.Stop()
	if res.Failed != 0 || res.Rate() < 150 {
		b.Errorf("load through HAProxy: %s; want none failed at >= 150/s", res)
	}
	n := len(lts)
	floor, lt := median(floors), median(lts)
	b.ReportMetric(floor.Seconds(), "floor-s")
	b.ReportMetric(lt.Seconds(), "lieutenant-s")
	b.ReportMetric(lt.Seconds()/floor.Seconds(), "ratio")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(n*len(fb.f.Hosts)), "cpu-ms/host")
	b.ReportMetric(float64(writes)/float64(n), "writes")
	b.ReportMetric(float64(syncWrites)/float64(n), "sync-writes")
	b.ReportMetric(float64(res.Failed), "failed")
	b.Logf("%d rollouts each; floor %v; lieutenant %v; load %s", n, floors, lts, res)
}

// lieutenant commits the manifest for version (and publishes it), then
// times `lieutenant run` as a process of its own, and counts the commits
// the run wrote to the history branch.
func (fb *fleetBench) lieutenant(b *testing.B, version string) (wall, cpu time.Duration, writes, syncWrites int) {
	if cur, _ := os.ReadFile(filepath.Join(fb.repo, "releases", "production.yaml")); string(cur) != manifest(version) {
		testenv.GitCommit(b, fb.repo, map[string]string{"releases/production.yaml": manifest(version)}, "release "+version)
	}
	if fb.publish != nil {
		fb.publish(b)
	}
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(b.Context(), fb.bin, append(append([]string{"--repo", fb.repo}, fb.args...), "run", "--env", "production", "--yes", "-o", "json")...)
	cmd.Env = testenv.GitEnv()
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	wall = time.Since(start)
	if err != nil {
		b.Fatalf("lieutenant run to %s: %v\n%s", version, err, errOut.String())
	}
	cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var rec record.Run
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil || rec.Outcome != record.OutcomeSucceeded {
		b.Fatalf("lieutenant run to %s: %v, outcome %q\n%s", version, err, rec.Outcome, errOut.String())
	}
	// The run's commits: its record's and its lock's.
	dir := fb.repo
	history := "lieutenant/runs"
	if fb.publish != nil {
		testenv.Git(b, fb.repo, "fetch", "-q", "origin", "+lieutenant/runs:refs/remotes/origin/lieutenant/runs")
		history = "origin/lieutenant/runs"
	}
	log := testenv.Git(b, dir, "log", "--format=%s", "--grep", rec.ID, history)
	for _, line := range strings.Split(log, "\n") {
		writes++
		if !strings.Contains(line, "progress") {
			syncWrites++
		}
	}
	return wall, cpu, writes, syncWrites
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

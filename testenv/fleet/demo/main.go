// Command demo is `make demo`: it brings the test fleet up, makes a deploy
// repository for it, and rolls a new release out with lieutenant while
// requests flow through HAProxy, then says how to look around. The fleet
// stays up; `make fleet-down` removes it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/testenv/fleet"
)

const project = "lieutenant-demo"

func main() {
	bin := flag.String("bin", "bin/lieutenant", "the lieutenant binary")
	dir := flag.String("dir", ".fleet", "the fleet's state and deploy repository")
	apps := flag.Int("hosts", 4, "app hosts")
	down := flag.Bool("down", false, "remove the demo fleet and its state, then exit")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *down {
		err = teardown(ctx, *dir)
	} else {
		err = demo(ctx, *bin, *dir, *apps)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func teardown(ctx context.Context, dir string) error {
	if err := fleet.DownProject(ctx, project, dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	fmt.Println("The demo fleet and", dir, "are gone.")
	return nil
}

func step(format string, args ...any) { fmt.Printf("\n== "+format+"\n", args...) }

func demo(ctx context.Context, bin, dir string, apps int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	// A demo starts from scratch, whatever an earlier one left.
	_ = fleet.DownProject(ctx, project, dir)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	step("Bringing the fleet up: %d app hosts (sshd, rpm, dnf, hello-web 1.0.0), HAProxy, a package repository, a Git server", apps)
	start := time.Now()
	f, err := fleet.Up(ctx, fleet.Options{Project: project, Dir: dir, Apps: apps})
	if err != nil {
		return err
	}
	fmt.Printf("up in %s: HAProxy at %s, stats at %s\n", time.Since(start).Round(100*time.Millisecond), f.FrontendURL, f.StatsURL)
	for _, h := range f.Hosts {
		fmt.Printf("  %-6s %-15s %s\n", h.Name, h.Address, h.Container)
	}

	repo := filepath.Join(f.Dir, "deploy")
	step("A deploy repository at %s, pushed to the fleet's Git server (%s); its manifest says hello-web 1.0.0, what the fleet runs", repo, f.GitURL)
	files := map[string]string{
		"lieutenant.yaml":     "environments:\n" + f.Environment("demo"),
		"releases/demo.yaml":  manifest("2026.11.1", "hello-web-1.0.0-1.x86_64"),
		"inventory/demo.yaml": f.Inventory(),
		"playbooks/web.yaml":  f.Playbook(),
	}
	if err := gitInit(repo, files); err != nil {
		return err
	}
	// The clone talks to the Git server with the fleet's key and known_hosts,
	// for git as for lieutenant.
	for _, args := range [][]string{
		{"remote", "add", "origin", f.GitURL},
		{"config", "core.sshCommand", f.GitSSHCommand()},
		{"push", "-q", "-u", "origin", "main"},
	} {
		if err := git(repo, args...); err != nil {
			return err
		}
	}
	lt := func(args ...string) error {
		return lieutenant(ctx, bin, repo, append([]string{"--git-known-hosts", f.KnownHosts, "--git-identity", f.Identity}, args...)...)
	}
	if err := lt("sync", "--env", "demo"); err != nil {
		return err
	}

	step("A merge moves the manifest to hello-web 1.1.0 and pushes it")
	if err := gitCommit(repo, map[string]string{"releases/demo.yaml": manifest("2026.11.2", "hello-web-1.1.0-1.x86_64")}, "release 2026.11.2: hello-web 1.1.0"); err != nil {
		return err
	}
	if err := git(repo, "push", "-q", "origin", "main"); err != nil {
		return err
	}
	if err := show(repo, "log", "--oneline", "origin/main"); err != nil {
		return err
	}

	step("lieutenant plan --env demo")
	if err := lt("plan", "--env", "demo"); err != nil {
		return err
	}

	const rate = 250
	step("lieutenant sync --env demo, what CI runs on the merge, while %d requests/s go through HAProxy", rate)
	load := testenv.NewLoad(f.FrontendURL+"/", rate)
	runErr := lt("sync", "--env", "demo", "--yes")
	res := load.Stop()

	step("Result")
	fmt.Printf("requests through HAProxy during the rollout: %d, failed: %d (%.0f/s)\n", res.Total, res.Failed, res.Rate())
	if runErr == nil {
		step("lieutenant sync --env demo, again: nothing to do")
		if err := lt("sync", "--env", "demo"); err != nil {
			return err
		}
		step("lieutenant history --env demo: read back from the Git server")
		if err := lt("history", "--env", "demo"); err != nil {
			return err
		}
	}
	_ = git(repo, "fetch", "-q", "origin")
	fmt.Println("\nThe record, in Git (the history branch on the Git server):")
	fmt.Printf("  git -C %s log --oneline origin/lieutenant/runs\n", repo)
	fmt.Println("\nLook around:")
	fmt.Printf("  HAProxy stats:  %s\n", f.StatsURL)
	fmt.Printf("  the service:    curl %s/\n", f.FrontendURL)
	fmt.Printf("  a host:         ssh -i %s -o UserKnownHostsFile=%s %s@%s\n", f.Identity, f.KnownHosts, f.User, f.Hosts[0].Address)
	flags := fmt.Sprintf("--repo %s --git-known-hosts %s --git-identity %s", repo, f.KnownHosts, f.Identity)
	fmt.Printf("  roll back:      %s %s rollback --env demo --yes\n", bin, flags)
	fmt.Printf("  a broken release: set releases/demo.yaml to hello-web-1.2.0-1.x86_64 in %s, commit, git push, and\n", repo)
	fmt.Printf("                  %s %s sync --env demo --yes\n", bin, flags)
	fmt.Println("  remove it all:  make fleet-down")
	switch {
	case runErr != nil:
		return fmt.Errorf("the rollout failed: %w", runErr)
	case res.Failed > 0:
		return fmt.Errorf("%d requests failed during the rollout", res.Failed)
	}
	return nil
}

func manifest(release, nevra string) string {
	return fmt.Sprintf("release: %s\npackages:\n  - %s\n", release, nevra)
}

func lieutenant(ctx context.Context, bin, repo string, args ...string) error {
	fmt.Printf("$ lieutenant %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, bin, append([]string{"--repo", repo}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return fmt.Errorf("lieutenant %s exited with %d", args[0], exit.ExitCode())
		}
		return err
	}
	return nil
}

func git(repo string, args ...string) error {
	if out, err := testenv.GitCommand(repo, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func show(repo string, args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func gitInit(repo string, files map[string]string) error {
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return err
	}
	if err := git(repo, "init", "-q", "-b", "main"); err != nil {
		return err
	}
	// Run as the demo's release engineer, whoever runs the demo.
	if err := git(repo, "config", "user.name", "Demo Release Engineer"); err != nil {
		return err
	}
	if err := git(repo, "config", "user.email", "demo@example.invalid"); err != nil {
		return err
	}
	return gitCommit(repo, files, "release 2026.11.1: hello-web 1.0.0, deployed")
}

func gitCommit(repo string, files map[string]string, msg string) error {
	for name, data := range files {
		path := filepath.Join(repo, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return err
		}
	}
	if err := git(repo, "add", "-A"); err != nil {
		return err
	}
	return git(repo, "commit", "-q", "-m", msg)
}

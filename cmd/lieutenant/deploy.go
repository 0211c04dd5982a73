package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// deployment is one environment read from one revision of the repository.
type deployment struct {
	*source
	snap *releases.Snapshot
	dep  *playbook.Deployment
}

// source is the deploy repository as the command line names it: a clone or
// bare repository on this machine, used with its remote when it has one,
// or a remote URL read through a private cache.
type source struct {
	repo *releases.Repo
	// branch is the remote's manifest branch ("" without a remote).
	branch string
	// tip is the manifest revision the command read (--rev, or the
	// branch's tip); commits that records name must be among its history.
	tip *releases.Snapshot
	// fresh is the history branch fetched together with the manifest
	// branch, "" when none was.
	fresh   string
	cleanup func()
	// early is the inspection made while the branch was fetched (run
	// only), nil when none was.
	early *earlyInspection
	// warn prints a warning on stderr, such as a stray file among runs.
	warn func(msg string)
}

// openSource opens --repo and, with a remote, fetches the manifest branch.
// With headFirst, a local repository is used without its remote unless
// --remote or --branch asks for it. With inspect, a clone's hosts are
// inspected while the branch is fetched (see earlyInspection). A command
// with --offline set (plan) contacts nothing: a clone's branch is read as
// last fetched.
func openSource(c *cli.Context, headFirst, inspect bool) (*source, error) {
	arg := c.String("repo")
	offline := c.Bool("offline")
	src := &source{cleanup: func() {}, warn: func(msg string) { fmt.Fprintf(c.App.ErrWriter, "lieutenant: warning: %s\n", msg) }}
	var remote releases.Remote
	if releases.IsRemoteURL(arg) {
		if offline {
			return nil, usagef("--offline contacts nothing, and --repo %s is a remote URL: use a clone (its branch as last fetched) or drop --offline", releases.RedactURL(arg))
		}
		dir, err := os.MkdirTemp("", "lieutenant-repo-")
		if err != nil {
			return nil, fmt.Errorf("open deploy repository %s: %w", releases.RedactURL(arg), err)
		}
		src.cleanup = func() { os.RemoveAll(dir) }
		if src.repo, err = releases.InitCache(dir); err != nil {
			src.cleanup()
			return nil, err
		}
		remote = releases.Remote{Name: "origin", URL: arg}
	} else {
		repo, err := releases.Open(arg)
		if err != nil {
			return nil, badRepo(c, arg, err)
		}
		src.repo = repo
		name := c.String("remote")
		local := headFirst && !c.IsSet("remote") && !c.IsSet("branch")
		if url, ok := repo.ConfiguredRemote(name); ok && !local {
			remote = releases.Remote{Name: name, URL: url}
		} else if c.IsSet("remote") && name != "none" {
			src.Close()
			return nil, usagef("--remote %s: %s has no remote of that name (see git remote -v; --remote none works without one)", name, repo.Path())
		}
	}
	if remote.URL == "" {
		src.branch = c.String("branch")
		return src, nil
	}
	if err := src.useRemote(c, remote, inspect && !releases.IsRemoteURL(arg), offline); err != nil {
		src.Close()
		return nil, err
	}
	return src, nil
}

// badRepo makes a --repo that names no repository invalid input, said the
// way the user gave it.
func badRepo(c *cli.Context, arg string, err error) error {
	var what string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		what = "no such file or directory"
	case errors.Is(err, releases.ErrNotRepository):
		what = "not a git repository (nor is any of its parents)"
	default:
		return err
	}
	if !c.IsSet("repo") {
		abs, _ := filepath.Abs(arg)
		return usagef("%s: %s: run lieutenant in a clone of the deploy repository, or name it with --repo PATH or URL", abs, what)
	}
	return usagef("--repo %s: %s: name a clone, a bare repository or a remote URL", arg, what)
}

// useRemote makes remote the source's; offline, it reads the branch as
// last fetched instead of fetching it.
func (src *source) useRemote(c *cli.Context, remote releases.Remote, inspect, offline bool) error {
	remote.Auth = releases.RemoteAuth{Token: os.Getenv("LIEUTENANT_GIT_TOKEN"), TokenUser: os.Getenv("LIEUTENANT_GIT_USER")}
	var gitSSH *transport.SSH
	remote.Auth.SSH = func(user, hostport string) (*ssh.ClientConfig, func(), error) {
		if gitSSH == nil {
			var err error
			gitSSH, err = transport.NewSSH(transport.SSHConfig{
				User: user, UseAgent: true,
				KnownHostsFiles: c.StringSlice("git-known-hosts"), IdentityFiles: c.StringSlice("git-identity"),
			})
			if err != nil {
				return nil, nil, fmt.Errorf("git remote: %w", err)
			}
		}
		return gitSSH.ClientConfig(user, hostport)
	}
	if err := src.repo.UseRemote(remote); err != nil {
		return err
	}
	src.branch = c.String("branch")
	if offline {
		if src.branch == "" {
			if src.branch = src.repo.FetchedDefault(); src.branch == "" {
				return usagef("--offline: %s does not record which branch %s's HEAD is (git remote set-head %s --auto): name it with --branch", src.repo.Path(), remote.Name, remote.Name)
			}
		}
		return nil
	}
	if inspect {
		src.early = src.inspectEarly(c)
	}
	if src.branch != "" {
		return src.fetch(c.Context)
	}
	// The remote's default branch and the history come in one fetch.
	b, err := src.repo.FetchDefault(c.Context, releases.DefaultHistoryBranch)
	if err != nil {
		return err
	}
	src.branch, src.fresh = b, releases.DefaultHistoryBranch
	return nil
}

// fetch brings the manifest branch and the default history branch from
// the remote in one conversation, so that history need not fetch again.
func (src *source) fetch(ctx context.Context) error {
	src.fresh = ""
	if src.repo.RemoteURL() == "" {
		return nil
	}
	if err := src.repo.Fetch(ctx, src.branch, releases.DefaultHistoryBranch); err != nil {
		return err
	}
	src.fresh = releases.DefaultHistoryBranch
	return nil
}

// refresh fetches the manifest branch again and reads --rev anew, for a
// source that lives long (watch).
func (src *source) refresh(c *cli.Context) (*releases.Snapshot, error) {
	if err := src.fetch(c.Context); err != nil {
		return nil, err
	}
	snap, err := src.snapshot(c)
	if err != nil {
		return nil, err
	}
	src.tip = snap
	return snap, nil
}

// snapshot reads --rev; by default the tip of the remote's manifest
// branch as just fetched, or HEAD without a remote. A --rev or --branch
// that names nothing is invalid input.
func (src *source) snapshot(c *cli.Context) (*releases.Snapshot, error) {
	rev := c.String("rev")
	if rev == "" && src.branch != "" {
		rev = src.repo.Tracking(src.branch)
	}
	snap, err := src.repo.Snapshot(c.Context, rev)
	if !errors.Is(err, releases.ErrUnknownRevision) {
		return snap, err
	}
	where := src.repo.Path()
	if u := src.repo.RemoteURL(); u != "" {
		where = u
	}
	switch {
	case c.String("rev") != "":
		// Snapshot's own reason, without the path it names again.
		reason := err
		if inner := errors.Unwrap(err); inner != nil {
			reason = inner
		}
		return nil, usagef("--rev %s in %s: %v", c.String("rev"), where, reason)
	case c.String("branch") != "":
		return nil, usagef("--branch %s: %s has no branch of that name", src.branch, where)
	}
	return nil, err
}

// checkHistoryBranch refuses a history branch that is the manifest branch:
// every record and lock would become a commit among the manifests.
func (src *source) checkHistoryBranch(history string) error {
	branch := src.branch
	if branch == "" && src.repo.RemoteURL() == "" {
		branch, _ = src.repo.HeadBranch() // detached: no branch to collide with
	}
	if branch != "" && history == branch {
		return usagef("%s: history_branch %s is the manifest branch being deployed: name another one (default %s)", playbook.ConfigFile, history, releases.DefaultHistoryBranch)
	}
	return nil
}

// recordAt says how to read the file at path on branch with git: in this
// repository, or in any clone of the remote.
func (src *source) recordAt(branch, path string) string {
	if u := src.repo.RemoteURL(); u != "" {
		return fmt.Sprintf("git show %s/%s:%s (after git fetch, in a clone of %s)", src.repo.RemoteName(), branch, path, u)
	}
	return fmt.Sprintf("git show %s:%s", branch, path)
}

func (src *source) Close() error {
	src.early.close()
	err := src.repo.Close()
	src.cleanup()
	return err
}

// history opens the history branch and reads what the remote has on it
// (fetching it, unless it came with the manifest branch).
func (src *source) history(ctx context.Context, branch string) (*releases.History, error) {
	hist, err := src.repo.History(branch)
	if err != nil {
		return nil, err
	}
	hist = hist.WithWarnings(src.warn)
	if branch == src.fresh {
		return hist, nil
	}
	if err := hist.Refresh(ctx); err != nil {
		return nil, err
	}
	return hist, nil
}

// records opens the history branch and reads the environment's runs,
// oldest first.
func (d *deployment) records(ctx context.Context) (*releases.History, []*record.Run, error) {
	hist, err := d.history(ctx, d.dep.HistoryBranch)
	if err != nil {
		return nil, nil, err
	}
	recs, err := hist.Records(ctx, d.dep.Environment.Name)
	return hist, recs, err
}

func openRepo(c *cli.Context) (*source, *releases.Snapshot, error) {
	return openRepoAt(c, false, false)
}

// openRepoAt is openRepo; headFirst and inspect as for openSource.
func openRepoAt(c *cli.Context, headFirst, inspect bool) (*source, *releases.Snapshot, error) {
	src, err := openSource(c, headFirst, inspect)
	if err != nil {
		return nil, nil, err
	}
	snap, err := src.snapshot(c)
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	src.tip = snap
	return src, snap, nil
}

// openDeployment opens the environment --env names; with inspect, its
// hosts are inspected while the branch is fetched.
func openDeployment(c *cli.Context, inspect bool) (*deployment, error) {
	src, snap, err := openRepoAt(c, false, inspect)
	if err != nil {
		return nil, err
	}
	d, err := src.deployment(snap, c.String("env"))
	if err != nil {
		src.Close()
		return nil, err
	}
	return d, nil
}

// deployment reads environment env at snap.
func (src *source) deployment(snap *releases.Snapshot, env string) (*deployment, error) {
	dep, err := playbook.Load(snap, env)
	if err != nil {
		return nil, err
	}
	if err := src.checkHistoryBranch(dep.HistoryBranch); err != nil {
		return nil, err
	}
	return &deployment{source: src, snap: snap, dep: dep}, nil
}

// connector builds the SSH connector from the environment's ssh settings
// and the command line's overrides.
func (d *deployment) connector(c *cli.Context) (*transport.SSH, error) {
	s := d.dep.Environment.SSH
	cfg := transport.SSHConfig{
		User:            s.User,
		KnownHostsFiles: s.KnownHosts,
		IdentityFiles:   s.IdentityFiles,
		UseAgent:        s.Agent,
		DialTimeout:     s.ConnectTimeout,
		MaxHandshakes:   s.MaxHandshakes,
	}
	if v := c.StringSlice("known-hosts"); len(v) > 0 {
		cfg.KnownHostsFiles = v
	}
	if v := c.StringSlice("identity"); len(v) > 0 {
		cfg.IdentityFiles = v
	}
	if v := c.String("ssh-user"); v != "" {
		cfg.User = v
		d.dep.Environment.SSH.User = v
	}
	conn, err := transport.NewSSH(cfg)
	if err != nil {
		return nil, &playbook.RefusedError{Problems: []string{err.Error()}}
	}
	return conn, nil
}

// balancer builds the environment's balancer adapter; nil when the
// environment has none. The runner guards drains with min_up itself.
func (d *deployment) balancer() (lb.Balancer, error) {
	b := d.dep.Environment.Balancer
	var adapter lb.Balancer
	switch b.Type {
	case "haproxy":
		h, err := lb.NewHAProxy(b.API, b.Backend)
		if err != nil {
			return nil, fmt.Errorf("%s: environments.%s.balancer: %w", playbook.ConfigFile, d.dep.Environment.Name, err)
		}
		adapter = h
	case "command":
		cmd, err := lb.NewCommand(lb.CommandConfig{Drain: b.Drain, Enable: b.Enable, State: b.State})
		if err != nil {
			return nil, fmt.Errorf("%s: environments.%s.balancer: %w", playbook.ConfigFile, d.dep.Environment.Name, err)
		}
		adapter = cmd
	default:
		return nil, nil
	}
	return adapter, nil
}

// adapters builds the SSH connector and the balancer adapter (nil
// without one) of the environment.
func (d *deployment) adapters(c *cli.Context) (*transport.SSH, lb.Balancer, error) {
	bal, err := d.balancer()
	if err != nil {
		return nil, nil, err
	}
	conn, err := d.connector(c)
	if err != nil {
		return nil, nil, err
	}
	return conn, bal, nil
}

// observe connects to every selected host and reads what it has installed
// and what the balancer says of it.
func (d *deployment) observe(c *cli.Context) (*transport.SSH, lb.Balancer, *playbook.Observed, error) {
	conn, bal, err := d.adapters(c)
	if err != nil {
		return nil, nil, nil, err
	}
	obs, err := playbook.Inspect(c.Context, conn, bal, d.dep, 0)
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	return conn, bal, obs, nil
}

func httpClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		// A health check judges the server it was sent to, not one a
		// redirect points at.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/releases"
)

func watchCommand(s streams) *cli.Command {
	return &cli.Command{
		Name:  "watch",
		Usage: "keep environments in sync: sync on a poll interval and on verified push webhooks",
		Description: `A long-running reconciler: runs lieutenant sync for each environment at start, every
--interval, and when a push webhook arrives (a burst of them leads to one sync). With
--listen it serves POST /webhook for GitHub (X-Hub-Signature-256, HMAC-SHA256 with
LIEUTENANT_WEBHOOK_SECRET) and GitLab (X-Gitlab-Token equal to LIEUTENANT_GITLAB_TOKEN);
a request with a missing or bad signature gets 401 and triggers nothing, and a delivery
answered in the last hour (its X-GitHub-Delivery or X-Gitlab-Event-UUID) gets 200
"duplicate" and triggers nothing. Pushes of the
history branch (lieutenant's own records) are ignored. A failed sync is logged and
tried again at the next trigger. SIGINT, SIGTERM or SIGHUP stops it; a rollout in progress is
interrupted the way run is (hosts in flight repaired, the record saved, the lock released).

EXAMPLE:
   LIEUTENANT_WEBHOOK_SECRET=... lieutenant --repo git@github.com:acme/deploy.git watch --listen :8080`,
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "environment to keep in sync (repeatable; default: all in lieutenant.yaml)"},
			&cli.DurationFlag{Name: "interval", Value: 5 * time.Minute, Usage: "sync this often even without a webhook"},
			&cli.StringFlag{Name: "listen", Usage: "address for the webhook endpoint, e.g. :8080 (default: poll only)"},
			&cli.BoolFlag{Name: "heal", Usage: "also redeploy to hosts that drifted from the manifest"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "approve every gate ahead"},
			&cli.DurationFlag{Name: "lock-wait", Usage: "wait this long for another run's lock"},
		}, sshFlags()...),
		Action: func(c *cli.Context) error {
			if err := checkUsage(c); err != nil {
				return err
			}
			if c.Duration("interval") <= 0 {
				return usagef("--interval must be longer than 0")
			}
			return watch(c, s)
		},
	}
}

func watch(c *cli.Context, s streams) error {
	ctx := c.Context
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(s.err, "%s %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, args...))
	}
	trigger := newCoalescer()
	// History branches seen in lieutenant.yaml: pushes to them are
	// lieutenant's own records and must not start a sync.
	var historyRefs sync.Map
	if addr := c.String("listen"); addr != "" {
		cfg := webhookConfig{GitHubSecret: []byte(os.Getenv("LIEUTENANT_WEBHOOK_SECRET")), GitLabToken: []byte(os.Getenv("LIEUTENANT_GITLAB_TOKEN"))}
		if len(cfg.GitHubSecret) == 0 && len(cfg.GitLabToken) == 0 {
			return usagef("watch --listen needs LIEUTENANT_WEBHOOK_SECRET (GitHub) or LIEUTENANT_GITLAB_TOKEN (GitLab) in the environment; an endpoint anyone can trigger is refused")
		}
		notify := func(ref string) bool {
			if _, own := historyRefs.Load(ref); own {
				return false
			}
			trigger.Notify()
			return true
		}
		mux := http.NewServeMux()
		mux.Handle("/webhook", newWebhookHandler(cfg, notify, logf))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("watch: listen on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		logf("watch: webhook endpoint on http://%s/webhook", ln.Addr())
	}
	ticker := time.NewTicker(c.Duration("interval"))
	defer ticker.Stop()
	// One repository for the watch's lifetime: each round fetches only
	// what is new, and every environment is read from the same commit.
	var src *source
	defer func() {
		if src != nil {
			src.Close()
		}
	}()
	checked := false
	for {
		var snap *releases.Snapshot
		var envs []string
		var err error
		if src, snap, envs, err = watchRound(c, src, &checked, logf); err != nil {
			return err
		}
		for _, env := range envs {
			if ctx.Err() != nil {
				return nil
			}
			err := syncEnvironment(c, s, src, snap, env, &historyRefs)
			switch {
			case err == nil:
			case ctx.Err() != nil:
				logf("watch: sync %s: interrupted", env)
				return nil
			default:
				logf("watch: sync %s: %v", env, firstLine(describeError(err)))
			}
		}
		select {
		case <-ctx.Done():
			logf("watch: stopped")
			return nil
		case <-ticker.C:
		case <-trigger.C():
			logf("watch: push received")
		}
	}
}

// watchRound brings the repository up to date (opening it the first
// time, and again after a failure) and returns the manifest revision and
// the environments to sync: --env, or every one of lieutenant.yaml there.
// Problems are logged, and give no environments this round; but until the
// command line was once checked against the repository (*checked), a
// mistake in it (a --repo, --rev or --branch that names nothing, an --env
// lieutenant.yaml lacks) is returned: each round would only log it again.
func watchRound(c *cli.Context, src *source, checked *bool, logf func(string, ...any)) (*source, *releases.Snapshot, []string, error) {
	var snap *releases.Snapshot
	var err error
	if src == nil {
		src, snap, err = openRepo(c)
	} else {
		snap, err = src.refresh(c)
	}
	if err != nil {
		if src != nil {
			src.Close()
		}
		if !*checked && exitCode(err) == exitInvalid {
			return nil, nil, nil, err
		}
		logf("watch: %v", err)
		return nil, nil, nil, nil
	}
	envs := c.StringSlice("env")
	if len(envs) > 0 && *checked {
		return src, snap, envs, nil
	}
	cfg, err := playbook.LoadConfig(snap)
	if err != nil {
		logf("watch: %s at %s: %v", playbook.ConfigFile, snap.ShortHash, strings.ReplaceAll(err.Error(), "\n", "; "))
		return src, snap, nil, nil
	}
	for _, env := range envs {
		if _, ok := cfg.Environments[env]; !ok {
			return src, nil, nil, &playbook.UnknownEnvironmentError{Name: env, Known: cfg.Order}
		}
	}
	*checked = true
	if len(envs) == 0 {
		envs = cfg.Order
	}
	return src, snap, envs, nil
}

func syncEnvironment(c *cli.Context, s streams, src *source, snap *releases.Snapshot, env string, historyRefs *sync.Map) error {
	d, err := src.deployment(snap, env)
	if err != nil {
		return err
	}
	historyRefs.Store("refs/heads/"+d.dep.HistoryBranch, true)
	err = d.sync(c, s)
	var runErr *playbook.RunError
	if errors.As(err, &runErr) {
		// The summary says host by host what happened.
		return fmt.Errorf("run %s", runErr.Outcome)
	}
	return err
}

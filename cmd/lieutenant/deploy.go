package main

import (
	"fmt"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// deployment is one environment read from one revision of the repository.
type deployment struct {
	repo *releases.Repo
	snap *releases.Snapshot
	dep  *playbook.Deployment
}

func openRepo(c *cli.Context) (*releases.Repo, *releases.Snapshot, error) {
	repo, err := releases.Open(c.String("repo"))
	if err != nil {
		return nil, nil, err
	}
	snap, err := repo.Snapshot(c.Context, c.String("rev"))
	if err != nil {
		repo.Close()
		return nil, nil, err
	}
	return repo, snap, nil
}

func openDeployment(c *cli.Context) (*deployment, error) {
	repo, snap, err := openRepo(c)
	if err != nil {
		return nil, err
	}
	dep, err := playbook.Load(snap, c.String("env"))
	if err != nil {
		repo.Close()
		return nil, err
	}
	return &deployment{repo: repo, snap: snap, dep: dep}, nil
}

func (d *deployment) Close() error { return d.repo.Close() }

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

// observe connects to every selected host and reads what it has installed
// and what the balancer says of it.
func (d *deployment) observe(c *cli.Context) (*transport.SSH, lb.Balancer, *playbook.Observed, error) {
	bal, err := d.balancer()
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := d.connector(c)
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

package fleet

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// The faults the fault-matrix tests inject, each undone by its pair. A
// host is named as in the inventory (web-1), or "git" for the Git server.

// Kill kills a host's container at once (docker kill), as a power cut
// does: no process gets to finish or clean up.
func (f *Fleet) Kill(ctx context.Context, host string) error {
	return f.docker(ctx, host, "kill")
}

// Start starts a stopped or killed host again and returns once it is
// ready (its entrypoint keeps the packages it had, as a reboot does).
func (f *Fleet) Start(ctx context.Context, host string) error {
	if err := f.docker(ctx, host, "start"); err != nil {
		return err
	}
	return f.back(ctx, host)
}

// Disconnect cuts a host off the fleet's network (docker network
// disconnect): its connections go silent, as in a network partition.
func (f *Fleet) Disconnect(ctx context.Context, host string) error {
	return f.docker(ctx, host, "network", "disconnect", f.network)
}

// Connect ends Disconnect and returns once the host answers SSH again at
// its old address.
func (f *Fleet) Connect(ctx context.Context, host string) error {
	if err := f.docker(ctx, host, "network", "connect", f.network); err != nil {
		return err
	}
	return f.back(ctx, host)
}

// docker runs `docker ARGS... CONTAINER` for a host.
func (f *Fleet) docker(ctx context.Context, host string, args ...string) error {
	h, err := f.host(host)
	if err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "docker", append(args, h.Container)...).CombinedOutput(); err != nil {
		return fmt.Errorf("docker %s %s: %w: %s", strings.Join(args, " "), h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// back waits until a host that was started or connected again is ready
// at the address the inventory, known_hosts and HAProxy know.
func (f *Fleet) back(ctx context.Context, host string) error {
	h, err := f.host(host)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", h.Container).Output()
	if err != nil {
		return fmt.Errorf("docker inspect %s: %w", h.Name, err)
	}
	if addr := strings.TrimSpace(string(out)); addr != h.Address {
		return fmt.Errorf("fleet %s: %s came back at %q, not at %s", f.Project, h.Name, addr, h.Address)
	}
	return f.waitHostReady(ctx, h, time.Now().Add(time.Minute))
}

// StopSSHD stops every sshd process of a host, the listener and the
// sessions: connections to the host break, its service keeps running.
func (f *Fleet) StopSSHD(ctx context.Context, host string) error {
	if _, err := f.Exec(ctx, host, "pkill", "-KILL", "-x", "sshd"); err != nil {
		return err
	}
	h, _ := f.host(host)
	return waitUntil(ctx, 10*time.Second, h.Name+"'s sshd to stop", func() bool { return !sshAnswers(h.Address) })
}

// StartSSHD starts sshd on a host again.
func (f *Fleet) StartSSHD(ctx context.Context, host string) error {
	if _, err := f.Exec(ctx, host, "/usr/sbin/sshd"); err != nil {
		return err
	}
	h, _ := f.host(host)
	return waitUntil(ctx, 10*time.Second, h.Name+"'s sshd to answer", func() bool { return sshAnswers(h.Address) })
}

// RestartLB replaces HAProxy's process by a new one that knows nothing of
// the old one's runtime state: servers drained or put in maintenance
// through the runtime API are in service again, as after a restart.
// Master-worker mode hands the listening sockets over, so the restart
// itself drops no request, and the runtime API stays at LBAPI.
func (f *Fleet) RestartLB(ctx context.Context) error {
	return f.replaceLB(ctx, "rm -f /var/lib/haproxy/server-state && kill -USR2 1")
}

// SetAPIOpen closes HAProxy's runtime API at LBAPI (false) or opens it
// again (true): HAProxy is reloaded without or with it, keeping the
// servers' states.
func (f *Fleet) SetAPIOpen(ctx context.Context, open bool) error {
	f.apiClosed = !open
	if err := f.writeHAProxyConfig(); err != nil {
		return err
	}
	if err := f.replaceLB(ctx, "haproxy-reload"); err != nil {
		return err
	}
	bal, err := lb.NewHAProxy(f.LBAPI, f.Backend)
	if err != nil {
		return fmt.Errorf("fleet %s: %w", f.Project, err)
	}
	return waitUntil(ctx, 10*time.Second, fmt.Sprintf("HAProxy's runtime API open=%t", open), func() bool {
		_, err := bal.Servers(ctx)
		return (err == nil) == open
	})
}

// replaceLB runs script in the load balancer's container, which makes
// HAProxy's master start a new worker, and waits for the new worker.
func (f *Fleet) replaceLB(ctx context.Context, script string) error {
	before, err := f.lbPID(ctx)
	if err != nil {
		return err
	}
	if out, err := f.LB(ctx, "sh", "-c", script); err != nil {
		return fmt.Errorf("fleet %s: %s: %w: %s", f.Project, script, err, out)
	}
	return waitUntil(ctx, 10*time.Second, "a new HAProxy worker", func() bool {
		pid, err := f.lbPID(ctx)
		return err == nil && pid != before
	})
}

// lbPID is the HAProxy worker's process id, as its admin socket says.
func (f *Fleet) lbPID(ctx context.Context) (string, error) {
	out, err := f.LB(ctx, "sh", "-c", `echo "show info" | socat stdio unix:/run/haproxy/admin.sock | grep ^Pid:`)
	if err != nil || !strings.HasPrefix(out, "Pid:") {
		return "", fmt.Errorf("fleet %s: HAProxy's pid: %v: %q", f.Project, err, out)
	}
	return strings.TrimSpace(out), nil
}

// RejectPushes makes the Git server refuse every push with message, as a
// pre-receive hook of a frozen or protected repository does; "" takes the
// hook away.
func (f *Fleet) RejectPushes(ctx context.Context, message string) error {
	const hook = "/srv/git/deploy.git/hooks/pre-receive"
	script := "rm -f " + hook
	if message != "" {
		script = `printf '#!/bin/sh\necho %s >&2\nexit 1\n' "$1" > ` + hook + " && chmod 755 " + hook
	}
	_, err := f.Exec(ctx, "git", "sh", "-c", script, "sh", transport.Quote(message))
	return err
}

// GitFsck runs `git fsck --strict --unreachable` in the Git server's
// deploy repository: an error if it is damaged, and the objects no branch
// reaches.
func (f *Fleet) GitFsck(ctx context.Context) (string, error) {
	return f.Exec(ctx, "git", "git", "-c", "safe.directory=*", "-C", "/srv/git/deploy.git",
		"fsck", "--strict", "--unreachable", "--no-reflogs", "--no-progress")
}

// dnfCache is where dnf downloads packages: a small tmpfs of its own on
// every app host (docker-compose.yml).
const dnfCache = "/var/cache/dnf"

// FillDisk fills a host's dnf cache disk to its last byte, so that the
// next install finds no space to download into.
func (f *Fleet) FillDisk(ctx context.Context, host string) error {
	// dd stops with "No space left on device", which is the point.
	script := fmt.Sprintf("dd if=/dev/zero of=%s/fleet-fill bs=64k 2>/dev/null; df --output=avail -B1 %s | tail -1", dnfCache, dnfCache)
	out, err := f.Exec(ctx, host, "sh", "-c", script)
	if err != nil {
		return err
	}
	if avail := strings.TrimSpace(out); avail != "0" {
		return fmt.Errorf("fleet %s: %s's %s still has %s bytes free", f.Project, host, dnfCache, avail)
	}
	return nil
}

// FreeDisk undoes FillDisk.
func (f *Fleet) FreeDisk(ctx context.Context, host string) error {
	_, err := f.Exec(ctx, host, "rm", "-f", dnfCache+"/fleet-fill")
	return err
}

// waitUntil polls cond until it holds, for at most timeout.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s", timeout, what)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

package lb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Admin is the state an operator (or lieutenant) put a server in.
type Admin string

const (
	AdminReady Admin = "ready" // takes new traffic
	AdminDrain Admin = "drain" // finishes current sessions, takes no new ones
	AdminMaint Admin = "maint" // out of service
)

// Health is what the balancer's own health check says about a server.
type Health string

const (
	HealthUp      Health = "up"
	HealthDown    Health = "down"
	HealthNoCheck Health = "no-check" // the balancer does not check this server
)

// Server is one member of a backend as the balancer sees it now.
type Server struct {
	Name     string
	Admin    Admin
	Health   Health
	Sessions int // current sessions
	Queued   int // requests waiting for this server
}

// Serving reports whether the server takes new traffic now.
func (s Server) Serving() bool { return s.Admin == AdminReady && s.Health != HealthDown }

// Defaults used when an option's Timeout is zero or negative.
const (
	DefaultDrainTimeout  = 60 * time.Second
	DefaultEnableTimeout = 30 * time.Second
)

// DrainOptions bound a drain.
type DrainOptions struct {
	// Timeout is how long to wait for sessions and queue to reach zero;
	// zero means DefaultDrainTimeout.
	Timeout time.Duration
	// KillSessions shuts the remaining sessions down when Timeout expires
	// instead of failing the drain.
	KillSessions bool
}

// EnableOptions bound an enable.
type EnableOptions struct {
	// Timeout is how long to wait for the balancer's health check to report
	// the server up; zero means DefaultEnableTimeout.
	Timeout time.Duration
	// Verified says that the caller checked the server's health itself,
	// after the server's last change and just before this call: the
	// balancer may then put it in service at once, without waiting for a
	// check of its own made after the enable. Its own checks go on from
	// there as for any server in service, and take the server out at the
	// first failure.
	Verified bool
}

// EffectiveTimeout is Timeout with the default applied, so that every adapter
// (and every fake) reads a zero Timeout the same way.
func (o DrainOptions) EffectiveTimeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultDrainTimeout
	}
	return o.Timeout
}

// EffectiveTimeout is Timeout with the default applied.
func (o EnableOptions) EffectiveTimeout() time.Duration {
	if o.Timeout <= 0 {
		return DefaultEnableTimeout
	}
	return o.Timeout
}

var (
	// ErrUnknownServer: the backend has no server of that name. Permanent.
	ErrUnknownServer = errors.New("no such server in the backend")
	// ErrUnknownBackend: the balancer has no backend (pool) of that name; a
	// configuration error. Permanent.
	ErrUnknownBackend = errors.New("no such backend")
	// ErrDrainTimeout: sessions did not reach zero in time. The server was
	// put back in the admin state it had before the drain.
	ErrDrainTimeout = errors.New("sessions did not drain in time")
	// ErrBelowMinimum: the drain was refused because it would leave fewer
	// servers in service than the configured minimum. Nothing was changed.
	ErrBelowMinimum = errors.New("drain refused: too few servers would stay in service")
	// ErrNotHealthy: the server did not pass the balancer's health check in
	// time after being enabled; it was put back in maintenance.
	ErrNotHealthy = errors.New("server did not become healthy")
)

// Balancer controls the servers of one backend (pool).
//
// Contract, shared by every adapter and checked by lbtest.RunConformance:
//   - Servers returns every server of the backend with its current state.
//   - Drain stops new traffic to the server, blocks until it has no sessions
//     and nothing queued, then puts it in maintenance. While it waits the
//     server is not Serving. Draining a server that is already in maintenance
//     returns nil at once. On timeout without KillSessions it restores the
//     previous admin state and returns an error wrapping ErrDrainTimeout; with
//     KillSessions it ends the remaining sessions and puts the server in
//     maintenance.
//   - Enable returns the server to service and blocks until the balancer's
//     health check reports it up (or it has no check). The check that counts
//     is one made after the enable: a stale "up" from before the server went
//     into maintenance is not enough; one passing check is. If that does not
//     happen within the timeout, the server is put back in maintenance and
//     the error wraps ErrNotHealthy: a server that fails its check never
//     stays enabled. With EnableOptions.Verified the caller's own check
//     stands for that first check, and the server may take traffic at once.
//     Enabling a server that is already ready and up returns nil at once.
//   - An unknown server name is an error wrapping ErrUnknownServer, and
//     nothing is changed.
//   - Every method honours ctx and returns an error wrapping ctx.Err() when
//     ctx ends first. A ctx that has already ended changes nothing. When ctx
//     ends while Drain waits, the previous admin state is restored (as on
//     timeout); when it ends while Enable waits, the server is put back in
//     maintenance (as on failure). Adapters send that last command with a
//     short grace period of their own, since ctx can no longer carry it.
//   - Errors name the operation and the server: "drain web1: ...".
//   - A drained server stays out of service as long as the balancer
//     remembers it: a restart, or a reload without a server-state file,
//     puts it back. Callers that must not disrupt a server in service
//     confirm it is still out first (KeepOut).
//   - A Balancer is safe for concurrent use by calls for different servers.
//     Concurrent Drain and Enable of the same server race, as they would on
//     the balancer itself; callers serialise per server.
type Balancer interface {
	Servers(ctx context.Context) ([]Server, error)
	Drain(ctx context.Context, server string, opts DrainOptions) error
	Enable(ctx context.Context, server string, opts EnableOptions) error
}

// Find returns the server called name from servers.
func Find(servers []Server, name string) (Server, bool) {
	for _, s := range servers {
		if s.Name == name {
			return s, true
		}
	}
	return Server{}, false
}

// names lists the server names for error messages ("web1, web2").
func names(servers []Server) string {
	n := make([]string, len(servers))
	for i, s := range servers {
		n[i] = s.Name
	}
	if len(n) == 0 {
		return "(none)"
	}
	return strings.Join(n, ", ")
}

// unknownServer is the one way every adapter reports a missing server, so
// that the message always lists what the backend does have.
func unknownServer(servers []Server) error {
	return fmt.Errorf("backend has %s: %w", names(servers), ErrUnknownServer)
}

// Package lb takes servers out of a load balancer and puts them back: the
// Balancer seam between a rollout and whatever spreads the traffic.
//
// It owns the adapters (HAProxy's runtime API, user programs for balancers
// without an adapter, None for fleets without a balancer), the WithMinimum
// guard, and the contract they share, which lbtest.RunConformance checks
// against every adapter and against the fake in testenv, bare and wrapped in
// WithMinimum.
//
// Invariants:
//   - A drain only returns nil once the server has no session and nothing
//     queued and is in maintenance; a server that was not drained in time is
//     put back the way it was (ErrDrainTimeout), never left half drained.
//   - An enable only returns nil once the balancer's own health check, made
//     after the enable, passes, or (EnableOptions.Verified) the caller's own
//     check made just before stands for it; a server that does not pass is
//     put back in maintenance (ErrNotHealthy) and never stays in service.
//   - WithMinimum never lets a drain leave fewer than its minimum of servers
//     serving, also when drains run in parallel; each decision is made on a
//     view of the backend read after it was asked for (drains asked for
//     together share one read).
//   - No value from an inventory reaches a shell: server names go to HAProxy
//     only after a check against HAProxy's own name grammar (so no ';' can add
//     a command), and to user programs as one argv element each.
//   - Errors name the operation and the server ("drain web/web1: ...") and
//     wrap the sentinel errors of this package or ctx.Err(), for errors.Is.
//   - Adapters keep no connection between calls and the package has no
//     mutable package-level state: what a call reports is what the balancer
//     said during that call. The HAProxy adapter caches only where HAProxy
//     keeps each server (its ids, looked up again when one is not found), so
//     a drain or an enable reads its own server's row; it opens at most a
//     few runtime API connections at once, as HAProxy serves 10.
package lb

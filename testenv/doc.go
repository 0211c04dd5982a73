// Package testenv holds what the tests, benchmarks and the demo need to stand
// up real parts and fakes: real HAProxy, OpenSSH and Git repositories started
// on loopback, and in-process fakes for the transport.Runner and lb.Balancer
// seams.
//
// Invariants:
//   - Everything a helper starts is stopped and removed by t.Cleanup, also
//     when the test fails.
//   - Helpers never touch processes, files or containers they did not create.
//   - Every fake passes the same conformance suites as the real adapter it
//     stands in for: FakeBalancer lbtest.RunConformance; FakeFleet
//     transporttest.RunConformance and RunConnectorConformance.
//   - SSHFleet drives the real binary over real SSH; only rpm, dnf and
//     systemctl are shell stand-ins (testenv/shims), keeping each host's
//     state in its own directory.
//   - A helper whose program is missing skips the test outside CI and fails it
//     under CI (CI=true).
package testenv

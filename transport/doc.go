// Package transport runs commands on hosts. It owns the Runner seam (see
// Runner for its contract) and two adapters: SSH, over golang.org/x/crypto/ssh,
// for the fleet, and Local, for the machine lieutenant runs on.
// transporttest.RunConformance checks the contract against every Runner,
// real or fake, and transporttest.RunConnectorConformance that of Connector
// against every Connector.
//
// Invariants:
//   - Host keys are always verified against known_hosts. An unknown key and
//     a changed key are permanent errors (ErrHostKeyUnknown,
//     ErrHostKeyChanged) that say how to fix them; no option, flag or
//     callback accepts an unverified or changed key, and lieutenant never
//     writes known_hosts itself.
//   - Every argument reaches the remote program as exactly one argument:
//     adapters that pass through a shell quote each one with Quote, and
//     those that do not (Local) use no shell at all. The remote login shell
//     must be a POSIX shell (sh, bash, dash, ksh or zsh).
//   - One connection per host: a Connector dials a host once, however many
//     Runners, commands and concurrent Connect calls there are, and dials
//     again only after that connection was lost. Each command is one SSH
//     session on it. At most MaxHandshakes connections (64 by default) are
//     being opened at once, whatever the number of hosts.
//   - Nothing waits without a bound: the TCP dial has DialTimeout, the SSH
//     handshake HandshakeTimeout, and every command its ctx. When ctx ends,
//     Run returns at once with an error wrapping ctx.Err(), and the
//     command's process group is sent SIGKILL in the background (through
//     sudo when the command ran with it). What the command started in a
//     process group of its own may outlive it, which is why the contract
//     calls the effect of a stopped command unknown.
//   - A command's output costs bounded memory: a Result keeps the last
//     DefaultOutputTail bytes of each stream, or, for output read whole
//     (Command.MaxOutput), that much at most, more being an error.
//   - lieutenant's secrets (SecretEnv) stay in lieutenant: Local's commands
//     run without those variables, and their values are replaced by
//     Redacted in all captured output (Tail), before it is kept.
//   - Connectors hold no package-level state; each is safe for concurrent
//     use and releases everything on Close.
package transport

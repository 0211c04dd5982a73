// Package record owns the run record: what one run of lieutenant did, host
// by host and step by step, as kept on the history branch. It holds the
// record's types and statuses, the constructors, every change a run makes
// to it, its files and their parsing and validation. playbook's runner
// changes a record only through these methods and releases stores and
// reads its files; nothing else sets its fields.
//
// Invariants:
//   - A record read back passed validation: known outcome and statuses,
//     batches numbered 1..n in order, every planned host in exactly one
//     batch and listed once under a plain file name, every host in no
//     batch up to date, a wait only at a gate between two batches. Every
//     change keeps it so, and its files parse back to the same record.
//   - A host's file, once written, is never older than the host's entry in
//     the run's file; readers prefer it. The run's file is written at the
//     run's decisions, host files as hosts make progress (see Files).
//   - A host is in flight for a resume when its batch was declared in
//     flight and it did not finish, or when it failed only because the run
//     was interrupted: a resume runs all its steps again and never repeats a
//     finished host.
//   - "refused" means that no host was changed: a refusal after an earlier
//     process changed hosts is recorded as interrupted, and stays resumable.
package record

// Package playbook owns what a rollout is made of and how it runs: the
// formats (lieutenant.yaml, release manifests, inventories, playbooks) with
// their strict validation, the pure planner that cuts hosts into batches, the
// step vocabulary, and the Runner that executes a plan.
//
// The flow is Load (files at one Git revision) -> Inspect (read installed
// versions over SSH) -> MakePlan (pure) -> NewRecord and Plan.Declare (the
// caller writes that first record with the lock) -> Runner.Run. A run whose
// process died is continued from its record alone: record.Run.Resume,
// ResumePlan (the record's batches without their finished hosts, as
// observed now) and Runner.Run again. The record itself is package record's. The Runner reaches
// hosts only through transport.Connector and the load balancer only through
// lb.Balancer, so tests can put fakes at those seams and the docker-compose
// fleet only adds hosts.
//
// Invariants a run keeps:
//   - Validation reports every problem of every file at once, each with
//     file, line and field; nothing runs on invalid input.
//   - Package names and versions match RPM's grammar before they reach any
//     command, and template values are shell-quoted in shell commands.
//   - Nothing changes on any host until every host is reachable with a
//     verified host key, the balancer knows every server, the backend can spare
//     the batch, and the preflight steps passed (else *RefusedError).
//   - A host whose change or verification failed is never left in service;
//     a host that was taken out and not changed is always put back.
//   - After a failure beyond strategy.max_failures no further host starts;
//     hosts already in flight finish their steps.
//   - Before any host of a batch is touched, the batch's intent (its hosts
//     in flight) is durable in the Recorder, with the batch before it and
//     its gate; a gate's wait for an approval is durable before the wait,
//     and the end of the run is written last. When one of these writes
//     fails, nothing further starts and the run stops. The hosts' steps are
//     written in the background, one write at a time, at most one every
//     ProgressInterval: no host waits for the Recorder. A background write
//     refused because another process owns the environment stops every
//     host before its next step.
//   - A resumed run never runs a host the record shows finished again, nor
//     a gate it shows passed; hosts in flight (or failed only because the
//     run was interrupted) run all their steps again.
//   - A wait for approval ends at the gate's approval_timeout as aborted,
//     with the hosts done so far in service.
package playbook

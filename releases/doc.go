// Package releases is lieutenant's only door to Git. It reads the deploy
// configuration (lieutenant.yaml, manifests, inventories, playbooks) from a
// commit, and it writes onto a history branch (DefaultHistoryBranch,
// "lieutenant/runs") of the same repository: each run's record as
// package record lays it out (runs/<env>/<id>.yaml, and one file per host
// under runs/<env>/<id>/), each environment's lock (locks/<env>.yaml) and
// the decisions on runs' gates (approvals/<env>/<id>.yaml). With a remote
// (Repo.UseRemote: SSH with verified host keys, HTTPS with a token, or a
// path), branches are fetched from it and every history write is pushed to
// it.
//
// Invariants:
//
//   - Reads happen at a commit, never in the work tree. A Snapshot is an
//     fs.FS over one commit's tree: uncommitted edits, untracked files and
//     the index are invisible to it, so what is deployed is exactly what a
//     commit hash names.
//
//   - History writes never touch the user's work tree, index or HEAD. A
//     write (Commit: any number of files in one commit, each directory's
//     tree rewritten once) builds blob, trees and commit objects directly in
//     the object database
//     and then moves refs/heads/<branch> only; the branch never needs to be
//     checked out, and a Put refuses to move it while some work tree has it
//     checked out (a commit made there would drop the new records).
//
//   - A history write is a compare-and-swap of the branch ref: it succeeds
//     only if the branch still points at the commit the new one was built
//     on. When another writer (a goroutine, another lieutenant process, or
//     the git CLI) moved the branch first, the change is rebuilt on the new
//     tip and tried again, so no writer's commit is ever lost and the
//     branch history stays linear.
//
//   - The compare-and-swap uses git's own lockfile protocol
//     (refs/heads/<branch>.lock created with O_EXCL, then renamed over the
//     ref), so it excludes git CLI writers and `git pack-refs` as well as
//     other lieutenant processes. go-git's CheckAndSetReference is not used:
//     it locks with flock and rewrites the ref file in place, which the git
//     CLI does not see (go-git issues #2399, entireio/cli#2204).
//
//   - Every object written is what git itself would write (canonically
//     sorted trees, modes 100644/40000, well-formed identities), so
//     `git fsck --strict` stays clean and `git log`/`git show` read the
//     history branch.
//
//   - Revisions resolve as `git rev-parse` resolves them (a ref before a
//     hash prefix, no ambiguous or too-short prefixes); syntax go-git would
//     silently ignore (main@{yesterday}, main:path) is an error.
//
//   - A Repo is safe for concurrent use. go-git's storage is not (go-git
//     #48, #773), so a Repo serialises its own access with a mutex; other
//     processes are kept out by the ref lock above.
//
//   - With a remote, the remote's branch is the one that counts: writes build
//     on its tracking ref and push with the old value required, so the
//     remote's receive-pack makes the push the compare-and-swap, and the
//     same rebuild-on-the-new-tip loop runs when it refuses. A decision that
//     depends on the tip (nothing to change, or "locked") is made again on
//     a fresh fetch before it is believed. Every conversation with the
//     remote is bounded by a timeout.
//
//   - A lock names its holder's process (a token). Only that process can
//     unlock it, a resume takes it over explicitly, and a record write
//     guarded by it (a Recorder with a lock) fails once it is gone, so at
//     most one process changes an environment's hosts. A run's lock and its
//     first record are one commit (BeginRun), refused when a run of the
//     environment was recorded since the hosts were inspected; its last
//     record and the unlock are one commit too.
//
//   - Over SSH and a path, lieutenant speaks Git's protocol itself (wire.go):
//     one SSH connection serves every conversation of a Repo's life, a push
//     sends the objects its commits add to the remote's tip, and a fetch
//     stores a whole (not thin) pack. HTTPS goes through go-git.
//
//   - A process killed mid-write leaves no file that stops the next one: ref
//     locks are created with their content in one step, and ref locks older
//     than a few seconds and empty remote-tracking refs are cleared when a
//     repository is opened (lieutenant processes decide this under one
//     flock per repository).
//
//   - A stray file never blocks an environment: under runs/<env>/ only files
//     named by a run id (and the .yaml host files in their run's directory)
//     are read; anything else is skipped with a warning (WithWarnings). A
//     run's file that does not validate is an error naming its path.
//
//   - Secrets never reach the repository: a token is only ever in memory,
//     and a URL with a password is refused.
package releases

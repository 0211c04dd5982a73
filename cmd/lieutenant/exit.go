package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
	"github.com/lieutenant-deploy/lieutenant/releases"
	"github.com/lieutenant-deploy/lieutenant/transport"
)

// Exit codes, documented in `lieutenant --help` and README.md. Scripts and
// CI rely on them: only add new ones.
const (
	exitOK          = 0
	exitError       = 1 // anything not below (Git errors, bugs)
	exitInvalid     = 2 // bad command line or invalid files; no host was contacted
	exitRefused     = 3 // stopped before changing any host
	exitFailed      = 4 // the run changed hosts and did not succeed
	exitInterrupted = 5 // stopped by a signal
	exitLocked      = 6 // another run holds the environment's lock; nothing was touched
)

const exitCodesHelp = `EXIT CODES:
   0  success (or nothing to do)
   1  error: Git, I/O or an unexpected failure
   2  invalid input: bad flags, a --repo, --rev, --branch or --env that names nothing,
      a remote URL that would leak a secret, or invalid files; no host was contacted
   3  refused: stopped before changing any host (unreachable host, unknown host key,
      unreachable balancer, not enough capacity)
   4  failed: hosts were changed and the run did not succeed; see the summary
   5  interrupted: stopped by a signal; hosts in flight were repaired in the balancer
   6  locked: another run holds the environment; nothing was touched`

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// exitCode maps an error to the process's exit status; the one place that
// does.
func exitCode(err error) int {
	var (
		usage   *usageError
		invalid *playbook.ValidationError
		unknown *playbook.UnknownEnvironmentError
		refused *playbook.RefusedError
		runErr  *playbook.RunError
		locked  *releases.LockedError
		badURL  *releases.RemoteURLError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &locked):
		return exitLocked
	case errors.As(err, &usage), errors.As(err, &invalid), errors.As(err, &unknown), errors.As(err, &badURL):
		return exitInvalid
	case errors.As(err, &refused):
		return exitRefused
	case errors.As(err, &runErr):
		if runErr.Outcome == record.OutcomeInterrupted {
			return exitInterrupted
		}
		return exitFailed
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}

// describeError renders an error for a person: what went wrong and, where
// lieutenant knows, what to do about it. It is printed through an
// operatorStream, which hides secrets' values.
func describeError(err error) string {
	var (
		invalid *playbook.ValidationError
		refused *playbook.RefusedError
		runErr  *playbook.RunError
		hostKey *transport.HostKeyError
	)
	switch {
	case errors.As(err, &invalid):
		n := len(invalid.Problems)
		plural := "s"
		if n == 1 {
			plural = ""
		}
		return fmt.Sprintf("%s\nlieutenant: %d problem%s found; fix them, commit, and run `lieutenant validate` again", err, n, plural)
	case errors.As(err, &refused):
		msg := "lieutenant: " + err.Error()
		if errors.As(err, &hostKey) || strings.Contains(err.Error(), "host key") {
			msg += "\nlieutenant: host keys are never accepted blindly; verify a key out of band before adding it to known_hosts"
		}
		return msg
	case errors.As(err, &runErr):
		// The summary printed before this says host by host what happened.
		return "lieutenant: " + err.Error()
	case errors.Is(err, context.Canceled):
		return "lieutenant: interrupted"
	}
	return "lieutenant: " + err.Error()
}

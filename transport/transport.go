package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Host is a machine commands run on.
type Host struct {
	Name    string // inventory name; every error about the host starts with it
	Address string // DNS name or IP address
	Port    int    // 0 means 22
	User    string // "" means the connector's default user
}

// Command is one program to run on a host, given as an argument vector.
// Every element of Args reaches the remote program as exactly one argument,
// whatever characters it holds: adapters that pass through a shell quote each
// element. A shell script is run as Args{"sh", "-c", script}.
type Command struct {
	Args []string
	// Sudo runs the command as root through `sudo -n --`, which fails at once
	// instead of prompting when a password would be needed.
	Sudo bool
	// MaxOutput, when above 0, is for output that is read whole (parsed):
	// Result.Stdout holds all of it, and a command that writes more than
	// MaxOutput bytes to stdout is stopped and fails with an error wrapping
	// ErrOutputLimit. 0 keeps the last DefaultOutputTail bytes.
	MaxOutput int
}

// String is the command as a reader would type it, for logs and errors. It
// is also the command as a shell-based adapter (SSH) hands it to the remote
// shell.
func (c Command) String() string {
	s := make([]string, 0, len(c.Args)+3)
	if c.Sudo {
		s = append(s, "sudo", "-n", "--")
	}
	for i, a := range c.Args {
		if i == 0 && !c.Sudo {
			s = append(s, quoteCommandName(a))
			continue
		}
		s = append(s, Quote(a))
	}
	return strings.Join(s, " ")
}

// check rejects commands no adapter can run as given: an empty argument
// vector, and NUL bytes, which cannot travel in an argv or a shell word and
// would silently cut the argument short.
func (c Command) check() error {
	if len(c.Args) == 0 {
		return errors.New("empty command")
	}
	for i, a := range c.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argument %d holds a NUL byte, which no program can receive", i)
		}
	}
	return nil
}

// Result is what a finished command left behind.
type Result struct {
	// Stdout and Stderr are the last DefaultOutputTail bytes of each stream
	// (all of stdout up to Command.MaxOutput when that is set), with the
	// value of every secret the adapter knows replaced by Redacted.
	Stdout []byte
	Stderr []byte
	// StdoutBytes and StderrBytes are the sizes of the whole streams (after
	// that replacement): more than len(Stdout) when its start was dropped.
	// Runners that keep everything may leave them 0.
	StdoutBytes, StderrBytes int64
	// ExitStatus is the command's exit status (128+N when signal N ended
	// it), or -1 when its end was not seen: it could not start, ctx ended
	// first, or the connection was lost.
	ExitStatus int
	Duration   time.Duration
}

// ExitError reports a command that ran and exited with a non-zero status, or
// was ended by a signal.
type ExitError struct {
	// Status is the exit status; for a command ended by a signal it is 128
	// plus the signal number, as a POSIX shell reports it in $?.
	Status int
	// Signal is the name of the signal that ended the command without the
	// SIG prefix ("KILL", "TERM"), or "" when it exited by itself.
	Signal string
	Stderr string // the last lines of stderr, for the error message
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("exited with status %d", e.Status)
	if e.Signal != "" {
		msg = "killed by signal " + e.Signal
	}
	if e.Stderr == "" {
		return msg
	}
	return msg + ": " + e.Stderr
}

// Errors a Connector returns, to be tested with errors.Is. The first three
// are permanent: retrying cannot fix them, a person has to (see IsPermanent).
var (
	// ErrHostKeyUnknown: the host's key is in no known_hosts file checked.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrHostKeyChanged: known_hosts holds a different key for the host,
	// which may be a man-in-the-middle attack. No option overrides it.
	ErrHostKeyChanged = errors.New("HOST KEY CHANGED")
	// ErrAuthFailed: the host refused every credential offered.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrClosed: the Connector was closed; its Runners are unusable.
	ErrClosed = errors.New("connector closed")
)

// IsPermanent reports whether err is one that retrying cannot fix: an
// unknown or changed host key, or refused authentication.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrHostKeyUnknown) || errors.Is(err, ErrHostKeyChanged) ||
		errors.Is(err, ErrAuthFailed)
}

// Runner runs commands on one host.
//
// Contract, shared by every adapter and checked by transporttest.RunConformance:
//   - Run blocks until the command exits, ctx is done, or the connection fails.
//   - A command that exited non-zero returns its Result (output and status) and
//     an error wrapping *ExitError; a zero exit returns a nil error.
//   - When ctx is done first, the command is stopped and Run returns promptly
//     with an error wrapping ctx.Err(); the command's effect is then unknown.
//   - Any other error means the command could not be run or its end was not
//     seen (connection lost); its effect is unknown.
//   - The Result keeps a bounded tail of each output stream (see Result), so
//     a command's output costs bounded memory however much it prints; with
//     Command.MaxOutput set, more stdout than that is an error wrapping
//     ErrOutputLimit.
//   - A Runner is safe for concurrent use.
type Runner interface {
	Run(ctx context.Context, cmd Command) (Result, error)
}

// Connector hands out Runners for hosts: a run opens at most one connection
// to each host, however many commands it sends.
//
// Contract, shared by every adapter and checked by
// transporttest.RunConnectorConformance:
//   - Connect returns a working Runner for h, connecting first when h has no
//     live connection. Calls for the same host, in sequence or concurrently,
//     share one connection; adapters that count dials (a Dials() int method)
//     count one per host.
//   - Connect fails with a permanent error (IsPermanent) when the host's key
//     is unknown or changed or authentication is refused. Errors name the
//     host.
//   - Connect with a ctx that has already ended fails with an error wrapping
//     ctx.Err() and opens nothing, even for a host already connected.
//   - Close closes every connection the Connector opened; calling it again
//     returns nil. Afterwards Connect, and Run on every Runner the Connector
//     handed out, fail at once with an error wrapping ErrClosed and start
//     nothing. What happens to a command running at the moment of Close is
//     the adapter's (SSH cuts it, so its effect is unknown; Local lets it
//     finish).
//   - A Connector is safe for concurrent use.
type Connector interface {
	Connect(ctx context.Context, h Host) (Runner, error)
	Close() error
}

// Quote returns s quoted for a POSIX shell so that the shell passes it on as
// one word, unchanged.
func Quote(s string) string {
	if s != "" && strings.IndexFunc(s, needsQuote) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// needsQuote reports whether r is special to some shell. '=' is: a first word
// holding it is an assignment, not a command, and zsh expands a leading '='.
func needsQuote(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return false
	}
	return !strings.ContainsRune("-_./:@%+,", r)
}

// quoteCommandName quotes the word in command position, where a shell also
// treats reserved words specially: unquoted `time ls` times ls in bash
// instead of running the program named time.
func quoteCommandName(s string) string {
	if q := Quote(s); q != s || !isReservedWord(s) {
		return q
	}
	return "'" + s + "'"
}

// isReservedWord reports whether s is a reserved word of sh, bash, ksh or zsh
// made only of characters Quote leaves bare.
func isReservedWord(s string) bool {
	switch s {
	case "case", "coproc", "do", "done", "elif", "else", "end", "esac", "fi", "for",
		"foreach", "function", "if", "in", "nocorrect", "repeat", "select", "then",
		"time", "until", "while":
		return true
	}
	return false
}

// brief is cmd as error messages show it: long package lists are cut.
func brief(cmd Command) string {
	const limit = 120
	s := cmd.String()
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit], "") + "..."
}

// stderrTail is the end of a command's stderr for an error message: its last
// three non-empty lines, at most 512 bytes.
func stderrTail(stderr []byte) string {
	const maxLines, maxBytes = 3, 512
	lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
	kept := make([]string, 0, maxLines)
	for i := len(lines) - 1; i >= 0 && len(kept) < maxLines; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			kept = append(kept, l)
		}
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	s := strings.Join(kept, "\n")
	if len(s) > maxBytes {
		s = "..." + strings.ToValidUTF8(s[len(s)-maxBytes:], "")
	}
	return s
}

package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// DefaultOutputTail is how much of each output stream a Result keeps: the
// end, where a command says why it failed. A host that prints gigabytes
// costs lieutenant this much memory, no more.
const DefaultOutputTail = 64 << 10

// ErrOutputLimit is wrapped by the error of a command that wrote more than
// its Command.MaxOutput to stdout.
var ErrOutputLimit = errors.New("output too long")

// Redacted is what the value of a secret becomes in captured output.
const Redacted = "REDACTED"

// minSecretLen is the shortest value treated as a secret: shorter ones would
// redact ordinary words.
const minSecretLen = 4

// SecretEnv lists the environment variables that hold lieutenant's own
// secrets. No program lieutenant starts gets them, and their values never
// reach a record or a terminal through a command's output.
func SecretEnv() []string {
	return []string{"LIEUTENANT_GIT_TOKEN", "LIEUTENANT_GITLAB_TOKEN", "LIEUTENANT_WEBHOOK_SECRET"}
}

// Secrets are values that captured output must not keep.
type Secrets struct {
	values [][]byte // distinct, at least minSecretLen bytes each
}

// NewSecrets returns the secrets among values: empty and very short values
// are left out.
func NewSecrets(values ...string) Secrets {
	var s Secrets
	for _, v := range values {
		if len(v) >= minSecretLen && !slices.ContainsFunc(s.values, func(w []byte) bool { return string(w) == v }) {
			s.values = append(s.values, []byte(v))
		}
	}
	return s
}

// SecretsFromEnv reads the values of SecretEnv from the environment now.
func SecretsFromEnv() Secrets {
	names := SecretEnv()
	values := make([]string, len(names))
	for i, n := range names {
		values[i] = os.Getenv(n)
	}
	return NewSecrets(values...)
}

// ScrubEnv returns env ("NAME=value" entries, as os.Environ gives them)
// without the variables of SecretEnv, for a program lieutenant starts.
func ScrubEnv(env []string) []string {
	secret := SecretEnv()
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(secret, name) {
			out = append(out, kv)
		}
	}
	return out
}

// Tail is an io.Writer that keeps the last bytes written to it, with the
// value of every secret replaced by Redacted before anything is kept, and
// counts what it was given. It is safe for concurrent use: a Run that
// returns early reads it while the command may still write.
type Tail struct {
	mu       sync.Mutex
	max      int
	secrets  Secrets
	buf      []byte // the kept bytes are its last max
	pending  []byte // held back: may be the start of a secret
	size     int64  // bytes passed to buf, after redaction
	written  int64  // bytes given to Write
	limit    int64  // > 0: more than this is an overflow
	overflow func() // called once, on overflow
}

// NewTail returns a Tail that keeps the last size bytes.
func NewTail(size int, secrets Secrets) *Tail {
	return &Tail{max: max(size, 0), secrets: secrets}
}

// NewLimit returns a Tail for output that is read whole: it keeps up to
// limit bytes (limit > 0), and once more were written Over reports true and
// stop, when not nil, is called (once), to stop the writer.
func NewLimit(limit int, secrets Secrets, stop func()) *Tail {
	return &Tail{max: limit, secrets: secrets, limit: int64(limit), overflow: stop}
}

// Write takes p whole, and never fails: a command's output is read to its
// end, whatever is kept of it.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.written += int64(len(p))
	if t.limit > 0 && t.written > t.limit && t.written-int64(len(p)) <= t.limit && t.overflow != nil {
		t.overflow()
	}
	if len(t.secrets.values) == 0 {
		t.keep(p)
		return len(p), nil
	}
	t.pending = append(t.pending, p...)
	rest := t.secrets.redact(t.pending, false, t.keep)
	t.pending = t.pending[:copy(t.pending, rest)]
	return len(p), nil
}

// Redact returns text with every secret replaced by Redacted: for a
// message lieutenant prints itself.
func (s Secrets) Redact(text string) string {
	var b strings.Builder
	s.redact([]byte(text), true, func(p []byte) { b.Write(p) })
	return b.String()
}

// redact passes b on to emit with every secret replaced by Redacted, the
// leftmost first and the longest of those starting at one place, and
// returns the end of b it holds back: the start of a secret that more
// output may complete, or that may complete a longer one. final (the output
// has ended) holds nothing back.
func (s Secrets) redact(b []byte, final bool, emit func([]byte)) []byte {
	next := make([]int, len(s.values)) // where each secret occurs next in b, -1: nowhere
	for i, v := range s.values {
		next[i] = bytes.Index(b, v)
	}
	for {
		at, n := -1, 0
		for i, v := range s.values {
			if j := next[i]; j >= 0 && (at < 0 || j < at || j == at && len(v) > n) {
				at, n = j, len(v)
			}
		}
		open := len(b) // where a secret that b ends too soon to tell starts
		if !final {
			open = s.openAt(b)
		}
		if at < 0 || at >= open {
			emit(b[:open])
			return b[open:]
		}
		emit(b[:at])
		emit([]byte(Redacted))
		b = b[at+n:]
		for i, v := range s.values {
			switch {
			case next[i] < 0:
			case next[i] >= at+n:
				next[i] -= at + n
			default: // overlapped the one replaced
				next[i] = bytes.Index(b, v)
			}
		}
	}
}

// openAt returns where the earliest secret that b ends in the middle of
// starts: the first i for which b[i:] is a proper prefix of a secret, or
// len(b).
func (s Secrets) openAt(b []byte) int {
	open := len(b)
	for _, v := range s.values {
		for l := min(len(v)-1, len(b)); l > len(b)-open; l-- {
			if bytes.HasSuffix(b, v[:l]) {
				open = len(b) - l
				break
			}
		}
	}
	return open
}

// keep appends p to buf, which grows to twice max before its start is
// dropped, so that each byte is copied a bounded number of times.
func (t *Tail) keep(p []byte) {
	t.size += int64(len(p))
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return
	}
	if len(t.buf)+len(p) > 2*t.max {
		drop := len(t.buf) + len(p) - t.max
		t.buf = t.buf[:copy(t.buf, t.buf[drop:])]
	}
	t.buf = append(t.buf, p...)
}

// Bytes returns a copy of the kept bytes: the last max of the output, with
// secrets replaced.
func (t *Tail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := bytes.Clone(t.buf)
	// What was held back is replaced as if the output ended here, without
	// changing t: a command may still be writing.
	t.secrets.redact(t.pending, true, func(p []byte) { out = append(out, p...) })
	if len(out) > t.max {
		out = out[len(out)-t.max:]
	}
	return out
}

// Total is the size of the whole output, with secrets replaced; more than
// len(Bytes()) when its start was dropped.
func (t *Tail) Total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.size
	t.secrets.redact(t.pending, true, func(p []byte) { n += int64(len(p)) })
	return n
}

// Over reports whether a Tail made by NewLimit was given more than its max.
func (t *Tail) Over() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limit > 0 && t.written > t.limit
}

// capture is where one command's output goes.
type capture struct {
	stdout, stderr *Tail
	limit          int // Command.MaxOutput
}

// newCapture returns the output writers of cmd, and a ctx for running it
// that ends when stdout overflows cmd.MaxOutput.
func newCapture(ctx context.Context, cmd Command, secrets Secrets) (context.Context, context.CancelFunc, *capture) {
	ctx, cancel := context.WithCancel(ctx)
	c := &capture{stderr: NewTail(DefaultOutputTail, secrets), limit: cmd.MaxOutput}
	if cmd.MaxOutput > 0 {
		c.stdout = NewLimit(cmd.MaxOutput, secrets, cancel)
	} else {
		c.stdout = NewTail(DefaultOutputTail, secrets)
	}
	return ctx, cancel, c
}

// fill sets res's output from what was captured.
func (c *capture) fill(res *Result) {
	res.Stdout, res.StdoutBytes = c.stdout.Bytes(), c.stdout.Total()
	res.Stderr, res.StderrBytes = c.stderr.Bytes(), c.stderr.Total()
}

// limitErr is the error of a command stopped for writing too much, which
// replaces whatever stopping it caused, unless parent (the caller's ctx)
// ended too.
func (c *capture) limitErr(parent context.Context) error {
	if !c.stdout.Over() || parent.Err() != nil {
		return nil
	}
	return OutputLimitError(c.limit)
}

// OutputLimitError is the error of a command stopped for writing more than
// limit bytes to stdout (see Command.MaxOutput).
func OutputLimitError(limit int) error {
	return fmt.Errorf("%w: more than %s on stdout, so it was stopped", ErrOutputLimit, formatSize(int64(limit)))
}

// formatSize writes n bytes as a person reads it: "1 MiB", "64 KiB",
// "1000 bytes".
func formatSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

package record

import (
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Outcome is how a run ended (or that it has not yet).
type Outcome string

const (
	OutcomeRunning     Outcome = "running"
	OutcomeSucceeded   Outcome = "succeeded"
	OutcomeFailed      Outcome = "failed"      // a host or a gate failed; the run stopped
	OutcomeRefused     Outcome = "refused"     // stopped before any host was changed
	OutcomeInterrupted Outcome = "interrupted" // signal, cancelled context, or a refused resume
	OutcomeAborted     Outcome = "aborted"     // approval denied at a gate
)

// HostStatus is where one host is in the run.
type HostStatus string

const (
	HostPending HostStatus = "pending"
	// HostRunning is a host of a batch in flight: the batch's intent was
	// recorded before any of its hosts was touched, so a host may be
	// running before its first step. A resume runs all its steps again.
	HostRunning   HostStatus = "running"
	HostSucceeded HostStatus = "succeeded"
	HostFailed    HostStatus = "failed"
	HostUntouched HostStatus = "untouched" // the run stopped before reaching it
	HostUpToDate  HostStatus = "up-to-date"
)

// StepStatus is how one step ended.
type StepStatus string

const (
	StepOK     StepStatus = "ok"
	StepFailed StepStatus = "failed"
)

// Run is what one run did. It is kept on the history branch as files (see
// Files), written at every decision and, off the critical path, as hosts
// make progress, so that `git show` tells the story and a killed run can be
// resumed from Git alone. Field names are the file format: rename with care.
//
// Fields are set through the methods of this package only: they keep the
// record consistent and know which files a change touches.
type Run struct {
	ID          string   `yaml:"id" json:"id"`
	Environment string   `yaml:"environment" json:"environment"`
	Kind        string   `yaml:"kind" json:"kind"`
	Release     string   `yaml:"release" json:"release"`
	Revision    string   `yaml:"manifest_commit" json:"manifest_commit"`
	Packages    []string `yaml:"packages" json:"packages"`
	// Message is the operator's reason for the run (--message).
	Message     string     `yaml:"message,omitempty" json:"message,omitempty"`
	StartedBy   string     `yaml:"started_by" json:"started_by"`
	StartedFrom string     `yaml:"started_from" json:"started_from"`
	StartedAt   time.Time  `yaml:"started_at" json:"started_at"`
	FinishedAt  *time.Time `yaml:"finished_at,omitempty" json:"finished_at,omitempty"`
	Duration    string     `yaml:"duration,omitempty" json:"duration,omitempty"`
	Outcome     Outcome    `yaml:"outcome" json:"outcome"`
	// Reason says in one line where and why a run that did not succeed stopped.
	Reason string `yaml:"reason,omitempty" json:"reason,omitempty"`
	// Next says what the operator should do now.
	Next []string `yaml:"next,omitempty" json:"next,omitempty"`
	// Notes are what the hosts do not show, such as the operator's output
	// being lost while the run went on.
	Notes    []string `yaml:"notes,omitempty" json:"notes,omitempty"`
	Strategy string   `yaml:"strategy" json:"strategy"`
	// Waiting is set while the run waits for an approval at a gate.
	Waiting *Wait `yaml:"waiting,omitempty" json:"waiting,omitempty"`
	// Resumed lists the processes that continued the run after the one
	// that started it died.
	Resumed []Resumption `yaml:"resumed,omitempty" json:"resumed,omitempty"`
	Batches []Batch      `yaml:"batches" json:"batches"`
	Hosts   []Host       `yaml:"hosts" json:"hosts"`

	index   map[string]int  // host name -> position in Hosts
	changed map[string]bool // hosts whose file must be written again
}

// Wait is a gate waiting for a decision: `lieutenant approve` or `abort`
// answer it from anywhere.
type Wait struct {
	Gate  int       `yaml:"gate" json:"gate"` // the gate after this batch
	Since time.Time `yaml:"since" json:"since"`
	Until time.Time `yaml:"until" json:"until"` // then the run ends as aborted
}

// Resumption is one `lieutenant resume` of the run.
type Resumption struct {
	By   string    `yaml:"by" json:"by"`
	From string    `yaml:"from" json:"from"`
	At   time.Time `yaml:"at" json:"at"`
	// Hosts are those found in flight, whose steps were run again.
	Hosts []string `yaml:"in_flight,omitempty" json:"in_flight,omitempty"`
}

// Batch lists a batch's hosts and the gate that followed it.
type Batch struct {
	Number int      `yaml:"number" json:"number"`
	Hosts  []string `yaml:"hosts" json:"hosts"`
	// StartedAt is when the batch was declared in flight, before any of
	// its hosts was touched.
	StartedAt *time.Time `yaml:"started_at,omitempty" json:"started_at,omitempty"`
	Gate      *Gate      `yaml:"gate,omitempty" json:"gate,omitempty"`
}

// Gate is the gate between a batch and the next.
type Gate struct {
	Status     StepStatus `yaml:"status" json:"status"`
	Checks     []Step     `yaml:"checks,omitempty" json:"checks,omitempty"`
	Soak       string     `yaml:"soak,omitempty" json:"soak,omitempty"`
	ApprovedBy string     `yaml:"approved_by,omitempty" json:"approved_by,omitempty"`
	Error      string     `yaml:"error,omitempty" json:"error,omitempty"`
	At         time.Time  `yaml:"at" json:"at"`
}

// Host is one host's part of the run.
type Host struct {
	Name    string     `yaml:"name" json:"name"`
	Address string     `yaml:"address" json:"address"`
	Batch   int        `yaml:"batch,omitempty" json:"batch,omitempty"`
	Status  HostStatus `yaml:"status" json:"status"`
	// Before and After map package name to the versions installed.
	Before map[string]string `yaml:"before,omitempty" json:"before,omitempty"`
	After  map[string]string `yaml:"after,omitempty" json:"after,omitempty"`
	// Balancer is the host's state in the balancer when the run ended, as the
	// balancer reported it (e.g. "ready/up", "maint/down").
	Balancer  string     `yaml:"balancer,omitempty" json:"balancer,omitempty"`
	StartedAt *time.Time `yaml:"started_at,omitempty" json:"started_at,omitempty"`
	Duration  string     `yaml:"duration,omitempty" json:"duration,omitempty"`
	Error     string     `yaml:"error,omitempty" json:"error,omitempty"`
	// Interrupted marks a failure caused by the run's interruption, not by
	// the host's change.
	Interrupted bool   `yaml:"interrupted,omitempty" json:"interrupted,omitempty"`
	Steps       []Step `yaml:"steps,omitempty" json:"steps,omitempty"`
}

// Finished reports whether the host's part of the run is over: it
// succeeded or failed.
func (h Host) Finished() bool { return h.Status == HostSucceeded || h.Status == HostFailed }

// Step is one step on one host (or one gate check).
type Step struct {
	Step      string     `yaml:"step" json:"step"`
	Status    StepStatus `yaml:"status" json:"status"`
	StartedAt time.Time  `yaml:"started_at" json:"started_at"`
	Duration  string     `yaml:"duration" json:"duration"`
	Output    Text       `yaml:"output,omitempty" json:"output,omitempty"`
	Error     Text       `yaml:"error,omitempty" json:"error,omitempty"`
}

// Text is a command's output or an error in a record: any text a host
// may send.
type Text string

// MarshalYAML double-quotes multi-line text that starts with a blank (an
// empty first line, an indented one), which yaml.v3 would write as a
// literal block it cannot read back, making the whole record unreadable.
func (t Text) MarshalYAML() (any, error) {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: string(t)}
	if strings.Contains(n.Value, "\n") && strings.IndexAny(n.Value, " \t\n") == 0 {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n, nil
}

// NewStep records one step that started at start and took d; err is its
// failure.
func NewStep(kind string, start time.Time, d time.Duration, output string, err error) Step {
	s := Step{Step: kind, Status: StepOK, StartedAt: start.UTC(), Duration: FormatDuration(d), Output: Text(output)}
	if err != nil {
		s.Status, s.Error = StepFailed, Text(err.Error())
	}
	return s
}

// FormatDuration renders a duration the way records show them: to 10ms
// above a second, to the millisecond or microsecond below.
func FormatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}

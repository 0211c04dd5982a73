package playbook

import (
	"slices"
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
	OutcomeInterrupted Outcome = "interrupted" // signal or cancelled context
	OutcomeAborted     Outcome = "aborted"     // approval denied at a gate
)

// HostStatus is where one host is in the run.
type HostStatus string

const (
	HostPending   HostStatus = "pending"
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

// Record is what a run did, written to the history branch at every state
// change so that `git show` tells the story and a killed run can be resumed.
// Field names are the file format: rename with care.
type Record struct {
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
	Next     []string `yaml:"next,omitempty" json:"next,omitempty"`
	Strategy string   `yaml:"strategy" json:"strategy"`
	// Waiting is set while the run waits for an approval at a gate.
	Waiting *WaitRecord `yaml:"waiting,omitempty" json:"waiting,omitempty"`
	// Resumed lists the processes that continued the run after the one
	// that started it died.
	Resumed []ResumeRecord `yaml:"resumed,omitempty" json:"resumed,omitempty"`
	Batches []BatchRecord  `yaml:"batches" json:"batches"`
	Hosts   []HostRecord   `yaml:"hosts" json:"hosts"`
}

// WaitRecord is a gate waiting for a decision: `lieutenant approve` or
// `abort` answer it from anywhere.
type WaitRecord struct {
	Gate  int       `yaml:"gate" json:"gate"` // the gate after this batch
	Since time.Time `yaml:"since" json:"since"`
	Until time.Time `yaml:"until" json:"until"` // then the run ends as aborted
}

// ResumeRecord is one `lieutenant resume` of the run.
type ResumeRecord struct {
	By   string    `yaml:"by" json:"by"`
	From string    `yaml:"from" json:"from"`
	At   time.Time `yaml:"at" json:"at"`
	// Hosts are those found in flight, whose steps were run again.
	Hosts []string `yaml:"in_flight,omitempty" json:"in_flight,omitempty"`
}

// BatchRecord lists a batch's hosts and the gate that followed it.
type BatchRecord struct {
	Number int         `yaml:"number" json:"number"`
	Hosts  []string    `yaml:"hosts" json:"hosts"`
	Gate   *GateRecord `yaml:"gate,omitempty" json:"gate,omitempty"`
}

// GateRecord is the gate between a batch and the next.
type GateRecord struct {
	Status     StepStatus   `yaml:"status" json:"status"`
	Checks     []StepRecord `yaml:"checks,omitempty" json:"checks,omitempty"`
	Soak       string       `yaml:"soak,omitempty" json:"soak,omitempty"`
	ApprovedBy string       `yaml:"approved_by,omitempty" json:"approved_by,omitempty"`
	Error      string       `yaml:"error,omitempty" json:"error,omitempty"`
	At         time.Time    `yaml:"at" json:"at"`
}

// HostRecord is one host's part of the run.
type HostRecord struct {
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
	Interrupted bool         `yaml:"interrupted,omitempty" json:"interrupted,omitempty"`
	Steps       []StepRecord `yaml:"steps,omitempty" json:"steps,omitempty"`
}

// StepRecord is one step on one host (or one gate check).
type StepRecord struct {
	Step      string     `yaml:"step" json:"step"`
	Status    StepStatus `yaml:"status" json:"status"`
	StartedAt time.Time  `yaml:"started_at" json:"started_at"`
	Duration  string     `yaml:"duration" json:"duration"`
	Output    string     `yaml:"output,omitempty" json:"output,omitempty"`
	Error     string     `yaml:"error,omitempty" json:"error,omitempty"`
}

// clone copies what a running run changes: host and batch entries are
// replaced or appended to, never edited through a shared slice, so copying
// the slices is a consistent snapshot.
func (r *Record) clone() *Record {
	c := *r
	c.Hosts = slices.Clone(r.Hosts)
	c.Batches = slices.Clone(r.Batches)
	c.Resumed = slices.Clip(r.Resumed)
	for i := range c.Hosts {
		c.Hosts[i].Steps = slices.Clip(c.Hosts[i].Steps)
	}
	return &c
}

// Marshal renders the record as the YAML file stored in Git.
func (r *Record) Marshal() ([]byte, error) { return yaml.Marshal(r) }

// ParseRecord reads a record file.
func ParseRecord(data []byte) (*Record, error) {
	var r Record
	if err := yaml.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// versionMap renders installed versions for a record.
func versionMap(pkgs []Package, installed map[string][]Package) map[string]string {
	if installed == nil {
		return nil
	}
	m := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		m[p.Name] = versionsOf(installed[p.Name])
	}
	return m
}

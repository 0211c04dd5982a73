package releases

import (
	"context"
	"fmt"
	"path"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lieutenant-deploy/lieutenant/playbook"
)

// Decision answers a run waiting at a gate: approvals/<env>/<run>.yaml on
// the history branch. The first decision written for a gate stands; the
// branch's log keeps every one. Field names are the file format.
type Decision struct {
	Environment string    `yaml:"environment" json:"environment"`
	Run         string    `yaml:"run" json:"run"`
	Gate        int       `yaml:"gate" json:"gate"` // the gate after this batch
	Decision    string    `yaml:"decision" json:"decision"`
	By          string    `yaml:"by" json:"by"`
	From        string    `yaml:"from" json:"from"`
	At          time.Time `yaml:"at" json:"at"`
	Message     string    `yaml:"message,omitempty" json:"message,omitempty"`
}

// The decisions a Decision holds.
const (
	Approved = "approved"
	Aborted  = "aborted"
)

// DecisionPath is where the decisions on run's gates live.
func DecisionPath(env, run string) (string, error) {
	if err := checkRecordElem(env); err != nil {
		return "", fmt.Errorf("decision path: environment %w", err)
	}
	if err := checkRecordElem(run); err != nil {
		return "", fmt.Errorf("decision path: run id %w", err)
	}
	return path.Join("approvals", env, run+".yaml"), nil
}

func (h *History) parseDecision(p string, data []byte) (*Decision, error) {
	var d Decision
	err := yaml.Unmarshal(data, &d)
	if err == nil && (d.Gate < 1 || (d.Decision != Approved && d.Decision != Aborted)) {
		err = fmt.Errorf("want a gate number and a decision of %s or %s", Approved, Aborted)
	}
	if err != nil {
		return nil, &MalformedError{Branch: h.branch, Path: p, Err: err}
	}
	return &d, nil
}

// Decide records d, unless the gate was decided already: then it fails
// naming who decided.
func (h *History) Decide(ctx context.Context, d Decision) error {
	p, err := DecisionPath(d.Environment, d.Run)
	if err != nil {
		return err
	}
	data, err := yaml.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode decision: %w", err)
	}
	msg := fmt.Sprintf("%s: run %s %s at gate %d by %s\n", d.Environment, d.Run, d.Decision, d.Gate, d.By)
	if d.Message != "" {
		msg += "\n" + d.Message + "\n"
	}
	_, err = h.Update(ctx, p, func(cur []byte) ([]byte, error) {
		if cur != nil {
			old, err := h.parseDecision(p, cur)
			if err == nil && old.Gate == d.Gate {
				return nil, fmt.Errorf("gate %d of run %s was already %s by %s at %s", d.Gate, d.Run, old.Decision, old.By, old.At.UTC().Format(time.RFC3339))
			}
		}
		return data, nil
	}, msg)
	return err
}

// ReadDecision returns the latest decision on run's gates, nil when there
// is none.
func (h *History) ReadDecision(ctx context.Context, env, run string) (*Decision, error) {
	p, err := DecisionPath(env, run)
	if err != nil {
		return nil, err
	}
	return getParsed(ctx, h, p, func(data []byte) (*Decision, error) { return h.parseDecision(p, data) })
}

// GitApprover waits for `lieutenant approve` or `lieutenant abort` to
// record a decision on the history branch, reading it every Poll. It
// implements playbook.Approver; the runner bounds the wait.
type GitApprover struct {
	History *History
	Poll    time.Duration // 0 means 2s
}

func (a *GitApprover) Approve(ctx context.Context, req playbook.GateRequest) (bool, string, error) {
	poll := a.Poll
	if poll <= 0 {
		poll = 2 * time.Second
	}
	for {
		// A remote that does not answer for a while is no decision: the
		// wait goes on until its deadline.
		if err := a.History.Refresh(ctx); err == nil {
			d, err := a.History.ReadDecision(ctx, req.Environment, req.Run)
			if err != nil {
				return false, "", err
			}
			if d != nil && d.Gate == req.AfterBatch {
				return d.Decision == Approved, fmt.Sprintf("%s from %s, through Git", d.By, d.From), nil
			}
		}
		if err := sleep(ctx, poll); err != nil {
			return false, "", err
		}
	}
}

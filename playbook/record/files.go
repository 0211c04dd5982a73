package record

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// A run is kept as files under runs/<environment>/ on the history branch:
//
//	runs/production/2026-11-28T10-00-00Z-3f2a.yaml        the run: who, what, batches, gates, outcome,
//	                                                      and one entry per host without its steps
//	runs/production/2026-11-28T10-00-00Z-3f2a/web-1.yaml  one host: its entry with every step
//
// The run's file is written at the run's decisions (start, each batch's
// intent, gates, the end); a host's file as the host makes progress. So a
// commit's size depends on the hosts that changed, not on the fleet's size,
// and `git log -p` shows each host's steps as they happened. A host's file,
// once it exists, is never older than its entry in the run's file: readers
// take it instead. Records written before hosts had files of their own
// carry the steps in the run's file, and read the same.

// File is one file of a record, with its path on the history branch.
type File struct {
	Path string
	Data []byte
}

// elemRe is what an environment, run id or host name must look like to be
// a file name: the names lieutenant writes, and nothing git or a checkout
// treats specially.
var elemRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func checkElem(what, e string) error {
	if !elemRe.MatchString(e) || strings.HasSuffix(strings.ToLower(e), ".lock") {
		return fmt.Errorf("%s %q is not a plain file name (letters, digits, '.', '_', '-')", what, e)
	}
	return nil
}

// Path is where the file of run id of environment env lives:
// runs/<env>/<id>.yaml.
func Path(env, id string) (string, error) {
	if err := checkElem("environment", env); err != nil {
		return "", fmt.Errorf("run record path: %w", err)
	}
	if err := checkElem("run id", id); err != nil {
		return "", fmt.Errorf("run record path: %w", err)
	}
	return path.Join("runs", env, id+".yaml"), nil
}

// HostDir is the directory of the run's host files: runs/<env>/<id>.
func HostDir(env, id string) (string, error) {
	p, err := Path(env, id)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(p, ".yaml"), nil
}

// Changes returns the hosts changed since the last call, sorted, and
// forgets them; after a failed save, Unsaved gives them back.
func (r *Run) Changes() []string {
	out := make([]string, 0, len(r.changed))
	for name := range r.changed {
		out = append(out, name)
	}
	clear(r.changed)
	slices.Sort(out)
	return out
}

// Unsaved marks hosts as changed again, after the save of their files
// failed.
func (r *Run) Unsaved(hosts []string) {
	for _, name := range hosts {
		if r.changed == nil {
			r.changed = map[string]bool{}
		}
		r.changed[name] = true
	}
}

// Files encodes the run's file (when withRun) and the files of hosts.
func (r *Run) Files(withRun bool, hosts []string) ([]File, error) {
	dir, err := HostDir(r.Environment, r.ID)
	if err != nil {
		return nil, err
	}
	var files []File
	if withRun {
		summary := *r
		summary.Hosts = make([]Host, len(r.Hosts))
		for i, h := range r.Hosts {
			h.Steps = nil
			summary.Hosts[i] = h
		}
		data, err := yaml.Marshal(&summary)
		if err != nil {
			return nil, fmt.Errorf("encode run record %s: %w", r.ID, err)
		}
		files = append(files, File{Path: dir + ".yaml", Data: data})
	}
	for _, name := range hosts {
		data, err := yaml.Marshal(r.host(name))
		if err != nil {
			return nil, fmt.Errorf("encode run record %s, host %s: %w", r.ID, name, err)
		}
		files = append(files, File{Path: path.Join(dir, name+".yaml"), Data: data})
	}
	return files, nil
}

// Parse reads a run from its file and its hosts' files (by host name; nil
// for a record without them) and checks that it is a record lieutenant can
// act on. Errors say what is wrong, not where: the caller knows the path.
func Parse(run []byte, hosts map[string][]byte) (*Run, error) {
	var r Run
	if err := yaml.Unmarshal(run, &r); err != nil {
		return nil, err
	}
	for name, data := range hosts {
		var h Host
		if err := yaml.Unmarshal(data, &h); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
		if h.Name != name {
			return nil, fmt.Errorf("the file of host %s names host %q", name, h.Name)
		}
		entry, ok := r.lookup(name)
		if !ok {
			return nil, fmt.Errorf("host %s has a file but is not in the run's hosts", name)
		}
		*entry = h
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

var (
	outcomes     = []Outcome{OutcomeRunning, OutcomeSucceeded, OutcomeFailed, OutcomeRefused, OutcomeInterrupted, OutcomeAborted}
	hostStatuses = []HostStatus{HostPending, HostRunning, HostSucceeded, HostFailed, HostUntouched, HostUpToDate}
)

// validate checks what the runner and resume rely on: known statuses,
// batches numbered 1..n in order, each planned host in exactly one batch
// and listed once, under a name that can be its file's, hosts in no batch
// up to date, and a wait at a gate between two batches.
func (r *Run) validate() error {
	var errs []error
	if err := checkElem("id", r.ID); err != nil {
		errs = append(errs, err)
	}
	if err := checkElem("environment", r.Environment); err != nil {
		errs = append(errs, err)
	}
	if !slices.Contains(outcomes, r.Outcome) {
		errs = append(errs, fmt.Errorf("outcome %q is not one of %v", r.Outcome, outcomes))
	}
	batchOf := map[string]int{}
	for i, h := range r.Hosts {
		if _, dup := batchOf[h.Name]; dup || h.Name == "" {
			errs = append(errs, fmt.Errorf("hosts[%d]: host %q is listed twice or has no name", i, h.Name))
		}
		batchOf[h.Name] = h.Batch
		// A host's name is the name of its file.
		if h.Name != "" && !elemRe.MatchString(h.Name) {
			errs = append(errs, fmt.Errorf("hosts[%d]: name %q is not a host name (letters, digits, '.', '_', '-')", i, h.Name))
		}
		if !slices.Contains(hostStatuses, h.Status) {
			errs = append(errs, fmt.Errorf("host %s: status %q is not one of %v", h.Name, h.Status, hostStatuses))
		}
		switch {
		case h.Batch < 0 || h.Batch > len(r.Batches):
			errs = append(errs, fmt.Errorf("host %s: batch %d, but the run has %d batches", h.Name, h.Batch, len(r.Batches)))
		case h.Batch == 0 && h.Status != HostUpToDate:
			// A resume runs only the hosts of batches.
			errs = append(errs, fmt.Errorf("host %s: status %s, but it is in no batch (only up-to-date hosts are)", h.Name, h.Status))
		}
	}
	// approve answers the gate the run waits at.
	if w := r.Waiting; w != nil && (w.Gate < 1 || w.Gate >= len(r.Batches)) {
		errs = append(errs, fmt.Errorf("waiting: gate %d is not between two of the run's %d batches", w.Gate, len(r.Batches)))
	}
	seen := map[string]bool{}
	for i, b := range r.Batches {
		if b.Number != i+1 {
			errs = append(errs, fmt.Errorf("batches[%d]: number %d, want %d (batches are numbered 1, 2, ... in order)", i, b.Number, i+1))
		}
		for _, name := range b.Hosts {
			batch, ok := batchOf[name]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("batch %d: host %s is not in the run's hosts", i+1, name))
			case seen[name]:
				errs = append(errs, fmt.Errorf("batch %d: host %s is in more than one batch", i+1, name))
			case batch != i+1:
				errs = append(errs, fmt.Errorf("batch %d: host %s says it is in batch %d", i+1, name, batch))
			}
			seen[name] = true
		}
		if g := b.Gate; g != nil && g.Status != StepOK && g.Status != StepFailed {
			errs = append(errs, fmt.Errorf("batch %d: gate status %q is not ok or failed", i+1, g.Status))
		}
	}
	for _, h := range r.Hosts {
		if h.Batch > 0 && !seen[h.Name] {
			errs = append(errs, fmt.Errorf("host %s: batch %d does not list it", h.Name, h.Batch))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Commit is one write of a record: the files that changed, the run's
// outcome as they tell it, and the commit message.
type Commit struct {
	Files   []File
	Outcome Outcome
	Message string
}

// Headline is the commit message for a write of the record, so that
// `git log --oneline` of the history branch reads as the story of the
// runs: "production 2026.11.3: batch 2/2 in flight, 2/4 hosts done".
// event says what happened; "" says the outcome.
func (r *Run) Headline(event string) string {
	planned := 0
	for _, b := range r.Batches {
		planned += len(b.Hosts)
	}
	if event == "" {
		event = string(r.Outcome)
	}
	msg := fmt.Sprintf("%s %s: %s, %d/%d hosts done", r.Environment, r.Release, event, r.Count(HostSucceeded), planned)
	if n := r.Count(HostFailed); n > 0 {
		msg += fmt.Sprintf(", %d failed", n)
	}
	return msg + "\n\nRun " + r.ID + " of manifest commit " + r.Revision + ".\n"
}

package main

import (
	"strings"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/playbook/record"
)

func TestRollbackTarget(t *testing.T) {
	run := func(id, release string, o record.Outcome) *record.Run {
		return &record.Run{ID: id, Release: release, Outcome: o, Packages: []string{"hello-web-" + release + "-1.x86_64"}}
	}
	manifest := func(release string) *playbook.Manifest {
		p, err := playbook.ParseNEVRA("hello-web-" + release + "-1.x86_64")
		if err != nil {
			t.Fatal(err)
		}
		return &playbook.Manifest{Release: release, Packages: []playbook.Package{p}}
	}
	recs := []*record.Run{
		run("r1", "1.0.0", record.OutcomeSucceeded),
		run("r2", "1.1.0", record.OutcomeSucceeded),
		run("r3", "1.2.0", record.OutcomeFailed),
	}
	for _, tc := range []struct {
		name, current, to, want, err string
		recs                         []*record.Run
	}{
		// After a failed release, back to the last good one.
		{name: "after a failure", current: "1.2.0", want: "r2"},
		// After a good release, back to the one before.
		{name: "after a success", current: "1.1.0", want: "r1"},
		{name: "to a run", current: "1.2.0", to: "r1", want: "r1"},
		{name: "to a failed run", current: "1.1.0", to: "r3", err: "that run ended failed"},
		{name: "to an unknown run", current: "1.1.0", to: "nope", err: "no run of that id"},
		{name: "nothing before", current: "1.0.0", recs: recs[:1], err: "nothing to roll back to"},
		// A run whose commit is no longer on the branch (history rewritten) is skipped.
		{name: "commit gone", current: "1.2.0", want: "r1", recs: []*record.Run{recs[0],
			{ID: "r2", Release: "1.1.0", Outcome: record.OutcomeSucceeded, Packages: recs[1].Packages, Revision: "rewritten"}, recs[2]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := recs
			if tc.recs != nil {
				in = tc.recs
			}
			got, err := rollbackTarget(in, tc.to, manifest(tc.current), func(commit string) bool { return commit != "rewritten" })
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want %q", err, tc.err)
				}
			case err != nil:
				t.Errorf("err = %v", err)
			case got.ID != tc.want:
				t.Errorf("target %s, want %s", got.ID, tc.want)
			}
		})
	}
}

func TestInSyncNeedsTheSameHosts(t *testing.T) {
	p, _ := playbook.ParseNEVRA("hello-web-1.1.0-1.x86_64")
	dep := &playbook.Deployment{Manifest: &playbook.Manifest{Release: "r", Packages: []playbook.Package{p}},
		Hosts: []playbook.Host{{Name: "web-1"}, {Name: "web-2"}}}
	rec := &record.Run{Release: "r", Packages: []string{p.NEVRA()}, Hosts: []record.Host{{Name: "web-2"}, {Name: "web-1"}}}
	if !inSync(rec, dep) {
		t.Error("same release, packages and hosts: not in sync")
	}
	dep.Hosts = append(dep.Hosts, playbook.Host{Name: "web-3"})
	if inSync(rec, dep) {
		t.Error("a host added to the inventory is in sync")
	}
	dep.Hosts = dep.Hosts[:2]
	rec.Release = "other"
	if inSync(rec, dep) {
		t.Error("another release name is in sync")
	}
}

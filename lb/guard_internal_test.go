package lb

import (
	"errors"
	"testing"
)

func TestAllowDrain(t *testing.T) {
	up := func(n string) Server { return Server{Name: n, Admin: AdminReady, Health: HealthUp} }
	nocheck := func(n string) Server { return Server{Name: n, Admin: AdminReady, Health: HealthNoCheck} }
	down := func(n string) Server { return Server{Name: n, Admin: AdminReady, Health: HealthDown} }
	draining := func(n string) Server { return Server{Name: n, Admin: AdminDrain, Health: HealthUp} }
	maint := func(n string) Server { return Server{Name: n, Admin: AdminMaint, Health: HealthDown} }
	set := func(names ...string) map[string]bool {
		m := map[string]bool{}
		for _, n := range names {
			m[n] = true
		}
		return m
	}
	tests := []struct {
		name    string
		servers []Server
		target  string
		leaving map[string]bool
		minUp   int
		want    error
	}{
		{"three up, min 2", []Server{up("a"), up("b"), up("c")}, "a", nil, 2, nil},
		{"two up, min 2", []Server{up("a"), up("b")}, "a", nil, 2, ErrBelowMinimum},
		{"unchecked servers count", []Server{nocheck("a"), nocheck("b"), nocheck("c")}, "a", nil, 2, nil},
		{"a down server does not count", []Server{up("a"), up("b"), down("c")}, "a", nil, 2, ErrBelowMinimum},
		{"a draining server does not count", []Server{up("a"), up("b"), draining("c")}, "a", nil, 2, ErrBelowMinimum},
		{"a server in maint does not count", []Server{up("a"), up("b"), maint("c")}, "a", nil, 2, ErrBelowMinimum},
		{"a leaving server the balancer still shows up does not count", []Server{up("a"), up("b"), up("c")}, "a", set("c"), 2, ErrBelowMinimum},
		{"draining a server in maint again costs nothing", []Server{up("a"), up("b"), maint("c")}, "c", nil, 2, nil},
		{"draining a down server costs nothing", []Server{up("a"), down("b")}, "b", nil, 1, nil},
		{"draining a leaving server again costs nothing", []Server{up("a"), up("b"), maint("c")}, "c", set("c"), 2, nil},
		{"a leaving server back in service is drained again like any", []Server{up("a"), up("b"), up("c")}, "c", set("c"), 2, nil},
		{"a leaving server back in service stays in below the minimum", []Server{up("a"), down("b"), up("c")}, "c", set("c"), 2, ErrBelowMinimum},
		{"other leaving servers back in service do not count", []Server{up("a"), up("b"), up("c")}, "c", set("b", "c"), 2, ErrBelowMinimum},
		{"draining a draining server costs nothing", []Server{up("a"), draining("b")}, "b", nil, 1, nil},
		{"min 1 keeps the last one", []Server{up("a"), maint("b")}, "a", nil, 1, ErrBelowMinimum},
		{"min equal to the backend refuses all", []Server{up("a"), up("b")}, "b", nil, 2, ErrBelowMinimum},
		{"already below the minimum still refuses", []Server{up("a"), down("b"), down("c")}, "a", nil, 2, ErrBelowMinimum},
		{"unknown target", []Server{up("a"), up("b")}, "x", nil, 1, ErrUnknownServer},
		{"leaving marks of unknown names are ignored", []Server{up("a"), up("b"), up("c")}, "a", set("gone"), 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := allowDrain(tt.servers, tt.target, tt.leaving, tt.minUp)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("allowDrain = %v, want %v", err, tt.want)
			}
		})
	}
}

package lb_test

import (
	"testing"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/lb/lbtest"
)

func TestNoneConformance(t *testing.T) {
	lbtest.RunConformance(t, func(t *testing.T) lbtest.Harness {
		return lbtest.Harness{
			Balancer: lb.None{},
			Lacks: map[lbtest.Capability]string{
				lbtest.ServerList:    "None has no servers to list, so it accepts every name",
				lbtest.Sessions:      "None carries no traffic",
				lbtest.HealthControl: "None checks nothing",
			},
		}
	})
}

func TestNoneAcceptsAnyName(t *testing.T) {
	ctx := t.Context()
	var b lb.Balancer = lb.None{}
	servers, err := b.Servers(ctx)
	if err != nil || servers == nil || len(servers) != 0 {
		t.Fatalf("Servers = %v, %v; want an empty list", servers, err)
	}
	for _, name := range []string{"web1", "anything at all"} {
		if err := b.Drain(ctx, name, lb.DrainOptions{}); err != nil {
			t.Errorf("Drain(%q): %v", name, err)
		}
		if err := b.Enable(ctx, name, lb.EnableOptions{}); err != nil {
			t.Errorf("Enable(%q): %v", name, err)
		}
	}
}

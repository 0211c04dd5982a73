package testenv_test

import (
	"context"
	"errors"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
	"github.com/lieutenant-deploy/lieutenant/transport/transporttest"
)

// The fake host keeps the same Runner contract as SSH and local.
func TestFakeHostConformance(t *testing.T) {
	fleet := testenv.NewFakeFleet()
	fleet.AddHost("web-1")
	transporttest.RunConformance(t, func(t *testing.T) transport.Runner {
		r, err := fleet.Connect(context.Background(), transport.Host{Name: "web-1", Address: "192.0.2.1", Port: 22})
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

// The fleet keeps the same Connector contract as SSH and local.
func TestFakeFleetConnectorConformance(t *testing.T) {
	transporttest.RunConnectorConformance(t, func(t *testing.T) (transport.Connector, []transport.Host) {
		fleet := testenv.NewFakeFleet()
		fleet.AddHost("web-1")
		fleet.AddHost("web-2")
		t.Cleanup(func() { fleet.Close() })
		return fleet, []transport.Host{
			{Name: "web-1", Address: "192.0.2.1", Port: 22},
			{Name: "web-2", Address: "192.0.2.2"},
		}
	})
}

// An unreachable host fails the way the SSH connector's failed dial does,
// with the error the test chose, and becomes reachable again.
func TestFakeFleetUnreachable(t *testing.T) {
	fleet := testenv.NewFakeFleet()
	fleet.AddHost("web-3")
	refused := errors.New("connection refused")
	fleet.SetUnreachable("web-3", refused)
	h := transport.Host{Name: "web-3", Address: "10.0.1.13"} // port 0 means 22
	_, err := fleet.Connect(t.Context(), h)
	if want := "connect to web-3 (10.0.1.13:22): connection refused"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
	if !errors.Is(err, refused) {
		t.Errorf("err = %v, want one wrapping the error given to SetUnreachable", err)
	}
	fleet.SetUnreachable("web-3", nil)
	if _, err := fleet.Connect(t.Context(), h); err != nil {
		t.Errorf("Connect once reachable again: %v", err)
	}
	// Like transport.SSH, the failed attempt counts as a dial.
	if d := fleet.Dials(); d != 2 {
		t.Errorf("Dials() = %d after a failed and a good connect, want 2", d)
	}
}

package testenv_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
	"github.com/lieutenant-deploy/lieutenant/transport/transporttest"
)

func simConnector(t *testing.T, f *testenv.SimFleet, maxHandshakes int) *transport.SSH {
	t.Helper()
	conn, err := transport.NewSSH(transport.SSHConfig{User: f.User, KnownHostsFiles: []string{f.KnownHosts},
		IdentityFiles: []string{f.Identity}, MaxHandshakes: maxHandshakes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// A simulated host behind lieutenant's real SSH transport keeps the Runner
// contract, as the fake host does in process.
func TestSimFleetConformance(t *testing.T) {
	f := testenv.StartSimFleet(t, 2, testenv.SimDelays{}, "hello-web-1.0.0-1.x86_64")
	transporttest.RunConformance(t, func(t *testing.T) transport.Runner {
		conn := simConnector(t, f, 0)
		h := f.Hosts[0]
		r, err := conn.Connect(context.Background(), transport.Host{Name: h.Name, Address: h.Address, Port: f.SSHPort})
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

// The SSH transport opens at most MaxHandshakes connections at once, however
// many hosts are contacted together.
func TestSSHBoundsHandshakes(t *testing.T) {
	f := testenv.StartSimFleet(t, 40, testenv.SimDelays{}, "hello-web-1.0.0-1.x86_64")
	conn := simConnector(t, f, 3)
	var wg sync.WaitGroup
	errs := make(chan error, len(f.Hosts))
	for _, h := range f.Hosts {
		wg.Go(func() {
			r, err := conn.Connect(context.Background(), transport.Host{Name: h.Name, Address: h.Address, Port: f.SSHPort})
			if err == nil {
				_, err = r.Run(context.Background(), transport.Command{Args: []string{"true"}})
			}
			if err != nil {
				errs <- fmt.Errorf("%s: %w", h.Name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total, most := f.Handshakes()
	if total != len(f.Hosts) || most > 3 || most < 1 {
		t.Errorf("%d handshakes, %d at once; want %d, at most 3 at once", total, most, len(f.Hosts))
	}
}

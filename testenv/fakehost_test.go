package testenv_test

import (
	"context"
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

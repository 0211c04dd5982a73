//go:build unix

package transport_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/testenv"
	"github.com/lieutenant-deploy/lieutenant/transport"
	"github.com/lieutenant-deploy/lieutenant/transport/transporttest"
)

func localRunner(t *testing.T) transport.Runner {
	t.Helper()
	l := transport.NewLocal()
	t.Cleanup(func() { l.Close() })
	r, err := l.Connect(t.Context(), transport.Host{Name: "local"})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLocalConformance(t *testing.T) {
	transporttest.RunConformance(t, localRunner)
}

func TestLocalConnectorConformance(t *testing.T) {
	transporttest.RunConnectorConformance(t, func(t *testing.T) (transport.Connector, []transport.Host) {
		l := transport.NewLocal()
		t.Cleanup(func() { l.Close() })
		return l, []transport.Host{{Name: "local-1"}, {Name: "local-2", Address: "192.0.2.2"}}
	})
}

func TestLocalCancelKillsProcessGroup(t *testing.T) {
	r := localRunner(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sleep := uniqueSleep(t)
	errc := make(chan error, 1)
	// "; :" keeps sh from exec'ing sleep, so the sleep is a grandchild that
	// only a process-group kill reaches.
	go func() { _, err := r.Run(ctx, cmd("sh", "-c", strings.Join(sleep, " ")+"; :")); errc <- err }()
	testenv.WaitFor(t, 5*time.Second, "sleep starts", func() bool { return processRunning(t, sleep...) })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want one wrapping context.Canceled", err)
	}
	testenv.WaitFor(t, 2*time.Second, "sleep is killed", func() bool { return !processRunning(t, sleep...) })
}

func TestLocalExitBySignal(t *testing.T) {
	res, err := localRunner(t).Run(testCtx(t), cmd("sh", "-c", "kill -TERM $$"))
	var exitErr *transport.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("err = %v, want one wrapping *transport.ExitError", err)
	}
	if exitErr.Signal != "TERM" || exitErr.Status != 143 || res.ExitStatus != 143 {
		t.Errorf("signal %q, status %d, result status %d; want TERM, 143, 143", exitErr.Signal, exitErr.Status, res.ExitStatus)
	}
	if want := "run on local: sh -c 'kill -TERM $$': killed by signal TERM"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

func TestLocalBackgroundChildDoesNotHang(t *testing.T) {
	start := time.Now()
	// The background sleep keeps stdout open after sh exits.
	_, err := localRunner(t).Run(testCtx(t), cmd("sh", "-c", "sleep 3 &"))
	if err != nil {
		t.Errorf("err = %v, want nil", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Run took %v, want it not to wait for the background child", elapsed)
	}
}

func TestLocalErrorsNameHost(t *testing.T) {
	_, err := localRunner(t).Run(testCtx(t), cmd("no-such-program-lieutenant"))
	if err == nil || !strings.HasPrefix(err.Error(), "run on local: no-such-program-lieutenant: ") {
		t.Errorf("err = %v, want one naming the host and the command", err)
	}
}

func TestLocalClosed(t *testing.T) {
	l := transport.NewLocal()
	r, err := l.Connect(t.Context(), transport.Host{Name: "local"})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := r.Run(testCtx(t), cmd("true")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Run after Close: err = %v, want one wrapping ErrClosed", err)
	}
	if _, err := l.Connect(t.Context(), transport.Host{Name: "local"}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Connect after Close: err = %v, want one wrapping ErrClosed", err)
	}
}

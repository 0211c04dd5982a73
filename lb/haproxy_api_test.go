package lb_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
)

// scriptedAPI is a stand-in for HAProxy's runtime API with one backend "web"
// and one server "web1", for the moments real HAProxy cannot be made to
// produce on demand: a command applied whose reply never arrives, or one
// refused.
type scriptedAPI struct {
	addr string

	// answer decides the reply to a "set server" line: apply says whether
	// the command takes effect, hold keeps the connection silent until the
	// client gives up, and reply is sent instead of the empty success line.
	answer func(line string) (apply, hold bool, reply string)

	mu       sync.Mutex
	admin    string   // "ready", "drain" or "maint"
	commands []string // every "set server" line, in order
	// id is web1's server id (1); a reload with another configuration
	// gives it another, and id 1 to a server web0.
	id int
}

func startScriptedAPI(t *testing.T, answer func(line string) (apply, hold bool, reply string)) *scriptedAPI {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &scriptedAPI{addr: "ipv4@" + l.Addr().String(), answer: answer, admin: "ready", id: 1}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { a.serve(conn) })
		}
	})
	return a
}

func (a *scriptedAPI) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	line = strings.TrimSpace(line)
	a.mu.Lock()
	status := map[string]string{"ready": "UP", "drain": "DRAIN", "maint": "MAINT"}[a.admin]
	web1 := fmt.Sprintf("show stat 3 4 %d", a.id)
	switch {
	case line == "show stat -1 6 -1", line == web1:
		a.mu.Unlock()
		fmt.Fprintf(conn, "# pxname,svname,qcur,scur,status,check_status,check_desc\nweb,web1,0,0,%s,L7OK,\nweb,BACKEND,0,0,UP,,\n\n", status)
		return
	case line == "show stat 3 4 1":
		a.mu.Unlock()
		fmt.Fprint(conn, "# pxname,svname,qcur,scur,status,check_status,check_desc\nweb,web0,0,0,UP,L7OK,\n\n")
		return
	case line == "show servers state web":
		bits := map[string]int{"ready": 0, "drain": 8, "maint": 1}[a.admin]
		id := a.id
		a.mu.Unlock()
		fmt.Fprintf(conn, "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state\n3 web %d web1 127.0.0.1 2 %d 1 1 0 6 3 4 6\n\n", id, bits)
		return
	case strings.HasPrefix(line, "set server web/web1 state "):
		a.commands = append(a.commands, line)
		apply, hold, reply := a.answer(line)
		if apply {
			a.admin = strings.TrimPrefix(line, "set server web/web1 state ")
		}
		a.mu.Unlock()
		if hold {
			// Silent until the client closes its end.
			_, _ = conn.Read(make([]byte, 1))
			return
		}
		fmt.Fprintf(conn, "%s\n", reply)
		return
	}
	a.mu.Unlock()
	fmt.Fprintf(conn, "Unknown command: %q\n", line)
}

func (a *scriptedAPI) state() (admin string, commands []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.admin, append([]string(nil), a.commands...)
}

// A drain whose ctx ends while HAProxy has applied "state drain" but not yet
// replied must not leave the server draining: the previous state comes back.
func TestHAProxyDrainCancelledBeforeReply(t *testing.T) {
	arrived := make(chan struct{})
	var once sync.Once
	api := startScriptedAPI(t, func(line string) (bool, bool, string) {
		if strings.HasSuffix(line, " state drain") {
			once.Do(func() { close(arrived) })
			return true, true, ""
		}
		return true, false, ""
	})
	bal, err := lb.NewHAProxy(api.addr, "web")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- bal.Drain(ctx, "web1", lb.DrainOptions{Timeout: time.Minute}) }()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the drain command never reached the API")
	}
	cancel()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Drain still running 10s after its ctx was cancelled")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want one wrapping context.Canceled", err)
	}
	if admin, cmds := api.state(); admin != "ready" {
		t.Errorf("server left %s after a cancelled drain, want ready; commands: %q", admin, cmds)
	}
}

// A command HAProxy refuses changed nothing, so there is nothing to undo:
// the drain fails with HAProxy's answer and sends no other command.
func TestHAProxyDrainRefused(t *testing.T) {
	api := startScriptedAPI(t, func(string) (bool, bool, string) { return false, false, "No such server." })
	bal, err := lb.NewHAProxy(api.addr, "web")
	if err != nil {
		t.Fatal(err)
	}
	err = bal.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: time.Minute})
	if !errors.Is(err, lb.ErrUnknownServer) || strings.Contains(err.Error(), "putting it back") {
		t.Errorf("err = %v, want ErrUnknownServer and no attempt to put the server back", err)
	}
	if admin, cmds := api.state(); admin != "ready" || len(cmds) != 1 {
		t.Errorf("server %s after commands %q; want ready after the one refused command", admin, cmds)
	}
}

// HAProxy reloaded with another configuration gives web1 another id: the
// adapter reads the ids again and drains the right server.
func TestHAProxyIDsChangeAfterAReload(t *testing.T) {
	api := startScriptedAPI(t, func(string) (bool, bool, string) { return true, false, "" })
	bal, err := lb.NewHAProxy(api.addr, "web")
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	api.mu.Lock()
	api.id, api.admin = 2, "ready"
	api.mu.Unlock()
	if err := bal.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: time.Second}); err != nil {
		t.Fatalf("drain after the reload: %v", err)
	}
	if admin, _ := api.state(); admin != "maint" {
		t.Errorf("web1 %s after the drain, want maint", admin)
	}
}

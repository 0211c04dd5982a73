package lb

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The testdata files are `show stat` and `show servers state` replies
// captured from HAProxy 2.6.12 (Debian 12) in the states named below.
func TestParseStatCaptured(t *testing.T) {
	type row struct {
		name, status, check string
		admin               Admin
		health              Health
		exact               bool
	}
	tests := []struct {
		file, backend string
		want          []row
	}{
		{"show-stat-1.csv", "web", []row{
			{"web1", "UP", "L7OK", AdminReady, HealthUp, true},
			{"web2", "DOWN", "L4CON", AdminReady, HealthDown, false},
			{"web3", "DRAIN", "L7OK", AdminDrain, HealthUp, true},
			{"web4", "MAINT", "", AdminMaint, HealthDown, true},
			{"web5", "no check", "", AdminReady, HealthNoCheck, true},
			{"web6", "MAINT (via web/web4)", "", AdminMaint, HealthDown, true},
			{"web7", "DOWN 1/3", "L7OK", AdminReady, HealthDown, false}, // going up, rise 3
			{"web8", "DOWN", "L7STS", AdminReady, HealthDown, false},
			{"web9", "DOWN", "L4CON", AdminReady, HealthDown, false},
			{"web10", "DOWN", "L4CON", AdminReady, HealthDown, false}, // draining, which the status hides
		}},
		{"show-stat-1.csv", "other", []row{
			{"web1", "no check", "", AdminReady, HealthNoCheck, true},
		}},
		{"show-stat-2.csv", "app", []row{
			{"app1", "UP", "L7OK", AdminReady, HealthUp, true},
			{"app2", "DOWN", "L7STS", AdminReady, HealthDown, false},
			{"app3", "UP 1/3", "L4CON", AdminReady, HealthUp, true}, // up, last check failed
			{"app4", "DRAIN 1/3", "L4CON", AdminDrain, HealthUp, true},
		}},
		{"show-stat-3.csv", "app", []row{
			{"app5", "NOLB", "", AdminReady, HealthDown, false},
			{"app6", "NOLB", "", AdminReady, HealthDown, false}, // draining too
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.backend, func(t *testing.T) {
			rows, err := parseStat(readTestdata(t, tt.file), tt.backend)
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tt.want) {
				t.Fatalf("got %d rows, want %d: %+v", len(rows), len(tt.want), rows)
			}
			for i, w := range tt.want {
				r := rows[i]
				if r.Name != w.name || r.Status != w.status || r.CheckStatus != w.check || r.Sessions != 0 || r.Queued != 0 {
					t.Errorf("row %d = %+v, want %s %q check %q", i, r, w.name, w.status, w.check)
				}
				a, h, exact := parseStatus(r.Status)
				if a != w.admin || h != w.health || exact != w.exact {
					t.Errorf("parseStatus(%q) = %s %s %v, want %s %s %v", r.Status, a, h, exact, w.admin, w.health, w.exact)
				}
			}
		})
	}
}

func TestParseStatLines(t *testing.T) {
	header := "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration\n"
	tests := []struct {
		name, reply string
		want        []statRow
		wantErr     error
	}{
		{
			name: "sessions, queue and a check in progress",
			// A captured line with scur, qcur and the "* " in-progress mark set.
			reply: header + "web,web1,3,3,7,7,,9,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,1,0,,1,3,1,,0,,2,0,,0,* L4CON,,0\n" +
				"web,BACKEND,3,3,7,7,,9,0,0,,0,,0,0,0,0,DOWN,0,0,0,,1,1,0,,1,3,0,,0,,1,0,,0,,,\n",
			want: []statRow{{Backend: "web", Name: "web1", Queued: 3, Sessions: 7, Status: "DOWN", CheckStatus: "L4CON", CheckHealth: -1}},
		},
		{
			name:  "columns found by name, not position",
			reply: "# svname,status,scur,qcur,pxname\nweb1,UP,2,0,web\nBACKEND,UP,2,0,web\n",
			want:  []statRow{{Backend: "web", Name: "web1", Sessions: 2, Status: "UP", CheckHealth: -1}},
		},
		{
			name:  "the check's health counter",
			reply: "# pxname,svname,qcur,scur,status,check_health\nweb,web1,0,0,DOWN 1/2,1\nweb,web2,0,0,MAINT,\nweb,BACKEND,0,0,UP,\n",
			want: []statRow{{Backend: "web", Name: "web1", Status: "DOWN 1/2", CheckHealth: 1},
				{Backend: "web", Name: "web2", Status: "MAINT", CheckHealth: -1}},
		},
		{name: "no such proxy", reply: "No such proxy.\n\n", wantErr: ErrUnknownBackend},
		{name: "a frontend of that name is no backend", reply: "# pxname,svname,qcur,scur,status\nweb,FRONTEND,,0,OPEN\napp,BACKEND,0,0,UP\n", wantErr: ErrUnknownBackend},
		{name: "missing column", reply: "# pxname,svname,status\nweb,web1,UP\n", wantErr: errAny},
		{name: "bad number", reply: "# pxname,svname,qcur,scur,status\nweb,web1,0,many,UP\n", wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := parseStat(tt.reply, "web")
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(tt.want) {
				t.Fatalf("rows = %+v, want %+v", rows, tt.want)
			}
			for i := range rows {
				if rows[i] != tt.want[i] {
					t.Errorf("row %d = %+v, want %+v", i, rows[i], tt.want[i])
				}
			}
		})
	}
}

var errAny = errors.New("any error")

// A count HAProxy left out or garbled is an error naming the server and the
// field: read as 0, an empty scur would let a drain go straight to
// maintenance while sessions are open.
func TestParseStatRejectsBadCounts(t *testing.T) {
	const header = "# pxname,svname,qcur,scur,status,check_health\n"
	const backendRow = "web,BACKEND,0,0,UP,\n"
	tests := []struct{ name, line, want string }{
		{"empty scur", "web,web1,0,,UP,", `show stat: server web/web1: scur is "", want a count (0 or more)`},
		{"negative scur", "web,web1,0,-1,UP,", `show stat: server web/web1: scur is "-1", want a count (0 or more)`},
		{"scur not a number", "web,web1,0,many,UP,", `show stat: server web/web1: scur is "many", want a count (0 or more)`},
		{"empty qcur", "web,web1,,0,UP,", `show stat: server web/web1: qcur is "", want a count (0 or more)`},
		{"negative qcur", "web,web1,-3,0,UP,", `show stat: server web/web1: qcur is "-3", want a count (0 or more)`},
		{"negative check health", "web,web1,0,0,UP,-2", `show stat: server web/web1: check_health is "-2", want a count (0 or more)`},
		{"short row", "web,web1,0", `show stat: server web/web1: scur is "", want a count (0 or more)`},
		{"no server name", "web,,0,0,UP,", "show stat: backend web: a server row without svname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := parseStat(header+tt.line+"\n"+backendRow, "web")
			if err == nil || err.Error() != tt.want {
				t.Fatalf("parseStat = %+v, %v; want error %q", rows, err, tt.want)
			}
		})
	}
	// Another backend's garbled row is not this backend's problem.
	if _, err := parseStat(header+"app,app1,0,,UP,\n"+backendRow, "web"); err != nil {
		t.Fatalf("another backend's row: %v", err)
	}
}

func TestParseServersStateRejectsBadFields(t *testing.T) {
	const head = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state\n"
	tests := []struct{ name, line, want string }{
		{"admin state not a number", "3 web 1 web1 127.0.0.1 2 x 1 1 7 15 3 2 6",
			`show servers state: server web/web1: srv_admin_state is "x", want 0 to `},
		{"negative admin state", "3 web 1 web1 127.0.0.1 2 -1 1 1 7 15 3 2 6",
			`show servers state: server web/web1: srv_admin_state is "-1", want 0 to `},
		{"op state out of range", "3 web 1 web1 127.0.0.1 7 0 1 1 7 15 3 2 6",
			`show servers state: server web/web1: srv_op_state is "7", want 0 to 3`},
		{"server id 0", "3 web 0 web1 127.0.0.1 2 0 1 1 7 15 3 2 6",
			`show servers state: server web/web1: srv_id is "0", want 1 to `},
		{"short line", "3 web 1 web1 127.0.0.1 2 0 1 1 7 15 3",
			`show servers state: server web/web1: no srv_check_state (short line`},
		{"no server name", "3 web",
			`show servers state: backend web: short line "3 web"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, err := parseServersState(head+tt.line+"\n", "web")
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("parseServersState = %+v, %v; want an error starting %q", rows, err, tt.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		status string
		admin  Admin
		health Health
		exact  bool
	}{
		{"UP", AdminReady, HealthUp, true},
		{"UP 1/3", AdminReady, HealthUp, true},
		{"DOWN", AdminReady, HealthDown, false},
		{"DOWN 1/2", AdminReady, HealthDown, false},
		{"DOWN (agent)", AdminReady, HealthDown, false},
		{"NOLB", AdminReady, HealthDown, false},
		{"NOLB 1/2", AdminReady, HealthDown, false},
		{"DRAIN", AdminDrain, HealthUp, true},
		{"DRAIN 1/2", AdminDrain, HealthUp, true},
		{"DRAIN (agent)", AdminDrain, HealthUp, true},
		{"MAINT", AdminMaint, HealthDown, true},
		{"MAINT (via web/web4)", AdminMaint, HealthDown, true},
		{"MAINT (resolution)", AdminMaint, HealthDown, true},
		{"no check", AdminReady, HealthNoCheck, true},
		{"something new", AdminReady, HealthDown, false},
	}
	for _, tt := range tests {
		a, h, exact := parseStatus(tt.status)
		if a != tt.admin || h != tt.health || exact != tt.exact {
			t.Errorf("parseStatus(%q) = %s, %s, %v; want %s, %s, %v", tt.status, a, h, exact, tt.admin, tt.health, tt.exact)
		}
	}
}

func TestParseServersStateCaptured(t *testing.T) {
	tests := []struct {
		file, backend string
		want          map[string][3]string // admin, health, checked
	}{
		{"show-servers-state-1.txt", "web", map[string][3]string{
			"web1":  {"ready", "up", "checked"},
			"web2":  {"ready", "down", "checked"},
			"web3":  {"drain", "up", "checked"},
			"web4":  {"maint", "down", "checked"}, // checks paused, still enabled
			"web5":  {"ready", "no-check", ""},
			"web6":  {"maint", "down", ""}, // tracks web4
			"web8":  {"ready", "down", "checked"},
			"web10": {"drain", "down", "checked"}, // "DOWN" in show stat
		}},
		{"show-servers-state-3.txt", "app", map[string][3]string{
			"app5": {"ready", "down", ""}, // NOLB
			"app6": {"drain", "down", ""}, // NOLB, draining
		}},
	}
	for _, tt := range tests {
		rows, err := parseServersState(readTestdata(t, tt.file), tt.backend)
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		seen := 0
		for _, r := range rows {
			w, ok := tt.want[r.Name]
			if !ok {
				continue
			}
			seen++
			checked := ""
			if r.CheckState&chkEnable != 0 {
				checked = "checked"
			}
			got := [3]string{string(r.adminOf()), string(r.healthOf()), checked}
			if got != w {
				t.Errorf("%s %s: got %v, want %v (row %+v)", tt.file, r.Name, got, w, r)
			}
		}
		if seen != len(tt.want) {
			t.Errorf("%s: found %d of %d servers", tt.file, seen, len(tt.want))
		}
	}
	if rows, err := parseServersState(readTestdata(t, "show-servers-state-1.txt"), "other"); err != nil || len(rows) != 0 {
		t.Errorf("other backend: %v %v, want no rows", rows, err)
	}
	if _, err := parseServersState("Can't find backend.\n\n", "web"); !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("unknown backend: err = %v", err)
	}
}

func TestParseAPIAddr(t *testing.T) {
	tests := []struct{ in, network, address string }{
		{"ipv4@127.0.0.1:9999", "tcp4", "127.0.0.1:9999"},
		{"10.0.0.5:9999", "tcp", "10.0.0.5:9999"},
		{"lb.example:9999", "tcp", "lb.example:9999"},
		{"ipv6@::1:9999", "tcp6", "[::1]:9999"},
		{"ipv6@[::1]:9999", "tcp6", "[::1]:9999"},
		{"unix@/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"abns@haproxy", "", ""},
		{"127.0.0.1", "", ""},
		{"ipv4@127.0.0.1:http", "", ""},
		{"unix@", "", ""},
	}
	for _, tt := range tests {
		n, a, err := parseAPIAddr(tt.in)
		if tt.network == "" {
			if err == nil {
				t.Errorf("parseAPIAddr(%q) = %s %s, want an error", tt.in, n, a)
			}
			continue
		}
		if err != nil || n != tt.network || a != tt.address {
			t.Errorf("parseAPIAddr(%q) = %s %s %v, want %s %s", tt.in, n, a, err, tt.network, tt.address)
		}
	}
}

func TestReplyError(t *testing.T) {
	tests := []struct {
		reply string
		is    error
		text  string
	}{
		{"\n", nil, ""},
		{"", nil, ""},
		{"No such server.\n\n", ErrUnknownServer, "No such server."},
		{"No such backend.\n\n", ErrUnknownBackend, "No such backend."},
		{"Can't find backend.\n\n", ErrUnknownBackend, ""},
		{"Permission denied\n\n", nil, "level admin"},
		{"'set server <srv> health' expects 'up', 'stopping', or 'down'.\n\n", nil, "expects"},
	}
	for _, tt := range tests {
		err := replyError(tt.reply)
		if tt.is == nil && tt.text == "" {
			if err != nil {
				t.Errorf("replyError(%q) = %v, want nil", tt.reply, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("replyError(%q) = nil", tt.reply)
			continue
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("replyError(%q) = %v, want it to wrap %v", tt.reply, err, tt.is)
		}
		if !strings.Contains(err.Error(), tt.text) {
			t.Errorf("replyError(%q) = %v, want it to say %q", tt.reply, err, tt.text)
		}
	}
}

func TestValidHAProxyName(t *testing.T) {
	for _, ok := range []string{"web1", "web-1.example.com", "a_b:c"} {
		if !validHAProxyName(ok) {
			t.Errorf("validHAProxyName(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "web1;shutdown sessions server web/web2", "web 1", "web1\n", "web/1"} {
		if validHAProxyName(bad) {
			t.Errorf("validHAProxyName(%q) = true", bad)
		}
	}
}

// A reply longer than maxReply is an error, not a table cut short.
func TestCommandRefusesAnOversizedReply(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		bufio.NewReader(conn).ReadString('\n')
		row := []byte(strings.Repeat("x", 1023) + "\n")
		for range maxReply/len(row) + 1 {
			if _, err := conn.Write(row); err != nil {
				return
			}
		}
	}()
	h, err := NewHAProxy(l.Addr().String(), "web")
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.command(context.Background(), "show stat")
	if err == nil || !strings.Contains(err.Error(), "reply over 16 MiB") {
		t.Fatalf("command = %v, want an error saying the reply is over 16 MiB", err)
	}
}

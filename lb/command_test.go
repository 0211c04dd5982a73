package lb_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lieutenant-deploy/lieutenant/lb"
	"github.com/lieutenant-deploy/lieutenant/lb/lbtest"
	"github.com/lieutenant-deploy/lieutenant/testenv"
)

// lbctl is what a user might write for a balancer lieutenant has no adapter
// for, following the protocol documented on lb.Command. Its "balancer" is a
// directory of files: NAME.admin, NAME.healthy (the health check's verdict)
// and NAME.sessions. Every write is a rename, so a reader never sees half a
// file.
const lbctl = `#!/bin/bash
set -u
dir=${LBCTL_STATE:?}
put() { printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $(( t / 1000 )); }
deadline_ms() {
	local t=$LIEUTENANT_TIMEOUT int frac=0
	int=${t%%.*}
	if [[ $t == *.* ]]; then frac=${t#*.}000; frac=${frac:0:3}; fi
	echo $(( $(now_ms) + 10#$int * 1000 + 10#$frac ))
}
known() { [[ -f $dir/$1.admin ]] || { echo "lbctl: no server $1" >&2; exit 2; }; }

case $1 in
state)
	while read -r n; do
		admin=$(<"$dir/$n.admin"); healthy=$(<"$dir/$n.healthy"); sessions=$(<"$dir/$n.sessions")
		health=down
		[[ $admin != maint && $healthy == 1 ]] && health=up
		echo "$n $admin $health $sessions"
	done < "$dir/servers"
	;;
drain)
	n=$2; known "$n"
	prev=$(<"$dir/$n.admin")
	trap 'put "$dir/$n.admin" "$prev"; exit 143' TERM
	put "$dir/$n.admin" drain
	deadline=$(deadline_ms)
	while [[ $(<"$dir/$n.sessions") != 0 ]]; do
		if (( $(now_ms) >= deadline )); then
			if [[ $LIEUTENANT_KILL_SESSIONS == 1 ]]; then
				put "$dir/$n.sessions" 0
				break
			fi
			put "$dir/$n.admin" "$prev"
			echo "lbctl: $n still has sessions" >&2
			exit 75
		fi
		sleep 0.01
	done
	put "$dir/$n.admin" maint
	;;
enable)
	n=$2; known "$n"
	trap 'put "$dir/$n.admin" maint; exit 143' TERM
	put "$dir/$n.admin" ready
	deadline=$(deadline_ms)
	while [[ $(<"$dir/$n.healthy") != 1 ]]; do
		if (( $(now_ms) >= deadline )); then
			put "$dir/$n.admin" maint
			echo "lbctl: $n fails its health check" >&2
			exit 75
		fi
		sleep 0.01
	done
	;;
*)
	echo "usage: lbctl state|drain NAME|enable NAME" >&2
	exit 64
	;;
esac
`

// scriptLB is the state directory of lbctl and the controls over it.
type scriptLB struct {
	dir, script string
	mu          sync.Mutex // serialises read-modify-write of session counts
}

func newScriptLB(t *testing.T, servers ...string) *scriptLB {
	t.Helper()
	testenv.RequireBinaries(t, "bash", "sleep")
	s := &scriptLB{dir: t.TempDir()}
	s.script = filepath.Join(s.dir, "lbctl")
	if err := os.WriteFile(s.script, []byte(lbctl), 0o755); err != nil {
		t.Fatal(err)
	}
	s.put(t, "servers", strings.Join(servers, "\n"))
	for _, n := range servers {
		s.put(t, n+".admin", "ready")
		s.put(t, n+".healthy", "1")
		s.put(t, n+".sessions", "0")
	}
	return s
}

func (s *scriptLB) put(t testing.TB, name, value string) {
	t.Helper()
	tmp := filepath.Join(s.dir, name+".tmp-go")
	if err := os.WriteFile(tmp, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		t.Fatal(err)
	}
}

func (s *scriptLB) get(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (s *scriptLB) config() lb.CommandConfig {
	return lb.CommandConfig{
		Drain:  []string{s.script, "drain", lb.ServerArg},
		Enable: []string{s.script, "enable", lb.ServerArg},
		State:  []string{s.script, "state"},
		Env:    []string{"LBCTL_STATE=" + s.dir},
		// lbctl counts its timeout from when bash gets to it, after a
		// start and a few forks that take seconds on a loaded machine
		// under -race: room for that, not for a program that overruns.
		Grace: 5 * time.Second,
	}
}

func (s *scriptLB) balancer(t testing.TB) *lb.Command {
	t.Helper()
	c, err := lb.NewCommand(s.config())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// holdSession counts one more session; release counts it off again unless
// the drain shut it down meanwhile.
func (s *scriptLB) holdSession(t testing.TB, server string) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, _ := strconv.Atoi(s.get(t, server+".sessions"))
	s.put(t, server+".sessions", strconv.Itoa(n+1))
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if n, _ := strconv.Atoi(s.get(t, server+".sessions")); n > 0 {
				s.put(t, server+".sessions", strconv.Itoa(n-1))
			}
		})
	}
}

func TestCommandConformance(t *testing.T) {
	lbtest.RunConformance(t, func(t *testing.T) lbtest.Harness {
		names := []string{"web1", "web2", "web3"}
		s := newScriptLB(t, names...)
		return lbtest.Harness{
			Balancer: s.balancer(t),
			Servers:  names,
			SetHealthy: func(server string, ok bool) {
				v := "0"
				if ok {
					v = "1"
				}
				s.put(t, server+".healthy", v)
			},
			HoldSession: func(server string) func() { return s.holdSession(t, server) },
		}
	})
}

// The server name reaches the program as one argument, whatever it holds.
func TestCommandServerIsOneArgument(t *testing.T) {
	testenv.RequireBinaries(t, "sh")
	dir := t.TempDir()
	odd := `web1;$(touch${IFS}pwned)'"`
	record := filepath.Join(dir, "argv")
	// The state program lists the odd name, given by the environment; the
	// drain program records its argv, one argument a line, and takes the
	// server out.
	state := filepath.Join(dir, "state")
	drain := filepath.Join(dir, "drain")
	writeScript(t, state, `a=ready; [ -f "$0.done" ] && a=maint; printf '%s %s up\n' "$ODD" "$a"`)
	writeScript(t, drain, `for a in "$@"; do printf '%s\n' "$a"; done > "$RECORD"; : > "$STATE.done"`)
	c, err := lb.NewCommand(lb.CommandConfig{
		Drain:  []string{drain, "--pool=web", lb.ServerArg, "--"},
		Enable: []string{"/bin/false", lb.ServerArg},
		State:  []string{state},
		Dir:    dir,
		Env:    []string{"ODD=" + odd, "RECORD=" + record, "STATE=" + state},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Drain(t.Context(), odd, lb.DrainOptions{Timeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if want := "--pool=web\n" + odd + "\n--\n"; string(got) != want {
		t.Fatalf("argv = %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Fatal("the server name was run as shell code")
	}
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestCommandFailureShowsStderr(t *testing.T) {
	s := newScriptLB(t, "web1", "web2")
	dir := t.TempDir()
	failing := filepath.Join(dir, "f5-drain")
	writeScript(t, failing, `echo "connecting to bigip.example" >&2; echo "f5: 401 Unauthorized for pool member $1" >&2; exit 3`)
	cfg := s.config()
	cfg.Drain = []string{failing, lb.ServerArg}
	c, err := lb.NewCommand(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: 5 * time.Second})
	if err == nil {
		t.Fatal("Drain succeeded")
	}
	for _, want := range []string{"drain web1", "status 3", "401 Unauthorized for pool member web1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The programs run without lieutenant's secrets, and a secret's value one
// prints anyway is replaced in the error that shows its stderr.
func TestCommandKeepsSecrets(t *testing.T) {
	const token = "glpat-0123456789abcdef"
	t.Setenv("LIEUTENANT_GITLAB_TOKEN", token)
	t.Setenv("COPY_OF_TOKEN", token)
	s := newScriptLB(t, "web1", "web2")
	printEnv := filepath.Join(t.TempDir(), "f5-drain")
	writeScript(t, printEnv, `env | grep -e LIEUTENANT_ -e COPY_OF_TOKEN | sort >&2; exit 3`)
	cfg := s.config()
	cfg.Drain = []string{printEnv, lb.ServerArg}
	c, err := lb.NewCommand(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "COPY_OF_TOKEN=REDACTED\nLIEUTENANT_KILL_SESSIONS=0\nLIEUTENANT_SERVER=web1\n") ||
		strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "LIEUTENANT_GITLAB_TOKEN") {
		t.Errorf("err = %v, want the program's environment without LIEUTENANT_GITLAB_TOKEN and with the token replaced", err)
	}
}

// The state program's output is read whole, up to 1 MiB: more is an error
// that says so.
func TestCommandStateOutputIsBounded(t *testing.T) {
	testenv.RequireBinaries(t, "sh", "yes", "head")
	state := filepath.Join(t.TempDir(), "state")
	// 3.4 MB of one line repeated.
	writeScript(t, state, `yes 'web1 ready up 0' | head -n 200000`)
	c, err := lb.NewCommand(lb.CommandConfig{Drain: []string{"true"}, Enable: []string{"true"}, State: []string{state}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Servers(t.Context())
	if want := "servers: " + state + ": output too long: more than 1 MiB on stdout, so it was stopped"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

// A program that ignores its timeout is stopped Grace after it, and the
// caller hears of it instead of waiting forever.
func TestCommandOverrunIsStopped(t *testing.T) {
	s := newScriptLB(t, "web1", "web2")
	hang := filepath.Join(t.TempDir(), "hang")
	writeScript(t, hang, `sleep 60`)
	cfg := s.config()
	cfg.Drain = []string{hang, lb.ServerArg}
	cfg.Grace = 200 * time.Millisecond
	c, err := lb.NewCommand(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = c.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("err = %v, want a stopped overrun", err)
	}
	if errors.Is(err, lb.ErrDrainTimeout) {
		t.Errorf("an overrun must not claim the server was put back: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("overrun took %s to stop", d)
	}
}

// A drain program that exits 0 without draining is caught by the state check.
func TestCommandChecksTheProgramsWork(t *testing.T) {
	s := newScriptLB(t, "web1", "web2")
	cfg := s.config()
	cfg.Drain = []string{"/bin/true", lb.ServerArg}
	c, err := lb.NewCommand(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Drain(t.Context(), "web1", lb.DrainOptions{Timeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "not maint") {
		t.Fatalf("err = %v, want the state check to object", err)
	}
}

func TestNewCommandRejects(t *testing.T) {
	ok := lb.CommandConfig{
		Drain:  []string{"lbctl", "drain", lb.ServerArg},
		Enable: []string{"lbctl", "enable", lb.ServerArg},
		State:  []string{"lbctl", "state"},
	}
	if _, err := lb.NewCommand(ok); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	tests := map[string]func(c *lb.CommandConfig){
		"no drain":         func(c *lb.CommandConfig) { c.Drain = nil },
		"no enable":        func(c *lb.CommandConfig) { c.Enable = nil },
		"no state":         func(c *lb.CommandConfig) { c.State = nil },
		"empty program":    func(c *lb.CommandConfig) { c.State = []string{""} },
		"server in shell":  func(c *lb.CommandConfig) { c.Drain = []string{"sh", "-c", "lbctl drain {server}"} },
		"server in flag":   func(c *lb.CommandConfig) { c.Enable = []string{"lbctl", "--member={server}"} },
		"server for state": func(c *lb.CommandConfig) { c.State = []string{"lbctl", "state", lb.ServerArg} },
	}
	for name, mutate := range tests {
		c := ok
		mutate(&c)
		if _, err := lb.NewCommand(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParseStateOutput(t *testing.T) {
	tests := []struct {
		name, out string
		want      []lb.Server
		wantErr   string
	}{
		{
			name: "all fields",
			out:  "# pool web\nweb1 ready up 12 1\n\nweb2 drain up 3\nweb3 maint down\nweb4 ready no-check\n",
			want: []lb.Server{
				{Name: "web1", Admin: lb.AdminReady, Health: lb.HealthUp, Sessions: 12, Queued: 1},
				{Name: "web2", Admin: lb.AdminDrain, Health: lb.HealthUp, Sessions: 3},
				{Name: "web3", Admin: lb.AdminMaint, Health: lb.HealthDown},
				{Name: "web4", Admin: lb.AdminReady, Health: lb.HealthNoCheck},
			},
		},
		{name: "empty", out: "", want: []lb.Server{}},
		{name: "blanks and tabs", out: "  web1\tready   up  \n", want: []lb.Server{{Name: "web1", Admin: lb.AdminReady, Health: lb.HealthUp}}},
		{name: "bad admin", out: "web1 enabled up\n", wantErr: `line 1 "web1 enabled up": admin "enabled"`},
		{name: "bad health", out: "web1 ready UP\n", wantErr: `health "UP"`},
		{name: "short", out: "web1 ready\n", wantErr: "want NAME ADMIN HEALTH"},
		{name: "long", out: "web1 ready up 1 2 3\n", wantErr: "want NAME ADMIN HEALTH"},
		{name: "bad count", out: "web1 ready up -1\n", wantErr: `"-1" is not a count`},
		{name: "twice", out: "web1 ready up\nweb1 maint down\n", wantErr: "listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lb.ParseStateOutput([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

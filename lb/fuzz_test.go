package lb

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// seed adds every testdata file whose name matches pattern to f's corpus.
func seed(f *testing.F, pattern string) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed files %s: %v", pattern, err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
}

// FuzzParseStat: `show stat` replies never panic the parser, and every row
// it accepts is one a drain can trust: a named server of the backend with
// counts of 0 or more.
func FuzzParseStat(f *testing.F) {
	seed(f, "show-stat-*.csv")
	f.Add("# pxname,svname,qcur,scur,status\nweb,web1,0,,UP\nweb,BACKEND,0,0,UP\n")
	f.Add("No such proxy.\n")
	f.Fuzz(func(t *testing.T, reply string) {
		for _, backend := range []string{"web", "app"} {
			rows, err := parseStat(reply, backend)
			if err != nil {
				continue
			}
			for _, r := range rows {
				if r.Backend != backend || r.Name == "" || r.Sessions < 0 || r.Queued < 0 || r.CheckHealth < -1 {
					t.Fatalf("parseStat accepted a row a drain cannot trust: %+v", r)
				}
				parseStatus(r.Status)
			}
		}
	})
}

// FuzzParseServersState: `show servers state` replies never panic the
// parser, and every row it accepts has the ids `show stat` can be asked
// with and a known operational state.
func FuzzParseServersState(f *testing.F) {
	seed(f, "show-servers-state-*.txt")
	f.Add("1\n# be_id be_name srv_id srv_name srv_op_state srv_admin_state srv_check_state\n3 web 1 web1 2 x 6\n")
	f.Add("Can't find backend.\n")
	f.Fuzz(func(t *testing.T, reply string) {
		for _, backend := range []string{"web", "app"} {
			rows, err := parseServersState(reply, backend)
			if err != nil {
				continue
			}
			for _, r := range rows {
				if r.Name == "" || r.ID.backend < 1 || r.ID.server < 1 || r.OpState < 0 || r.OpState > 3 || r.AdminBits < 0 || r.CheckState < 0 {
					t.Fatalf("parseServersState accepted a row it should not: %+v", r)
				}
				r.adminOf()
				r.healthOf()
			}
		}
	})
}

// FuzzParseStateOutput: the command adapter's state program output never
// panics the parser, and what it accepts round-trips: written back in the
// documented format, it reads the same.
func FuzzParseStateOutput(f *testing.F) {
	f.Add("web1 ready up 12\nweb2 drain up 3 0\nweb3 maint down\n")
	f.Add("# comment\n\nweb1 ready no-check\n")
	f.Add("web1 ready up -1\n")
	f.Add("web1 ready up\nweb1 maint down\n")
	f.Fuzz(func(t *testing.T, out string) {
		servers, err := ParseStateOutput([]byte(out))
		if err != nil {
			return
		}
		var b strings.Builder
		for _, s := range servers {
			fmt.Fprintf(&b, "%s %s %s %d %d\n", s.Name, s.Admin, s.Health, s.Sessions, s.Queued)
		}
		again, err := ParseStateOutput([]byte(b.String()))
		if err != nil {
			t.Fatalf("ParseStateOutput does not read back what it accepted: %v\n%s", err, b.String())
		}
		if !reflect.DeepEqual(servers, again) {
			t.Fatalf("round trip changed the servers:\n%+v\n%+v", servers, again)
		}
	})
}

package transport

import (
	"os/exec"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/usr/bin/dnf", "/usr/bin/dnf"},
		{"hello-web-1.1.0-1.x86_64", "hello-web-1.1.0-1.x86_64"},
		{"user@host:/path,a+b%c", "user@host:/path,a+b%c"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{"a=b", "'a=b'"}, // an assignment in command position, zsh's =cmd elsewhere
		{"=ls", "'=ls'"},
		{"$(id)", "'$(id)'"},
		{"`id`", "'`id`'"},
		{"$HOME", "'$HOME'"},
		{"~", "'~'"},
		{"*", "'*'"},
		{"a;b", "'a;b'"},
		{"line\nbreak", "'line\nbreak'"},
		{"héllo", "'héllo'"},
		{`back\slash`, `'back\slash'`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestCommandString(t *testing.T) {
	for _, tc := range []struct {
		cmd  Command
		want string
	}{
		{Command{Args: []string{"dnf", "install", "-y", "hello-web-1.1.0-1.x86_64"}}, "dnf install -y hello-web-1.1.0-1.x86_64"},
		{Command{Args: []string{"systemctl", "restart", "hello web"}, Sudo: true}, "sudo -n -- systemctl restart 'hello web'"},
		{Command{Args: []string{"sh", "-c", "exit 3"}}, "sh -c 'exit 3'"},
		// In command position reserved words and assignments are quoted...
		{Command{Args: []string{"time", "ls"}}, "'time' ls"},
		{Command{Args: []string{"A=1", "env"}}, "'A=1' env"},
		// ...but after sudo -- they are plain arguments.
		{Command{Args: []string{"time", "ls"}, Sudo: true}, "sudo -n -- time ls"},
		{Command{Args: []string{"echo", "time"}}, "echo time"},
	} {
		if got := tc.cmd.String(); got != tc.want {
			t.Errorf("%q (sudo %v).String() = %s, want %s", tc.cmd.Args, tc.cmd.Sudo, got, tc.want)
		}
	}
}

func TestCommandCheck(t *testing.T) {
	if err := (Command{}).check(); err == nil {
		t.Error("empty command: check() = nil, want an error")
	}
	if err := (Command{Args: []string{"echo", "a\x00b"}}).check(); err == nil || !strings.Contains(err.Error(), "argument 1") {
		t.Errorf("NUL byte: check() = %v, want an error naming argument 1", err)
	}
	if err := (Command{Args: []string{"echo", ""}}).check(); err != nil {
		t.Errorf("empty argument: check() = %v, want nil", err)
	}
}

func roundTripSeeds() []string {
	return []string{
		"", "plain", "two words", "it's", "''", `"`, "$(id)", "`id`", "${HOME}", "$HOME",
		"~", "~root", "*", "?", "[a]", "{a,b}", "a=b", "=ls", "!bang", "#hash", "a;b&c|d>e<f",
		"line\nbreak", "tab\t", "\r", `back\slash`, `\'`, "héllo ✓", "-n", "--", "%s",
		"\x01\x7f", " lead", "trail ",
	}
}

// TestQuoteRoundTrip proves, through a real shell, that quoted values come
// back unchanged.
func TestQuoteRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err) // POSIX systems have sh; without it nothing here works
	}
	for _, s := range roundTripSeeds() {
		checkRoundTrip(t, sh, s)
	}
}

func FuzzQuoteRoundTrip(f *testing.F) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range roundTripSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.IndexByte(s, 0) >= 0 {
			return // no argv element can hold a NUL; Command.check refuses it
		}
		checkRoundTrip(t, sh, s)
	})
}

func checkRoundTrip(t *testing.T, sh, s string) {
	t.Helper()
	script := "printf '%s' " + Quote(s) + "; printf '|%s' " + Quote(s) + " " + Quote(s)
	out, err := exec.Command(sh, "-c", script).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	if want := s + "|" + s + "|" + s; string(out) != want {
		t.Errorf("round trip of %q through sh -c %q gave %q, want %q", s, script, out, want)
	}
}

func TestStderrTail(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"one\n", "one"},
		{"1\n2\n\n3\n4\n\n", "2\n3\n4"},
	} {
		if got := stderrTail([]byte(tc.in)); got != tc.want {
			t.Errorf("stderrTail(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := strings.Repeat("x", 2000)
	if got := stderrTail([]byte(long)); len(got) > 520 || !strings.HasPrefix(got, "...") {
		t.Errorf("stderrTail of 2000 bytes gave %d bytes starting %q, want at most ~512 starting ...", len(got), got[:10])
	}
}

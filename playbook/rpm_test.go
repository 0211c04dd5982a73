package playbook

import (
	"strings"
	"testing"
)

func TestParseNEVRA(t *testing.T) {
	cases := []struct {
		in      string
		want    Package
		wantErr bool
	}{
		{in: "hello-web-1.1.0-1.x86_64", want: Package{Name: "hello-web", Version: "1.1.0", Release: "1", Arch: "x86_64"}},
		{in: "hello-web-1.1.0-1", want: Package{Name: "hello-web", Version: "1.1.0", Release: "1"}},
		{in: "hello-worker-2.0.1-3.el9", want: Package{Name: "hello-worker", Version: "2.0.1", Release: "3.el9"}},
		{in: "hello-worker-2.0.1-3.el9.noarch", want: Package{Name: "hello-worker", Version: "2.0.1", Release: "3.el9", Arch: "noarch"}},
		{in: "bash-2:5.1.8-6.el9.aarch64", want: Package{Name: "bash", Epoch: "2", Version: "5.1.8", Release: "6.el9", Arch: "aarch64"}},
		{in: "python3.11-libs-3.11.7-1~rc1.el9", want: Package{Name: "python3.11-libs", Version: "3.11.7", Release: "1~rc1.el9"}},
		{in: "hello; rm -rf /", wantErr: true},
		{in: "hello-web-1.0-1;reboot", wantErr: true},
		{in: "-rf-1.0-1", wantErr: true},
		{in: "hello-web", wantErr: true},
		{in: "hello-web-latest", wantErr: true},
		{in: "hello-web-1.0-", wantErr: true},
		{in: "hello-web-$(id)-1", wantErr: true},
		{in: "hello-web-x:1.0-1", wantErr: true},
		{in: "hello web-1.0-1", wantErr: true},
		// Releases whose last part only looks like an arch stay releases.
		{in: "hello-web-2.0-0.1.alpha1", want: Package{Name: "hello-web", Version: "2.0", Release: "0.1.alpha1"}},
		{in: "hello-web-2.0-0.1.rc", want: Package{Name: "hello-web", Version: "2.0", Release: "0.1.rc"}},
		{in: "python3.11-libs-3.11.7-1", want: Package{Name: "python3.11-libs", Version: "3.11.7", Release: "1"}},
		{in: "kernel-5.14.0-1.el9.x86_64_v3", want: Package{Name: "kernel", Version: "5.14.0", Release: "1.el9", Arch: "x86_64_v3"}},
	}
	for _, tc := range cases {
		got, err := ParseNEVRA(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("ParseNEVRA(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseNEVRA(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if err == nil && got.NEVRA() != tc.in {
			t.Errorf("ParseNEVRA(%q).NEVRA() = %q, want the input back", tc.in, got.NEVRA())
		}
	}
}

// TestParseNEVRARefusesWhatDnfWouldFailOn: a file name or a misspelt arch
// passed validate and failed only in dnf, once the host was drained.
func TestParseNEVRARefusesWhatDnfWouldFailOn(t *testing.T) {
	cases := []struct{ in, wantErr string }{
		{"hello-web-1.1.0-1.x86_64.rpm", `"hello-web-1.1.0-1.x86_64.rpm" is a file name; drop the .rpm suffix`},
		{"hello-web-1.1.0-1.rpm", "drop the .rpm suffix"},
		{"hello-web-1.1.0-1.x86-64", `arch "x86-64" is not an RPM architecture (did you mean "x86_64"?)`},
		{"hello-web-1.1.0-1.X86_64", `(did you mean "x86_64"?)`},
		{"hello-web-1.1.0-1.arch64", `(did you mean "aarch64"?)`},
		{"hello-web-1.1.0-1.noarh", `(did you mean "noarch"?)`},
		{"hello-web-1.1.0-1.src", "is a source package, which cannot be installed"},
	}
	for _, tc := range cases {
		got, err := ParseNEVRA(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseNEVRA(%q) = %+v, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
		}
	}
	for _, pkg := range []Package{
		{Name: "hello-web", Version: "1.1.0", Release: "1", Arch: "x86-64"},
		{Name: "hello-web", Version: "1.1.0", Release: "1", Arch: "amd65"},
		{Name: "hello-web", Version: "1.1.0", Release: "1", Arch: "rpm"},
	} {
		if err := pkg.Validate(); err == nil {
			t.Errorf("%+v.Validate() = nil, want an error", pkg)
		}
	}
	err := Package{Name: "hello-web", Version: "1.1.0", Release: "1", Arch: "x86-64"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "(known: aarch64, ") || strings.Contains(err.Error(), "src") {
		t.Errorf("unknown arch: %v; want the known installable arches listed", err)
	}
}

// Cases from rpm's own test suite (tests/rpmvercmp.at).
func TestRpmvercmp(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.0", "1.0", 0}, {"1.0", "2.0", -1}, {"2.0", "1.0", 1},
		{"2.0.1", "2.0.1", 0}, {"2.0", "2.0.1", -1}, {"2.0.1", "2.0", 1},
		{"2.0.1a", "2.0.1a", 0}, {"2.0.1a", "2.0.1", 1}, {"2.0.1", "2.0.1a", -1},
		{"5.5p1", "5.5p1", 0}, {"5.5p1", "5.5p2", -1}, {"5.5p2", "5.5p1", 1},
		{"5.5p10", "5.5p10", 0}, {"5.5p1", "5.5p10", -1}, {"5.5p10", "5.5p1", 1},
		{"10xyz", "10.1xyz", -1}, {"10.1xyz", "10xyz", 1},
		{"xyz10", "xyz10", 0}, {"xyz10", "xyz10.1", -1}, {"xyz10.1", "xyz10", 1},
		{"xyz.4", "xyz.4", 0}, {"xyz.4", "8", -1}, {"8", "xyz.4", 1}, {"xyz.4", "2", -1}, {"2", "xyz.4", 1},
		{"5.5p2", "5.6p1", -1}, {"5.6p1", "5.5p2", 1},
		{"5.6p1", "6.5p1", -1}, {"6.5p1", "5.6p1", 1},
		{"6.0.rc1", "6.0", 1}, {"6.0", "6.0.rc1", -1},
		{"10b2", "10a1", 1}, {"10a2", "10b2", -1},
		{"1.0aa", "1.0aa", 0}, {"1.0a", "1.0aa", -1}, {"1.0aa", "1.0a", 1},
		{"10.0001", "10.0001", 0}, {"10.0001", "10.1", 0}, {"10.1", "10.0001", 0},
		{"10.0001", "10.0039", -1}, {"10.0039", "10.0001", 1},
		{"4.999.9", "5.0", -1}, {"5.0", "4.999.9", 1},
		{"20101121", "20101121", 0}, {"20101121", "20101122", -1}, {"20101122", "20101121", 1},
		{"2_0", "2_0", 0}, {"2.0", "2_0", 0}, {"2_0", "2.0", 0},
		{"a", "a", 0}, {"a+", "a+", 0}, {"a+", "a_", 0}, {"a_", "a+", 0}, {"+a", "+a", 0}, {"+a", "_a", 0},
		{"+_", "_+", 0}, {"_+", "+_", 0}, {"_+", "_+", 0}, {"+", "_", 0}, {"_", "+", 0},
		{"1.0~rc1", "1.0~rc1", 0}, {"1.0~rc1", "1.0", -1}, {"1.0", "1.0~rc1", 1},
		{"1.0~rc1", "1.0~rc2", -1}, {"1.0~rc2", "1.0~rc1", 1}, {"1.0~rc1~git123", "1.0~rc1~git123", 0},
		{"1.0~rc1~git123", "1.0~rc1", -1}, {"1.0~rc1", "1.0~rc1~git123", 1},
		{"1.0^", "1.0^", 0}, {"1.0^", "1.0", 1}, {"1.0", "1.0^", -1},
		{"1.0^git1", "1.0^git1", 0}, {"1.0^git1", "1.0", 1}, {"1.0", "1.0^git1", -1},
		{"1.0^git1", "1.0^git2", -1}, {"1.0^git2", "1.0^git1", 1}, {"1.0^git1", "1.01", -1}, {"1.01", "1.0^git1", 1},
		{"1.0^20160101", "1.0^20160101", 0}, {"1.0^20160101", "1.0.1", -1}, {"1.0.1", "1.0^20160101", 1},
		{"1.0^20160101^git1", "1.0^20160101^git1", 0}, {"1.0^20160102", "1.0^20160101^git1", 1},
		{"1.0^20160101^git1", "1.0^20160102", -1},
		{"1.0~rc1^git1", "1.0~rc1^git1", 0}, {"1.0~rc1^git1", "1.0~rc1", 1}, {"1.0~rc1", "1.0~rc1^git1", -1},
		{"1.0^git1~pre", "1.0^git1~pre", 0}, {"1.0^git1", "1.0^git1~pre", 1}, {"1.0^git1~pre", "1.0^git1", -1},
	}
	for _, tc := range cases {
		if got := rpmvercmp(tc.a, tc.b); got != tc.want {
			t.Errorf("rpmvercmp(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestCompareEVR(t *testing.T) {
	p := func(e, v, r string) Package { return Package{Name: "x", Epoch: e, Version: v, Release: r} }
	cases := []struct {
		a, b Package
		want int
	}{
		{p("", "1.0", "1"), p("0", "1.0", "1"), 0},
		{p("1", "1.0", "1"), p("", "9.0", "9"), 1},
		{p("", "1.1.0", "1"), p("", "1.0.0", "1"), 1},
		{p("", "1.0.0", "2"), p("", "1.0.0", "10"), -1},
	}
	for _, tc := range cases {
		if got := CompareEVR(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareEVR(%s, %s) = %d, want %d", tc.a.EVR(), tc.b.EVR(), got, tc.want)
		}
	}
}

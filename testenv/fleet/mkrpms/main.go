// Command mkrpms builds the RPMs of hello-web, the demo service the test
// fleet rolls out:
//
//	go run ./testenv/fleet/mkrpms -out DIR [-versions 1.0.0,1.1.0]
//
// It writes hello-web-1.0.0-1.x86_64.rpm, hello-web-1.1.0-1.x86_64.rpm and
// hello-web-1.2.0-1.x86_64.rpm (built to fail its health check) and prints
// their paths. Each holds /usr/bin/hello-web and /etc/init.d/hello-web.
//
// The packages are reproducible: the same sources and Go toolchain give
// byte-identical files, with the build time and file times taken from
// SOURCE_DATE_EPOCH or else a constant. They have no scriptlets and no
// dependencies, because Debian's rpm database has no package that provides
// /bin/sh, so dnf would refuse any RPM with a shell scriptlet.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/rpmpack"
	"golang.org/x/sync/errgroup"

	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

const (
	name    = "hello-web"
	rel     = "1"
	arch    = "x86_64"
	mainPkg = "github.com/lieutenant-deploy/lieutenant/testenv/helloweb/cmd/hello-web"
	// defaultEpoch (2026-01-01T00:00:00Z) stands in for SOURCE_DATE_EPOCH so
	// that two runs agree without any setting.
	defaultEpoch = 1767225600
)

// release is one version of hello-web the fleet can roll out.
type release struct {
	version string
	healthy bool
}

// releases are the versions a rollout test moves between: an upgrade that
// works, and one that starts but fails its health check.
func releases() []release {
	return []release{{"1.0.0", true}, {"1.1.0", true}, {"1.2.0", false}}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		stop()
		if errors.Is(err, flag.ErrHelp) {
			return // the flag package has printed the usage
		}
		fmt.Fprintln(os.Stderr, "mkrpms:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkrpms", flag.ContinueOnError)
	out := fs.String("out", "", "directory to write the RPMs to (required)")
	versions := fs.String("versions", "", "comma-separated versions to build (default: all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("parse arguments: want -out DIR and no other arguments")
	}
	rels, err := selectReleases(*versions)
	if err != nil {
		return err
	}
	when, err := buildTime(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	paths, err := build(ctx, *out, rels, when)
	if err != nil {
		return err
	}
	for _, p := range paths {
		fmt.Println(p)
	}
	return nil
}

// selectReleases returns the releases named in a comma-separated list, or
// all of them for an empty list.
func selectReleases(list string) ([]release, error) {
	all := releases()
	if list == "" {
		return all, nil
	}
	known := make([]string, len(all))
	for i, r := range all {
		known[i] = r.version
	}
	var rels []release
	for _, v := range strings.Split(list, ",") {
		i := slices.Index(known, strings.TrimSpace(v))
		if i < 0 {
			return nil, fmt.Errorf("select version %q: unknown (known: %s)", v, strings.Join(known, ", "))
		}
		rels = append(rels, all[i])
	}
	return rels, nil
}

// buildTime is SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else a
// constant: never the clock, which would make every build differ.
func buildTime(sourceDateEpoch string) (time.Time, error) {
	if sourceDateEpoch == "" {
		return time.Unix(defaultEpoch, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(sourceDateEpoch, 10, 64)
	// RPM keeps times as 32-bit numbers.
	if err != nil || sec < 0 || sec > 1<<31-1 {
		return time.Time{}, fmt.Errorf("parse SOURCE_DATE_EPOCH %q: want seconds since 1970 that fit in 31 bits", sourceDateEpoch)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// build compiles and packs rels into dir and returns the paths it wrote, in
// the order of rels. The go builds run in parallel; they share the build
// cache, so only the first compiles and every one links.
func build(ctx context.Context, dir string, rels []release, when time.Time) ([]string, error) {
	goCmd, err := goCommand()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make output directory %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp("", "mkrpms-")
	if err != nil {
		return nil, fmt.Errorf("make build directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	paths := make([]string, len(rels))
	g, ctx := errgroup.WithContext(ctx)
	for i, r := range rels {
		g.Go(func() error {
			bin, err := compile(ctx, goCmd, filepath.Join(tmp, r.version), r)
			if err != nil {
				return err
			}
			rpm, err := pack(r, bin, helloweb.InitScript(), when)
			if err != nil {
				return err
			}
			paths[i] = filepath.Join(dir, fileName(r))
			return writeFile(paths[i], rpm)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return paths, nil
}

// goCommand is the go command of the toolchain that built this program (the
// one `go run` used), so the binaries in the RPMs come from the Go version the
// caller chose; else the one on PATH.
func goCommand() (string, error) {
	if root := runtime.GOROOT(); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("find the go command: %w", err)
	}
	return p, nil
}

// compile builds hello-web for linux/amd64 with r's version and health and
// returns the binary. Every input that could differ between two machines or
// runs is pinned: paths (-trimpath), the build ID, VCS stamping (which
// would change with every commit and uncommitted edit anywhere in the
// repository), cgo, the amd64 level and the caller's GOFLAGS.
func compile(ctx context.Context, goCmd, out string, r release) ([]byte, error) {
	ldflags := fmt.Sprintf("-s -w -buildid= -X main.version=%s -X main.healthy=%t", r.version, r.healthy)
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, mainPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build hello-web %s: %w: %s", r.version, err, bytes.TrimSpace(stderr.Bytes()))
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read hello-web %s binary: %w", r.version, err)
	}
	return bin, nil
}

func fileName(r release) string {
	return fmt.Sprintf("%s-%s-%s.%s.rpm", name, r.version, rel, arch)
}

// pack makes the RPM of release r from its binary and the init script.
func pack(r release, bin, initScript []byte, when time.Time) ([]byte, error) {
	desc := "hello-web is the demo service of the lieutenant test fleet: a page that\n" +
		"shows its host and version, /health and /version. The init script\n" +
		"/etc/init.d/hello-web runs it on hosts without systemd."
	if !r.healthy {
		desc += "\n\nThis release is broken on purpose: it starts and serves pages, but\n" +
			"/health answers 503, which a rollout's verification must catch."
	}
	p, err := rpmpack.NewRPM(rpmpack.RPMMetaData{
		Name:        name,
		Version:     r.version,
		Release:     rel,
		Arch:        arch,
		OS:          "linux",
		Summary:     "Demo web service for the lieutenant test fleet",
		Description: desc,
		Licence:     "Apache-2.0",
		URL:         "https://github.com/lieutenant-deploy/lieutenant",
		Vendor:      "lieutenant",
		Group:       "Applications/Internet",
		// A fixed host name, as rpmbuild's reproducible builds use.
		BuildHost: "reproducible",
		BuildTime: when,
		// gzip, which every rpm reads, at its default level: level 9 (the
		// library's default) is five times slower for 2.5% less size.
		Compressor: "gzip:6",
		Epoch:      rpmpack.NoEpoch,
		// rpmbuild adds the arch-qualified provide too; dnf uses it to
		// tell the packages of one name on multilib hosts apart.
		Provides: rpmpack.Relations{{Name: name + "(x86-64)", Version: r.version + "-" + rel, Sense: rpmpack.SenseEqual}},
	})
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", fileName(r), err)
	}
	mtime := uint32(when.Unix())
	p.AddFile(rpmpack.RPMFile{Name: "/usr/bin/hello-web", Body: bin, Mode: 0o755, Owner: "root", Group: "root", MTime: mtime})
	p.AddFile(rpmpack.RPMFile{Name: "/etc/init.d/hello-web", Body: initScript, Mode: 0o755, Owner: "root", Group: "root", MTime: mtime})
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		return nil, fmt.Errorf("pack %s: %w", fileName(r), err)
	}
	return buf.Bytes(), nil
}

// writeFile replaces path atomically, so that a package repository built
// from the directory never serves half a file.
func writeFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".mkrpms-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

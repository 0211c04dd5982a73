package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/lieutenant-deploy/lieutenant/playbook"
	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

// SSHFleet is a fleet of hosts reached over real SSH: one OpenSSH server
// listening on 127.0.0.<first>...<first+n-1>, one address per host, with the
// shims of testenv/shims standing in for rpm, dnf and systemctl. Each host's
// packages and services live in Root/<address>. The real lieutenant binary,
// SSH transport, known_hosts checks and connection reuse are exercised; only
// the package manager is simulated. Rollouts on real RPM hosts are the
// docker-compose fleet's job.
type SSHFleet struct {
	// Servers are the sshds: OpenSSH listens on at most 16 addresses, so
	// every hostsPerSSHD hosts share one.
	Servers    []*SSHD
	Root       string
	Hosts      []FleetHost
	KnownHosts string // every host's address and port with its server's real key
	User       string
	Identity   string // the client key every server authorizes
}

// FleetHost is one host of an SSHFleet.
type FleetHost struct {
	Name    string // web-1, web-2, ...
	Address string // 127.0.0.N
	Port    int
}

const hostsPerSSHD = 15

// Connections is how many SSH logins the fleet's servers accepted.
func (f *SSHFleet) Connections() int {
	n := 0
	for _, s := range f.Servers {
		n += strings.Count(s.Log(), "Accepted publickey")
	}
	return n
}

// StartSSHFleet starts n hosts named web-1... on 127.0.0.<first>..., each
// with installed (NEVRA) installed; available are the packages the fleet's
// dnf can install.
func StartSSHFleet(t testing.TB, n, first int, installed string, available ...string) *SSHFleet {
	t.Helper()
	if first < 2 || first+n > 255 {
		t.Fatalf("StartSSHFleet: addresses 127.0.0.%d-%d are not usable", first, first+n-1)
	}
	_, self, _, _ := runtime.Caller(0)
	shims := filepath.Join(filepath.Dir(self), "shims")
	f := &SSHFleet{Root: t.TempDir()}
	for i := 0; i < n; i++ {
		f.Hosts = append(f.Hosts, FleetHost{Name: fmt.Sprintf("web-%d", i+1), Address: "127.0.0." + strconv.Itoa(first+i)})
	}
	var repo strings.Builder
	for _, a := range available {
		p := mustPackage(a)
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", p.Name, epochOr0(p), p.Version, p.Release, p.Arch)
		// dnf takes the spec with and without the arch.
		fmt.Fprintf(&repo, "%s\t%s\n%s-%s\t%s\n", p.NEVRA(), line, p.Name, p.EVR(), line)
	}
	writeFile(t, filepath.Join(f.Root, "repo"), repo.String())
	for _, h := range f.Hosts {
		f.SetInstalled(t, h.Name, installed)
	}
	// sshd takes the first SetEnv it reads; SHLVL=1 keeps bash from reading
	// ~/.bashrc (see StartSSHD).
	env := fmt.Sprintf("SetEnv SHLVL=1 PATH=%s:/usr/local/bin:/usr/bin:/bin LIEUTENANT_FLEET_ROOT=%s", shims, f.Root)
	var known strings.Builder
	for start := 0; start < n; start += hostsPerSSHD {
		group := f.Hosts[start:min(start+hostsPerSSHD, n)]
		lines := []string{env}
		for _, h := range group {
			lines = append(lines, "ListenAddress "+h.Address)
		}
		sshd := StartSSHD(t, SSHDConfig(lines...))
		if len(f.Servers) > 0 {
			// One client key for the whole fleet.
			writeFile(t, filepath.Join(sshd.Dir, "authorized_keys"), string(sshdReadFile(t, f.Identity+".pub")))
		} else {
			f.User, f.Identity = sshd.User, sshd.IdentityFile
		}
		f.Servers = append(f.Servers, sshd)
		key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshd.HostPublicKey)))
		for i := range group {
			group[i].Port = sshd.Port
			fmt.Fprintf(&known, "[%s]:%d %s\n", group[i].Address, sshd.Port, key)
		}
	}
	f.KnownHosts = filepath.Join(f.Root, "known_hosts")
	writeFile(t, f.KnownHosts, known.String())
	return f
}

func epochOr0(p playbook.Package) string {
	if p.Epoch == "" {
		return "0"
	}
	return p.Epoch
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *SSHFleet) host(t testing.TB, name string) FleetHost {
	t.Helper()
	i := slices.IndexFunc(f.Hosts, func(h FleetHost) bool { return h.Name == name })
	if i < 0 {
		t.Fatalf("no host %s in the fleet", name)
	}
	return f.Hosts[i]
}

// SetInstalled sets what rpm reports for the host (a NEVRA), and the
// version the package's service runs.
func (f *SSHFleet) SetInstalled(t testing.TB, host, nevra string) {
	t.Helper()
	p := mustPackage(nevra)
	dir := filepath.Join(f.Root, f.host(t, host).Address)
	writeFile(t, filepath.Join(dir, "rpmdb", p.Name), fmt.Sprintf("%s\t%s\t%s\t%s\t%s\n", p.Name, epochOr0(p), p.Version, p.Release, p.Arch))
	writeFile(t, filepath.Join(dir, "services", p.Name), p.Version+"\n")
}

// Installed is the version of pkg the host has ("" when none).
func (f *SSHFleet) Installed(t testing.TB, host, pkg string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.Root, f.host(t, host).Address, "rpmdb", pkg))
	if err != nil {
		return ""
	}
	fields := strings.Split(strings.TrimSpace(string(data)), "\t")
	if len(fields) < 4 {
		t.Fatalf("%s's rpm database entry for %s is malformed: %q", host, pkg, data)
	}
	return fields[2] + "-" + fields[3]
}

// Running is the version of the service the host runs ("" when stopped).
func (f *SSHFleet) Running(host, service string) string {
	for _, h := range f.Hosts {
		if h.Name == host {
			data, _ := os.ReadFile(filepath.Join(f.Root, h.Address, "services", service))
			return strings.TrimSpace(string(data))
		}
	}
	return ""
}

// Inventory is the fleet as an inventory file; every host's balancer
// server is named like HAProxy's (web1, web2, ...).
func (f *SSHFleet) Inventory() string {
	var b strings.Builder
	b.WriteString("hosts:\n")
	for i, h := range f.Hosts {
		fmt.Fprintf(&b, "  %s: {address: %s, port: %d, balancer_server: web%d}\n", h.Name, h.Address, h.Port, i+1)
	}
	return b.String()
}

// ServeHelloWeb starts hello-web on every host, on one port, serving the
// version the host's service runs; versions in broken fail /health. It
// returns the port and the servers' addresses.
func (f *SSHFleet) ServeHelloWeb(t testing.TB, broken ...string) (int, []string) {
	t.Helper()
	var ips []string
	for _, h := range f.Hosts {
		ips = append(ips, h.Address)
	}
	lns, port, err := listenAllOnOnePort(ips)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for i, h := range f.Hosts {
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := f.Running(h.Name, "hello-web")
			if v == "" {
				// A stopped service does not answer.
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
					}
				}
				return
			}
			helloweb.Handler(h.Name, v, !slices.Contains(broken, v)).ServeHTTP(w, r)
		})
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		go func(ln net.Listener) { _ = srv.Serve(ln) }(lns[i])
		t.Cleanup(func() { _ = srv.Close() })
		addrs = append(addrs, lns[i].Addr().String())
	}
	return port, addrs
}

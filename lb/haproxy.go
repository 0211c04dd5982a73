package lb

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HAProxy drives the servers of one backend through HAProxy's runtime API
// (the "stats socket", which must be declared with "level admin").
//
// Every runtime API command travels on a connection of its own in HAProxy's
// non-interactive mode: lieutenant writes one line and reads the reply until
// HAProxy closes the connection. No connection is kept between calls, so an
// HAProxy reload between two polls costs nothing, and an *HAProxy is safe for
// concurrent use; at most 8 connections are open at once (see
// HAProxyMaxConnections).
//
// How the contract maps onto HAProxy:
//   - Servers reads `show stat` (sessions, queue, status) of the backend
//     and, when a status does not say which admin state the server is in
//     ("DOWN" and "NOLB" look the same in ready and drain), `show servers
//     state <backend>` for the exact admin bits. Drain and Enable read their
//     server's row alone (`show stat <backend id> 4 <server id>`, the ids
//     read once from `show servers state`), so a thousand of them at once
//     against a backend of a thousand servers cost what one server's does.
//   - Drain is `set server B/S state drain`, then polling until scur and qcur
//     are 0, then `set server B/S state maint`. On timeout with KillSessions it
//     is `set server B/S state maint` followed by `shutdown sessions server
//     B/S`: maintenance first, so that no new persistent session can slip in
//     between the two commands.
//   - Enable is `set server B/S state ready`, then polling until the status is
//     UP ("UP", "UP 1/2", or "no check" for an unchecked server). HAProxy 2.6
//     starts a server leaving maintenance as UP before any check has run, and
//     checks it only at its next scheduled check (up to "inter" later; there
//     is no runtime command to check now), so a broken server would take
//     traffic until then. For a checked server in maintenance Enable therefore
//     goes through drain (no load-balanced traffic) with the health forced
//     down (`set server B/S health down`), waits for one check made from then
//     on to pass (the check health counter leaves 0), and only then forces the
//     health up and sets ready: one check interval at most ("downinter" when
//     set), not "rise" of them. With EnableOptions.Verified, lieutenant's own
//     check of the server made just before stands for that check, and the
//     server is set ready at once (HAProxy 2.6 shows it UP at once, with the
//     least health, so its next failed check takes it out; HAProxy 3.1's
//     "init-state down" makes it wait for that check, which Enable then waits
//     for).
//   - A server in maintenance reports HealthDown, as HAProxy does: checks are
//     paused there.
//   - A server whose check reports NOLB (stopping, e.g. "http-check
//     disable-on-404") reports HealthDown: it takes no new traffic.
type HAProxy struct {
	addr     string // as configured, for messages
	network  string
	address  string
	backend  string
	poll     time.Duration
	cmdLimit time.Duration
	grace    time.Duration

	// conns bounds the runtime API connections open at once: HAProxy
	// serves 10 at a time on a stats socket unless "stats maxconn" says
	// otherwise, and refuses or stalls the rest.
	conns chan struct{}

	// ids caches where HAProxy keeps each server (read once from `show
	// servers state`), so that a drain or an enable reads its server's row
	// alone: a backend of a thousand servers is a quarter megabyte a read.
	idMu sync.Mutex
	ids  map[string]serverID
}

// serverID is where HAProxy keeps a server: the ids `show stat` takes to
// answer for that one server.
type serverID struct{ backend, server int }

// HAProxyOption changes a default of NewHAProxy.
type HAProxyOption func(*HAProxy)

// HAProxyPollInterval sets how often Drain and Enable look at the server while
// they wait (default 50ms). A shorter interval finishes sooner after the last
// session ends, at one runtime API connection per poll.
func HAProxyPollInterval(d time.Duration) HAProxyOption {
	return func(h *HAProxy) {
		if d > 0 {
			h.poll = d
		}
	}
}

// HAProxyMaxConnections sets how many runtime API connections are open at
// once, at most (default 8, below the 10 HAProxy's stats socket serves at
// once by default; raise both together with its "stats maxconn").
func HAProxyMaxConnections(n int) HAProxyOption {
	return func(h *HAProxy) {
		if n > 0 {
			h.conns = make(chan struct{}, n)
		}
	}
}

// HAProxyCommandTimeout bounds one runtime API command, connect included,
// when ctx has no earlier deadline (default 10s), so that a hung HAProxy
// cannot stall a run forever.
func HAProxyCommandTimeout(d time.Duration) HAProxyOption {
	return func(h *HAProxy) {
		if d > 0 {
			h.cmdLimit = d
		}
	}
}

// NewHAProxy returns the adapter for backend on the runtime API at addr, which
// is one of "ipv4@host:port", "ipv6@host:port", "host:port", "unix@/path" or
// "/path" (the forms HAProxy's own "stats socket" line uses). It checks the
// forms only; nothing is dialled until the first call.
func NewHAProxy(addr, backend string, opts ...HAProxyOption) (*HAProxy, error) {
	network, address, err := parseAPIAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("haproxy runtime API address %q: %w", addr, err)
	}
	if !validHAProxyName(backend) {
		return nil, fmt.Errorf("haproxy backend %q: not a valid HAProxy proxy name (letters, digits, '.', '-', '_', ':')", backend)
	}
	h := &HAProxy{
		addr:     addr,
		network:  network,
		address:  address,
		backend:  backend,
		poll:     50 * time.Millisecond,
		cmdLimit: 10 * time.Second,
		grace:    5 * time.Second,
		conns:    make(chan struct{}, 8),
	}
	for _, o := range opts {
		o(h)
	}
	return h, nil
}

// String names the adapter in logs: "haproxy ipv4@10.0.0.5:9999 backend web".
func (h *HAProxy) String() string { return "haproxy " + h.addr + " backend " + h.backend }

func parseAPIAddr(addr string) (network, address string, err error) {
	hostPort := func(network, hp string) (string, string, error) {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			// HAProxy writes IPv6 without brackets ("ipv6@::1:9999"): the
			// port is after the last colon.
			i := strings.LastIndexByte(hp, ':')
			if i < 0 {
				return "", "", errors.New("want host:port")
			}
			host, port = hp[:i], hp[i+1:]
		}
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			return "", "", fmt.Errorf("bad port %q", port)
		}
		return network, net.JoinHostPort(host, port), nil
	}
	switch {
	case strings.HasPrefix(addr, "unix@"):
		p := strings.TrimPrefix(addr, "unix@")
		if p == "" {
			return "", "", errors.New("empty socket path")
		}
		return "unix", p, nil
	case strings.HasPrefix(addr, "/"):
		return "unix", addr, nil
	case strings.HasPrefix(addr, "ipv4@"):
		return hostPort("tcp4", strings.TrimPrefix(addr, "ipv4@"))
	case strings.HasPrefix(addr, "ipv6@"):
		return hostPort("tcp6", strings.TrimPrefix(addr, "ipv6@"))
	case strings.Contains(addr, "@"):
		return "", "", errors.New("want ipv4@host:port, ipv6@host:port, host:port, unix@/path or /path")
	default:
		return hostPort("tcp", addr)
	}
}

// validHAProxyName accepts what HAProxy accepts in proxy and server names.
// Checking it also keeps a name from carrying ';' or a newline into a runtime
// API line, where it would start a second command.
func validHAProxyName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == '_', c == ':':
		default:
			return false
		}
	}
	return true
}

// maxReply bounds what one command may return; `show stat` of one backend is
// a few hundred bytes per server.
const maxReply = 16 << 20

// command sends one line to the runtime API and returns the whole reply.
func (h *HAProxy) command(ctx context.Context, cmd string) (string, error) {
	if err := ctxErr(ctx); err != nil {
		return "", err
	}
	select {
	case h.conns <- struct{}{}:
		defer func() { <-h.conns }()
	case <-ctx.Done():
		return "", fmt.Errorf("haproxy runtime API at %s: %q: %w", h.addr, cmd, ctxErr(ctx))
	}
	d := net.Dialer{Timeout: h.cmdLimit}
	conn, err := d.DialContext(ctx, h.network, h.address)
	if err != nil {
		if cerr := ctxErr(ctx); cerr != nil {
			return "", fmt.Errorf("haproxy runtime API at %s: %w", h.addr, cerr)
		}
		return "", fmt.Errorf("haproxy runtime API at %s is unreachable: %w", h.addr, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(h.cmdLimit)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	// A cancelled ctx has no deadline to copy: expire the connection's
	// instead, which unblocks the read at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	_, err = io.WriteString(conn, cmd+"\n")
	var reply []byte
	if err == nil {
		reply, err = io.ReadAll(io.LimitReader(conn, maxReply+1))
	}
	if err == nil && len(reply) > maxReply {
		// Cut short, a table would lose rows: servers would seem gone.
		err = fmt.Errorf("reply over %d MiB, refused", maxReply>>20)
	}
	if err != nil {
		if cerr := ctxErr(ctx); cerr != nil {
			return "", fmt.Errorf("haproxy runtime API at %s: %q: %w", h.addr, cmd, cerr)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("no reply within %s: %w", h.cmdLimit, err)
		}
		return "", fmt.Errorf("haproxy runtime API at %s: %q: %w", h.addr, cmd, err)
	}
	return string(reply), nil
}

// ctxErr is ctx.Err(), except that it reports DeadlineExceeded as soon as
// ctx's deadline has passed. The dialer and the connection carry that
// deadline into the poller, whose timer can fire before ctx's own: the
// call then fails with a bare "i/o timeout" while ctx.Err() is still nil
// for a moment, and a drain's timeout would read as an unreachable API.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// replyError turns a runtime API reply to an action command into an error:
// HAProxy answers a successful "set server" with an empty line and a failed
// one with a sentence.
func replyError(reply string) error {
	r := strings.TrimSpace(reply)
	if r == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(r, "No such server"), strings.HasPrefix(r, "Can't find server"):
		return fmt.Errorf("haproxy says %q: %w", r, ErrUnknownServer)
	case strings.HasPrefix(r, "No such backend"), strings.HasPrefix(r, "Can't find backend"),
		strings.HasPrefix(r, "No such proxy"):
		return fmt.Errorf("haproxy says %q: %w", r, ErrUnknownBackend)
	case strings.Contains(r, "Permission denied"):
		return fmt.Errorf("haproxy says %q: the stats socket needs \"level admin\"", r)
	}
	return fmt.Errorf("haproxy says %q", r)
}

// action sends a command that answers nothing on success.
func (h *HAProxy) action(ctx context.Context, cmd string) error {
	reply, err := h.command(ctx, cmd)
	if err != nil {
		return err
	}
	if err := replyError(reply); err != nil {
		return &refusedError{fmt.Errorf("%s: %w", cmd, err)}
	}
	return nil
}

// refusedError is an action HAProxy answered with an error, so it changed
// nothing; any other failed action may have been applied before its reply
// was lost.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

func refused(err error) bool {
	var r *refusedError
	return errors.As(err, &r)
}

func (h *HAProxy) setState(ctx context.Context, server string, a Admin) error {
	return h.action(ctx, "set server "+h.backend+"/"+server+" state "+string(a))
}

// haServer is a Server plus what only the adapter needs.
type haServer struct {
	Server
	checked     bool   // health checks enabled; read only when state is asked for exact
	checkStatus string // "L7OK", "L4CON"... as `show stat` shows it
	checkDesc   string // "Layer4 connection problem"...
}

// statRow is one server line of `show stat`.
type statRow struct {
	Backend, Name    string
	Queued, Sessions int
	Status           string
	CheckStatus      string
	CheckDesc        string
	// CheckHealth is the check's health counter (0 .. rise+fall-1), -1 when
	// HAProxy shows none (in maintenance, or without checks).
	CheckHealth int
}

// parseStat reads `show stat` CSV by column name, keeping the server rows of
// backend, which must be listed (its BACKEND row). Columns are looked up by
// header because HAProxy only promises the order of the first fields.
func parseStat(reply, backend string) ([]statRow, error) {
	rows, found, err := parseStatRows(reply, backend)
	if err == nil && !found {
		err = fmt.Errorf("show stat lists no backend %q: %w", backend, ErrUnknownBackend)
	}
	return rows, err
}

// parseStatRows is parseStat without the need for the BACKEND row; found
// says whether it was there.
func parseStatRows(reply, backend string) (rows []statRow, found bool, err error) {
	if !strings.HasPrefix(reply, "# ") {
		if err := replyError(reply); err != nil {
			return nil, false, err
		}
		return nil, false, errors.New("show stat: empty reply")
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(reply, "# ")))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	header, err := r.Read()
	if err != nil {
		return nil, false, fmt.Errorf("show stat header: %w", err)
	}
	col := make(map[string]int, len(header))
	for i, name := range header {
		col[name] = i
	}
	for _, need := range []string{"pxname", "svname", "qcur", "scur", "status"} {
		if _, ok := col[need]; !ok {
			return nil, false, fmt.Errorf("show stat: no %q column in header", need)
		}
	}
	field := func(rec []string, name string) string {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return ""
		}
		return rec[i]
	}
	// A count HAProxy did not give is no zero: an empty scur read as 0
	// would let a drain go straight to maintenance with sessions open.
	count := func(rec []string, name string) (int, error) {
		v := field(rec, name)
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("show stat: server %s/%s: %s is %q, want a count (0 or more)",
				backend, field(rec, "svname"), name, v)
		}
		return n, nil
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("show stat: %w", err)
		}
		if field(rec, "pxname") != backend {
			continue
		}
		switch field(rec, "svname") {
		case "BACKEND":
			found = true
			continue
		case "FRONTEND":
			continue
		}
		if field(rec, "svname") == "" {
			return nil, false, fmt.Errorf("show stat: backend %s: a server row without svname", backend)
		}
		row := statRow{
			Backend:   backend,
			Name:      field(rec, "svname"),
			Status:    field(rec, "status"),
			CheckDesc: field(rec, "check_desc"),
			// "* " marks a check in progress; the status after it is the
			// last completed one.
			CheckStatus: strings.TrimPrefix(field(rec, "check_status"), "* "),
		}
		if row.Queued, err = count(rec, "qcur"); err != nil {
			return nil, false, err
		}
		if row.Sessions, err = count(rec, "scur"); err != nil {
			return nil, false, err
		}
		row.CheckHealth = -1
		if field(rec, "check_health") != "" {
			if row.CheckHealth, err = count(rec, "check_health"); err != nil {
				return nil, false, err
			}
		}
		rows = append(rows, row)
	}
	return rows, found, nil
}

// parseStatus maps the status column of `show stat` (HAProxy 2.6,
// stats_fill_sv_stats) to the admin state and health it shows. exact is false
// when the status leaves the admin state open: a stopped or stopping server
// shows "DOWN" or "NOLB" whether it is ready or draining.
func parseStatus(status string) (admin Admin, health Health, exact bool) {
	word, _, _ := strings.Cut(status, " ")
	switch word {
	case "MAINT": // "MAINT", "MAINT (via b/s)", "MAINT (resolution)"
		return AdminMaint, HealthDown, true
	case "DRAIN": // "DRAIN", "DRAIN 1/2" (going down), "DRAIN (agent)"
		return AdminDrain, HealthUp, true
	case "UP": // "UP", "UP 1/2" (up, last check failed)
		return AdminReady, HealthUp, true
	case "no":
		if status == "no check" {
			return AdminReady, HealthNoCheck, true
		}
	case "DOWN", "NOLB": // "DOWN", "DOWN 1/2" (going up), "DOWN (agent)", "NOLB", "NOLB 1/2"
		return AdminReady, HealthDown, false
	}
	return AdminReady, HealthDown, false
}

// stateRow is one line of `show servers state`.
type stateRow struct {
	Name       string
	ID         serverID
	OpState    int // 0 stopped, 1 starting, 2 running, 3 stopping
	AdminBits  int // SRV_ADMF_* mask
	CheckState int // CHK_ST_* mask
}

// Admin state bits of `show servers state` (management.txt, "show servers
// state").
const (
	admFMaint = 0x01 // forced into maintenance
	admIMaint = 0x02 // inherited from a tracked server
	admCMaint = 0x04 // "disabled" in the configuration
	admFDrain = 0x08 // forced into drain
	admIDrain = 0x10 // inherited drain
	admRMaint = 0x20 // DNS resolution failed
	chkEnable = 0x04 // CHK_ST_ENABLED: the server's health check runs
)

// parseServersState reads `show servers state`: a version line, a "# "
// header and one space-separated line per server; it keeps backend's.
func parseServersState(reply, backend string) ([]stateRow, error) {
	lines := strings.Split(strings.TrimSpace(reply), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "# ") {
		if err := replyError(reply); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("show servers state: unexpected reply %q", firstLine(reply))
	}
	if v := strings.TrimSpace(lines[0]); v != "1" {
		return nil, fmt.Errorf("show servers state: format version %q, want 1", v)
	}
	col := map[string]int{}
	for i, name := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		col[name] = i
	}
	for _, need := range []string{"be_id", "be_name", "srv_id", "srv_name", "srv_op_state", "srv_admin_state", "srv_check_state"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("show servers state: no %q column in header", need)
		}
	}
	var rows []stateRow
	for _, line := range lines[2:] {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if i := col["be_name"]; i >= len(f) || f[i] != backend {
			continue
		}
		var row stateRow
		if i := col["srv_name"]; i < len(f) {
			row.Name = f[i]
		} else {
			return nil, fmt.Errorf("show servers state: backend %s: short line %q", backend, line)
		}
		// Every field read is required and bounded: a field read as 0 by
		// mistake would be a wrong id or a wrong admin state.
		get := func(name string, least, most int) (int, error) {
			i := col[name]
			if i >= len(f) {
				return 0, fmt.Errorf("show servers state: server %s/%s: no %s (short line %q)", backend, row.Name, name, line)
			}
			n, err := strconv.Atoi(f[i])
			if err != nil || n < least || n > most {
				return 0, fmt.Errorf("show servers state: server %s/%s: %s is %q, want %d to %d", backend, row.Name, name, f[i], least, most)
			}
			return n, nil
		}
		var err error
		if row.ID.backend, err = get("be_id", 1, math.MaxInt); err != nil {
			return nil, err
		}
		if row.ID.server, err = get("srv_id", 1, math.MaxInt); err != nil {
			return nil, err
		}
		if row.OpState, err = get("srv_op_state", 0, 3); err != nil {
			return nil, err
		}
		if row.AdminBits, err = get("srv_admin_state", 0, math.MaxInt); err != nil {
			return nil, err
		}
		if row.CheckState, err = get("srv_check_state", 0, math.MaxInt); err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// adminOf and healthOf read the exact state from `show servers state`.
func (r stateRow) adminOf() Admin {
	switch {
	case r.AdminBits&(admFMaint|admIMaint|admCMaint|admRMaint) != 0:
		return AdminMaint
	case r.AdminBits&(admFDrain|admIDrain) != 0:
		return AdminDrain
	}
	return AdminReady
}

func (r stateRow) healthOf() Health {
	switch r.OpState {
	case 1, 2: // starting (slowstart) or running
		if r.CheckState&chkEnable == 0 {
			return HealthNoCheck
		}
		return HealthUp
	}
	return HealthDown // stopped, or stopping (NOLB): no new traffic either way
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func (h *HAProxy) stat(ctx context.Context) ([]statRow, error) {
	// Every proxy's backend and server rows (type mask 2|4), filtered here
	// by name: `show stat NAME ...` takes the first proxy of that name,
	// which is the frontend when a frontend and the backend share it.
	reply, err := h.command(ctx, "show stat -1 6 -1")
	if err != nil {
		return nil, err
	}
	rows, err := parseStat(reply, h.backend)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", h.backend, err)
	}
	return rows, nil
}

// state reads the backend. With exact, or when a status leaves the admin
// state open, it also reads `show servers state` for the admin bits.
func (h *HAProxy) state(ctx context.Context, exact bool) ([]haServer, error) {
	rows, err := h.stat(ctx)
	if err != nil {
		return nil, err
	}
	return h.servers(ctx, rows, exact)
}

// servers reads rows of `show stat` as servers; with exact, or when a status
// leaves the admin state open, the exact bits of `show servers state` too.
func (h *HAProxy) servers(ctx context.Context, rows []statRow, exact bool) ([]haServer, error) {
	out := make([]haServer, len(rows))
	for i, r := range rows {
		admin, health, ok := parseStatus(r.Status)
		exact = exact || !ok
		out[i] = haServer{
			Server:      Server{Name: r.Name, Admin: admin, Health: health, Sessions: r.Sessions, Queued: r.Queued},
			checkStatus: r.CheckStatus,
			checkDesc:   r.CheckDesc,
		}
	}
	if !exact {
		return out, nil
	}
	states, err := h.exactStates(ctx)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]stateRow, len(states))
	for _, s := range states {
		byName[s.Name] = s
	}
	for i := range out {
		if s, ok := byName[out[i].Name]; ok {
			out[i].Admin, out[i].Health = s.adminOf(), s.healthOf()
			out[i].checked = s.CheckState&chkEnable != 0
		}
	}
	return out, nil
}

// exactStates reads `show servers state` of the backend: exact admin and
// check states and every server's ids, which it caches.
func (h *HAProxy) exactStates(ctx context.Context) ([]stateRow, error) {
	reply, err := h.command(ctx, "show servers state "+h.backend)
	if err != nil {
		return nil, err
	}
	states, err := parseServersState(reply, h.backend)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", h.backend, err)
	}
	ids := make(map[string]serverID, len(states))
	for _, st := range states {
		ids[st.Name] = st.ID
	}
	h.idMu.Lock()
	h.ids = ids
	h.idMu.Unlock()
	return states, nil
}

// row reads one server's `show stat` row alone. Ids the cache does not
// have, or that answer for another server (HAProxy reloaded with another
// configuration), are read again, once.
func (h *HAProxy) row(ctx context.Context, server string) (statRow, error) {
	for fresh := false; ; fresh = true {
		h.idMu.Lock()
		id, ok := h.ids[server]
		h.idMu.Unlock()
		if !ok && !fresh {
			if _, err := h.exactStates(ctx); err != nil {
				return statRow{}, err
			}
			continue
		}
		if !ok {
			hs, err := h.state(ctx, false)
			if err != nil {
				return statRow{}, err
			}
			return statRow{}, unknownServer(plain(hs))
		}
		reply, err := h.command(ctx, fmt.Sprintf("show stat %d 4 %d", id.backend, id.server))
		if err != nil {
			return statRow{}, err
		}
		rows, _, err := parseStatRows(reply, h.backend)
		if err != nil {
			return statRow{}, fmt.Errorf("backend %s: %w", h.backend, err)
		}
		for _, r := range rows {
			if r.Name == server {
				return r, nil
			}
		}
		if fresh {
			return statRow{}, fmt.Errorf("backend %s: show stat of server id %d answers for no server %s: %w", h.backend, id.server, server, ErrUnknownServer)
		}
		if _, err := h.exactStates(ctx); err != nil {
			return statRow{}, err
		}
	}
}

// server reads one server's state: its row, and with exact, or when the
// status leaves the admin state open, the exact bits of `show servers
// state` (the whole backend's).
func (h *HAProxy) server(ctx context.Context, name string, exact bool) (haServer, error) {
	r, err := h.row(ctx, name)
	if err != nil {
		return haServer{}, err
	}
	hs, err := h.servers(ctx, []statRow{r}, exact)
	if err != nil {
		return haServer{}, err
	}
	return hs[0], nil
}

func plain(hs []haServer) []Server {
	s := make([]Server, len(hs))
	for i, h := range hs {
		s[i] = h.Server
	}
	return s
}

// Servers returns the servers of the backend in configuration order.
func (h *HAProxy) Servers(ctx context.Context) ([]Server, error) {
	hs, err := h.state(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("servers of %s: %w", h.backend, err)
	}
	return plain(hs), nil
}

// Drain implements Balancer.Drain; see the type's comment for the commands.
func (h *HAProxy) Drain(ctx context.Context, server string, opts DrainOptions) error {
	if err := h.drain(ctx, server, opts); err != nil {
		return fmt.Errorf("drain %s/%s: %w", h.backend, server, err)
	}
	return nil
}

func (h *HAProxy) drain(ctx context.Context, server string, opts DrainOptions) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if !validHAProxyName(server) {
		return fmt.Errorf("not a valid HAProxy server name: %w", ErrUnknownServer)
	}
	s, err := h.server(ctx, server, false)
	if err != nil {
		return err
	}
	if s.Admin == AdminMaint {
		return nil
	}
	prev := s.Admin
	if prev != AdminDrain {
		if err := h.setState(ctx, server, AdminDrain); err != nil {
			if refused(err) {
				return err
			}
			// HAProxy may have applied the command before ctx ended and the
			// reply was lost: put the state back rather than guess.
			return errors.Join(err, h.restore(ctx, server, prev))
		}
	}

	timeout := opts.EffectiveTimeout()
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	last, err := h.waitIdle(waitCtx, server)
	if err != nil {
		// Whatever the poll reported, a passed deadline is the timeout: a
		// poll it cut short may have failed in any way.
		if werr := ctxErr(waitCtx); werr != nil {
			err = werr
		}
	}
	cancel()
	switch {
	case err == nil:
		if err := h.setState(ctx, server, AdminMaint); err != nil {
			// A failed drain leaves the server as it found it.
			return errors.Join(err, h.restore(ctx, server, prev))
		}
		return nil
	case ctxErr(ctx) != nil:
		return errors.Join(
			fmt.Errorf("waiting for %d sessions to end: %w", last.Sessions, ctxErr(ctx)),
			h.restore(ctx, server, prev))
	case !errors.Is(err, context.DeadlineExceeded):
		return errors.Join(err, h.restore(ctx, server, prev))
	case opts.KillSessions:
		return h.kill(ctx, server, prev)
	}
	if rerr := h.restore(ctx, server, prev); rerr != nil {
		return errors.Join(fmt.Errorf("%d sessions and %d queued after %s: %w", last.Sessions, last.Queued, timeout, ErrDrainTimeout), rerr)
	}
	return fmt.Errorf("%d sessions and %d queued after %s, put back to %s: %w",
		last.Sessions, last.Queued, timeout, prev, ErrDrainTimeout)
}

// waitIdle polls until the server has no session and nothing queued. It
// returns the last row it saw, for messages.
func (h *HAProxy) waitIdle(ctx context.Context, server string) (statRow, error) {
	return h.pollServer(ctx, server, func(r statRow) bool { return r.Sessions == 0 && r.Queued == 0 })
}

// kill ends a drain that ran out of time: maintenance first, so no new
// persistent session lands between the two commands, then the sessions go.
func (h *HAProxy) kill(ctx context.Context, server string, prev Admin) error {
	if err := h.setState(ctx, server, AdminMaint); err != nil {
		return errors.Join(err, h.restore(ctx, server, prev))
	}
	if err := h.action(ctx, "shutdown sessions server "+h.backend+"/"+server); err != nil {
		return err
	}
	// Shutdown is asynchronous; wait a little for the count to reach zero so
	// that "drained" still means "no sessions" to the caller.
	waitCtx, cancel := context.WithTimeout(ctx, h.grace)
	defer cancel()
	last, err := h.waitIdle(waitCtx, server)
	switch {
	case err == nil:
		return nil
	case ctxErr(ctx) != nil:
		return fmt.Errorf("in maintenance, waiting for %d sessions to end after shutdown sessions: %w",
			last.Sessions, ctxErr(ctx))
	case ctxErr(waitCtx) != nil:
		// Not the caller's deadline: say so rather than wrap
		// DeadlineExceeded, which would read as the caller's.
		return fmt.Errorf("in maintenance, but %d sessions still open %s after shutdown sessions",
			last.Sessions, h.grace)
	}
	return fmt.Errorf("in maintenance, but %d sessions still open after shutdown sessions: %w", last.Sessions, err)
}

// restore puts the admin state back after a failed drain. It runs with a
// grace period of its own because ctx may be the reason the drain failed.
func (h *HAProxy) restore(ctx context.Context, server string, prev Admin) error {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.grace)
	defer cancel()
	if err := h.setState(gctx, server, prev); err != nil {
		return fmt.Errorf("putting it back to %s failed, it may be left draining: %w", prev, err)
	}
	return nil
}

// Enable implements Balancer.Enable; see the type's comment for the commands.
func (h *HAProxy) Enable(ctx context.Context, server string, opts EnableOptions) error {
	if err := h.enable(ctx, server, opts); err != nil {
		return fmt.Errorf("enable %s/%s: %w", h.backend, server, err)
	}
	return nil
}

func (h *HAProxy) enable(ctx context.Context, server string, opts EnableOptions) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	if !validHAProxyName(server) {
		return fmt.Errorf("not a valid HAProxy server name: %w", ErrUnknownServer)
	}
	// Whether a server in maintenance is checked decides how it comes
	// back, unless the caller verified it: then no exact read is needed.
	s, err := h.server(ctx, server, !opts.Verified)
	if err != nil {
		return err
	}
	if s.Serving() {
		return nil
	}
	timeout := opts.EffectiveTimeout()
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	last, err := h.bringUp(ctx, waitCtx, server, s.Admin == AdminMaint && s.checked && !opts.Verified)
	if err != nil {
		if werr := ctxErr(waitCtx); werr != nil {
			err = werr // see drain
		}
	}
	cancel()
	switch {
	case err == nil:
		return nil
	case ctxErr(ctx) != nil:
		return errors.Join(fmt.Errorf("waiting for the health check: %w", ctxErr(ctx)), h.backToMaint(ctx, server))
	case !errors.Is(err, context.DeadlineExceeded):
		return errors.Join(err, h.backToMaint(ctx, server))
	}
	check := last.CheckStatus
	if last.CheckDesc != "" {
		check += " (" + last.CheckDesc + ")"
	}
	if check == "" {
		check = "none"
	}
	if merr := h.backToMaint(ctx, server); merr != nil {
		return errors.Join(fmt.Errorf("status %q after %s: %w", last.Status, timeout, ErrNotHealthy), merr)
	}
	return fmt.Errorf("status %q after %s, last check %s; put back in maintenance: %w",
		last.Status, timeout, check, ErrNotHealthy)
}

// bringUp puts the server in service and waits (with waitCtx) until it is
// up. With freshCheck it first waits, in drain with the health forced down,
// for one check made from then on to pass (see the type's comment).
func (h *HAProxy) bringUp(ctx, waitCtx context.Context, server string, freshCheck bool) (statRow, error) {
	prefix := "set server " + h.backend + "/" + server
	if freshCheck {
		if err := h.setState(ctx, server, AdminDrain); err != nil {
			return statRow{}, err
		}
		if err := h.action(ctx, prefix+" health down"); err != nil {
			return statRow{}, err
		}
		last, err := h.pollServer(waitCtx, server, func(r statRow) bool { return r.CheckHealth > 0 })
		if err != nil {
			return last, err
		}
		if err := h.action(ctx, prefix+" health up"); err != nil {
			return last, err
		}
	}
	if err := h.setState(ctx, server, AdminReady); err != nil {
		return statRow{}, err
	}
	return h.pollServer(waitCtx, server, func(r statRow) bool {
		a, hl, _ := parseStatus(r.Status)
		return a == AdminReady && hl != HealthDown
	})
}

// pollServer reads the server's row every poll interval until done says
// so, and returns the last row it read, for messages.
func (h *HAProxy) pollServer(ctx context.Context, server string, done func(statRow) bool) (statRow, error) {
	var last statRow
	for {
		r, err := h.row(ctx, server)
		if err != nil {
			return last, err
		}
		if last = r; done(last) {
			return last, nil
		}
		if err := sleep(ctx, h.poll); err != nil {
			return last, err
		}
	}
}

// backToMaint takes a server that failed to come up out of service again, with
// its own grace period because ctx may have ended.
func (h *HAProxy) backToMaint(ctx context.Context, server string) error {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.grace)
	defer cancel()
	if err := h.setState(gctx, server, AdminMaint); err != nil {
		return fmt.Errorf("putting it back in maintenance failed: %w", err)
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

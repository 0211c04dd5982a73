package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// defaultWebhookMaxBody bounds a delivery; push payloads are far smaller.
const defaultWebhookMaxBody = 1 << 20

// A delivery id is recognised again for an hour, and at most the last
// 10,000 are kept (about 1 MiB at most). Later, a repeat is handled as new,
// which costs at most one sync that reads the repository and finds it done.
const (
	defaultReplayWindow = time.Hour
	defaultReplayMax    = 10000
)

// webhookConfig says which pushes the endpoint trusts.
type webhookConfig struct {
	GitHubSecret []byte // HMAC-SHA256 key for X-Hub-Signature-256; nil: GitHub deliveries are refused
	GitLabToken  []byte // value X-Gitlab-Token must equal; nil: GitLab deliveries are refused
	MaxBody      int64  // bytes; 0 means defaultWebhookMaxBody (1 MiB)

	ReplayWindow time.Duration    // how long a delivery id is remembered; 0 means defaultReplayWindow
	ReplayMax    int              // how many delivery ids are remembered; 0 means defaultReplayMax
	Now          func() time.Time // the clock of the replay window; nil means time.Now
}

type webhookHandler struct {
	cfg    webhookConfig
	notify func(ref string) bool
	logf   func(format string, args ...any)
	seen   *deliveryIDs
}

// webhookDelivery is what the log line may say about a request: never
// credentials or the body.
type webhookDelivery struct {
	provider, event, id, ref string
}

// newWebhookHandler returns the handler for POST /webhook. A verified push
// calls notify(ref) with the pushed ref (e.g. "refs/heads/main"), which
// says whether it queued a sync; notify must not block. A verified
// delivery whose id was answered within cfg.ReplayWindow gets 200
// "duplicate" and notifies nothing.
// An empty secret or token counts as not configured: it would authenticate anyone.
func newWebhookHandler(cfg webhookConfig, notify func(ref string) bool, logf func(format string, args ...any)) http.Handler {
	if notify == nil {
		panic("newWebhookHandler: nil notify")
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = defaultWebhookMaxBody
	}
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = defaultReplayWindow
	}
	if cfg.ReplayMax <= 0 {
		cfg.ReplayMax = defaultReplayMax
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seen := &deliveryIDs{window: cfg.ReplayWindow, max: cfg.ReplayMax, keys: map[[sha256.Size]byte]struct{}{}}
	return &webhookHandler{cfg: cfg, notify: notify, logf: logf, seen: seen}
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d := webhookDelivery{provider: "unknown"}
	code, msg := h.handle(w, r, &d)
	// Header values are attacker-controlled until verified: quote and cap them.
	h.logf("webhook: remote=%s provider=%s event=%q delivery=%q ref=%q status=%d outcome=%q",
		r.RemoteAddr, d.provider, webhookTrim(d.event), webhookTrim(d.id), webhookTrim(d.ref), code, msg)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// handle verifies and dispatches one delivery, returning the status and a
// short message used both as the response body and in the log.
func (h *webhookHandler) handle(w http.ResponseWriter, r *http.Request, d *webhookDelivery) (int, string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, "method not allowed"
	}
	_, isGitLab := r.Header["X-Gitlab-Token"]
	_, hasSig := r.Header["X-Hub-Signature-256"]
	_, hasEvent := r.Header["X-Github-Event"]
	isGitHub := hasSig || hasEvent
	switch {
	case isGitHub && isGitLab:
		return http.StatusBadRequest, "ambiguous delivery: both github and gitlab headers"
	case isGitHub:
		d.provider, d.event, d.id = "github", r.Header.Get("X-GitHub-Event"), r.Header.Get("X-GitHub-Delivery")
		return h.github(w, r, d)
	case isGitLab:
		d.provider, d.event, d.id = "gitlab", r.Header.Get("X-Gitlab-Event"), r.Header.Get("X-Gitlab-Event-UUID")
		return h.gitlab(w, r, d)
	}
	return http.StatusUnauthorized, "unauthenticated: no github signature or gitlab token"
}

func (h *webhookHandler) github(w http.ResponseWriter, r *http.Request, d *webhookDelivery) (int, string) {
	if len(h.cfg.GitHubSecret) == 0 {
		return http.StatusUnauthorized, "github deliveries are not accepted"
	}
	// Check the header's shape before reading a body we may not need.
	want, ok := parseGitHubSignature(r.Header.Values("X-Hub-Signature-256"))
	if !ok {
		return http.StatusUnauthorized, "missing or malformed signature"
	}
	body, code, msg := h.readBody(w, r)
	if code != 0 {
		return code, msg
	}
	mac := hmac.New(sha256.New, h.cfg.GitHubSecret)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), want) {
		return http.StatusUnauthorized, "bad signature"
	}
	switch d.event {
	case "ping":
		return h.once(d, func() (int, string) { return http.StatusOK, "pong" })
	case "push":
		return h.push(body, d)
	}
	return h.once(d, ignoredEvent)
}

func ignoredEvent() (int, string) {
	return http.StatusAccepted, "ignored: not a push event"
}

// parseGitHubSignature accepts exactly one "sha256=<64 hex digits>" value;
// several values would leave it unclear which one was checked.
func parseGitHubSignature(values []string) ([]byte, bool) {
	if len(values) != 1 {
		return nil, false
	}
	hexSig, ok := strings.CutPrefix(values[0], "sha256=")
	if !ok {
		return nil, false
	}
	sig, err := hex.DecodeString(hexSig)
	if err != nil || len(sig) != sha256.Size {
		return nil, false
	}
	return sig, true
}

func (h *webhookHandler) gitlab(w http.ResponseWriter, r *http.Request, d *webhookDelivery) (int, string) {
	if len(h.cfg.GitLabToken) == 0 {
		return http.StatusUnauthorized, "gitlab deliveries are not accepted"
	}
	// Hash both sides so the comparison takes the same time whatever the
	// length of the guess; ConstantTimeCompare leaks a length mismatch.
	got := sha256.Sum256([]byte(r.Header.Get("X-Gitlab-Token")))
	want := sha256.Sum256(h.cfg.GitLabToken)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return http.StatusUnauthorized, "bad token"
	}
	body, code, msg := h.readBody(w, r)
	if code != 0 {
		return code, msg
	}
	if d.event != "Push Hook" {
		return h.once(d, ignoredEvent)
	}
	return h.push(body, d)
}

// readBody returns a non-zero status when the body cannot be used.
func (h *webhookHandler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", h.cfg.MaxBody)
		}
		return nil, http.StatusBadRequest, "cannot read body"
	}
	return body, 0, ""
}

// push parses only the ref: nothing else in the payload is trusted to drive
// a sync, which reads the repository itself.
func (h *webhookHandler) push(body []byte, d *webhookDelivery) (int, string) {
	var payload struct {
		Ref string `json:"ref"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		return http.StatusBadRequest, "payload is not json (use content type application/json)"
	}
	if payload.Ref == "" {
		return http.StatusBadRequest, "payload has no ref"
	}
	d.ref = payload.Ref
	return h.once(d, func() (int, string) {
		if !h.notify(payload.Ref) {
			return http.StatusAccepted, "ignored: lieutenant's own history branch"
		}
		return http.StatusAccepted, "sync queued"
	})
}

// once answers a verified, well-formed delivery with handle unless its id
// was answered within the replay window. Only such deliveries are
// remembered: an unverified request cannot fill the set, and one refused
// for its payload gets the same answer when it is sent again. A delivery
// without an id cannot be told from a new one and is handled.
func (h *webhookHandler) once(d *webhookDelivery, handle func() (int, string)) (int, string) {
	if d.id != "" && !h.seen.add(d.provider, d.id, h.cfg.Now()) {
		return http.StatusOK, "duplicate"
	}
	return handle()
}

// deliveryIDs is a bounded set of the delivery ids seen within a window.
// It keeps digests: the sender, even a verified one, picks an id's length.
type deliveryIDs struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	keys  map[[sha256.Size]byte]struct{}
	order []seenDelivery // oldest first
}

type seenDelivery struct {
	key [sha256.Size]byte
	at  time.Time
}

// add remembers provider's delivery id and reports whether it was new.
func (s *deliveryIDs) add(provider, id string, now time.Time) bool {
	key := sha256.Sum256([]byte(provider + "\x00" + id))
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.order) > 0 && now.Sub(s.order[0].at) >= s.window {
		s.forgetOldest()
	}
	if _, ok := s.keys[key]; ok {
		return false
	}
	if len(s.order) >= s.max {
		s.forgetOldest()
	}
	s.keys[key] = struct{}{}
	s.order = append(s.order, seenDelivery{key: key, at: now})
	return true
}

// forgetOldest drops the first id; append reallocates order as it is
// consumed, so memory stays proportional to max.
func (s *deliveryIDs) forgetOldest() {
	delete(s.keys, s.order[0].key)
	s.order = s.order[1:]
}

// webhookTrim keeps one hostile header from flooding the log.
func webhookTrim(s string) string {
	const limit = 128
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}

// coalescer turns bursts of pushes into single syncs. The watch loop
// receives from C, then syncs from the repository's current state: however
// many Notify calls arrive while that sync runs, they leave one pending
// value, so they cause exactly one more sync, and Notify never waits for it.
type coalescer struct {
	ch chan struct{}
}

func newCoalescer() *coalescer {
	return &coalescer{ch: make(chan struct{}, 1)}
}

// Notify marks a sync as pending; it never blocks.
func (c *coalescer) Notify() {
	select {
	case c.ch <- struct{}{}:
	default: // a sync is already pending and will see this change too
	}
}

// C delivers one value per pending sync.
func (c *coalescer) C() <-chan struct{} {
	return c.ch
}

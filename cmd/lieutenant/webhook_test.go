package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testGitHubSecret = "gh-secret-3f9a"
	testGitLabToken  = "gl-token-7c21"
	// A trimmed real push payload: only "ref" may matter.
	testPushBody = `{"ref":"refs/heads/main","before":"9f1c","after":"a2b7",` +
		`"repository":{"full_name":"acme/deploy"},"commits":[{"id":"a2b7","message":"bump"}]}`
)

func githubSign(secret, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// bodyOfSize pads a push payload for ref main to exactly n bytes.
func bodyOfSize(t *testing.T, n int) string {
	t.Helper()
	const head, tail = `{"ref":"refs/heads/main","pad":"`, `"}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("cannot build a %d-byte body", n)
	}
	return head + strings.Repeat("x", pad) + tail
}

func TestWebhook(t *testing.T) {
	both := webhookConfig{GitHubSecret: []byte(testGitHubSecret), GitLabToken: []byte(testGitLabToken)}
	small := both
	small.MaxBody = 64
	big := bodyOfSize(t, 65)
	exact := bodyOfSize(t, 64)
	huge := bodyOfSize(t, defaultWebhookMaxBody+1)

	github := func(event, sig string) map[string]string {
		return map[string]string{"X-GitHub-Event": event, "X-Hub-Signature-256": sig}
	}
	gitlab := func(event, token string) map[string]string {
		return map[string]string{"X-Gitlab-Event": event, "X-Gitlab-Token": token}
	}

	tests := []struct {
		name     string
		cfg      webhookConfig
		method   string // POST when empty
		header   map[string]string
		body     string
		wantCode int
		wantRefs []string
		wantBody string // substring of the response body
	}{
		{
			name:     "github push triggers with its ref",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, testPushBody)),
			body:     testPushBody,
			wantCode: http.StatusAccepted,
			wantRefs: []string{"refs/heads/main"},
			wantBody: "sync queued",
		},
		{
			name:     "github push of a tag passes the tag ref",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, `{"ref":"refs/tags/v1.2.0"}`)),
			body:     `{"ref":"refs/tags/v1.2.0"}`,
			wantCode: http.StatusAccepted,
			wantRefs: []string{"refs/tags/v1.2.0"},
		},
		{
			name:     "github signature of another body",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, `{"ref":"refs/heads/other"}`)),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github signature flipped in one digit",
			cfg:      both,
			header:   github("push", flipLastHex(githubSign(testGitHubSecret, testPushBody))),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github missing signature",
			cfg:      both,
			header:   map[string]string{"X-GitHub-Event": "push"},
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github signature with a different secret",
			cfg:      both,
			header:   github("push", githubSign("not-the-secret", testPushBody)),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github signature without sha256 prefix",
			cfg:      both,
			header:   github("push", strings.TrimPrefix(githubSign(testGitHubSecret, testPushBody), "sha256=")),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github sha1 signature scheme",
			cfg:      both,
			header:   github("push", "sha1="+strings.TrimPrefix(githubSign(testGitHubSecret, testPushBody), "sha256=")),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github signature not hex",
			cfg:      both,
			header:   github("push", "sha256="+strings.Repeat("zz", sha256.Size)),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github signature truncated",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, testPushBody)[:40]),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github empty signature",
			cfg:      both,
			header:   github("push", ""),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github nil secret refuses even a signature made with an empty key",
			cfg:      webhookConfig{GitLabToken: []byte(testGitLabToken)},
			header:   github("push", githubSign("", testPushBody)),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github ping answers pong",
			cfg:      both,
			header:   github("ping", githubSign(testGitHubSecret, `{"zen":"keep it simple"}`)),
			body:     `{"zen":"keep it simple"}`,
			wantCode: http.StatusOK,
			wantBody: "pong",
		},
		{
			name:     "github ping with bad signature",
			cfg:      both,
			header:   github("ping", githubSign("not-the-secret", `{"zen":"x"}`)),
			body:     `{"zen":"x"}`,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "github non-push event ignored",
			cfg:      both,
			header:   github("issues", githubSign(testGitHubSecret, testPushBody)),
			body:     testPushBody,
			wantCode: http.StatusAccepted,
			wantBody: "ignored",
		},
		{
			name:     "github signature without event header ignored",
			cfg:      both,
			header:   map[string]string{"X-Hub-Signature-256": githubSign(testGitHubSecret, testPushBody)},
			body:     testPushBody,
			wantCode: http.StatusAccepted,
			wantBody: "ignored",
		},
		{
			name:     "github malformed json with valid signature",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, `{"ref":`)),
			body:     `{"ref":`,
			wantCode: http.StatusBadRequest,
		},
		{
			name:     "github form-encoded payload",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, "payload=%7B%22ref%22%3A%22x%22%7D")),
			body:     "payload=%7B%22ref%22%3A%22x%22%7D",
			wantCode: http.StatusBadRequest,
			wantBody: "application/json",
		},
		{
			name:     "github push without ref",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, `{"after":"a2b7"}`)),
			body:     `{"after":"a2b7"}`,
			wantCode: http.StatusBadRequest,
		},
		{
			name:     "github body over the limit",
			cfg:      small,
			header:   github("push", githubSign(testGitHubSecret, big)),
			body:     big,
			wantCode: http.StatusRequestEntityTooLarge,
		},
		{
			name:     "github body exactly at the limit",
			cfg:      small,
			header:   github("push", githubSign(testGitHubSecret, exact)),
			body:     exact,
			wantCode: http.StatusAccepted,
			wantRefs: []string{"refs/heads/main"},
		},
		{
			name:     "default limit applies when MaxBody is zero",
			cfg:      both,
			header:   github("push", githubSign(testGitHubSecret, huge)),
			body:     huge,
			wantCode: http.StatusRequestEntityTooLarge,
		},
		{
			name:     "gitlab push triggers with its ref",
			cfg:      both,
			header:   gitlab("Push Hook", testGitLabToken),
			body:     `{"object_kind":"push","ref":"refs/heads/release"}`,
			wantCode: http.StatusAccepted,
			wantRefs: []string{"refs/heads/release"},
		},
		{
			name:     "gitlab wrong token",
			cfg:      both,
			header:   gitlab("Push Hook", "gl-token-7c22"),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "gitlab token prefix",
			cfg:      both,
			header:   gitlab("Push Hook", testGitLabToken[:5]),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "gitlab empty token",
			cfg:      both,
			header:   gitlab("Push Hook", ""),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "gitlab nil token refuses an empty token",
			cfg:      webhookConfig{GitHubSecret: []byte(testGitHubSecret)},
			header:   gitlab("Push Hook", ""),
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "gitlab non-push event ignored",
			cfg:      both,
			header:   gitlab("Merge Request Hook", testGitLabToken),
			body:     testPushBody,
			wantCode: http.StatusAccepted,
			wantBody: "ignored",
		},
		{
			name:     "gitlab tag push is not a branch push",
			cfg:      both,
			header:   gitlab("Tag Push Hook", testGitLabToken),
			body:     `{"ref":"refs/tags/v1"}`,
			wantCode: http.StatusAccepted,
			wantBody: "ignored",
		},
		{
			name:     "gitlab malformed json with valid token",
			cfg:      both,
			header:   gitlab("Push Hook", testGitLabToken),
			body:     `not json`,
			wantCode: http.StatusBadRequest,
		},
		{
			name:     "gitlab body over the limit",
			cfg:      small,
			header:   gitlab("Push Hook", testGitLabToken),
			body:     big,
			wantCode: http.StatusRequestEntityTooLarge,
		},
		{
			name:     "no provider headers",
			cfg:      both,
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name:     "gitlab event header alone is not a token",
			cfg:      both,
			header:   map[string]string{"X-Gitlab-Event": "Push Hook"},
			body:     testPushBody,
			wantCode: http.StatusUnauthorized,
		},
		{
			name: "both providers' headers",
			cfg:  both,
			header: map[string]string{
				"X-GitHub-Event":      "push",
				"X-Hub-Signature-256": githubSign(testGitHubSecret, testPushBody),
				"X-Gitlab-Token":      testGitLabToken,
			},
			body:     testPushBody,
			wantCode: http.StatusBadRequest,
		},
		{
			name:     "GET is not allowed",
			cfg:      both,
			method:   http.MethodGet,
			header:   github("push", githubSign(testGitHubSecret, "")),
			wantCode: http.StatusMethodNotAllowed,
		},
		{
			name:     "PUT is not allowed",
			cfg:      both,
			method:   http.MethodPut,
			header:   gitlab("Push Hook", testGitLabToken),
			body:     testPushBody,
			wantCode: http.StatusMethodNotAllowed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var refs, logs []string
			h := newWebhookHandler(tt.cfg,
				func(ref string) bool { refs = append(refs, ref); return true },
				func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) })

			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := serveWebhook(h, method, tt.header, tt.body)

			if rec.Code != tt.wantCode {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tt.wantCode, rec.Body.String())
			}
			if !slices.Equal(refs, tt.wantRefs) {
				t.Errorf("notified refs = %q, want %q", refs, tt.wantRefs)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body = %q, want it to contain %q", rec.Body.String(), tt.wantBody)
			}
			if tt.wantCode == http.StatusMethodNotAllowed && rec.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow = %q, want %q", rec.Header().Get("Allow"), http.MethodPost)
			}
			checkWebhookLog(t, logs, tt.header, tt.body)
		})
	}
}

func serveWebhook(h http.Handler, method string, header map[string]string, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/webhook", strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// checkWebhookLog wants one line that reveals no credential or body.
func checkWebhookLog(t *testing.T, logs []string, header map[string]string, body string) {
	t.Helper()
	if len(logs) != 1 {
		t.Fatalf("logged %d lines, want 1: %q", len(logs), logs)
	}
	secrets := []string{testGitHubSecret, testGitLabToken, header["X-Gitlab-Token"], header["X-Hub-Signature-256"]}
	if len(body) >= 16 { // short bodies like `{"ref":` collide with ordinary log text
		secrets = append(secrets, body)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs[0], s) {
			t.Errorf("log line %q reveals %q", logs[0], s)
		}
	}
}

func flipLastHex(sig string) string {
	last := sig[len(sig)-1]
	if last == '0' {
		return sig[:len(sig)-1] + "1"
	}
	return sig[:len(sig)-1] + "0"
}

// An unsigned delivery with a hostile event header is refused and logged as
// one short line, so it cannot forge or flood log entries.
func TestWebhookLogQuotesHeaders(t *testing.T) {
	var logs []string
	h := newWebhookHandler(webhookConfig{GitHubSecret: []byte(testGitHubSecret)},
		func(string) bool { t.Error("notify called for an unsigned delivery"); return false },
		func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) })
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(testPushBody))
	req.Header["X-Github-Event"] = []string{"push\nwebhook: forged line" + strings.Repeat("y", 4096)}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("status = %d, want %d", rec.Code, http.StatusUnauthorized)
	}
	if len(logs) != 1 || strings.Contains(logs[0], "\n") || len(logs[0]) > 512 {
		t.Errorf("log = %q, want one short line", logs)
	}
}

func TestWebhookMultipleSignaturesRefused(t *testing.T) {
	var refs []string
	h := newWebhookHandler(webhookConfig{GitHubSecret: []byte(testGitHubSecret)},
		func(ref string) bool { refs = append(refs, ref); return true }, nil)
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(testPushBody))
	req.Header.Set("X-GitHub-Event", "push")
	// The good one first: accepting it would mean ignoring the other.
	req.Header.Add("X-Hub-Signature-256", githubSign(testGitHubSecret, testPushBody))
	req.Header.Add("X-Hub-Signature-256", "sha256="+strings.Repeat("00", sha256.Size))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || len(refs) != 0 {
		t.Errorf("status = %d, refs = %q; want %d and none", rec.Code, refs, http.StatusUnauthorized)
	}
}

func TestCoalescer(t *testing.T) {
	c := newCoalescer()
	select {
	case <-c.C():
		t.Fatal("receive ready before any Notify")
	default:
	}
	for range 100 {
		c.Notify() // must not block past the first
	}
	select {
	case <-c.C():
	default:
		t.Fatal("no receive ready after 100 Notify calls")
	}
	select {
	case <-c.C():
		t.Fatal("a second receive is ready: the burst was not coalesced")
	default:
	}
	// A burst during a sync leads to exactly one more.
	c.Notify()
	c.Notify()
	select {
	case <-c.C():
	default:
		t.Fatal("Notify after a drain did not schedule another sync")
	}
}

func TestCoalescerConcurrentNotify(t *testing.T) {
	c := newCoalescer()
	done := make(chan struct{})
	for range 8 {
		go func() {
			for range 1000 {
				c.Notify()
			}
			done <- struct{}{}
		}()
	}
	for range 8 {
		<-done
	}
	if n := len(c.C()); n != 1 {
		t.Errorf("%d pending syncs after concurrent bursts, want 1", n)
	}
}

// signedPush is a GitHub push of testPushBody with delivery id id, signed
// with secret.
func signedPush(secret, id string) map[string]string {
	return map[string]string{
		"X-GitHub-Event":      "push",
		"X-GitHub-Delivery":   id,
		"X-Hub-Signature-256": githubSign(secret, testPushBody),
	}
}

func gitlabPush(token, id string) map[string]string {
	return map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": id, "X-Gitlab-Token": token}
}

// replayRecorder is a webhook handler whose notifications, log lines and
// clock a test can see and move.
type replayRecorder struct {
	h    http.Handler
	refs []string
	logs []string
	now  time.Time
}

func newReplayRecorder(cfg webhookConfig) *replayRecorder {
	rr := &replayRecorder{now: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
	cfg.GitHubSecret, cfg.GitLabToken = []byte(testGitHubSecret), []byte(testGitLabToken)
	cfg.Now = func() time.Time { return rr.now }
	rr.h = newWebhookHandler(cfg,
		func(ref string) bool { rr.refs = append(rr.refs, ref); return true },
		func(format string, args ...any) { rr.logs = append(rr.logs, fmt.Sprintf(format, args...)) })
	return rr
}

// post sends one delivery and checks its status, its response line and
// how many syncs have been queued so far.
func (rr *replayRecorder) post(t *testing.T, header map[string]string, body string, wantCode int, wantBody string, wantSyncs int) {
	t.Helper()
	rec := serveWebhook(rr.h, http.MethodPost, header, body)
	if rec.Code != wantCode || rec.Body.String() != wantBody+"\n" {
		t.Errorf("status %d %q, want %d %q", rec.Code, rec.Body.String(), wantCode, wantBody)
	}
	if len(rr.refs) != wantSyncs {
		t.Errorf("%d syncs queued, want %d", len(rr.refs), wantSyncs)
	}
}

// The same delivery sent twice queues one sync: the repeat gets 200
// "duplicate" and says so in the log.
func TestWebhookReplay(t *testing.T) {
	const id = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	tests := []struct {
		name   string
		header map[string]string
		body   string
	}{
		{"github", signedPush(testGitHubSecret, id), testPushBody},
		{"gitlab", gitlabPush(testGitLabToken, id), `{"object_kind":"push","ref":"refs/heads/main"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := newReplayRecorder(webhookConfig{})
			rr.post(t, tt.header, tt.body, http.StatusAccepted, "sync queued", 1)
			rr.post(t, tt.header, tt.body, http.StatusOK, "duplicate", 1)
			if len(rr.logs) != 2 || !strings.Contains(rr.logs[1], `delivery="`+id+`"`) || !strings.Contains(rr.logs[1], `outcome="duplicate"`) {
				t.Errorf("log = %q, want the repeat logged with its delivery id as a duplicate", rr.logs)
			}
		})
	}
}

// Only a verified delivery is remembered, and remembering an id does not
// make a request carrying it any more trusted.
func TestWebhookReplayNeedsVerification(t *testing.T) {
	const id = "3c1f0a2e-0001"
	rr := newReplayRecorder(webhookConfig{})
	// Unsigned requests first: they must not burn the id of the real one.
	rr.post(t, signedPush("not-the-secret", id), testPushBody, http.StatusUnauthorized, "bad signature", 0)
	rr.post(t, gitlabPush("gl-token-wrong", id), testPushBody, http.StatusUnauthorized, "bad token", 0)
	rr.post(t, signedPush(testGitHubSecret, id), testPushBody, http.StatusAccepted, "sync queued", 1)
	rr.post(t, gitlabPush(testGitLabToken, id), testPushBody, http.StatusAccepted, "sync queued", 2)
	// Now remembered: a forged or unsigned copy is still refused as before.
	rr.post(t, signedPush("not-the-secret", id), testPushBody, http.StatusUnauthorized, "bad signature", 2)
	rr.post(t, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": id}, testPushBody,
		http.StatusUnauthorized, "missing or malformed signature", 2)
	rr.post(t, gitlabPush("", id), testPushBody, http.StatusUnauthorized, "bad token", 2)
}

// An id is remembered for the replay window from its first delivery, then
// a repeat is handled as new; time is the handler's clock, not a sleep.
func TestWebhookReplayWindow(t *testing.T) {
	const id = "window-1"
	rr := newReplayRecorder(webhookConfig{})
	start := rr.now
	rr.post(t, signedPush(testGitHubSecret, id), testPushBody, http.StatusAccepted, "sync queued", 1)
	rr.now = start.Add(defaultReplayWindow - time.Second)
	rr.post(t, signedPush(testGitHubSecret, id), testPushBody, http.StatusOK, "duplicate", 1)
	rr.now = start.Add(defaultReplayWindow)
	rr.post(t, signedPush(testGitHubSecret, id), testPushBody, http.StatusAccepted, "sync queued", 2)
	rr.post(t, signedPush(testGitHubSecret, id), testPushBody, http.StatusOK, "duplicate", 2)
}

// At most ReplayMax ids are kept; the oldest is forgotten first.
func TestWebhookReplayBounded(t *testing.T) {
	rr := newReplayRecorder(webhookConfig{ReplayMax: 2})
	for i, id := range []string{"a", "b", "c"} {
		rr.post(t, signedPush(testGitHubSecret, id), testPushBody, http.StatusAccepted, "sync queued", i+1)
	}
	rr.post(t, signedPush(testGitHubSecret, "c"), testPushBody, http.StatusOK, "duplicate", 3)
	rr.post(t, signedPush(testGitHubSecret, "a"), testPushBody, http.StatusAccepted, "sync queued", 4)
}

// What is not remembered: a delivery without an id (it cannot be told
// from a new one) and one refused for its payload (sent again, it gets the
// same answer, not a 200).
func TestWebhookReplayNotRemembered(t *testing.T) {
	rr := newReplayRecorder(webhookConfig{})
	noID := map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": githubSign(testGitHubSecret, testPushBody)}
	rr.post(t, noID, testPushBody, http.StatusAccepted, "sync queued", 1)
	rr.post(t, noID, testPushBody, http.StatusAccepted, "sync queued", 2)

	const bad = `{"ref":`
	badPush := map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "bad-1", "X-Hub-Signature-256": githubSign(testGitHubSecret, bad)}
	for range 2 {
		rr.post(t, badPush, bad, http.StatusBadRequest, "payload is not json (use content type application/json)", 2)
	}
}

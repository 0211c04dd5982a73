package main

import (
	"crypto/hmac"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The statuses the README documents for POST /webhook.
var webhookStatuses = map[int]bool{
	http.StatusOK: true, http.StatusAccepted: true, http.StatusBadRequest: true,
	http.StatusUnauthorized: true, http.StatusMethodNotAllowed: true, http.StatusRequestEntityTooLarge: true,
}

// FuzzWebhook feeds the handler arbitrary deliveries. kind picks the
// provider headers sent (bits 0-1: GitHub, GitLab, both, none) and whether
// the method is GET (bit 2); sign replaces credential with the valid one,
// so that the verified paths are explored too. Each delivery is sent twice.
// The handler must never panic, answer only documented statuses in one log
// line, queue a sync only for a delivery that carries a valid signature or
// token, and queue none for the repeat of a delivery with an id.
func FuzzWebhook(f *testing.F) {
	const gitlabBody = `{"object_kind":"push","ref":"refs/heads/release"}`
	f.Add(uint8(0), "push", githubSign(testGitHubSecret, testPushBody), "72d3162e-cc78", []byte(testPushBody), false)
	f.Add(uint8(0), "push", "", "", []byte(testPushBody), true)
	f.Add(uint8(0), "ping", "", "d-1", []byte(`{"zen":"keep it simple"}`), true)
	f.Add(uint8(0), "push", "sha256="+strings.Repeat("zz", 32), "d-2", []byte(testPushBody), false)
	f.Add(uint8(0), "push", githubSign("not-the-secret", testPushBody), "d-5", []byte(testPushBody), false)
	f.Add(uint8(0), "push", "", "d-3", []byte(`{"ref":`), true)
	f.Add(uint8(0), "push", "", "d-4", []byte("payload=%7B%22ref%22%3A%22x%22%7D"), true)
	f.Add(uint8(1), "Push Hook", testGitLabToken, "gl-1", []byte(gitlabBody), false)
	f.Add(uint8(1), "Tag Push Hook", "", "gl-2", []byte(`{"ref":"refs/tags/v1"}`), true)
	f.Add(uint8(1), "Push Hook", "gl-token-7c22", "", []byte(testPushBody), false)
	f.Add(uint8(1), "Push Hook", "", "gl-3", []byte(`{"ref":""}`), true)
	f.Add(uint8(2), "push", "", "x", []byte(testPushBody), true)
	f.Add(uint8(3), "", "", "", []byte(testPushBody), false)
	f.Add(uint8(4), "push", "", "get-1", []byte(""), true)
	f.Add(uint8(0), "push", "", "big", []byte(`{"ref":"refs/heads/main","pad":"`+strings.Repeat("x", 600)+`"}`), true)

	f.Fuzz(func(t *testing.T, kind uint8, event, credential, delivery string, body []byte, sign bool) {
		header := map[string]string{}
		github, gitlab := kind&3 == 0 || kind&3 == 2, kind&3 == 1 || kind&3 == 2
		if github {
			if sign {
				credential = githubSign(testGitHubSecret, string(body))
			}
			header["X-GitHub-Event"], header["X-Hub-Signature-256"], header["X-GitHub-Delivery"] = event, credential, delivery
		}
		if gitlab {
			if sign {
				credential = testGitLabToken
			}
			header["X-Gitlab-Event"], header["X-Gitlab-Token"], header["X-Gitlab-Event-UUID"] = event, credential, delivery
		}
		method := http.MethodPost
		if kind&4 != 0 {
			method = http.MethodGet
		}
		// Worked out apart from the handler: one provider, and its credential.
		verified := method == http.MethodPost && github != gitlab &&
			(github && hmac.Equal([]byte(header["X-Hub-Signature-256"]), []byte(githubSign(testGitHubSecret, string(body)))) ||
				gitlab && header["X-Gitlab-Token"] == testGitLabToken)

		var syncs int
		var logs []string
		cfg := webhookConfig{GitHubSecret: []byte(testGitHubSecret), GitLabToken: []byte(testGitLabToken), MaxBody: 512}
		h := newWebhookHandler(cfg,
			func(string) bool { syncs++; return true },
			func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) })
		for i := range 2 {
			rec := serveWebhook(h, method, header, string(body))
			if !webhookStatuses[rec.Code] {
				t.Fatalf("delivery %d: status %d %q is not a documented one", i+1, rec.Code, rec.Body.String())
			}
			if syncs > 0 && !verified {
				t.Fatalf("delivery %d: a sync was queued for an unverified delivery (status %d %q)", i+1, rec.Code, rec.Body.String())
			}
			if len(logs) != i+1 || strings.Contains(logs[i], "\n") {
				t.Fatalf("delivery %d: log = %q, want one line per delivery", i+1, logs)
			}
		}
		if delivery != "" && syncs > 1 {
			t.Fatalf("the repeat of delivery %q queued a second sync", delivery)
		}
	})
}

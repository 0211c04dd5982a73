package helloweb_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/lieutenant-deploy/lieutenant/testenv/helloweb"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name    string
		healthy bool
		path    string
		status  int
		body    string
	}{
		{"page shows host and version", true, "/", http.StatusOK, "hello from web-1, version 1.1.0\n"},
		{"health of a healthy build", true, "/health", http.StatusOK, "ok\n"},
		{"health of an unhealthy build", false, "/health", http.StatusServiceUnavailable, "unhealthy: 1.1.0\n"},
		{"version", true, "/version", http.StatusOK, "1.1.0\n"},
		{"version of an unhealthy build still answers", false, "/version", http.StatusOK, "1.1.0\n"},
		{"page of an unhealthy build still answers", false, "/", http.StatusOK, "hello from web-1, version 1.1.0\n"},
		{"unknown path", true, "/nope", http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			helloweb.Handler("web-1", "1.1.0", tt.healthy).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			body, err := io.ReadAll(rec.Result().Body)
			if err != nil {
				t.Fatalf("read body of %s: %v", tt.path, err)
			}
			if rec.Code != tt.status || string(body) != tt.body {
				t.Errorf("GET %s = %d %q, want %d %q", tt.path, rec.Code, body, tt.status, tt.body)
			}
		})
	}
}

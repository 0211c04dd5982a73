package testenv

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// UntouchedServer starts an HTTP server that must get no request: the test
// fails at its end if one arrived. It returns the server's host:port, for
// URLs that lieutenant has to refuse before contacting anything.
func UntouchedServer(t testing.TB) string {
	t.Helper()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	t.Cleanup(func() {
		srv.Close()
		if n := requests.Load(); n != 0 {
			t.Errorf("the HTTP server at %s got %d requests, want none", srv.URL, n)
		}
	})
	return strings.TrimPrefix(srv.URL, "http://")
}

// Package helloweb is the demo service the fleet rolls out: a page that
// shows its host and version, /health and /version. The same handler runs
// in the RPM-packaged binary and in the in-process stand-in tests use.
package helloweb

import (
	"fmt"
	"net/http"
)

// Handler serves the demo pages. A service built unhealthy (the broken
// 1.2.0 release) starts and serves pages but fails /health, which is what a
// rollout's verification must catch.
func Handler(host, version string, healthy bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		if !healthy {
			http.Error(w, "unhealthy: "+version, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, version)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "hello from %s, version %s\n", host, version)
	})
	return mux
}

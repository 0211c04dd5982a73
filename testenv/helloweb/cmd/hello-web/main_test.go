package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-host", "web-7"}, pw, io.Discard)
		pw.Close()
	}()

	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("read start-up line: %v", err)
	}
	const prefix = "hello-web dev listening on 127.0.0.1:"
	if !strings.HasPrefix(line, prefix) || strings.HasSuffix(line, ":0\n") {
		t.Fatalf("start-up line %q, want %q and the port picked", line, prefix+"PORT")
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "hello-web dev listening on "))
	go func() { _, _ = io.Copy(io.Discard, pr) }() // no further output is expected; never block run on it

	for path, want := range map[string]string{"/": "hello from web-7, version dev\n", "/version": "dev\n", "/health": "ok\n"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("GET %s = %d %q (%v), want 200 %q", path, resp.StatusCode, body, err, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return within 5s of its context ending")
	}
	if resp, err := http.Get("http://" + addr + "/health"); err == nil {
		resp.Body.Close()
		t.Error("the port still answers after run returned")
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-listen", "127.0.0.1:0", "extra"}, `parse arguments: unexpected ["extra"]`},
		{[]string{"-listen", "no-port"}, "listen on no-port: "},
		{[]string{"-nope"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		err := run(t.Context(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

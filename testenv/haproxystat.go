package testenv

import (
	"encoding/csv"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// StatServer is one server of HAProxy's stats CSV.
type StatServer struct {
	Name        string
	Status      string // "UP", "MAINT", "DRAIN", "DOWN", ...
	CheckStatus string // "L7OK", "L4CON", ...; "" before the first check
}

// ParseStat reads HAProxy's stats CSV, from `show stat` or the stats page's
// ";csv", and returns the servers of backend. It is the tests' own reading,
// independent of the lb adapter, so that tests can check the adapter
// against what HAProxy says.
func ParseStat(text, backend string) ([]StatServer, error) {
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(text, "# "))).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("parse HAProxy stats: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("parse HAProxy stats: empty")
	}
	col := func(name string) int { return slices.Index(rows[0], name) }
	px, sv, status, check := col("pxname"), col("svname"), col("status"), col("check_status")
	if px < 0 || sv < 0 || status < 0 || check < 0 {
		return nil, fmt.Errorf("parse HAProxy stats: header %q lacks a column", rows[0])
	}
	var out []StatServer
	for _, r := range rows[1:] {
		if len(r) <= max(px, sv, status, check) || r[px] != backend || r[sv] == "BACKEND" || r[sv] == "FRONTEND" {
			continue
		}
		out = append(out, StatServer{Name: r[sv], Status: r[status], CheckStatus: strings.TrimPrefix(r[check], "* ")})
	}
	return out, nil
}

// StatusLine renders servers as "web1=UP web2=MAINT", in HAProxy's order.
func StatusLine(servers []StatServer) string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = s.Name + "=" + s.Status
	}
	return strings.Join(out, " ")
}

// Statuses is HAProxy's own view of the backend's servers, from `show stat`,
// as a StatusLine.
func (h *HAProxy) Statuses(t testing.TB) string {
	t.Helper()
	out, err := h.RunCommand(t.Context(), "show stat")
	if err != nil {
		t.Fatalf("show stat: %v", err)
	}
	servers, err := ParseStat(out, h.Backend)
	if err != nil {
		t.Fatal(err)
	}
	return StatusLine(servers)
}

package testenv

import (
	"encoding/csv"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Statuses reads HAProxy's own `show stat` for the backend and returns each
// server's status column ("UP", "MAINT", "DRAIN", "DOWN", ...) as
// "name=STATUS" in server order. It parses the CSV itself, independently of
// the lb adapter, so tests can check the adapter against HAProxy.
func (h *HAProxy) Statuses(t testing.TB) string {
	t.Helper()
	out, err := h.RunCommand(t.Context(), "show stat")
	if err != nil {
		t.Fatalf("show stat: %v", err)
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# "))).ReadAll()
	if err != nil {
		t.Fatalf("show stat: %v\n%s", err, out)
	}
	col := func(name string) int { return slices.Index(rows[0], name) }
	px, sv, status := col("pxname"), col("svname"), col("status")
	var got []string
	for _, r := range rows[1:] {
		if len(r) > status && r[px] == h.Backend && r[sv] != "BACKEND" {
			got = append(got, fmt.Sprintf("%s=%s", r[sv], r[status]))
		}
	}
	return strings.Join(got, " ")
}

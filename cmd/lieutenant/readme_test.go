package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeExamplesAreTheValidFiles keeps README.md true: every example
// file it shows (a yaml block starting with "# <path>") must be the file of
// playbook/testdata/valid that the tests load and validate.
func TestReadmeExamplesAreTheValidFiles(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	blocks := strings.Split(string(readme), "```yaml\n")
	for _, b := range blocks[1:] {
		body, _, _ := strings.Cut(b, "```")
		first, _, _ := strings.Cut(body, "\n")
		path, ok := strings.CutPrefix(first, "# ")
		if !ok {
			continue
		}
		want, err := os.ReadFile(filepath.Join("../../playbook/testdata/valid", path))
		if err != nil {
			t.Errorf("README shows %s, which is not in playbook/testdata/valid: %v", path, err)
			continue
		}
		if body != string(want) {
			t.Errorf("README's %s differs from playbook/testdata/valid/%s:\n--- README\n%s--- file\n%s", path, path, body, want)
		}
		shown[path] = true
	}
	for _, p := range []string{"lieutenant.yaml", "releases/production.yaml", "inventory/production.yaml", "playbooks/web.yaml"} {
		if !shown[p] {
			t.Errorf("README shows no complete example of %s", p)
		}
	}
}

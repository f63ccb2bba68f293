package main

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// buildForTest builds each package of pkgs (name -> package path, from the
// repository root) into the test's temporary folder and returns the binaries
// by name, for the smoke tests that run the tool as a user would.
func buildForTest(t *testing.T, pkgs map[string]string) map[string]string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bins := map[string]string{}
	for name, pkg := range pkgs {
		bins[name] = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", bins[name], pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return bins
}

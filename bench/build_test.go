package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// runTool runs the bench binary with args, within timeout, and returns its
// whole stdout and stderr and the one JSON line a run prints (the figures); a
// failed run, a line that does not parse or any other number of lines fails t.
func runTool(t *testing.T, bin string, timeout time.Duration, args ...string) (string, string, map[string]json.RawMessage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, &stdout, &stderr)
	}
	out := stdout.String()
	var lines []map[string]json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "{") {
			var m map[string]json.RawMessage
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("JSON line does not parse: %v\n%s", err, l)
			}
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("got %d JSON lines, want 1 (one run)\n%s", len(lines), out)
	}
	return out, stderr.String(), lines[0]
}

package e2e

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestClientUnit runs the browser client's unit tests (client/test/, Node's
// own test runner: backoff, offset bookkeeping, pending actions, and a whole
// Session against a scripted socket), so the README's one test command covers
// them too.
func TestClientUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and node is missing: " + nodeHint)
		}
		t.Skip("skipping: the client's unit tests need " + nodeHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "test/")
	cmd.Dir = "../client"
	out, err := cmd.CombinedOutput()
	t.Logf("node --test client/test/:\n%s", out)
	if err != nil {
		t.Fatalf("the client's unit tests failed: %v", err)
	}
}

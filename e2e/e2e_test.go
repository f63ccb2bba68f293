// Package e2e runs the browser end-to-end suite (Node's test runner driving
// Chromium through playwright-core, see README.md) from `go test ./...`, so
// the repository's single test command covers real browsers too.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// chromiumPath is the browser the suite runs; the Debian package "chromium" installs it.
const chromiumPath = "/usr/bin/chromium"

// suiteTimeout bounds the whole node run (npm ci not included). The suite
// takes about 30 s; this leaves room for a slow machine.
const suiteTimeout = 4 * time.Minute

// nodeHint says how to get a Node.js recent enough for playwright-core.
const nodeHint = "node (Node.js 20 or later with npm; Debian 12's own nodejs package is 18, too old: " +
	"install Node 20+ from nodejs.org or NodeSource)"

func TestBrowserE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("browser e2e tests skipped in -short mode")
	}
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, nodeHint)
	} else if major := nodeMajor(node); major < 20 {
		missing = append(missing, fmt.Sprintf("Node.js 20 or later (found major version %d); %s", major, nodeHint))
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		missing = append(missing, chromiumPath+" (apt-get install chromium)")
	}
	var npm string
	if !fileExists("node_modules/playwright-core/package.json") || !fileExists("node_modules/typescript/package.json") {
		if npm, err = exec.LookPath("npm"); err != nil {
			missing = append(missing, "npm, to install e2e/node_modules (apt-get install npm; then cd e2e && npm ci)")
		}
	}
	if len(missing) > 0 {
		msg := "browser e2e tests need " + strings.Join(missing, ", ") +
			"; install them, then run: cd e2e && npm ci"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and " + msg)
		}
		t.Skip("skipping: " + msg)
	}

	if npm != "" {
		t.Log("e2e/node_modules is missing: running npm ci")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := run(t, ctx, npm, "ci", "--no-audit", "--no-fund"); err != nil {
			t.Fatalf("npm ci in e2e/: %v", err)
		}
	}

	timeout := suiteTimeout
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d) - 15*time.Second; left < timeout {
			timeout = left
		}
	}
	if timeout <= 0 {
		t.Fatal("no time left before the go test deadline to run the browser suite")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err = run(t, ctx, node, "--test")
	if ctx.Err() != nil {
		t.Fatalf("node --test did not finish within %s", timeout)
	}
	if err != nil {
		t.Fatalf("node --test failed after %s: %v (its output is above)", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("browser e2e suite passed in %s", time.Since(start).Round(time.Millisecond))
}

// run runs a command in this folder (e2e/), logging its output line by line
// as it comes. The command gets its own process group, so on timeout the
// node test processes and the dugout processes they started end with it.
func run(t *testing.T, ctx context.Context, name string, args ...string) error {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	// The suite's temporary folders (dugout binary, browser profiles) go under
	// a TempDir, so they are removed even when the run is cut short.
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir(),
		"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1", "NO_COLOR=1", "FORCE_COLOR=0")
	// On timeout: SIGTERM to the whole group (Playwright closes its browsers on
	// SIGTERM), then SIGKILL to whatever is left once Run has returned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	if ctx.Err() != nil && cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	_ = pw.Close()
	wg.Wait()
	return err
}

// nodeMajor returns the major version of the node at path, 0 if it cannot tell.
func nodeMajor(path string) int {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return 0
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}

func fileExists(p string) bool {
	_, err := os.Stat(filepath.FromSlash(p))
	return err == nil
}

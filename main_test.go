package main

// The real process: the test binary re-runs itself as dugout (childCommand)
// to check that a bad configuration exits non-zero with one line naming the
// variable, and that SIGTERM and SIGINT stop a serving process with going-away
// and exit 0.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// childEnv, set to "1", makes a process test call main() instead of testing:
// the test binary re-runs itself as the real dugout process.
const childEnv = "DUGOUT_TEST_CHILD_RUNS_MAIN"

// childCommand re-runs the test binary so that only test runs, as the real
// process with environ on top of a clean configuration (any config variable in
// the parent's environment is left out, and LISTEN_ADDR never asks for :8080).
func childCommand(ctx context.Context, test string, environ ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$")
	fields := configFields()
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if _, ok := fields[key]; !ok && key != childEnv {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"=1", "LISTEN_ADDR=127.0.0.1:0")
	cmd.Env = append(cmd.Env, environ...) // later entries win
	return cmd
}

func TestProcessExitsOnInvalidConfig(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		main()
		return
	}
	for _, tc := range []struct {
		name string
		env  string
		key  string
	}{
		{"unparsable duration", "PING_INTERVAL=bogus", "PING_INTERVAL"},
		{"NaN rate", "RATE_LIMIT=NaN", "RATE_LIMIT"},
		{"warning not shorter than timeout", "EXPIRY_WARNING=300s", "EXPIRY_WARNING"},
		{"webhook without its secret", "WEBHOOK_URL=https://hooks.example.com/presence", "WEBHOOK_SECRET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
			defer cancel()
			cmd := childCommand(ctx, "TestProcessExitsOnInvalidConfig", tc.env)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("the process with %s was still running after %s: it started instead of exiting", tc.env, 4*waitFor)
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("the process with %s ended with %v, want a non-zero exit (stderr %q)", tc.env, err, stderr.String())
			}
			out := strings.TrimSuffix(stderr.String(), "\n")
			if out == "" || strings.Contains(out, "\n") {
				t.Fatalf("stderr is not one line: %q", stderr.String())
			}
			if !strings.Contains(out, tc.key) {
				t.Fatalf("stderr %q does not name %s", out, tc.key)
			}
			if field := configFields()[tc.key]; strings.Contains(out, field) {
				t.Fatalf("stderr %q names the Go field %s", out, field)
			}
			t.Logf("exit %d: %s", exit.ExitCode(), out)
		})
	}
}

// lineWriter hands every complete line written to it to lines, and keeps all of it.
type lineWriter struct {
	mu      sync.Mutex
	all     bytes.Buffer
	pending []byte
	lines   chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.pending = append(w.pending, p...)
	for {
		i := bytes.IndexByte(w.pending, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.lines <- string(w.pending[:i]):
		default: // nobody is waiting for more lines
		}
		w.pending = w.pending[i+1:]
	}
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

func TestProcessServesAndStopsOnSignal(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		main()
		return
	}
	for name, sig := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT} {
		t.Run(name, func(t *testing.T) { testProcessStopsOn(t, sig) })
	}
}

// testProcessStopsOn starts the real process, connects a client to the
// address its start-up line names, sends sig, and expects going-away and exit 0.
func testProcessStopsOn(t *testing.T, sig syscall.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
	defer cancel()
	cmd := childCommand(ctx, "TestProcessServesAndStopsOnSignal", "SHUTDOWN_TIMEOUT=5s", "LOG_LEVEL=info")
	stderr := &lineWriter{lines: make(chan string, 64)}
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	exited := make(chan struct{}) // closed once the process has been waited for
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	var addr string
	for addr == "" {
		select {
		case line := <-stderr.lines:
			var entry struct {
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Addr != "" {
				addr = entry.Addr
			}
		case <-exited:
			t.Fatalf("the process exited before listening: %v; stderr %q", exitErr, stderr.String())
		case <-ctx.Done():
			t.Fatalf("no log line with addr; stderr %q", stderr.String())
		}
	}
	c := dial(t, "ws://"+addr+"/ws", nil)
	if status, _, err := getStatus("http://" + addr + "/livez"); err != nil || status != http.StatusOK {
		t.Fatalf("/livez: %d %v", status, err)
	}
	signalled := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", sig, err)
	}
	if code := c.expectClose(waitFor); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d after %s, want %d", code, sig, websocket.StatusGoingAway)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("the process ended with %v after %s, want exit 0; stderr %q stdout %q", exitErr, sig, stderr.String(), stdout.String())
		}
		// A race-enabled binary lingers about a second at exit on purpose.
		t.Logf("exited %s after %s", time.Since(signalled), sig)
	case <-ctx.Done():
		t.Fatalf("the process still runs after %s; stderr %q", sig, stderr.String())
	}
}

// noKeepAlive is an HTTP client that leaves no idle connection behind.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitFor}

// getStatus fetches url and returns its status and Content-Type. It never
// fails the test, so any goroutine may call it.
func getStatus(url string) (int, string, error) {
	resp, err := noKeepAlive.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), nil
}

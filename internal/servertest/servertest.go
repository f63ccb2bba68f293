// Package servertest builds the dugout binary and runs it as a real process
// for the tests that must see it from outside: failure injection, soak, and
// browser end-to-end runs. It talks to loopback only.
package servertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary builds dugout once per test process and returns the path of the
// binary. The build goes to a directory that outlives the individual tests;
// the OS temp dir is cleaned by the machine, not by us.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dugout-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "dugout")
		cmd := exec.Command("go", "build", "-o", buildPath, ".")
		cmd.Dir = ModuleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building dugout: %v", buildErr)
	}
	return buildPath
}

// ModuleRoot is the repository root, found from this file's location.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Proc is a running dugout process.
type Proc struct {
	Cmd  *exec.Cmd
	Addr string // host:port it listens on, read from its start-up line

	mu     sync.Mutex
	lines  []string // every log line so far
	exited chan struct{}
	err    error // Wait's result, valid after exited is closed
}

// Options says how to start a process.
type Options struct {
	Env     map[string]string // added to a minimal environment; LISTEN_ADDR defaults to 127.0.0.1:0
	Wrapper []string          // a command to run the binary under, e.g. {"ip", "netns", "exec", "ns"}
}

// Start runs dugout with opts and waits for its start-up line. The process is
// killed, if still running, when the test ends.
func Start(t testing.TB, opts Options) *Proc {
	t.Helper()
	bin := Binary(t)
	env := map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "LOG_LEVEL": "info"}
	for k, v := range opts.Env {
		env[k] = v
	}
	args := append(append([]string{}, opts.Wrapper...), bin)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dugout: %v", err)
	}
	p := &Proc{Cmd: cmd, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go p.readLog(stderr, addr)
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	select {
	case a := <-addr:
		p.Addr = a
	case <-p.exited:
		t.Fatalf("dugout exited at start: %v\n%s", p.err, p.Log())
	case <-time.After(30 * time.Second):
		t.Fatalf("dugout printed no start-up line in 30 s\n%s", p.Log())
	}
	return p
}

// readLog keeps every log line and reports the address of the start-up line.
func (p *Proc) readLog(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		p.mu.Unlock()
		var l struct {
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Addr != "" {
			select {
			case addr <- l.Addr:
			default:
			}
		}
	}
}

// Log returns the process's log so far, one line per entry.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// URL returns an http:// URL for path on the process.
func (p *Proc) URL(path string) string { return "http://" + p.Addr + path }

// WSURL returns the ws:// URL of /ws.
func (p *Proc) WSURL() string { return "ws://" + p.Addr + "/ws" }

// Health is /health/connections as the tests read it.
type Health struct {
	Status          string         `json:"status"`
	TotalSessions   int            `json:"total_sessions"`
	UniqueUsers     int            `json:"unique_users"`
	ActiveGames     int            `json:"active_games"`
	SessionsPerGame map[string]int `json:"sessions_per_game"`
}

// Health fetches /health/connections.
func (p *Proc) Health(ctx context.Context) (Health, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL("/health/connections"), nil)
	if err != nil {
		return Health{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Health{}, err
	}
	defer resp.Body.Close()
	var h Health
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// Stop sends SIGTERM and waits for the process to exit, returning its exit error.
func (p *Proc) Stop(within time.Duration) error {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(within):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("dugout did not exit within %s of SIGTERM", within)
	}
}

// RSS returns the process's resident set size in bytes, from /proc.
func (p *Proc) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.Cmd.Process.Pid)
}

// Package failure holds failure-injection tests: dugout runs as a real process
// (internal/servertest) and its peers are frozen or cut off from the network,
// to check the liveness contract of protocol v1: a connection whose peer stops
// answering pings is closed no later than PING_INTERVAL + PING_TIMEOUT after
// its last pong, and the other members of its games hear presence left,
// reason "timeout".
//
// The peers that are frozen or cut off run as separate OS processes built from
// ./zombieclient, so the test process itself is never the one affected.
//
// fds_test.go starves dugout of file descriptors instead (prlimit): the
// session limit it takes from RLIMIT_NOFILE must leave the probes theirs.
package failure

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"dugout/internal/servertest"

	"go.uber.org/goleak"
)

// Server timing for every test here: short, so a dead peer is found fast.
const (
	pingInterval = 200 * time.Millisecond
	pingTimeout  = 400 * time.Millisecond
)

// serverEnv is the environment these tests run dugout with. SESSION_TIMEOUT=0
// turns inactivity expiry off so that it cannot be what ends a session, and
// RESUME_WINDOW=0 ends a lost session at once, as protocol 1 did, so the
// tests see its left presence with the reason the failure gives.
var serverEnv = map[string]string{
	"PING_INTERVAL":   pingInterval.String(),
	"PING_TIMEOUT":    pingTimeout.String(),
	"SESSION_TIMEOUT": "0",
	"RESUME_WINDOW":   "0",
}

// slack is added to the contract's bound for scheduling on a busy machine
// (tests run in parallel under -race on two cores). DUGOUT_FAILURE_SLACK
// overrides it.
func slack(t *testing.T) time.Duration {
	if s := os.Getenv("DUGOUT_FAILURE_SLACK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			t.Fatalf("DUGOUT_FAILURE_SLACK=%q is not a non-negative duration", s)
		}
		return d
	}
	return time.Second
}

var (
	binDir      string // removed by TestMain
	clientOnce  sync.Once
	clientPath  string
	clientBuild error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dugout-failure-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// servertest.Proc.Health uses the default client; its idle
		// keep-alive connections are not leaks of ours or of dugout's.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// zombieClient builds ./zombieclient once per test process.
func zombieClient(t *testing.T) string {
	t.Helper()
	clientOnce.Do(func() {
		clientPath = filepath.Join(binDir, "zombieclient")
		cmd := exec.Command("go", "build", "-o", clientPath, "./failure/zombieclient")
		cmd.Dir = servertest.ModuleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			clientBuild = fmt.Errorf("go build ./failure/zombieclient: %v\n%s", err, out)
		}
	})
	if clientBuild != nil {
		t.Fatal(clientBuild)
	}
	return clientPath
}

// timedLine is one line of output and when the test received it.
type timedLine struct {
	at   time.Time
	text string
}

// lineLog is an io.Writer that keeps what is written to it as lines, each
// stamped with its arrival time, and lets a test wait for a line.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []timedLine
	notify  chan struct{} // capacity 1: "lines changed"
}

func newLineLog() *lineLog { return &lineLog{notify: make(chan struct{}, 1)} }

func (l *lineLog) Write(p []byte) (int, error) {
	now := time.Now()
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, timedLine{at: now, text: string(l.partial[:i])})
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

// String returns every complete line so far.
func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, ln := range l.lines {
		b.WriteString(ln.text)
		b.WriteByte('\n')
	}
	b.Write(l.partial)
	return b.String()
}

// waitFor returns the first line at index *from or later that match accepts,
// and advances *from past it. It gives up at deadline.
func (l *lineLog) waitFor(from *int, deadline time.Time, match func(string) bool) (timedLine, bool) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		l.mu.Lock()
		for i := *from; i < len(l.lines); i++ {
			if match(l.lines[i].text) {
				*from = i + 1
				ln := l.lines[i]
				l.mu.Unlock()
				return ln, true
			}
		}
		*from = len(l.lines)
		l.mu.Unlock()
		select {
		case <-l.notify:
		case <-timer.C:
			return timedLine{}, false
		}
	}
}

// frame is a server frame as the tests read it.
type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// presence is the data of a presence frame.
type presence struct {
	GameID string `json:"game_id"`
	SID    string `json:"sid"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// parsePresence reads a line as a presence frame.
func parsePresence(line string) (presence, bool) {
	var f frame
	if json.Unmarshal([]byte(line), &f) != nil || f.Type != "presence" {
		return presence{}, false
	}
	var p presence
	if json.Unmarshal(f.Data, &p) != nil {
		return presence{}, false
	}
	return p, true
}

// presenceOf matches presence frames for sid in game with the given status.
func presenceOf(game, sid, status string) func(string) bool {
	return func(line string) bool {
		p, ok := parsePresence(line)
		return ok && p.GameID == game && p.SID == sid && p.Status == status
	}
}

// clientProc is a zombieclient running as its own process.
type clientProc struct {
	cmd    *exec.Cmd
	stdout *lineLog
	stderr *lineLog
	done   chan struct{} // closed once Wait has returned
	err    error         // Wait's result, valid after done
}

// startClient runs zombieclient with args, under wrapper when it is not empty.
// When the test ends the process is continued (it may be stopped) and killed.
func startClient(t *testing.T, wrapper []string, args ...string) *clientProc {
	t.Helper()
	argv := append(append(append([]string{}, wrapper...), zombieClient(t)), args...)
	c := &clientProc{
		cmd:    exec.Command(argv[0], argv[1:]...),
		stdout: newLineLog(),
		stderr: newLineLog(),
		done:   make(chan struct{}),
	}
	c.cmd.Stdout = c.stdout
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Signal(syscall.SIGCONT)
		_ = c.cmd.Process.Kill()
		<-c.done
	})
	return c
}

// exited reports whether the process has ended.
func (c *clientProc) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// describe is the process's state and stderr, for failure messages.
func (c *clientProc) describe() string {
	if c.exited() {
		return fmt.Sprintf("exited (%v); stderr:\n%s", c.err, c.stderr)
	}
	return fmt.Sprintf("running; stderr:\n%s", c.stderr)
}

// joined waits for a join-mode client's "joined <sid> <port>" line.
func (c *clientProc) joined(t *testing.T, within time.Duration) (sid, port string) {
	t.Helper()
	from := 0
	ln, ok := c.stdout.waitFor(&from, time.Now().Add(within), func(s string) bool {
		return strings.HasPrefix(s, "joined ")
	})
	if !ok {
		t.Fatalf("zombieclient printed no joined line within %s; %s", within, c.describe())
	}
	f := strings.Fields(ln.text)
	if len(f) != 3 {
		t.Fatalf("zombieclient printed %q, want \"joined <sid> <port>\"", ln.text)
	}
	return f[1], f[2]
}

// procState is the one-letter state of pid from /proc ("T" when stopped).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "?"
	}
	// pid (comm) S ...; comm may hold spaces, so look after the last ')'.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return "?"
}

// waitHealth polls fetch until ok accepts the result or deadline passes, and
// returns the last result, when it was read, whether ok accepted it, and
// the last fetch error.
func waitHealth(ctx context.Context, deadline time.Time, fetch func(context.Context) (servertest.Health, error),
	ok func(servertest.Health) bool) (servertest.Health, time.Time, bool, error) {
	var (
		h       servertest.Health
		err     error
		readAt  time.Time
		lastErr error
	)
	for {
		h, err = fetch(ctx)
		readAt = time.Now()
		if err == nil && ok(h) {
			return h, readAt, true, nil
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			return h, readAt, false, lastErr
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package failure

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
)

// needPrlimit returns the path of prlimit (util-linux), or skips the test.
func needPrlimit(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skipf("descriptor-limit test skipped: prlimit (util-linux) is not installed: %v", err)
	}
	return path
}

// openFDs counts the descriptors pid holds.
func openFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// startLine is the fields of dugout's start-up line that these tests read.
type startLine struct {
	Addr            string `json:"addr"`
	MaxSessions     int    `json:"max_sessions"`
	MaxSessionsFrom string `json:"max_sessions_from"`
}

// freshGet fetches path on a connection of its own, closed after.
func freshGet(ctx context.Context, p *servertest.Proc, path string) (int, []byte, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL(path), nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// keptAlive is a plain HTTP connection left idle after one request.
type keptAlive struct {
	nc     net.Conn
	br     *bufio.Reader
	idleAt time.Time // when its response had been read
}

// TestFDLimitReserve runs dugout under RLIMIT_NOFILE=256 with MAX_SESSIONS
// unset: it must take 256 less a reserve of 64 as its session limit and say
// so at start, refuse the 193rd session with 503, and keep the reserve for
// plain HTTP, so that with every session open and 40 idle keep-alive
// connections the probes and health still answer. The idle connections must
// be closed after HTTP_IDLE_TIMEOUT. Last, the test takes every descriptor
// left, so that net/http's accept loop fails with EMFILE and logs it: every
// line on the server's stderr must be JSON, that one too, and the server must
// recover once the descriptors are given back.
func TestFDLimitReserve(t *testing.T) {
	prlimit := needPrlimit(t)
	// idleConns stays under the server's plain-HTTP limit, (256 - 192) / 2 =
	// 32, so none of them is closed before its idle timeout.
	const nofile, reserve, idleConns = 256, 64, 30
	const sessions = nofile - reserve
	const idle = 500 * time.Millisecond
	sl := slack(t)
	p := servertest.Start(t, servertest.Options{
		Env: map[string]string{
			"HTTP_IDLE_TIMEOUT": idle.String(),
			"HTTP_TIMEOUT":      "5s",
			"PING_INTERVAL":     "30s",
			"PING_TIMEOUT":      "30s",
			"SESSION_TIMEOUT":   "0",
		},
		Wrapper: []string{prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile)},
	})
	pid := p.Cmd.Process.Pid // prlimit execs dugout in its place
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var start startLine
	for _, line := range strings.Split(p.Log(), "\n") {
		if json.Unmarshal([]byte(line), &start) == nil && start.Addr != "" {
			break
		}
	}
	if start.MaxSessions != sessions || !strings.Contains(start.MaxSessionsFrom, fmt.Sprintf("descriptor limit %d", nofile)) {
		t.Errorf("start-up line says max_sessions=%d max_sessions_from=%q; want %d from the descriptor limit %d",
			start.MaxSessions, start.MaxSessionsFrom, sessions, nofile)
	}
	fdsAtStart := openFDs(pid)

	// Every session the limit allows, 16 handshakes at a time.
	wsClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	conns := make([]*websocket.Conn, sessions)
	defer func() {
		for _, ws := range conns {
			if ws != nil {
				_ = ws.CloseNow()
			}
		}
	}()
	var (
		mu       sync.Mutex
		dialErrs []error
		wg       sync.WaitGroup
		next     = make(chan int)
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				ws, err := dialSession(ctx, p, wsClient)
				mu.Lock()
				if err != nil {
					dialErrs = append(dialErrs, fmt.Errorf("session %d: %w", i, err))
				}
				conns[i] = ws
				mu.Unlock()
			}
		}()
	}
	for i := range sessions {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(dialErrs) > 0 {
		t.Fatalf("%d of %d sessions refused under the limit; first: %v\ndugout log:\n%s", len(dialErrs), sessions, dialErrs[0], p.Log())
	}
	fdsSessions := openFDs(pid)
	_, resp, err := websocket.Dial(ctx, p.WSURL(), &websocket.DialOptions{HTTPClient: wsClient})
	status, retryAfter := 0, ""
	if resp != nil {
		status, retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if err == nil || status != http.StatusServiceUnavailable {
		t.Errorf("session %d: handshake gave HTTP %d (%v), want 503", sessions+1, status, err)
	}

	// Idle keep-alive connections, each after one request.
	idles := make([]*keptAlive, 0, idleConns)
	defer func() {
		for _, k := range idles {
			k.nc.Close()
		}
	}()
	for i := range idleConns {
		k, err := keepAlive(p)
		if err != nil {
			t.Fatalf("keep-alive connection %d: %v", i, err)
		}
		idles = append(idles, k)
	}
	fdsIdle := openFDs(pid)

	// The reserve answers, from fresh connections.
	probes := map[string]int{}
	for _, path := range []string{"/livez", "/readyz", "/health/connections"} {
		code, body, err := freshGet(ctx, p, path)
		probes[path] = code
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s with %d sessions and %d idle connections open: HTTP %d, %v", path, sessions, idleConns, code, err)
		}
		if path == "/health/connections" {
			var h servertest.Health
			if err := json.Unmarshal(body, &h); err != nil || h.TotalSessions != sessions {
				t.Errorf("health says %d sessions (%v), want %d", h.TotalSessions, err, sessions)
			}
		}
	}
	fdsProbed := openFDs(pid)

	// The idle connections are closed by the server after HTTP_IDLE_TIMEOUT.
	var first, last time.Duration
	stillOpen := 0
	for i, k := range idles {
		_ = k.nc.SetReadDeadline(k.idleAt.Add(idle + sl))
		_, err := k.br.ReadByte()
		after := time.Since(k.idleAt)
		if !errors.Is(err, io.EOF) {
			if stillOpen++; stillOpen <= 3 {
				t.Errorf("idle connection %d: read %v after %s, want EOF within HTTP_IDLE_TIMEOUT %s + %s", i, err, after.Round(time.Millisecond), idle, sl)
			}
			continue
		}
		if i == 0 {
			first = after
		}
		last = max(last, after)
	}
	if stillOpen > 3 {
		t.Errorf("... %d of %d idle connections were not closed by the server", stillOpen, idleConns)
	}
	if first > 0 && first < idle-50*time.Millisecond {
		t.Errorf("the first idle connection was closed %s after its response, before HTTP_IDLE_TIMEOUT %s", first.Round(time.Millisecond), idle)
	}
	fdsAfterIdle := openFDs(pid)

	// Open far more plain connections than the server has descriptors left,
	// each sending nothing: the server closes the longest-waiting ones past
	// its plain-HTTP limit, so it never runs out, and the probes still answer
	// with all of them open.
	var hogs []net.Conn
	defer func() {
		for _, c := range hogs {
			c.Close()
		}
	}()
	for range nofile {
		c, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
		if err != nil {
			t.Fatalf("opening a connection to exhaust the server's descriptors: %v", err)
		}
		hogs = append(hogs, c)
	}
	var emfile string
	waitFor := time.Now().Add(5 * time.Second)
	for emfile == "" && time.Now().Before(waitFor) {
		for _, line := range strings.Split(p.Log(), "\n") {
			if strings.Contains(line, "too many open files") {
				emfile = line
				break
			}
		}
		if emfile == "" {
			time.Sleep(20 * time.Millisecond) // polling the log
		}
	}
	fdsFull := openFDs(pid)
	// The silent connections may be closed once they have sent nothing for
	// the server's grace (1 s): the probes answer soon after, while they are
	// all still held open on this side.
	probeStart := time.Now()
	for _, path := range []string{"/livez", "/readyz", "/health/connections"} {
		var code int
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			code, _, err = freshGet(pctx, p, path)
			pcancel()
			if err == nil && code == http.StatusOK {
				break
			}
		}
		if err != nil || code != http.StatusOK {
			t.Errorf("GET %s with every session and %d silent connections open: HTTP %d, %v", path, len(hogs), code, err)
		}
	}
	t.Logf("with %d silent connections held open, the probes answered within %s", len(hogs), time.Since(probeStart).Round(time.Millisecond))
	for _, c := range hogs {
		c.Close()
	}
	hogs = nil
	recoverStart := time.Now()
	recovered := false
	for !recovered && time.Since(recoverStart) < 5*time.Second {
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		code, _, err := freshGet(rctx, p, "/livez")
		rcancel()
		recovered = err == nil && code == http.StatusOK
	}
	recoveredIn := time.Since(recoverStart)

	// Every line on stderr is JSON.
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	var notJSON []string
	httpLines := 0
	for _, line := range lines {
		var l struct{ Component string }
		if json.Unmarshal([]byte(line), &l) != nil {
			notJSON = append(notJSON, line)
		} else if l.Component == "http" {
			httpLines++
		}
	}

	t.Logf("RLIMIT_NOFILE=%d: start-up line max_sessions=%d max_sessions_from=%q", nofile, start.MaxSessions, start.MaxSessionsFrom)
	t.Logf("session %d refused: HTTP %d, Retry-After %q", sessions+1, status, retryAfter)
	t.Logf("server descriptors: at start %d, with %d sessions %d, plus %d idle keep-alive %d, after the probes %d, after the idle timeout %d, exhausted %d",
		fdsAtStart, sessions, fdsSessions, idleConns, fdsIdle, fdsProbed, fdsAfterIdle, fdsFull)
	t.Logf("probes from fresh connections: %v", probes)
	t.Logf("idle keep-alive connections closed %s to %s after their response (HTTP_IDLE_TIMEOUT %s)",
		first.Round(time.Millisecond), last.Round(time.Millisecond), idle)
	t.Logf("descriptors exhausted: %s; /livez answered again %s after they were given back", emfile, recoveredIn.Round(time.Millisecond))
	t.Logf("stderr: %d lines, %d from net/http, %d not JSON", len(lines), httpLines, len(notJSON))

	if fdsIdle < fdsSessions+idleConns {
		t.Errorf("the server held %d descriptors with the idle connections, %d without: not all %d were open during the probes",
			fdsIdle, fdsSessions, idleConns)
	}

	if !recovered {
		t.Errorf("/livez did not answer within 5 s of the descriptors being given back")
	}
	if len(notJSON) > 0 {
		t.Errorf("%d stderr lines are not JSON; first: %q", len(notJSON), notJSON[0])
	}
}

// dialSession opens a session and reads its session frame.
func dialSession(ctx context.Context, p *servertest.Proc, client *http.Client) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, p.WSURL(), &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	if _, msg, err := ws.Read(ctx); err != nil || !strings.Contains(string(msg), `"type":"session"`) {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("session frame %q: %v", msg, err)
	}
	return ws, nil
}

// keepAlive sends GET /livez on a connection of its own, reads the answer and
// leaves the connection open.
func keepAlive(p *servertest.Proc) (*keptAlive, error) {
	nc, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(nc, "GET /livez HTTP/1.1\r\nHost: %s\r\n\r\n", p.Addr); err != nil {
		nc.Close()
		return nil, err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		nc.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || resp.Close {
		nc.Close()
		return nil, fmt.Errorf("HTTP %d, close %v, body %v", resp.StatusCode, resp.Close, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return &keptAlive{nc: nc, br: br, idleAt: time.Now()}, nil
}

// TestFDLimitTooLow runs dugout with MAX_SESSIONS unset under a descriptor
// limit that its reserve of 64 uses up: it must not start, and must say in one
// JSON line that MAX_SESSIONS (or the limit) has to change.
func TestFDLimitTooLow(t *testing.T) {
	prlimit := needPrlimit(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, prlimit, "--nofile=50:50", servertest.Binary(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LISTEN_ADDR=127.0.0.1:0"}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("under RLIMIT_NOFILE=50 dugout ended with %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	t.Logf("exit code %d; stderr: %s", exit.ExitCode(), stderr.String())
	if len(lines) != 1 {
		t.Fatalf("stderr has %d lines, want one:\n%s", len(lines), stderr.String())
	}
	var l struct {
		Level, Error, Message string
	}
	if err := json.Unmarshal([]byte(lines[0]), &l); err != nil {
		t.Fatalf("stderr line is not JSON: %q", lines[0])
	}
	if l.Level != "error" || !strings.Contains(l.Error, "MAX_SESSIONS") {
		t.Errorf("stderr line %q: want level error and an error naming MAX_SESSIONS", lines[0])
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout: %q, want nothing", stdout.String())
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var fdsFigures = []figure{
	{"nofile", "server open-files limit (from /proc/<pid>/limits)", ""},
	{"sessions", "WebSocket sessions accepted", ""},
	{"refused_status", "first refused handshake: HTTP status (0: no answer, see notes)", ""},
	{"refused_ms", "first refused handshake took (ms)", "lower"},
	{"keepalive_opened", "idle keep-alive HTTP connections opened", ""},
	{"keepalive_answered", "… whose GET /livez was answered", ""},
	{"tcp_opened", "silent TCP connections opened", ""},
	{"livez_answered", "GET /livez answered (1 yes, 0 no)", "higher"},
	{"livez_status", "GET /livez status", ""},
	{"livez_ms", "GET /livez took (ms)", "lower"},
	{"readyz_answered", "GET /readyz answered (1 yes, 0 no)", "higher"},
	{"readyz_status", "GET /readyz status", ""},
	{"readyz_ms", "GET /readyz took (ms)", "lower"},
	{"health_answered", "GET /health/connections answered (1 yes, 0 no)", "higher"},
	{"health_status", "GET /health/connections status", ""},
	{"health_ms", "GET /health/connections took (ms)", "lower"},
	{"log_lines", "server log lines", ""},
	{"log_nonjson_lines", "server log lines that are not JSON", "lower"},
}

// Timeouts of the fds scenario: a server out of descriptors does not refuse,
// it stops accepting, so every wait must end by itself.
const (
	fdsHandshakeTimeout = 2 * time.Second
	fdsAnswerTimeout    = 1 * time.Second
	fdsProbeTimeout     = 2 * time.Second
)

// runFDs: dugout runs with a small open-files limit and no MAX_SESSIONS, and
// the tool takes every descriptor it can (sessions, idle keep-alive HTTP
// connections, silent TCP connections); then it asks whether the health
// endpoints still answer a fresh connection.
func runFDs(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	n := o.hostile.nofile
	if lim, err := nofileOf(p.pid); err == nil {
		m.set("nofile", float64(lim))
		if lim != n {
			m.notef("the server's open-files limit is %d, not the %d asked for", lim, n)
		}
	}
	sessions, err := openSessions(ctx, o, p, d, m)
	defer func() {
		for _, c := range sessions {
			_ = c.ws.CloseNow()
		}
	}()
	if err != nil {
		return nil, err
	}
	keep, answered := openKeepAlives(ctx, p.addr, n)
	defer closeConns(keep)
	m.set("keepalive_opened", float64(len(keep)))
	m.set("keepalive_answered", float64(answered))
	silent := openSilent(ctx, p.addr, n)
	defer closeConns(silent)
	m.set("tcp_opened", float64(len(silent)))

	// The three at once: an answer that comes only when another probe's
	// connection is closed would not be an answer.
	eps := []struct{ key, path string }{{"livez", "/livez"}, {"readyz", "/readyz"}, {"health", "/health/connections"}}
	res := make([]probeResult, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() { defer wg.Done(); res[i] = probe(ctx, p.addr, ep.path) }()
	}
	wg.Wait()
	for i, r := range res {
		k := eps[i].key
		m.set(k+"_ms", r.ms)
		m.set(k+"_answered", b2f(r.err == nil))
		if r.err != nil {
			m.notef("GET %s: %v", eps[i].path, r.err)
		} else {
			m.set(k+"_status", float64(r.status))
		}
	}
	if err := sleepCtx(ctx, 200*time.Millisecond); err != nil { // the last log lines
		return nil, err
	}
	lines, nonJSON := logCounts(p)
	m.set("log_lines", float64(lines))
	m.set("log_nonjson_lines", float64(nonJSON))
	return m, nil
}

// openSessions opens sessions (o.parallel at a time) until one is refused or
// fails, at most nofile of them, and records the first refusal.
func openSessions(ctx context.Context, o *options, p *proc, d *dialer, m *measurement) ([]*idleClient, error) {
	n := o.hostile.nofile
	clients := make([]*idleClient, n)
	var refused atomic.Bool
	var once sync.Once
	var first probeResult // the first refusal
	parallelFor(ctx, n, o.parallel, func(i int) {
		if refused.Load() {
			return
		}
		hctx, cancel := context.WithTimeout(ctx, fdsHandshakeTimeout)
		defer cancel()
		t0 := time.Now()
		ws, err := d.dial(hctx, wsURL(p), "")
		if err == nil {
			if err = readSession(hctx, ws, -1); err != nil {
				_ = ws.CloseNow()
			}
		}
		if err != nil {
			refused.Store(true)
			once.Do(func() { first = probeResult{ms: float64(time.Since(t0).Microseconds()) / 1000, err: err} })
			return
		}
		c := &idleClient{ws: ws, acked: make(chan struct{})}
		clients[i] = c
		go c.readLoop()
	})
	var open []*idleClient
	for _, c := range clients {
		if c != nil {
			open = append(open, c)
		}
	}
	m.set("sessions", float64(len(open)))
	if first.err != nil {
		fmt.Sscanf(first.err.Error(), "HTTP %d:", &first.status) // dialer.dial's wording
		m.set("refused_status", float64(first.status))
		m.set("refused_ms", first.ms)
		m.notef("first refused handshake: %v", first.err)
	}
	if !refused.Load() {
		m.notef("no handshake was refused within %d sessions", n)
	}
	return open, ctx.Err()
}

// openKeepAlives opens n connections at once, each sending one GET /livez and
// then nothing more, and counts those answered within fdsAnswerTimeout. Each
// stays open, idle, as a browser's keep-alive connection does.
func openKeepAlives(ctx context.Context, addr string, n int) (conns []net.Conn, answered int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := (&net.Dialer{Timeout: fdsAnswerTimeout}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return
			}
			ok := false
			_ = c.SetDeadline(time.Now().Add(fdsAnswerTimeout))
			if _, err := c.Write([]byte("GET /livez HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")); err == nil {
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					resp.Body.Close()
					ok = true
				}
			}
			_ = c.SetDeadline(time.Time{})
			mu.Lock()
			conns = append(conns, c)
			if ok {
				answered++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return conns, answered
}

// openSilent opens n TCP connections at once that never send a byte.
func openSilent(ctx context.Context, addr string, n int) []net.Conn {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var conns []net.Conn
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := (&net.Dialer{Timeout: fdsAnswerTimeout}).DialContext(ctx, "tcp", addr); err == nil {
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns
}

func closeConns(cs []net.Conn) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// probeResult is one GET on a fresh connection.
type probeResult struct {
	status int
	ms     float64
	err    error
}

// probe GETs path on a fresh connection within fdsProbeTimeout.
func probe(ctx context.Context, addr, path string) probeResult {
	client := &http.Client{Timeout: fdsProbeTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	t0 := time.Now()
	var r probeResult
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err == nil {
		var resp *http.Response
		if resp, err = client.Do(req); err == nil {
			r.status = resp.StatusCode
			resp.Body.Close()
		}
	}
	r.ms, r.err = float64(time.Since(t0).Microseconds())/1000, err
	return r
}

// nofileOf reads the soft open-files limit of a process.
func nofileOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, fmt.Errorf("no open-files line in /proc/%d/limits", pid)
}

// logCounts is how many lines the server has logged, and how many of them
// are not JSON, such as net/http's own "http: Accept error" when it runs out
// of descriptors. readLog counts every line without a JSON level under "";
// of those, the start-up line (logged at no level, so that it always shows)
// and any other level-less JSON line among the kept problem lines are JSON.
func logCounts(p *proc) (lines, nonJSON int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	nonJSON = p.levels[""] - 1
	for _, l := range p.problems {
		if json.Valid([]byte(l)) && !strings.Contains(l, `"level":`) {
			nonJSON--
		}
	}
	return p.lines, max(nonJSON, 0)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// Source addresses 127.0.0.2 .. 127.0.0.254. Every connection binds a source
// address of its own before connecting, and an address's ephemeral ports run
// out near 28,000 (the kernel's default range), counting the TIME_WAIT sockets
// earlier runs left behind, so connections are spread perIP per address and
// the spreading carries on from run to run.
const (
	firstSrc = 2
	srcCount = 253
)

// dialer opens client WebSockets from rotating loopback source addresses.
type dialer struct {
	perIP   int
	next    atomic.Int64 // connections dialled so far, across runs
	bytesIn atomic.Int64 // bytes read from every client socket (handshakes, frames, pings)

	mu      sync.Mutex
	clients map[int]*http.Client
}

func newDialer(perIP int) *dialer {
	return &dialer{perIP: perIP, clients: map[int]*http.Client{}}
}

// httpClient returns the HTTP client whose transport dials from source
// address number ip. Keep-alives are off: every handshake gets a connection
// of its own, which the upgrade then takes out of the transport for good.
func (d *dialer) httpClient(ip int) *http.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.clients[ip]; c != nil {
		return c
	}
	nd := &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(firstSrc+ip)), Port: 0},
		Timeout:   10 * time.Second,
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countConn{Conn: c, n: &d.bytesIn}, nil
		},
		DisableKeepAlives:  true,
		DisableCompression: true,
		ForceAttemptHTTP2:  false,
	}
	c := &http.Client{Transport: tr}
	d.clients[ip] = c
	return c
}

// dial opens one WebSocket to url, with token as ?token= when not empty.
func (d *dialer) dial(ctx context.Context, url, token string) (*websocket.Conn, error) {
	i := d.next.Add(1) - 1
	ip := int(i/int64(d.perIP)) % srcCount
	if token != "" {
		url += "?token=" + token
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: d.httpClient(ip)})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, err
	}
	ws.SetReadLimit(1 << 20)
	return ws, nil
}

type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// frame is every server frame the tool reads, in one shape.
type frame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		SID      string         `json:"sid"`
		UserID   *int64         `json:"user_id"`
		GameID   string         `json:"game_id"`
		Code     string         `json:"code"`
		Status   string         `json:"status"`
		Offset   uint64         `json:"offset"` // a game event's, or game_joined's (contract v2 §2)
		Decision decisionFields `json:"decision"`
	} `json:"data"`
}

// readFrame reads and decodes one frame within timeout. A timeout closes the
// connection (coder/websocket's rule), which is fine for the callers: it is a failure.
func readFrame(ctx context.Context, ws *websocket.Conn, timeout time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var f frame
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return f, err
	}
	if typ != websocket.MessageText {
		return f, errors.New("binary frame from server")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("undecodable frame %q: %w", b, err)
	}
	return f, nil
}

// readSession reads the first frame and checks it is a session frame, with
// the user id the token named (want < 0: anonymous).
func readSession(ctx context.Context, ws *websocket.Conn, want int64) error {
	f, err := readFrame(ctx, ws, 10*time.Second)
	if err != nil {
		return fmt.Errorf("reading session frame: %w", err)
	}
	if f.Type != "session" || len(f.Data.SID) < 16 {
		return fmt.Errorf("first frame is %q with sid %q, want a session frame", f.Type, f.Data.SID)
	}
	switch {
	case want < 0 && f.Data.UserID != nil:
		return fmt.Errorf("anonymous session has user_id %d", *f.Data.UserID)
	case want >= 0 && (f.Data.UserID == nil || *f.Data.UserID != want):
		return fmt.Errorf("session user_id is %v, want %d", f.Data.UserID, want)
	}
	return nil
}

// write sends one text frame within 10 s.
func write(ctx context.Context, ws *websocket.Conn, msg []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, msg)
}

// tokens mints n HS256 tokens, sub = the client's index, valid for an hour;
// nil when secret is empty.
func tokens(secret string, n int) ([]string, error) {
	if secret == "" {
		return nil, nil
	}
	out := make([]string, n)
	exp := time.Now().Add(time.Hour).Unix()
	for i := range out {
		t, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": strconv.Itoa(i), "exp": exp}).
			SignedString([]byte(secret))
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

func tokenFor(toks []string, i int) (string, int64) {
	if toks == nil {
		return "", -1
	}
	return toks[i], int64(i)
}

// parallelFor runs fn(0..n-1) on at most workers goroutines and returns when
// all have run, or stops handing out work when ctx ends.
func parallelFor(ctx context.Context, n, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// closeAll drops every connection at once, without a close handshake.
func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			_ = c.CloseNow()
		}
	}
}

// sleepCtx sleeps for d or until ctx ends, reporting ctx's error in that case.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sampler keeps the first few error messages of a kind and counts them all.
type sampler struct {
	mu      sync.Mutex
	n       int
	samples []string
}

func (s *sampler) add(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	if len(s.samples) < 3 {
		s.samples = append(s.samples, fmt.Sprintf(format, args...))
	}
}

func (s *sampler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *sampler) report(what string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == 0 {
		return nil
	}
	out := []string{fmt.Sprintf("%d %s", s.n, what)}
	for _, m := range s.samples {
		out = append(out, "  e.g. "+m)
	}
	return out
}

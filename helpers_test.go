package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor is how long a test waits for something that should happen at once.
const waitFor = 5 * time.Second

// testConfig is the default configuration with durations short enough for tests.
func testConfig(t testing.TB) config {
	t.Helper()
	cfg, err := loadConfig(nil)
	if err != nil {
		t.Fatalf("default config: %v", err)
	}
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.PingInterval = time.Second
	cfg.PingTimeout = time.Second
	cfg.SessionTimeout = time.Minute
	cfg.ExpiryWarning = 10 * time.Second
	cfg.ExpiryCheckInterval = time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.rateLimitGrace = 5 * time.Second
	// The protocol 1 suite runs with the rollback switch: a lost connection
	// ends its session at once. The resilient-session tests set a window.
	cfg.ResumeWindow = 0
	return cfg
}

// testServer is a dugout server on httptest with its real mux.
type testServer struct {
	*server
	ts  *httptest.Server
	url string // ws:// URL of /ws
}

// startServer starts a server with cfg and stops it when the test ends.
func startServer(t testing.TB, cfg config) *testServer {
	t.Helper()
	s := newServer(cfg, zerolog.New(io.Discard))
	// Served as run() serves, through front, which reads every handshake
	// that is a connection's first request; with httptest's header limit, not
	// run()'s, so that the handler's own refusals of huge requests are seen.
	ts := httptest.NewUnstartedServer(s.routes())
	ts.Listener = newFront(ts.Listener, s, newPlainConns(0), cfg.HTTPTimeout, http.DefaultMaxHeaderBytes)
	ts.Start()
	t.Cleanup(func() {
		if err := s.shutdown(cfg.ShutdownTimeout, func(context.Context) error { ts.Close(); return nil }); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testServer{server: s, ts: ts, url: "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"}
}

// frame is a server frame as a client sees it.
type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// client is a real WebSocket client for end-to-end tests.
type client struct {
	t       *testing.T
	ws      *websocket.Conn
	session sessionData // from the first frame
}

// dial connects to url and reads the session frame.
func dial(t *testing.T, url string, opts *websocket.DialOptions) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &client{t: t, ws: ws}
	f := c.read()
	if f.Type != "session" {
		t.Fatalf("first frame is %q, want session", f.Type)
	}
	c.decode(f, &c.session)
	return c
}

// dialStatus attempts a handshake that should be refused and returns its HTTP status.
func dialStatus(t *testing.T, url string, opts *websocket.DialOptions) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, opts)
	if err == nil {
		_ = ws.CloseNow()
		t.Fatalf("dial %s succeeded, want a refusal", url)
	}
	if resp == nil {
		t.Fatalf("dial %s: no HTTP response: %v", url, err)
	}
	return resp.StatusCode
}

// send writes one text message.
func (c *client) send(msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// read returns the next frame, failing the test after waitFor.
func (c *client) read() frame {
	c.t.Helper()
	f, err := c.tryRead(waitFor)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// tryRead returns the next frame or the error that ended the wait.
func (c *client) tryRead(within time.Duration) (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	if typ != websocket.MessageText {
		return frame{}, errors.New("server sent a binary frame")
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, err
	}
	return f, nil
}

// expect reads frames until one of type typ arrives, skipping none: the next
// frame must be of that type.
func (c *client) expect(typ string) frame {
	c.t.Helper()
	f := c.read()
	if f.Type != typ {
		c.t.Fatalf("got frame %s %s, want %s", f.Type, f.Data, typ)
	}
	return f
}

// decode unmarshals a frame's data into v.
func (c *client) decode(f frame, v any) {
	c.t.Helper()
	if err := json.Unmarshal(f.Data, v); err != nil {
		c.t.Fatalf("decode %s data %s: %v", f.Type, f.Data, err)
	}
}

// expectError reads the next frame and checks it is an error with code and id.
func (c *client) expectError(code, id string) {
	c.t.Helper()
	f := c.expect("error")
	var e errorData
	c.decode(f, &e)
	if e.Code != code || f.ID != id {
		c.t.Fatalf("error %q id %q (%s), want %q id %q", e.Code, f.ID, e.Message, code, id)
	}
	if e.Message == "" {
		c.t.Fatalf("error %q has no message", e.Code)
	}
}

// expectClose reads until the connection ends and returns its close code
// (-1 when the connection ended without a close frame).
func (c *client) expectClose(within time.Duration) websocket.StatusCode {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := c.tryRead(time.Until(deadline))
		if err == nil {
			continue
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("connection still open after %s", within)
		}
		return websocket.CloseStatus(err)
	}
}

// testQueueBytes is the byte bound the hub tests give their fake conns'
// queues: large enough that only the frame bound matters, unless a test says.
const testQueueBytes = 1 << 30

// healthReport is the body of /health/connections as a client decodes it.
type healthReport struct {
	Status            string         `json:"status"`
	TotalSessions     int            `json:"total_sessions"`
	ConnectedSessions int            `json:"connected_sessions"`
	AwaySessions      int            `json:"away_sessions"`
	UniqueUsers       int            `json:"unique_users"`
	ActiveGames       int            `json:"active_games"`
	SessionsPerGame   map[string]int `json:"sessions_per_game"`
	Goroutines        int            `json:"goroutines"`
}

// seatsPerGame is a hub snapshot's seat counts keyed by canonical game id, as
// health reports them.
func seatsPerGame(st stats) map[string]int {
	per := map[string]int{}
	if st.seats != nil {
		st.seats.each(func(g uuid.UUID, n int) { per[g.String()] = n })
	}
	return per
}

// health fetches /health/connections.
func (s *testServer) health(t *testing.T) healthReport {
	t.Helper()
	resp, err := http.Get(s.ts.URL + "/health/connections")
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	var r healthReport
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("health body: %v", err)
	}
	return r
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

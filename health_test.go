package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// The contract's HTTP endpoints: the statuses of the /ws handshake, the
// operator's /health/connections, and readiness and liveness.

// testSecret is the JWT_SECRET of the tests that accept tokens.
const testSecret = "test-secret-that-is-long-enough"

// mint signs claims with method and key.
func mint(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	return tok
}

// valid returns claims that pass with sub, expiring in an hour.
func valid(sub any) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()}
}

// withQueryToken is the /ws URL carrying tok in the query.
func withQueryToken(wsURL, tok string) string {
	return wsURL + "?token=" + url.QueryEscape(tok)
}

// withCookie carries tok in the access_token cookie.
func withCookie(tok string) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"access_token=" + tok}}}
}

// withOrigin sets the Origin header a browser would send.
func withOrigin(origin string) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}}
}

// stillServing checks that the server goes on as before: ref's session still
// answers and no refused handshake left a session behind.
func stillServing(t *testing.T, s *testServer, ref *client, sessions int) {
	t.Helper()
	ref.send(`{"type":"heartbeat","id":"still"}`)
	if f := ref.expect("heartbeat_ack"); f.ID != "still" {
		t.Fatalf("heartbeat_ack id %q", f.ID)
	}
	// Sessions closed by earlier steps leave the hub shortly after; a refused
	// handshake that left one behind would keep the count up for good.
	eventually(t, "the sessions to number "+strconv.Itoa(sessions), func() bool {
		return s.health(t).TotalSessions == sessions
	})
}

func TestHandshakeAcceptsAValidToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	s := startServer(t, cfg)
	for _, tc := range []struct {
		name string
		sub  any
		want int64
	}{
		{"sub as decimal string", "42", 42},
		{"sub as JSON number", 42, 42},
		{"sub beyond 2^53 as string", "9007199254740993", 9007199254740993},
		{"sub beyond 2^53 as JSON number", int64(9007199254740993), 9007199254740993},
	} {
		tok := mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid(tc.sub))
		for _, via := range []struct {
			name string
			url  string
			opts *websocket.DialOptions
		}{
			{"query", withQueryToken(s.url, tok), nil},
			{"cookie", s.url, withCookie(tok)},
		} {
			t.Run(tc.name+" via "+via.name, func(t *testing.T) {
				c := dial(t, via.url, via.opts)
				if c.session.UserID == nil || *c.session.UserID != tc.want {
					t.Fatalf("user_id %v, want %d", c.session.UserID, tc.want)
				}
			})
		}
	}
	t.Run("no token is anonymous", func(t *testing.T) {
		if c := dial(t, s.url, nil); c.session.UserID != nil {
			t.Fatalf("user_id %d, want null", *c.session.UserID)
		}
	})
}

func TestHandshakeRefusesABadToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	s := startServer(t, cfg)
	ref := dial(t, s.url, nil)
	secret := []byte(testSecret)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := mint(t, jwt.SigningMethodHS256, secret, valid("42"))
	goodParts := strings.Split(good, ".")
	otherPayload := strings.Split(mint(t, jwt.SigningMethodHS256, secret, valid("43")), ".")[1]
	none := mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid("42"))
	for _, tc := range []struct {
		name string
		tok  string
	}{
		{"not a JWT", "not-a-jwt"},
		{"three garbage parts", "a.b.c"},
		{"signature cut off", goodParts[0] + "." + goodParts[1] + "."},
		{"payload swapped under the signature", goodParts[0] + "." + otherPayload + "." + goodParts[2]},
		{"wrong secret", mint(t, jwt.SigningMethodHS256, []byte("another secret"), valid("42"))},
		{"expired", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "42", "exp": time.Now().Add(-time.Minute).Unix()})},
		{"no sub", mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})},
		{"sub empty", mint(t, jwt.SigningMethodHS256, secret, valid(""))},
		{"sub not a number", mint(t, jwt.SigningMethodHS256, secret, valid("abc"))},
		{"sub a decimal fraction string", mint(t, jwt.SigningMethodHS256, secret, valid("4.5"))},
		{"sub a fractional number", mint(t, jwt.SigningMethodHS256, secret, valid(4.5))},
		{"sub beyond int64", mint(t, jwt.SigningMethodHS256, secret, valid("9223372036854775808"))},
		{"sub a boolean", mint(t, jwt.SigningMethodHS256, secret, valid(true))},
		{"alg none", none},
		{"alg HS384 with the right secret", mint(t, jwt.SigningMethodHS384, secret, valid("42"))},
		{"alg RS256", mint(t, jwt.SigningMethodRS256, rsaKey, valid("42"))},
	} {
		t.Run(tc.name+" via query", func(t *testing.T) {
			if status := dialStatus(t, withQueryToken(s.url, tc.tok), nil); status != http.StatusUnauthorized {
				t.Fatalf("HTTP %d, want 401", status)
			}
			stillServing(t, s, ref, 1)
		})
		t.Run(tc.name+" via cookie", func(t *testing.T) {
			if status := dialStatus(t, s.url, withCookie(tc.tok)); status != http.StatusUnauthorized {
				t.Fatalf("HTTP %d, want 401", status)
			}
			stillServing(t, s, ref, 1)
		})
	}
}

func TestHandshakeRequireAuth(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	cfg.RequireAuth = true
	s := startServer(t, cfg)
	tok := mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid("7"))
	ref := dial(t, withQueryToken(s.url, tok), nil)
	if ref.session.UserID == nil || *ref.session.UserID != 7 {
		t.Fatalf("user_id %v, want 7", ref.session.UserID)
	}
	for _, tc := range []struct {
		name string
		url  string
		opts *websocket.DialOptions
	}{
		{"no token", s.url, nil},
		{"empty query token", s.url + "?token=", nil},
		{"empty cookie", s.url, withCookie("")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status := dialStatus(t, tc.url, tc.opts); status != http.StatusUnauthorized {
				t.Fatalf("HTTP %d, want 401", status)
			}
			stillServing(t, s, ref, 1)
		})
	}
	t.Run("token via cookie", func(t *testing.T) {
		c := dial(t, s.url, withCookie(tok))
		if c.session.UserID == nil || *c.session.UserID != 7 {
			t.Fatalf("user_id %v, want 7", c.session.UserID)
		}
	})
}

func TestHandshakeIgnoresTokensWithoutSecret(t *testing.T) {
	s := startServer(t, testConfig(t)) // no JWT_SECRET
	tok := mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid("42"))
	expired := mint(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "42", "exp": time.Now().Add(-time.Hour).Unix()})
	for _, tc := range []struct {
		name string
		url  string
		opts *websocket.DialOptions
	}{
		{"token via query", withQueryToken(s.url, tok), nil},
		{"token via cookie", s.url, withCookie(tok)},
		{"expired token", withQueryToken(s.url, expired), nil},
		{"garbage token", withQueryToken(s.url, "not-a-jwt"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c := dial(t, tc.url, tc.opts); c.session.UserID != nil {
				t.Fatalf("user_id %d, want null: without JWT_SECRET every session is anonymous", *c.session.UserID)
			}
		})
	}
}

func TestHandshakeOrigin(t *testing.T) {
	// originsFrom parses an ALLOWED_ORIGINS value the way the process does.
	originsFrom := func(t *testing.T, value string) []string {
		t.Helper()
		cfg, err := loadConfig([]string{"ALLOWED_ORIGINS=" + value})
		if err != nil {
			t.Fatalf("ALLOWED_ORIGINS=%q: %v", value, err)
		}
		return cfg.AllowedOrigins
	}
	for _, tc := range []struct {
		name    string
		allowed string // ALLOWED_ORIGINS
		origin  string // "" sends none; "same" sends the server's own
		want    int
	}{
		{"default refuses another host", "", "http://evil.example", http.StatusForbidden},
		{"default refuses another host over https", "", "https://evil.example", http.StatusForbidden},
		{"default allows the same host", "", "same", http.StatusSwitchingProtocols},
		{"default allows no Origin", "", "", http.StatusSwitchingProtocols},
		{"listed host", "evil.example", "http://evil.example", http.StatusSwitchingProtocols},
		{"listed host, spaces and empty entries", " other.example , , evil.example ,", "http://evil.example", http.StatusSwitchingProtocols},
		{"host not in the list", "good.example", "http://evil.example", http.StatusForbidden},
		{"wildcard subdomain", "*.example", "http://evil.example", http.StatusSwitchingProtocols},
		{"star allows any", "*", "http://evil.example", http.StatusSwitchingProtocols},
		{"star allows any with a port", "*", "http://anything.test:9999", http.StatusSwitchingProtocols},
		{"host pattern without port refuses a port", "game.example.com", "http://game.example.com:8443", http.StatusForbidden},
		{"host pattern with any port", "game.example.com:*", "http://game.example.com:8443", http.StatusSwitchingProtocols},
		{"host pattern with any port allows the default https port", "game.example.com:*", "https://game.example.com", http.StatusSwitchingProtocols},
		{"host pattern with any port allows the default http port", "game.example.com:*", "http://game.example.com", http.StatusSwitchingProtocols},
		{"host pattern with any port refuses another host", "game.example.com:*", "https://game.example.com.evil.test", http.StatusForbidden},
		{"wildcard subdomain with any port, default port", "*.example.com:*", "https://play.example.com", http.StatusSwitchingProtocols},
		{"PROTOCOL.md's production example", "game.example.com", "https://game.example.com", http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.AllowedOrigins = originsFrom(t, tc.allowed)
			s := startServer(t, cfg)
			origin := tc.origin
			if origin == "same" {
				origin = s.ts.URL
			}
			var opts *websocket.DialOptions
			if origin != "" {
				opts = withOrigin(origin)
			}
			if tc.want == http.StatusSwitchingProtocols {
				dial(t, s.url, opts)
				return
			}
			if status := dialStatus(t, s.url, opts); status != tc.want {
				t.Fatalf("Origin %s with ALLOWED_ORIGINS=%q: HTTP %d, want %d", origin, tc.allowed, status, tc.want)
			}
			stillServing(t, s, dial(t, s.url, nil), 1)
		})
	}
}

func TestHandshakeMaxSessions(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxSessions = 2
	s := startServer(t, cfg)
	a := dial(t, s.url, nil)
	b := dial(t, s.url, nil)
	if status := dialStatus(t, s.url, nil); status != http.StatusServiceUnavailable {
		t.Fatalf("third handshake: HTTP %d, want 503", status)
	}
	stillServing(t, s, b, 2)
	if err := a.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close: %v", err)
	}
	var admitted *websocket.Conn
	eventually(t, "a handshake admitted once a session closed", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, s.url, nil)
		if err != nil {
			if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("handshake while one slot frees: %v", err)
			}
			return false
		}
		admitted = ws
		return true
	})
	t.Cleanup(func() { _ = admitted.CloseNow() })
	if status := dialStatus(t, s.url, nil); status != http.StatusServiceUnavailable {
		t.Fatalf("handshake past the limit again: HTTP %d, want 503", status)
	}
	stillServing(t, s, b, 2)
}

func TestHandshakeThatIsNotAWebSocket(t *testing.T) {
	s := startServer(t, testConfig(t))
	ref := dial(t, s.url, nil)
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	for _, tc := range []struct {
		name    string
		method  string
		header  http.Header
		want    int // 0: any 4xx
		wantMsg string
	}{
		{"plain GET", http.MethodGet, nil, 0, ""},
		{"POST", http.MethodPost, nil, 0, ""},
		{"Sec-WebSocket-Version 8", http.MethodGet, http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"8"}, "Sec-Websocket-Key": {key},
		}, http.StatusBadRequest, ""},
		{"no Sec-WebSocket-Key", http.MethodGet, http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		}, http.StatusBadRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.ts.URL+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := noKeepAlive.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			resp.Body.Close()
			switch {
			case tc.want != 0 && resp.StatusCode != tc.want:
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.want)
			case resp.StatusCode < 400 || resp.StatusCode > 499:
				t.Fatalf("HTTP %d, want a 4xx", resp.StatusCode)
			}
			stillServing(t, s, ref, 1)
			dial(t, s.url, nil)
		})
	}
}

func TestTokensAreNeverLogged(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	r := startRun(t, cfg) // logs at trace level
	wsURL := "ws://" + r.addr + "/ws"
	secret := []byte(testSecret)
	good := mint(t, jwt.SigningMethodHS256, secret, valid("42"))
	expired := mint(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "42", "exp": time.Now().Add(-time.Minute).Unix()})
	forged := mint(t, jwt.SigningMethodHS256, []byte("forger"), valid("42"))
	badSub := mint(t, jwt.SigningMethodHS256, secret, valid("abc"))

	c1 := dial(t, withQueryToken(wsURL, good), nil)
	c2 := dial(t, wsURL, withCookie(good))
	for _, tok := range []string{expired, forged, badSub} {
		if status := dialStatus(t, withQueryToken(wsURL, tok), nil); status != http.StatusUnauthorized {
			t.Fatalf("HTTP %d, want 401", status)
		}
		if status := dialStatus(t, wsURL, withCookie(tok)); status != http.StatusUnauthorized {
			t.Fatalf("HTTP %d, want 401", status)
		}
	}
	_ = c1.ws.Close(websocket.StatusNormalClosure, "")
	_ = c2.ws.Close(websocket.StatusNormalClosure, "")
	r.cancel()
	if err := r.wait(t, cfg.ShutdownTimeout); err != nil {
		t.Fatalf("run: %v", err)
	}
	logs := r.logs.String()
	if logs == "" {
		t.Fatal("nothing was logged at trace level: the test proves nothing")
	}
	for _, tok := range []string{good, expired, forged, badSub} {
		parts := strings.Split(tok, ".")
		for _, secretPart := range []string{tok, parts[1], parts[2]} {
			if strings.Contains(logs, secretPart) {
				t.Fatalf("the log holds a token or part of one:\n%s", logs)
			}
		}
	}
	if strings.Contains(logs, "token=") || strings.Contains(logs, "access_token") {
		t.Fatalf("the log holds a URL or cookie that carries a token:\n%s", logs)
	}
}

// connectionsBody is /health/connections as the contract spells it.
type connectionsBody struct {
	Status          string         `json:"status"`
	TotalSessions   int            `json:"total_sessions"`
	UniqueUsers     int            `json:"unique_users"`
	ActiveGames     int            `json:"active_games"`
	SessionsPerGame map[string]int `json:"sessions_per_game"`
}

// connections fetches /health/connections and checks its status, media type
// and that every field the contract names is present.
func connections(t *testing.T, s *testServer) connectionsBody {
	t.Helper()
	resp, err := noKeepAlive.Get(s.ts.URL + "/health/connections")
	if err != nil {
		t.Fatalf("/health/connections: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/health/connections: HTTP %d", resp.StatusCode)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Fatalf("/health/connections Content-Type %q", resp.Header.Get("Content-Type"))
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("/health/connections body: %v", err)
	}
	for _, key := range []string{"status", "total_sessions", "unique_users", "active_games", "sessions_per_game"} {
		if _, ok := raw[key]; !ok {
			t.Fatalf("/health/connections has no %s: %v", key, raw)
		}
	}
	if !strings.HasPrefix(string(raw["sessions_per_game"]), "{") {
		t.Fatalf("sessions_per_game is %s, want an object", raw["sessions_per_game"])
	}
	b, _ := json.Marshal(raw)
	var body connectionsBody
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("/health/connections fields: %v", err)
	}
	if body.Status != "healthy" {
		t.Fatalf("status %q, want healthy", body.Status)
	}
	return body
}

// wantConnections fails unless /health/connections reports exactly this.
func wantConnections(t *testing.T, s *testServer, total, users, games int, perGame map[string]int) {
	t.Helper()
	got := connections(t, s)
	if got.TotalSessions != total || got.UniqueUsers != users || got.ActiveGames != games ||
		!reflect.DeepEqual(got.SessionsPerGame, perGame) {
		t.Fatalf("health %+v, want total %d, users %d, games %d, per game %v", got, total, users, games, perGame)
	}
}

func TestHealthConnectionsCounts(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	s := startServer(t, cfg)
	wantConnections(t, s, 0, 0, 0, map[string]int{})

	tok7 := mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid("7"))
	u7a := dial(t, withQueryToken(s.url, tok7), nil)
	u7b := dial(t, s.url, withCookie(tok7))
	anon := dial(t, s.url, nil)
	wantConnections(t, s, 3, 1, 0, map[string]int{})

	const g1 = "6f9619ff-8b86-d011-b42d-00c04fd430c8"
	const g2 = "0e3a8c2d-5b7f-4a19-8d6e-1f2a3b4c5d6e"
	// Three spellings of g1; the report uses the canonical lowercase one.
	u7a.send(`{"type":"join_game","data":{"game_id":"` + strings.ToUpper(g1) + `"}}`)
	u7a.expect("game_joined")
	anon.send(`{"type":"join_game","data":{"game_id":"urn:uuid:` + g1 + `"}}`)
	anon.expect("game_joined")
	u7a.expect("presence")
	u7b.send(`{"type":"join_game","data":{"game_id":"{` + strings.ToUpper(g2) + `}"}}`)
	u7b.expect("game_joined")
	wantConnections(t, s, 3, 1, 2, map[string]int{g1: 2, g2: 1})

	tok8 := mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid(8))
	u8 := dial(t, withQueryToken(s.url, tok8), nil)
	wantConnections(t, s, 4, 2, 2, map[string]int{g1: 2, g2: 1})

	// A game with no session left is neither counted nor listed.
	u7b.send(`{"type":"leave_game","data":{"game_id":"` + g2 + `"}}`)
	u7b.expect("game_left")
	wantConnections(t, s, 4, 2, 1, map[string]int{g1: 2})

	// A user counts while at least one of their sessions lives.
	_ = u7a.ws.Close(websocket.StatusNormalClosure, "")
	anon.expect("presence")
	eventually(t, "u7a gone", func() bool { return connections(t, s).TotalSessions == 3 })
	wantConnections(t, s, 3, 2, 1, map[string]int{g1: 1})
	_ = u7b.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "u7b gone", func() bool { return connections(t, s).TotalSessions == 2 })
	wantConnections(t, s, 2, 1, 1, map[string]int{g1: 1})
	_ = anon.ws.Close(websocket.StatusNormalClosure, "")
	_ = u8.ws.Close(websocket.StatusNormalClosure, "")
	eventually(t, "everyone gone", func() bool { return connections(t, s).TotalSessions == 0 })
	wantConnections(t, s, 0, 0, 0, map[string]int{})
}

// probeReady fetches /healthz, /readyz and /livez at base and returns their
// statuses by path. It never fails the test, so any goroutine may call it.
func probeReady(base string) (map[string]int, error) {
	got := map[string]int{}
	for _, path := range []string{"/healthz", "/readyz", "/livez"} {
		status, ctype, err := getStatus(base + path)
		if err != nil {
			return nil, err
		}
		if mt, _, _ := mime.ParseMediaType(ctype); mt != "application/json" {
			got[path+" Content-Type "+ctype] = status
		}
		got[path] = status
	}
	return got, nil
}

// TestReadinessDuringShutdown runs the real shutdown sequence (s.shutdown) but
// with an HTTP stop that leaves the listener open, so that the endpoints can be
// asked while shutdown is in progress. Under run() the listener closes in the
// same instant draining is set, and a probe then gets no HTTP answer at all.
func TestReadinessDuringShutdown(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute
	cfg.ShutdownTimeout = 3 * time.Second
	s := startServer(t, cfg)
	serving := map[string]int{"/healthz": 200, "/readyz": 200, "/livez": 200}
	draining := map[string]int{"/healthz": 503, "/readyz": 503, "/livez": 200}
	if got, err := probeReady(s.ts.URL); err != nil || !reflect.DeepEqual(got, serving) {
		t.Fatalf("while serving: %v %v, want %v", got, err, serving)
	}

	live := dial(t, s.url, nil)
	// A peer that never answers the close handshake keeps shutdown in
	// progress long enough to look at the server from outside.
	dialRaw(t, s.ts.Listener.Addr().String())

	type probe struct {
		got map[string]int
		err error
	}
	atStop := make(chan probe, 1)
	result := make(chan error, 1)
	go func() {
		// The HTTP server is left listening, so the endpoints stay reachable
		// while the real shutdown sequence runs; what they say the moment
		// shutdown asks HTTP to stop is recorded.
		result <- s.shutdown(cfg.ShutdownTimeout, func(context.Context) error {
			got, err := probeReady(s.ts.URL)
			atStop <- probe{got, err}
			return nil
		})
	}()
	select {
	case p := <-atStop:
		if p.err != nil || !reflect.DeepEqual(p.got, draining) {
			t.Fatalf("once shutdown began: %v %v, want %v", p.got, p.err, draining)
		}
	case <-time.After(waitFor):
		t.Fatal("shutdown never asked HTTP to stop")
	}
	if code := live.expectClose(waitFor); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d, want %d", code, websocket.StatusGoingAway)
	}
	got, err := probeReady(s.ts.URL)
	if err != nil || !reflect.DeepEqual(got, draining) {
		t.Fatalf("while conns close: %v %v, want %v", got, err, draining)
	}
	if status := dialStatus(t, s.url, nil); status != http.StatusServiceUnavailable {
		t.Fatalf("handshake during shutdown: HTTP %d, want 503", status)
	}
	select {
	case err := <-result:
		t.Fatalf("shutdown ended (%v) before the probes: the test observed nothing in progress", err)
	default:
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(cfg.ShutdownTimeout + waitFor):
		t.Fatal("shutdown did not return")
	}
}

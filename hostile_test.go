package main

// Hostile input end to end: one table of frames and one of handshakes that a
// broken or malicious client might send, each with the outcome the contract
// (../shared/protocol-v1.md) gives it. After every row the hostile client has
// either had its error frame and still answers a heartbeat, or has been
// closed with the expected code (or refused with the expected HTTP status);
// and two bystanders in a game are still served: a heartbeat is answered, a
// decision is relayed from one to the other, and /health/connections counts
// the two of them and nobody else.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// hostileRig is a server with two bystanders, by and peer, in one game.
type hostileRig struct {
	s          *testServer
	game       string
	by, peer   *client
	health     func(t *testing.T) healthReport // the server's /health/connections
	rounds     int
	wantGames  map[string]int
	wantTotals int
}

// newHostileRig starts a server with cfg and puts two bystanders in a game.
func newHostileRig(t *testing.T, cfg config) *hostileRig {
	t.Helper()
	s := startServer(t, cfg)
	rig := &hostileRig{s: s, game: uuid.NewString(), health: func(t *testing.T) healthReport { return s.health(t) }}
	rig.by, rig.peer = dial(t, s.url, nil), dial(t, s.url, nil)
	hostileJoinBystanders(t, rig.game, rig.by, rig.peer)
	rig.wantTotals, rig.wantGames = 2, map[string]int{rig.game: 2}
	return rig
}

// hostileJoinBystanders puts by and peer in game, by first.
func hostileJoinBystanders(t *testing.T, game string, by, peer *client) {
	t.Helper()
	join := `{"type":"join_game","id":"j","data":{"game_id":"` + game + `"}}`
	by.send(join)
	by.expect("game_joined")
	peer.send(join)
	peer.expect("game_joined")
	by.expect("presence")
}

// hostileAs returns c bound to t, so a row can use the rig's clients and fail itself.
func hostileAs(t *testing.T, c *client) *client {
	cc := *c
	cc.t = t
	return &cc
}

// stillServed proves the hostile row cost the bystanders nothing: by's
// heartbeat is answered, peer's decision reaches by, and the server counts
// exactly the bystanders (a hostile client that was closed or refused leaves
// no session behind).
func (rig *hostileRig) stillServed(t *testing.T) {
	t.Helper()
	rig.rounds++
	by, peer := hostileAs(t, rig.by), hostileAs(t, rig.peer)
	id := "by-" + strconv.Itoa(rig.rounds)
	by.send(`{"type":"heartbeat","id":"` + id + `"}`)
	if f := by.expect("heartbeat_ack"); f.ID != id {
		t.Fatalf("bystander's heartbeat_ack id %q, want %q", f.ID, id)
	}
	decision := `{"round":` + strconv.Itoa(rig.rounds) + `}`
	pid := "p-" + strconv.Itoa(rig.rounds) // an id names one action
	peer.send(`{"type":"submit_defensive_decision","id":"` + pid + `","data":{"game_id":"` + rig.game + `","decision":` + decision + `}}`)
	if f := peer.expect("defensive_decision"); f.ID != pid {
		t.Fatalf("peer's own event id %q, want %s", f.ID, pid)
	}
	f := by.expect("defensive_decision")
	var got struct {
		SID      string          `json:"sid"`
		Decision json.RawMessage `json:"decision"`
	}
	by.decode(f, &got)
	if f.ID != "" || got.SID != peer.session.SID || string(got.Decision) != decision {
		t.Fatalf("bystander got %s id %q, want peer %s's decision %s without id", f.Data, f.ID, peer.session.SID, decision)
	}
	var st healthReport
	eventually(t, "health to count only the bystanders", func() bool {
		st = rig.health(t)
		return st.TotalSessions == rig.wantTotals && st.ActiveGames == len(rig.wantGames) &&
			maps.Equal(st.SessionsPerGame, rig.wantGames)
	})
}

// hostileFrame is one row of the frame table.
type hostileFrame struct {
	name   string
	msg    []byte
	binary bool

	// Exactly one outcome: an error frame (code, id), a relayed event (event,
	// id, check), or a close (close).
	code  string
	event string
	id    string
	check func(t *testing.T, data json.RawMessage)
	close websocket.StatusCode
}

// hostileFrames builds the frame table. game is the game the hostile client
// has joined, so that a relayed command is relayed and not refused as not_in_game.
func hostileFrames(game string, maxBytes int) []hostileFrame {
	gameData := func(extra string) string { return `{"game_id":"` + game + `"` + extra + `}` }
	deep := `{"type":"heartbeat","id":"deep","data":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`
	deepOpen := `{"type":"join_game","id":"deep2","data":` + strings.Repeat("[", 100_000) + `}`
	var keys strings.Builder
	keys.WriteString("{")
	for i := range 10_000 {
		if i > 0 {
			keys.WriteString(",")
		}
		fmt.Fprintf(&keys, `"k%d":%d`, i, i)
	}
	keys.WriteString("}")
	many := keys.String()
	dice := "[" + strings.TrimSuffix(strings.Repeat("6,", 10_000), ",") + "]"
	// As many dice as MAX_MESSAGE_BYTES holds: refused at the eleventh die.
	hugeDice := "[" + strings.TrimSuffix(strings.Repeat("6,", (maxBytes-200)/2), ",") + "]"
	shell := `{"type":"heartbeat","id":"big","data":""}`
	tooBig := shell[:len(shell)-2] + strings.Repeat("x", maxBytes+1-len(shell)) + `"}` // maxBytes+1 bytes
	frames := []hostileFrame{
		{name: "invalid UTF-8 bytes", msg: []byte("\xff\xfe\xfd{}"), code: codeInvalidJSON},
		{name: "invalid UTF-8 inside a JSON string", msg: []byte(`{"type":"heartbeat","id":"u` + "\xc3\x28" + `"}`), code: codeInvalidJSON},
		{name: "100000 levels of [ in data", msg: []byte(deep), code: codeInvalidJSON},
		{name: "100000 unclosed [ in data", msg: []byte(deepOpen), code: codeInvalidJSON},
		{name: "1e999 as a die", msg: []byte(`{"type":"roll_dice","id":"inf","data":` + gameData(`,"dice":[6,1e999]`) + `}`),
			code: codeInvalidMessage, id: "inf"},
		// 1e999 is valid JSON syntax and decode checks only that a decision is
		// an object, so the server relays it verbatim to every member, whose
		// decoder may not cope: Go's encoding/json fails the whole frame when
		// decoding it into any, JavaScript reads Infinity. Pinned as it is.
		{name: "1e999 inside a decision", msg: []byte(`{"type":"submit_defensive_decision","id":"inf2","data":` + gameData(`,"decision":{"n":1e999,"m":-1e999}`) + `}`),
			event: "defensive_decision", id: "inf2", check: func(t *testing.T, data json.RawMessage) {
				var d struct {
					Decision json.RawMessage `json:"decision"`
				}
				if err := json.Unmarshal(data, &d); err != nil || string(d.Decision) != `{"n":1e999,"m":-1e999}` {
					t.Fatalf("relayed decision %s (%v), want it verbatim", data, err)
				}
			}},
		{name: "10000 dice", msg: []byte(`{"type":"roll_dice","id":"dice","data":` + gameData(`,"dice":`+dice) + `}`),
			code: codeInvalidMessage, id: "dice"},
		{name: "a frame's worth of dice", msg: []byte(`{"type":"roll_dice","id":"huge","data":` + gameData(`,"dice":`+hugeDice) + `}`),
			code: codeInvalidMessage, id: "huge"},
		{name: "a frame's worth of dice before the game id", msg: []byte(`{"type":"roll_dice","id":"huge2","data":{"dice":` + hugeDice + `,"game_id":"` + game + `"}}`),
			code: codeInvalidMessage, id: "huge2"},
		{name: "empty object", msg: []byte(`{}`), code: codeInvalidMessage},
		{name: "100000-character type", msg: []byte(`{"type":"` + strings.Repeat("t", 100_000) + `","id":"long"}`),
			code: codeUnknownType, id: "long"},
		{name: "a frame one byte over MAX_MESSAGE_BYTES", msg: []byte(tooBig), close: websocket.StatusMessageTooBig},
		{name: "binary frame", msg: []byte(`{"type":"heartbeat","id":"bin"}`), binary: true, close: websocket.StatusUnsupportedData},
		{name: "decision with 10000 keys", msg: []byte(`{"type":"submit_offensive_decision","id":"keys","data":` + gameData(`,"decision":`+many) + `}`),
			event: "offensive_decision", id: "keys", check: func(t *testing.T, data json.RawMessage) {
				var d struct {
					Decision map[string]int `json:"decision"`
				}
				if err := json.Unmarshal(data, &d); err != nil || len(d.Decision) != 10_000 || d.Decision["k9999"] != 9999 {
					t.Fatalf("relayed decision has %d keys (%v), want 10000", len(d.Decision), err)
				}
			}},
	}
	for _, data := range []struct{ kind, json string }{
		{"a string", `"` + game + `"`}, {"a number", `42`}, {"an array", `[{"game_id":"` + game + `"}]`},
		{"true", `true`}, {"null", `null`},
	} {
		frames = append(frames, hostileFrame{
			name: "join_game with data " + data.kind, msg: []byte(`{"type":"join_game","id":"wrong","data":` + data.json + `}`),
			code: codeInvalidMessage, id: "wrong"})
	}
	return frames
}

// TestHostileFrames sends every hostile frame from a fresh client that has
// joined a game of its own, and checks the contract's outcome for it.
func TestHostileFrames(t *testing.T) {
	cfg := testConfig(t)
	rig := newHostileRig(t, cfg)
	own := uuid.NewString()
	for _, row := range hostileFrames(own, int(cfg.MaxMessageBytes)) {
		t.Run(row.name, func(t *testing.T) {
			h := dial(t, rig.s.url, nil)
			h.send(`{"type":"join_game","id":"mine","data":{"game_id":"` + own + `"}}`)
			h.expect("game_joined")
			typ := websocket.MessageText
			if row.binary {
				typ = websocket.MessageBinary
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			err := h.ws.Write(ctx, typ, row.msg)
			cancel()
			switch {
			case row.close != 0:
				// The server may close before the whole frame is written.
				if code := h.expectClose(waitFor); code != row.close {
					t.Fatalf("close code %d (write: %v), want %d", code, err, row.close)
				}
			case err != nil:
				t.Fatalf("write: %v", err)
			case row.code != "":
				hostileExpectError(t, h, row.code, row.id)
				hostileAlive(t, h)
			default:
				f := h.expect(row.event)
				if f.ID != row.id {
					t.Fatalf("%s id %q, want %q", row.event, f.ID, row.id)
				}
				row.check(t, f.Data)
				hostileAlive(t, h)
			}
			_ = h.ws.Close(websocket.StatusNormalClosure, "")
			rig.stillServed(t)
		})
	}
}

// hostileExpectError reads the next frame and checks it is the error the row
// expects, with a short message: a hostile input must not make a big reply.
func hostileExpectError(t *testing.T, h *client, code, id string) {
	t.Helper()
	f, err := h.tryRead(waitFor)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if f.Type != "error" || json.Unmarshal(f.Data, &e) != nil {
		t.Fatalf("got %s %s, want error %s", f.Type, f.Data, code)
	}
	if e.Code != code || f.ID != id {
		t.Fatalf("error %q id %q (%s), want %q id %q", e.Code, f.ID, e.Message, code, id)
	}
	if e.Message == "" || len(e.Message) >= protoMaxMessage {
		t.Fatalf("error message of %d bytes, want 1 to %d: %q", len(e.Message), protoMaxMessage-1, e.Message)
	}
}

// hostileAlive proves h's connection is open: a heartbeat is answered next.
func hostileAlive(t *testing.T, h *client) {
	t.Helper()
	h.send(`{"type":"heartbeat","id":"alive"}`)
	if f := h.expect("heartbeat_ack"); f.ID != "alive" {
		t.Fatalf("heartbeat_ack id %q, want alive", f.ID)
	}
}

// hostileHandshake is one row of the handshake table: a request written by
// hand, and the HTTP status the server must refuse it with.
type hostileHandshake struct {
	name   string
	method string
	target string      // request target: path and query
	header http.Header // sent as is; Host is added
	want   int
}

// hostileUpgrade is the header of a valid WebSocket upgrade, minus drop, plus extra.
func hostileUpgrade(drop string, extra map[string]string) http.Header {
	h := http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-WebSocket-Version": {"13"},
		"Sec-WebSocket-Key":     {base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))},
	}
	delete(h, drop)
	for k, v := range extra {
		h[k] = []string{v}
	}
	return h
}

// hostileRequest writes one request to addr by hand and returns the response's
// status. It fails the test unless the server answers with a complete HTTP
// response (a clean refusal, not a dropped connection).
func hostileRequest(t *testing.T, addr string, row hostileHandshake) int {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitFor))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", row.method, row.target, addr)
	for k, vs := range row.header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	if _, err := nc.Write([]byte(b.String())); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("no HTTP response: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// hostileHandshakes builds the handshake table for a server with JWT_SECRET
// set, and returns the valid token its cookie row carries.
func hostileHandshakes(t *testing.T) (rows []hostileHandshake, good string) {
	good = mint(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix()})
	none := mint(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix()})
	other := mint(t, jwt.SigningMethodHS256, []byte("another secret"), jwt.MapClaims{"sub": "42", "exp": time.Now().Add(time.Hour).Unix()})
	huge := strings.Repeat("A", 100<<10)
	return []hostileHandshake{
		{"GET without Upgrade headers", "GET", "/ws", nil, http.StatusUpgradeRequired},
		{"Sec-WebSocket-Version 8", "GET", "/ws", hostileUpgrade("", map[string]string{"Sec-WebSocket-Version": "8"}), http.StatusBadRequest},
		{"no Sec-WebSocket-Key", "GET", "/ws", hostileUpgrade("Sec-WebSocket-Key", nil), http.StatusBadRequest},
		{"POST /ws", "POST", "/ws", hostileUpgrade("", nil), http.StatusMethodNotAllowed},
		// httptest's server reads up to 1 MB of header, so the token is read and refused.
		{"100 KB token in the query", "GET", "/ws?token=" + huge, hostileUpgrade("", nil), http.StatusUnauthorized},
		{"alg none", "GET", "/ws?token=" + url.QueryEscape(none), hostileUpgrade("", nil), http.StatusUnauthorized},
		{"signed with another secret", "GET", "/ws?token=" + url.QueryEscape(other), hostileUpgrade("", nil), http.StatusUnauthorized},
		{"bad token in the query, good one in the cookie", "GET", "/ws?token=" + url.QueryEscape(other),
			hostileUpgrade("", map[string]string{"Cookie": "access_token=" + good}), http.StatusUnauthorized},
	}, good
}

// TestHostileHandshakes sends every hostile handshake to a server that
// accepts tokens, and checks each is refused with its status and leaves
// nothing behind.
func TestHostileHandshakes(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	rig := newHostileRig(t, cfg)
	addr := strings.TrimPrefix(rig.s.ts.URL, "http://")
	rows, good := hostileHandshakes(t)
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if got := hostileRequest(t, addr, row); got != row.want {
				t.Fatalf("HTTP %d, want %d", got, row.want)
			}
			rig.stillServed(t)
		})
	}
	t.Run("the cookie's token alone is accepted", func(t *testing.T) {
		c := dial(t, rig.s.url, &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {"access_token=" + good}}})
		if c.session.UserID == nil || *c.session.UserID != 42 {
			t.Fatalf("user_id %v, want 42", c.session.UserID)
		}
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
		rig.stillServed(t)
	})
}

// TestHostileOversizedQueryRealServer sends the 100 KB query to the server as
// run() builds it, whose MaxHeaderBytes (64 KiB) refuses the request before
// any handler sees it, with or without a token in it.
func TestHostileOversizedQueryRealServer(t *testing.T) {
	cfg := testConfig(t)
	cfg.JWTSecret = testSecret
	r := startRun(t, cfg)
	wsURL := "ws://" + r.addr + "/ws"
	rig := &hostileRig{game: uuid.NewString(), wantTotals: 2}
	rig.wantGames = map[string]int{rig.game: 2}
	rig.health = func(t *testing.T) healthReport {
		t.Helper()
		resp, err := noKeepAlive.Get("http://" + r.addr + "/health/connections")
		if err != nil {
			t.Fatalf("health: %v", err)
		}
		defer resp.Body.Close()
		var rep healthReport
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatalf("health body: %v", err)
		}
		return rep
	}
	rig.by, rig.peer = dial(t, wsURL, nil), dial(t, wsURL, nil)
	hostileJoinBystanders(t, rig.game, rig.by, rig.peer)
	huge := strings.Repeat("A", 100<<10)
	for _, row := range []hostileHandshake{
		{"100 KB token in the query", "GET", "/ws?token=" + huge, hostileUpgrade("", nil), http.StatusRequestHeaderFieldsTooLarge},
		{"100 KB of junk in the query", "GET", "/ws?junk=" + huge, hostileUpgrade("", nil), http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(row.name, func(t *testing.T) {
			if got := hostileRequest(t, r.addr, row); got != row.want {
				t.Fatalf("HTTP %d, want %d", got, row.want)
			}
			rig.stillServed(t)
		})
	}
}

// TestHostileFullGame sends joins at once into the bystanders' game, which
// has all its seats taken, ten more than the rate limit's burst: those
// allowed get game_full, the rest rate_limited, the hostile client stays
// connected, and the bystanders hear nothing of it.
func TestHostileFullGame(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxGameSessions = 2
	rig := newHostileRig(t, cfg)
	h := dial(t, rig.s.url, nil)
	join := `{"type":"join_game","id":"full","data":{"game_id":"` + rig.game + `"}}`
	for range cfg.RateBurst + 10 {
		h.send(join)
	}
	full, limited := 0, 0
	for full+limited < cfg.RateBurst+10 {
		f := h.expect("error")
		var e struct {
			Code string `json:"code"`
		}
		h.decode(f, &e)
		switch {
		case e.Code == codeGameFull && f.ID == "full":
			full++
		case e.Code == codeRateLimited && f.ID == "full":
			limited++
		default:
			t.Fatalf("a join into a full game got %s %s", e.Code, f.Data)
		}
	}
	if full < cfg.RateBurst-5 || limited == 0 { // the bucket refills a little meanwhile
		t.Fatalf("%d joins into the full game answered game_full and %d rate_limited, want about %d and 10", full, limited, cfg.RateBurst)
	}
	deadline := time.Now().Add(waitFor)
	for { // once the bucket refills, the hostile client is served again
		h.send(`{"type":"heartbeat","id":"alive"}`)
		if f := h.read(); f.Type == "heartbeat_ack" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hostile client was not served again")
		}
		time.Sleep(time.Second / time.Duration(cfg.RateLimit)) // one token's refill: a paced retry
	}
	_ = h.ws.Close(websocket.StatusNormalClosure, "")
	rig.stillServed(t)
}

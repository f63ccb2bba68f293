package main

// End-to-end tests of the wire contract (../shared/protocol-v1.md): real
// clients over httptest and the real mux, millisecond durations in config,
// close codes read from the client's read error. Every test ends by closing its
// clients and waiting for /health/connections to read all zeros; goleak
// (helpers_test.go) then checks that no goroutine outlived its connection.
//
// This file holds the e2e* helpers those tests share and the session frame's
// test; conn_messages_test.go, conn_liveness_test.go and conn_overload_test.go
// hold the rest.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// e2eSlack is the scheduling allowance, under -race on a small machine, added to
// every upper bound the contract states. 400 ms was once 580 ms short with the
// machine's load at 6.5 (an expiry at 2.0 s for a 1.42 s bound): the bounds
// catch a missing timer or a sweep that stopped, not a scheduler's delay.
const e2eSlack = time.Second

// Wire shapes of server frames as the contract names their fields. They are
// declared here rather than borrowed from encode.go so that a wrong JSON tag
// in the server cannot agree with itself.
type (
	e2eSession struct {
		SID              string `json:"sid"`
		UserID           *int64 `json:"user_id"`
		PingIntervalMS   int64  `json:"ping_interval_ms"`
		SessionTimeoutMS int64  `json:"session_timeout_ms"`
	}
	e2eMember struct {
		SID    string `json:"sid"`
		UserID *int64 `json:"user_id"`
	}
	e2eJoined struct {
		GameID  string      `json:"game_id"`
		Members []e2eMember `json:"members"`
	}
	e2eGameRef struct {
		GameID string `json:"game_id"`
	}
	e2ePresence struct {
		GameID string `json:"game_id"`
		SID    string `json:"sid"`
		UserID *int64 `json:"user_id"`
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	e2eDecision struct {
		GameID   string          `json:"game_id"`
		SID      string          `json:"sid"`
		UserID   *int64          `json:"user_id"`
		Decision json.RawMessage `json:"decision"`
	}
	e2eDice struct {
		GameID  string `json:"game_id"`
		SID     string `json:"sid"`
		UserID  *int64 `json:"user_id"`
		Dice    []int  `json:"dice"`
		Results []int  `json:"results"`
	}
	e2eError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	e2eExpiring struct {
		ExpiresInMS int64 `json:"expires_in_ms"`
	}
	e2eAck struct {
		Timestamp string `json:"timestamp"`
	}
)

// e2eWire decodes f's data into v and checks that every key the contract lists
// for it is present (a null counts: user_id is null for anonymous sessions).
func e2eWire(t *testing.T, f frame, v any, keys ...string) {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(f.Data, &raw); err != nil {
		t.Fatalf("%s data %s is not an object: %v", f.Type, f.Data, err)
	}
	for _, k := range keys {
		if _, ok := raw[k]; !ok {
			t.Fatalf("%s data %s lacks %q", f.Type, f.Data, k)
		}
	}
	if err := json.Unmarshal(f.Data, v); err != nil {
		t.Fatalf("decode %s data %s: %v", f.Type, f.Data, err)
	}
}

// e2eMsg builds a client frame; an empty id and a nil data are left out.
func e2eMsg(typ, id string, data any) string {
	m := map[string]any{"type": typ}
	if id != "" {
		m["id"] = id
	}
	if data != nil {
		m["data"] = data
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// e2eGameMsg builds a game command: data holds game_id plus extra.
func e2eGameMsg(typ, id, game string, extra map[string]any) string {
	data := map[string]any{"game_id": game}
	maps.Copy(data, extra)
	return e2eMsg(typ, id, data)
}

// e2eCanonical is the spelling the server must write a game id back in.
func e2eCanonical(t *testing.T, game string) string {
	t.Helper()
	u, err := uuid.Parse(game)
	if err != nil {
		t.Fatalf("test bug: %q is not a UUID", game)
	}
	return strings.ToLower(u.String())
}

// e2eAliveSeq makes every liveness probe's id unique within the test binary.
var e2eAliveSeq atomic.Int64

// e2eAlive proves c's connection is open and idle: a heartbeat is answered by the
// very next frame, heartbeat_ack with the heartbeat's id.
func e2eAlive(c *client) {
	c.t.Helper()
	id := fmt.Sprintf("alive-%d", e2eAliveSeq.Add(1))
	c.send(e2eMsg("heartbeat", id, nil))
	if f := c.expect("heartbeat_ack"); f.ID != id {
		c.t.Fatalf("heartbeat_ack id %q, want %q", f.ID, id)
	}
}

// e2eAs returns c bound to t, so a subtest can use a parent's connection and fail itself.
func (c *client) e2eAs(t *testing.T) *client {
	cc := *c
	cc.t = t
	return &cc
}

// e2eJoin sends join_game for game with id and returns the checked reply.
func e2eJoin(c *client, game, id string) e2eJoined {
	c.t.Helper()
	c.send(e2eGameMsg("join_game", id, game, nil))
	f := c.expect("game_joined")
	if f.ID != id {
		c.t.Fatalf("game_joined id %q, want %q", f.ID, id)
	}
	var j e2eJoined
	e2eWire(c.t, f, &j, "game_id", "members")
	if want := e2eCanonical(c.t, game); j.GameID != want {
		c.t.Fatalf("game_joined game_id %q, want %q", j.GameID, want)
	}
	return j
}

// e2eSIDsOf returns the sorted sids of members, failing on a non-null user_id
// (every session in these tests is anonymous).
func e2eSIDsOf(t *testing.T, members []e2eMember) []string {
	t.Helper()
	var sids []string
	for _, m := range members {
		if m.UserID != nil {
			t.Fatalf("anonymous member %s has user_id %d", m.SID, *m.UserID)
		}
		sids = append(sids, m.SID)
	}
	slices.Sort(sids)
	return sids
}

// e2eSortedSIDs returns the clients' sids, sorted.
func e2eSortedSIDs(clients ...*client) []string {
	var sids []string
	for _, c := range clients {
		sids = append(sids, c.session.SID)
	}
	slices.Sort(sids)
	return sids
}

// e2ePresenceIs checks that f is a presence frame without id about sid in game.
func e2ePresenceIs(t *testing.T, f frame, game, sid, status, reason string) {
	t.Helper()
	if f.Type != "presence" {
		t.Fatalf("got %s %s, want presence", f.Type, f.Data)
	}
	if f.ID != "" {
		t.Fatalf("presence carries id %q; only replies carry ids", f.ID)
	}
	var p e2ePresence
	keys := []string{"game_id", "sid", "user_id", "status"}
	if status == "left" {
		keys = append(keys, "reason")
	}
	e2eWire(t, f, &p, keys...)
	if p.GameID != e2eCanonical(t, game) || p.SID != sid || p.UserID != nil || p.Status != status || p.Reason != reason {
		t.Fatalf("presence %s, want game_id %s sid %s user_id null status %s reason %q",
			f.Data, e2eCanonical(t, game), sid, status, reason)
	}
}

// e2eJoinAll has each client join game in turn. It checks every reply (the
// joiner and all earlier joiners are members) and the joined presence every
// earlier member receives.
func e2eJoinAll(t *testing.T, game string, clients ...*client) {
	t.Helper()
	for i, c := range clients {
		j := e2eJoin(c, game, fmt.Sprintf("join-%.8s-%d", game, i)) // an id names one action: one game
		if got, want := e2eSIDsOf(t, j.Members), e2eSortedSIDs(clients[:i+1]...); !slices.Equal(got, want) {
			t.Fatalf("game_joined members %v, want %v", got, want)
		}
		for _, earlier := range clients[:i] {
			e2ePresenceIs(t, earlier.read(), game, c.session.SID, "joined", "")
		}
	}
}

// e2eHealthIs checks /health/connections against the expected sessions and games.
func e2eHealthIs(t *testing.T, s *testServer, sessions int, perGame map[string]int) {
	t.Helper()
	h := s.health(t)
	if h.Status != "healthy" || h.TotalSessions != sessions || h.UniqueUsers != 0 ||
		h.ActiveGames != len(perGame) || !maps.Equal(h.SessionsPerGame, perGame) {
		t.Fatalf("health %+v, want %d sessions, 0 users, %d games %v", h, sessions, len(perGame), perGame)
	}
}

// e2eHealthZero reports whether the server counts nothing at all.
func e2eHealthZero(t *testing.T, s *testServer) bool {
	h := s.health(t)
	return h.TotalSessions == 0 && h.UniqueUsers == 0 && h.ActiveGames == 0 && len(h.SessionsPerGame) == 0
}

// e2eCloseAll drops clients and waits until health reads all zeros: no session,
// game or user outlives its connection.
func e2eCloseAll(t *testing.T, s *testServer, clients ...*client) {
	t.Helper()
	for _, c := range clients {
		_ = c.ws.CloseNow()
	}
	eventually(t, "health back to all zeros", func() bool { return e2eHealthZero(t, s) })
}

// e2eFrame is a frame and the moment the client read it.
type e2eFrame struct {
	frame
	at time.Time
}

// e2eReader reads a client's frames on a goroutine of its own, so the client keeps
// answering pings (our library answers them only inside Read) while the test
// goroutine sends, waits on frames, or watches a bounded window. coder/websocket
// closes the connection when a Read's context expires, so a deadline can never
// be put on a Read that the connection must survive; this is the way around it.
type e2eReader struct {
	c      *client
	frames chan e2eFrame
	done   chan struct{} // closed when the read loop has returned
	err    error         // why it returned; read only after done
	endAt  time.Time     // when it returned; read only after done
}

// e2eRead starts reading c. From then on read c only through the reader.
func (c *client) e2eRead() *e2eReader {
	ctx, cancel := context.WithCancel(context.Background())
	st := &e2eReader{c: c, frames: make(chan e2eFrame, 1<<12), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		for {
			typ, b, err := c.ws.Read(ctx)
			if err != nil {
				st.err, st.endAt = err, time.Now()
				return
			}
			f := frame{Type: "<binary>"}
			if typ == websocket.MessageText {
				if err := json.Unmarshal(b, &f); err != nil {
					f = frame{Type: "<not json>", Data: json.RawMessage(`{}`)}
				}
			}
			select {
			case st.frames <- e2eFrame{f, time.Now()}:
			case <-ctx.Done():
				st.err, st.endAt = ctx.Err(), time.Now()
				return
			}
		}
	}()
	c.t.Cleanup(func() {
		cancel()
		_ = c.ws.CloseNow()
		<-st.done
	})
	return st
}

// next returns the next frame, failing if none comes within the given time or
// the connection ends first.
func (st *e2eReader) next(within time.Duration) e2eFrame {
	st.c.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case f := <-st.frames:
		return f
	case <-st.done:
		select {
		case f := <-st.frames:
			return f
		default:
		}
		st.c.t.Fatalf("connection ended (code %d: %v) while a frame was expected", websocket.CloseStatus(st.err), st.err)
	case <-timer.C:
		st.c.t.Fatalf("no frame within %s", within)
	}
	return e2eFrame{}
}

// expect returns the next frame, which must be of type typ.
func (st *e2eReader) expect(typ string) e2eFrame {
	st.c.t.Helper()
	f := st.next(waitFor)
	if f.Type != typ {
		st.c.t.Fatalf("got %s %s, want %s", f.Type, f.Data, typ)
	}
	return f
}

// end waits for the connection to end and returns its close code (-1 without
// a close frame), when the client saw it end, and every frame read before.
func (st *e2eReader) end(within time.Duration) (websocket.StatusCode, time.Time, []e2eFrame) {
	st.c.t.Helper()
	code, at, before, ok := st.tryEnd(within)
	if !ok {
		st.c.t.Fatalf("connection still open after %s (%d frames read meanwhile)", within, len(before))
	}
	return code, at, before
}

// tryEnd is end that reports, with ok false, a connection still open when
// the time is up.
func (st *e2eReader) tryEnd(within time.Duration) (code websocket.StatusCode, at time.Time, before []e2eFrame, ok bool) {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case f := <-st.frames:
			before = append(before, f)
		case <-st.done:
			for {
				select {
				case f := <-st.frames:
					before = append(before, f)
				default:
					code := websocket.CloseStatus(st.err)
					return code, st.endAt, st.withoutGoodbye(code, before), true
				}
			}
		case <-timer.C:
			return 0, time.Time{}, before, false
		}
	}
}

// withoutGoodbye returns the frames before a close less the goodbye that
// precedes every close frame the server sends, after checking it names the
// close's code.
func (st *e2eReader) withoutGoodbye(code websocket.StatusCode, frames []e2eFrame) []e2eFrame {
	if len(frames) == 0 || frames[len(frames)-1].Type != "goodbye" {
		return frames
	}
	var g struct {
		Code int `json:"code"`
	}
	if err := json.Unmarshal(frames[len(frames)-1].Data, &g); err != nil || g.Code != int(code) {
		st.c.t.Errorf("goodbye %s before a close with code %d", frames[len(frames)-1].Data, code)
	}
	return frames[:len(frames)-1]
}

// quiet checks that nothing at all arrives, and the connection stays open,
// for the whole window.
func (st *e2eReader) quiet(window time.Duration) {
	st.c.t.Helper()
	timer := time.NewTimer(window)
	defer timer.Stop()
	select {
	case f := <-st.frames:
		st.c.t.Fatalf("got %s %s during a window that should be silent", f.Type, f.Data)
	case <-st.done:
		st.c.t.Fatalf("connection ended (code %d: %v) during a window that should be silent", websocket.CloseStatus(st.err), st.err)
	case <-timer.C:
	}
}

// alive proves the streamed connection open: a heartbeat is answered by the
// next frame, skipping session_expiring warnings only when skipWarnings is set.
func (st *e2eReader) alive(skipWarnings bool) {
	st.c.t.Helper()
	id := fmt.Sprintf("alive-%d", e2eAliveSeq.Add(1))
	st.c.send(e2eMsg("heartbeat", id, nil))
	for {
		f := st.next(waitFor)
		if skipWarnings && f.Type == "session_expiring" {
			continue
		}
		if f.Type != "heartbeat_ack" || f.ID != id {
			st.c.t.Fatalf("got %s id %q %s, want heartbeat_ack id %q", f.Type, f.ID, f.Data, id)
		}
		return
	}
}

// e2ePings counts the pings a client's library has received and answered.
type e2ePings struct {
	n    atomic.Int64
	seen chan struct{}
}

// e2eNewPings returns a counter and the dial options that feed it.
func e2eNewPings() (*e2ePings, *websocket.DialOptions) {
	p := &e2ePings{seen: make(chan struct{}, 1)}
	return p, &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool {
		p.n.Add(1)
		select {
		case p.seen <- struct{}{}:
		default:
		}
		return true // answer it
	}}
}

// waitFor blocks until at least n pings have been answered.
func (p *e2ePings) waitFor(t *testing.T, n int64) {
	t.Helper()
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for p.n.Load() < n {
		select {
		case <-p.seen:
		case <-timer.C:
			t.Fatalf("only %d of %d pings within %s", p.n.Load(), n, waitFor)
		}
	}
}

// TestSessionFrameFirst: the first frame of every connection is session, with
// a distinct sid of at least 16 characters, user_id null for an anonymous
// client, and the ping interval and session timeout from config in ms.
func TestSessionFrameFirst(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = 1234 * time.Millisecond
	cfg.SessionTimeout = 56789 * time.Millisecond
	s := startServer(t, cfg)
	seen := map[string]bool{}
	var clients []*client
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		ws, _, err := websocket.Dial(ctx, s.url, nil)
		if err != nil {
			cancel()
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { _ = ws.CloseNow() })
		typ, b, err := ws.Read(ctx)
		cancel()
		if err != nil || typ != websocket.MessageText {
			t.Fatalf("first read: %v (type %v)", err, typ)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil || f.Type != "session" {
			t.Fatalf("first frame %s, want a session frame", b)
		}
		var d e2eSession
		e2eWire(t, f, &d, "sid", "user_id", "ping_interval_ms", "session_timeout_ms")
		if len(d.SID) < 16 {
			t.Errorf("sid %q is shorter than 16 characters", d.SID)
		}
		if seen[d.SID] {
			t.Errorf("sid %q handed out twice", d.SID)
		}
		seen[d.SID] = true
		if d.UserID != nil {
			t.Errorf("anonymous session has user_id %d, want null", *d.UserID)
		}
		if d.PingIntervalMS != 1234 || d.SessionTimeoutMS != 56789 {
			t.Errorf("ping_interval_ms %d session_timeout_ms %d, want 1234 and 56789", d.PingIntervalMS, d.SessionTimeoutMS)
		}
		clients = append(clients, &client{t: t, ws: ws})
	}
	e2eHealthIs(t, s, 4, map[string]int{})
	e2eCloseAll(t, s, clients...)
}

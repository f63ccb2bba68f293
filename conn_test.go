package main

// End-to-end tests of the wire contract (../shared/protocol-v1.md): real
// clients over httptest and the real mux, millisecond durations in config,
// close codes read from the client's read error. Every test ends by closing its
// clients and waiting for /health/connections to read all zeros; goleak
// (helpers_test.go) then checks that no goroutine outlived its connection.

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// e2eSlack is the scheduling allowance, under -race on a small machine, added to
// every upper bound the contract states.
const e2eSlack = 400 * time.Millisecond

// Wire shapes of server frames as the contract names their fields. They are
// declared here rather than borrowed from protocol.go so that a wrong JSON tag
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

// TestHeartbeatAck: heartbeat with any data or none is answered with
// heartbeat_ack carrying the id (when there was one) and an RFC 3339 UTC timestamp.
func TestHeartbeatAck(t *testing.T) {
	s := startServer(t, testConfig(t))
	c := dial(t, s.url, nil)
	cases := []struct{ name, msg, id string }{
		{"no data", `{"type":"heartbeat","id":"h1"}`, "h1"},
		{"no id", `{"type":"heartbeat"}`, ""},
		{"null data", `{"type":"heartbeat","id":"h2","data":null}`, "h2"},
		{"object data", `{"type":"heartbeat","id":"h3","data":{"x":[1,2]}}`, "h3"},
		{"array data", `{"type":"heartbeat","id":"h4","data":[1,"a"]}`, "h4"},
		{"string data", `{"type":"heartbeat","id":"h5","data":"ping"}`, "h5"},
		{"64-character id", `{"type":"heartbeat","id":"` + strings.Repeat("é", 64) + `"}`, strings.Repeat("é", 64)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := c.e2eAs(t)
			before := time.Now().Add(-time.Second) // RFC 3339 may be cut to the second
			c.send(tc.msg)
			f := c.expect("heartbeat_ack")
			if f.ID != tc.id {
				t.Fatalf("heartbeat_ack id %q, want %q", f.ID, tc.id)
			}
			var a e2eAck
			e2eWire(t, f, &a, "timestamp")
			ts, err := time.Parse(time.RFC3339Nano, a.Timestamp)
			if err != nil {
				t.Fatalf("timestamp %q is not RFC 3339: %v", a.Timestamp, err)
			}
			if _, off := ts.Zone(); off != 0 {
				t.Fatalf("timestamp %q is not UTC", a.Timestamp)
			}
			if ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
				t.Fatalf("timestamp %s is not now", a.Timestamp)
			}
		})
	}
	e2eCloseAll(t, s, c)
}

// TestGameEvents: join, decisions, dice and leave between three clients.
// Replies go to the sender with its id; the other members get the same event
// without id; presence tells the others who came and went.
func TestGameEvents(t *testing.T) {
	s := startServer(t, testConfig(t))
	game := uuid.NewString()
	a, b, c := dial(t, s.url, nil), dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b, c)
	e2eHealthIs(t, s, 3, map[string]int{game: 3})

	// checkEvent checks one room event as one member received it.
	checkEvent := func(f frame, typ, id string, v any) {
		t.Helper()
		if f.Type != typ || f.ID != id {
			t.Fatalf("got %s id %q %s, want %s id %q", f.Type, f.ID, f.Data, typ, id)
		}
		keys := []string{"game_id", "sid", "user_id", "decision"}
		if typ == "dice_rolled" {
			keys = []string{"game_id", "sid", "user_id", "dice", "results"}
		}
		e2eWire(t, f, v, keys...)
	}
	decisions := []struct {
		typ, event string
		from       *client
		decision   string
	}{
		{"submit_defensive_decision", "defensive_decision", a, `{"shift":"infield_in","pitch":{"type":"slider","count":[1,2]}}`},
		{"submit_offensive_decision", "offensive_decision", b, `{"steal":true,"runner":2,"note":"é\"\\"}`},
	}
	for _, d := range decisions {
		var want any
		if err := json.Unmarshal([]byte(d.decision), &want); err != nil {
			t.Fatal(err)
		}
		id := "dec-" + d.event
		d.from.send(`{"type":"` + d.typ + `","id":"` + id + `","data":{"game_id":"` + game + `","decision":` + d.decision + `}}`)
		for _, m := range []*client{a, b, c} {
			wantID := ""
			if m == d.from {
				wantID = id
			}
			var ev e2eDecision
			checkEvent(m.read(), d.event, wantID, &ev)
			var got any
			if err := json.Unmarshal(ev.Decision, &got); err != nil || !e2eJSONEqual(got, want) {
				t.Fatalf("%s relayed decision %s, want %s", d.event, ev.Decision, d.decision)
			}
			if ev.GameID != game || ev.SID != d.from.session.SID || ev.UserID != nil {
				t.Fatalf("%s %+v, want game %s sid %s user_id null", d.event, ev, game, d.from.session.SID)
			}
		}
	}

	// Dice: the default set, then a chosen one; results in range and the same for everyone.
	rolls := []struct {
		name string
		from *client
		dice any
		want []int
	}{
		{"default", a, nil, []int{6, 6, 6, 20}},
		{"chosen", c, []int{2, 100, 12}, []int{2, 100, 12}},
		{"ten dice", b, []int{2, 3, 4, 5, 6, 7, 8, 9, 10, 100}, []int{2, 3, 4, 5, 6, 7, 8, 9, 10, 100}},
	}
	for _, r := range rolls {
		id := "roll-" + r.name
		extra := map[string]any{}
		if r.dice != nil {
			extra["dice"] = r.dice
		}
		r.from.send(e2eGameMsg("roll_dice", id, game, extra))
		var first []int
		for _, m := range []*client{a, b, c} {
			wantID := ""
			if m == r.from {
				wantID = id
			}
			var ev e2eDice
			checkEvent(m.read(), "dice_rolled", wantID, &ev)
			if ev.GameID != game || ev.SID != r.from.session.SID || ev.UserID != nil || !slices.Equal(ev.Dice, r.want) {
				t.Fatalf("dice_rolled %+v, want game %s sid %s dice %v", ev, game, r.from.session.SID, r.want)
			}
			if len(ev.Results) != len(ev.Dice) {
				t.Fatalf("%d results for %d dice", len(ev.Results), len(ev.Dice))
			}
			for i, v := range ev.Results {
				if v < 1 || v > ev.Dice[i] {
					t.Fatalf("result %d out of range for a d%d", v, ev.Dice[i])
				}
			}
			if first == nil {
				first = ev.Results
			} else if !slices.Equal(first, ev.Results) {
				t.Fatalf("members saw different results: %v and %v", first, ev.Results)
			}
		}
	}

	// Rolls are random: twelve d100 rolls are not all the same (chance 100^-11).
	distinct := map[int]bool{}
	for i := range 12 {
		a.send(e2eGameMsg("roll_dice", fmt.Sprintf("d100-%d", i), game, map[string]any{"dice": []int{100}}))
		var ev e2eDice
		e2eWire(t, a.expect("dice_rolled"), &ev, "results")
		distinct[ev.Results[0]] = true
		b.expect("dice_rolled")
		c.expect("dice_rolled")
	}
	if len(distinct) < 2 {
		t.Fatalf("twelve d100 rolls all gave %v", distinct)
	}

	// Leave: game_left to the leaver with its id, presence left/left to the others.
	c.send(e2eGameMsg("leave_game", "bye", game, nil))
	f := c.expect("game_left")
	var gl e2eGameRef
	e2eWire(t, f, &gl, "game_id")
	if f.ID != "bye" || gl.GameID != game {
		t.Fatalf("game_left id %q %s, want id bye game %s", f.ID, f.Data, game)
	}
	e2ePresenceIs(t, a.read(), game, c.session.SID, "left", "left")
	e2ePresenceIs(t, b.read(), game, c.session.SID, "left", "left")
	e2eHealthIs(t, s, 3, map[string]int{game: 2})

	// The leaver no longer hears the room: its next frame is its own heartbeat ack.
	a.send(e2eGameMsg("submit_offensive_decision", "", game, map[string]any{"decision": map[string]any{}}))
	a.expect("offensive_decision")
	b.expect("offensive_decision")
	e2eAlive(c)
	e2eCloseAll(t, s, a, b, c)
}

// e2eJSONEqual compares two decoded JSON values.
func e2eJSONEqual(x, y any) bool {
	bx, err1 := json.Marshal(x)
	by, err2 := json.Marshal(y)
	return err1 == nil && err2 == nil && string(bx) == string(by)
}

// TestJoinIsIdempotent: joining a game already joined gives the same reply
// (with the new id) and no second presence event.
func TestJoinIsIdempotent(t *testing.T) {
	s := startServer(t, testConfig(t))
	game := uuid.NewString()
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	for _, id := range []string{"again", ""} {
		j := e2eJoin(b, game, id)
		if got, want := e2eSIDsOf(t, j.Members), e2eSortedSIDs(a, b); !slices.Equal(got, want) {
			t.Fatalf("second game_joined members %v, want %v", got, want)
		}
	}
	// A second presence would come before this decision: b's frames for the game arrive in order.
	b.send(e2eGameMsg("submit_defensive_decision", "", game, map[string]any{"decision": map[string]any{"n": 1}}))
	if f := a.read(); f.Type != "defensive_decision" {
		t.Fatalf("a got %s %s after b joined twice, want b's decision and no second presence", f.Type, f.Data)
	}
	b.expect("defensive_decision")
	e2eHealthIs(t, s, 2, map[string]int{game: 2})
	e2eCloseAll(t, s, a, b)
}

// TestUUIDSpellingsNameOneGame: every spelling of one UUID names the same game,
// and every frame and health write it back in canonical lowercase.
func TestUUIDSpellingsNameOneGame(t *testing.T) {
	s := startServer(t, testConfig(t))
	game := uuid.NewString()
	upper := strings.ToUpper(game)
	spellings := []string{
		upper,
		"{" + game + "}",
		"urn:uuid:" + upper,
		strings.ReplaceAll(game, "-", ""),
		upper[:9] + game[9:],
	}
	a, b, c := dial(t, s.url, nil), dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, spellings[0], a)
	j := e2eJoin(b, spellings[1], "b")
	if got, want := e2eSIDsOf(t, j.Members), e2eSortedSIDs(a, b); !slices.Equal(got, want) {
		t.Fatalf("b joined %v, want members %v", got, want)
	}
	e2ePresenceIs(t, a.read(), game, b.session.SID, "joined", "")
	j = e2eJoin(c, spellings[2], "c")
	if got, want := e2eSIDsOf(t, j.Members), e2eSortedSIDs(a, b, c); !slices.Equal(got, want) {
		t.Fatalf("c joined %v, want members %v", got, want)
	}
	e2ePresenceIs(t, a.read(), game, c.session.SID, "joined", "")
	e2ePresenceIs(t, b.read(), game, c.session.SID, "joined", "")
	e2eHealthIs(t, s, 3, map[string]int{game: 3})

	a.send(e2eGameMsg("submit_defensive_decision", "d", spellings[3], map[string]any{"decision": map[string]any{}}))
	for _, m := range []*client{a, b, c} {
		var ev e2eDecision
		e2eWire(t, m.expect("defensive_decision"), &ev, "game_id")
		if ev.GameID != game {
			t.Fatalf("defensive_decision game_id %q, want %q", ev.GameID, game)
		}
	}
	b.send(e2eGameMsg("roll_dice", "r", spellings[4], nil))
	for _, m := range []*client{a, b, c} {
		var ev e2eDice
		e2eWire(t, m.expect("dice_rolled"), &ev, "game_id")
		if ev.GameID != game {
			t.Fatalf("dice_rolled game_id %q, want %q", ev.GameID, game)
		}
	}
	c.send(e2eGameMsg("leave_game", "l", spellings[0], nil))
	var gl e2eGameRef
	e2eWire(t, c.expect("game_left"), &gl, "game_id")
	if gl.GameID != game {
		t.Fatalf("game_left game_id %q, want %q", gl.GameID, game)
	}
	e2ePresenceIs(t, a.read(), game, c.session.SID, "left", "left")
	e2ePresenceIs(t, b.read(), game, c.session.SID, "left", "left")
	e2eHealthIs(t, s, 3, map[string]int{game: 2})
	e2eCloseAll(t, s, a, b, c)
}

// TestErrorsKeepConnectionOpen: every error code over the wire, with the
// message's id echoed when it had a valid one, and the connection still
// answering a heartbeat after each.
func TestErrorsKeepConnectionOpen(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 1e6, 1_000_000 // some 70 messages in a few ms; rate_limited has its own test
	s := startServer(t, cfg)
	game := uuid.NewString()
	other := uuid.NewString()
	c := dial(t, s.url, nil)
	e2eJoinAll(t, game, c) // so that a bad decision or dice is not also a not_in_game
	long := strings.Repeat("x", 65)
	cases := []struct{ name, msg, code, id string }{
		{"not JSON", `nope`, "invalid_json", ""},
		{"empty frame", ``, "invalid_json", ""},
		{"array", `[{"type":"heartbeat","id":"x"}]`, "invalid_json", ""},
		{"string", `"heartbeat"`, "invalid_json", ""},
		{"number", `42`, "invalid_json", ""},
		{"null", `null`, "invalid_json", ""},
		{"truncated object", `{"type":"heartbeat","id":"t"`, "invalid_json", ""},
		{"numeric id", `{"type":"heartbeat","id":7}`, "invalid_message", ""},
		{"id of 65 characters", `{"type":"heartbeat","id":"` + long + `"}`, "invalid_message", ""},
		{"missing type", `{"id":"m1","data":{}}`, "invalid_message", "m1"},
		{"numeric type", `{"type":5,"id":"m2"}`, "invalid_message", "m2"},
		{"join without data", `{"type":"join_game","id":"m3"}`, "invalid_message", "m3"},
		{"join with string data", `{"type":"join_game","id":"m4","data":"` + game + `"}`, "invalid_message", "m4"},
		{"join without game_id", `{"type":"join_game","id":"m5","data":{}}`, "invalid_message", "m5"},
		{"string decision", `{"type":"submit_defensive_decision","id":"m6","data":{"game_id":"` + game + `","decision":"bunt"}}`, "invalid_message", "m6"},
		{"missing decision", `{"type":"submit_offensive_decision","id":"m7","data":{"game_id":"` + game + `"}}`, "invalid_message", "m7"},
		{"no dice", e2eGameMsg("roll_dice", "m8", game, map[string]any{"dice": []int{}}), "invalid_message", "m8"},
		{"eleven dice", e2eGameMsg("roll_dice", "m9", game, map[string]any{"dice": slices.Repeat([]int{6}, 11)}), "invalid_message", "m9"},
		{"one-sided die", e2eGameMsg("roll_dice", "m10", game, map[string]any{"dice": []int{6, 1}}), "invalid_message", "m10"},
		{"101-sided die", e2eGameMsg("roll_dice", "m11", game, map[string]any{"dice": []int{101}}), "invalid_message", "m11"},
		{"dice as strings", e2eGameMsg("roll_dice", "m12", game, map[string]any{"dice": []string{"6"}}), "invalid_message", "m12"},
		{"dice not an array", e2eGameMsg("roll_dice", "m13", game, map[string]any{"dice": 6}), "invalid_message", "m13"},
		{"unknown type", `{"type":"chat","id":"u1","data":{"text":"hi"}}`, "unknown_type", "u1"},
		{"server frame type", `{"type":"heartbeat_ack","id":"u2"}`, "unknown_type", "u2"},
		{"join a non-UUID", e2eGameMsg("join_game", "g1", "not-a-uuid", nil), "invalid_game_id", "g1"},
		{"leave a non-UUID", e2eGameMsg("leave_game", "g2", game+"0", nil), "invalid_game_id", "g2"},
		{"roll in a non-UUID", e2eGameMsg("roll_dice", "g3", "", nil), "invalid_game_id", "g3"},
		{"leave a game not joined", e2eGameMsg("leave_game", "n1", other, nil), "not_in_game", "n1"},
		{"defend in a game not joined", e2eGameMsg("submit_defensive_decision", "n2", other, map[string]any{"decision": map[string]any{}}), "not_in_game", "n2"},
		{"attack in a game not joined", e2eGameMsg("submit_offensive_decision", "n3", other, map[string]any{"decision": map[string]any{}}), "not_in_game", "n3"},
		{"roll in a game not joined", e2eGameMsg("roll_dice", "n4", other, nil), "not_in_game", "n4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := c.e2eAs(t)
			c.send(tc.msg)
			c.expectError(tc.code, tc.id)
			e2eAlive(c)
		})
	}
	// Nothing above changed membership: still in game, never in other.
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	c.send(e2eGameMsg("leave_game", "out", game, nil))
	c.expect("game_left")
	c.send(e2eGameMsg("leave_game", "twice", game, nil))
	c.expectError("not_in_game", "twice")
	e2eAlive(c)
	e2eHealthIs(t, s, 1, map[string]int{})
	e2eCloseAll(t, s, c)
}

// TestTooManyGames: with MAX_GAMES_PER_SESSION=2 a third join is refused with
// too_many_games, re-joining a game already joined is not a new game, and a
// leave makes room.
func TestTooManyGames(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxGamesPerSession = 2
	s := startServer(t, cfg)
	g1, g2, g3 := uuid.NewString(), uuid.NewString(), uuid.NewString()
	c := dial(t, s.url, nil)
	e2eJoin(c, g1, "1")
	e2eJoin(c, g2, "2")
	c.send(e2eGameMsg("join_game", "3", g3, nil))
	c.expectError("too_many_games", "3")
	e2eAlive(c)
	e2eHealthIs(t, s, 1, map[string]int{g1: 1, g2: 1})
	e2eJoin(c, strings.ToUpper(g1), "1 again") // already in it: allowed at the limit
	c.send(e2eGameMsg("roll_dice", "not yet", g3, nil))
	c.expectError("not_in_game", "not yet")
	c.send(e2eGameMsg("leave_game", "", g2, nil))
	c.expect("game_left")
	e2eJoin(c, g3, "3 now")
	e2eHealthIs(t, s, 1, map[string]int{g1: 1, g3: 1})
	e2eCloseAll(t, s, c)
}

// TestFramesArriveInSendOrder: two sessions each send 200 decisions into one
// game at once; every member (the senders included) receives each session's
// decisions in the order it sent them, the sender's own carrying their ids.
func TestFramesArriveInSendOrder(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 1e6, 1_000_000 // this test is about order, not rate
	cfg.SendQueueSize = 1024                      // nor about slow consumers: every frame of the test fits
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b, c := dial(t, s.url, nil), dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b, c)
	streams := map[*client]*e2eReader{a: a.e2eRead(), b: b.e2eRead(), c: c.e2eRead()}
	const n = 200
	senders := []*client{a, b}
	errs := make(chan error, len(senders))
	for _, from := range senders {
		go func() {
			for i := range n {
				msg := e2eGameMsg("submit_offensive_decision", fmt.Sprintf("%s-%d", from.session.SID, i), game,
					map[string]any{"decision": map[string]any{"seq": i}})
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				err := from.ws.Write(ctx, websocket.MessageText, []byte(msg))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("send %d: %w", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []*client{a, b, c} {
		st := streams[m]
		next := map[string]int{}
		for range n * len(senders) {
			f := st.expect("offensive_decision")
			var ev e2eDecision
			e2eWire(t, f.frame, &ev, "sid", "decision")
			var d struct{ Seq int }
			if err := json.Unmarshal(ev.Decision, &d); err != nil {
				t.Fatalf("decision %s: %v", ev.Decision, err)
			}
			if d.Seq != next[ev.SID] {
				t.Fatalf("%s got decision %d from %s, want %d", m.session.SID, d.Seq, ev.SID, next[ev.SID])
			}
			next[ev.SID]++
			wantID := ""
			if ev.SID == m.session.SID {
				wantID = fmt.Sprintf("%s-%d", ev.SID, d.Seq)
			}
			if f.ID != wantID {
				t.Fatalf("decision %d from %s reached %s with id %q, want %q", d.Seq, ev.SID, m.session.SID, f.ID, wantID)
			}
		}
		st.alive(false)
	}
	e2eCloseAll(t, s, a, b, c)
}

// TestDisconnectTellsGame: a client that closes normally leaves every game it
// was in with presence reason disconnected, and health follows.
func TestDisconnectTellsGame(t *testing.T) {
	s := startServer(t, testConfig(t))
	g1, g2 := uuid.NewString(), uuid.NewString()
	a, b, c := dial(t, s.url, nil), dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, g1, a, b)
	e2eJoinAll(t, g2, a, c)
	if err := a.ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close: %v", err)
	}
	e2ePresenceIs(t, b.read(), g1, a.session.SID, "left", "disconnected")
	e2ePresenceIs(t, c.read(), g2, a.session.SID, "left", "disconnected")
	// The hub removes a session before it tells the room, so health is already true.
	e2eHealthIs(t, s, 2, map[string]int{g1: 1, g2: 1})
	e2eAlive(b)
	e2eAlive(c)
	e2eCloseAll(t, s, b, c)
}

// TestHealthFollowsMembership: total_sessions, active_games and
// sessions_per_game follow joins, leaves and disconnects; a game with nobody
// is neither counted nor listed; with everyone gone, everything is zero.
func TestHealthFollowsMembership(t *testing.T) {
	s := startServer(t, testConfig(t))
	g1, g2 := uuid.NewString(), uuid.NewString()
	e2eHealthIs(t, s, 0, map[string]int{})
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eHealthIs(t, s, 2, map[string]int{})
	e2eJoinAll(t, g1, a)
	e2eHealthIs(t, s, 2, map[string]int{g1: 1})
	e2eJoinAll(t, g2, b)
	e2eJoin(b, g1, "b1")
	e2ePresenceIs(t, a.read(), g1, b.session.SID, "joined", "")
	e2eHealthIs(t, s, 2, map[string]int{g1: 2, g2: 1})
	b.send(e2eGameMsg("leave_game", "", g2, nil))
	b.expect("game_left")
	e2eHealthIs(t, s, 2, map[string]int{g1: 2})
	_ = a.ws.CloseNow()
	e2ePresenceIs(t, b.read(), g1, a.session.SID, "left", "disconnected")
	e2eHealthIs(t, s, 1, map[string]int{g1: 1})
	b.send(e2eGameMsg("leave_game", "", g1, nil))
	b.expect("game_left")
	e2eHealthIs(t, s, 1, map[string]int{})
	c := dial(t, s.url, nil)
	e2eJoinAll(t, g2, c)
	e2eHealthIs(t, s, 2, map[string]int{g2: 1})
	e2eCloseAll(t, s, b, c)
}

// TestOversizedMessageCloses1009: a message of exactly MAX_MESSAGE_BYTES is
// accepted; one byte more closes the connection with 1009, and the game hears
// the sender left (disconnected).
func TestOversizedMessageCloses1009(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxMessageBytes = 256
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	sized := func(n int) string {
		base := `{"type":"heartbeat","id":"big","data":""}`
		return `{"type":"heartbeat","id":"big","data":"` + strings.Repeat("x", n-len(base)) + `"}`
	}
	if m := sized(256); len(m) != 256 {
		t.Fatalf("test bug: message of %d bytes", len(m))
	}
	a.send(sized(256))
	if f := a.expect("heartbeat_ack"); f.ID != "big" {
		t.Fatalf("heartbeat_ack id %q, want big", f.ID)
	}
	a.send(sized(257))
	if code := a.expectClose(waitFor); code != websocket.StatusMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	e2ePresenceIs(t, b.read(), game, a.session.SID, "left", "disconnected")
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eAlive(b)
	e2eCloseAll(t, s, b)
}

// TestBinaryFrameCloses1003: a binary frame, even one holding a valid
// command, closes the connection with 1003.
func TestBinaryFrameCloses1003(t *testing.T) {
	s := startServer(t, testConfig(t))
	game := uuid.NewString()
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.ws.Write(ctx, websocket.MessageBinary, []byte(`{"type":"heartbeat","id":"bin"}`)); err != nil {
		t.Fatalf("write binary: %v", err)
	}
	if code := a.expectClose(waitFor); code != websocket.StatusUnsupportedData {
		t.Fatalf("close code %d, want 1003", code)
	}
	e2ePresenceIs(t, b.read(), game, a.session.SID, "left", "disconnected")
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eCloseAll(t, s, b)
}

// e2eExpiryConfig has sessions expire after 300 ms of inactivity, with a warning
// 150 ms before and a sweep every 20 ms.
func e2eExpiryConfig(t *testing.T) config {
	cfg := testConfig(t)
	// The warning leaves a client half a second to answer: enough on a
	// loaded 2-core CI machine running other packages' tests alongside.
	cfg.SessionTimeout = time.Second
	cfg.ExpiryWarning = 500 * time.Millisecond
	cfg.ExpiryCheckInterval = 20 * time.Millisecond
	return cfg
}

// e2eCheckExpiry reads an idle client's stream to its end and checks the
// contract's expiry: exactly one session_expiring, no earlier than
// SESSION_TIMEOUT-EXPIRY_WARNING after the last message and announcing at most
// EXPIRY_WARNING, then close 4000 no earlier than SESSION_TIMEOUT after the
// last message and no later than SESSION_TIMEOUT+EXPIRY_CHECK_INTERVAL+slack.
func e2eCheckExpiry(t *testing.T, cfg config, st *e2eReader, last time.Time) {
	t.Helper()
	code, at, frames := st.end(waitFor)
	if len(frames) != 1 || frames[0].Type != "session_expiring" {
		var types []string
		for _, f := range frames {
			types = append(types, f.Type)
		}
		t.Fatalf("before the close got %v, want exactly one session_expiring", types)
	}
	w := frames[0]
	var e e2eExpiring
	e2eWire(t, w.frame, &e, "expires_in_ms")
	if e.ExpiresInMS <= 0 || e.ExpiresInMS > cfg.ExpiryWarning.Milliseconds() {
		t.Errorf("expires_in_ms %d, want in (0, %d]", e.ExpiresInMS, cfg.ExpiryWarning.Milliseconds())
	}
	if early := cfg.SessionTimeout - cfg.ExpiryWarning; w.at.Sub(last) < early {
		t.Errorf("warned %s after the last message, before %s of inactivity", w.at.Sub(last), early)
	}
	if code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
	idle := at.Sub(last)
	if idle < cfg.SessionTimeout {
		t.Errorf("expired %s after the last message, before SESSION_TIMEOUT %s", idle, cfg.SessionTimeout)
	}
	if late := cfg.SessionTimeout + cfg.ExpiryCheckInterval + e2eSlack; idle > late {
		t.Errorf("expired %s after the last message, later than %s", idle, late)
	}
}

// TestExpiryWarnsThenCloses4000: an idle session gets one session_expiring,
// then close 4000 within the contract's window, and its game hears presence
// left reason expired. The other member, which answers its own warnings with
// heartbeats, stays.
func TestExpiryWarnsThenCloses4000(t *testing.T) {
	cfg := e2eExpiryConfig(t)
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	sa, sb := a.e2eRead(), b.e2eRead()
	last := time.Now()
	a.send(e2eMsg("heartbeat", "last", nil))
	if f := sa.expect("heartbeat_ack"); f.ID != "last" {
		t.Fatalf("heartbeat_ack id %q, want last", f.ID)
	}
	var left e2eFrame
	for left.Type == "" {
		switch f := sb.next(waitFor); f.Type {
		case "session_expiring":
			b.send(e2eMsg("heartbeat", "still here", nil))
		case "heartbeat_ack":
		case "presence":
			left = f
		default:
			t.Fatalf("b got %s %s", f.Type, f.Data)
		}
	}
	e2ePresenceIs(t, left.frame, game, a.session.SID, "left", "expired")
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eCheckExpiry(t, cfg, sa, last)
	sb.alive(true)
	e2eCloseAll(t, s, b)
}

// TestPongsAreNotActivity: a client that keeps reading, and so answers every
// ping, but sends nothing, still expires on time.
func TestPongsAreNotActivity(t *testing.T) {
	cfg := e2eExpiryConfig(t)
	cfg.PingInterval = 20 * time.Millisecond
	s := startServer(t, cfg)
	pings, opts := e2eNewPings()
	a := dial(t, s.url, opts)
	sa := a.e2eRead()
	last := time.Now()
	a.send(e2eMsg("heartbeat", "last", nil))
	sa.expect("heartbeat_ack")
	before := pings.n.Load()
	e2eCheckExpiry(t, cfg, sa, last)
	if answered := pings.n.Load() - before; answered < 5 {
		t.Fatalf("only %d pings answered while idle; the test proves nothing", answered)
	}
	eventually(t, "the expired session gone", func() bool { return e2eHealthZero(t, s) })
}

// TestHeartbeatsKeepSessionAlive: a client that answers each session_expiring
// with a heartbeat, as the contract advises, is still connected four times
// SESSION_TIMEOUT later, and is warned once per idle period.
func TestHeartbeatsKeepSessionAlive(t *testing.T) {
	cfg := e2eExpiryConfig(t)
	s := startServer(t, cfg)
	a := dial(t, s.url, nil)
	sa := a.e2eRead()
	start := time.Now()
	warnings := 0
	pending := false // a heartbeat sent and not yet answered
	for time.Since(start) < 4*cfg.SessionTimeout || pending {
		switch f := sa.next(waitFor); f.Type {
		case "session_expiring":
			if pending {
				t.Fatalf("warned twice in one idle period")
			}
			warnings++
			pending = true
			a.send(e2eMsg("heartbeat", fmt.Sprintf("w%d", warnings), nil))
		case "heartbeat_ack":
			if f.ID != fmt.Sprintf("w%d", warnings) {
				t.Fatalf("heartbeat_ack id %q after warning %d", f.ID, warnings)
			}
			pending = false
		default:
			t.Fatalf("got %s %s", f.Type, f.Data)
		}
	}
	if warnings < 4 {
		t.Fatalf("%d warnings in %s, want one per idle period", warnings, time.Since(start))
	}
	e2eHealthIs(t, s, 1, map[string]int{})
	sa.alive(true)
	e2eCloseAll(t, s, a)
}

// TestZeroSessionTimeoutNeverExpires: SESSION_TIMEOUT=0 turns expiry and its
// warning off: an idle client that answers pings hears nothing for many check
// intervals, then still gets its heartbeat answered.
func TestZeroSessionTimeoutNeverExpires(t *testing.T) {
	cfg := e2eExpiryConfig(t)
	cfg.SessionTimeout = 0
	cfg.PingInterval = 20 * time.Millisecond
	s := startServer(t, cfg)
	pings, opts := e2eNewPings()
	a := dial(t, s.url, opts)
	if a.session.SessionTimeoutMS != 0 {
		t.Fatalf("session_timeout_ms %d, want 0", a.session.SessionTimeoutMS)
	}
	game := uuid.NewString()
	e2eJoinAll(t, game, a)
	sa := a.e2eRead()
	sa.quiet(40 * cfg.ExpiryCheckInterval) // 800 ms: 40 sweeps that must all find nothing to do
	if pings.n.Load() < 3 {                // 40 are due; a loaded machine delays some
		t.Fatalf("only %d pings during the window", pings.n.Load())
	}
	sa.alive(false)
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eCloseAll(t, s, a)
}

// TestMissedPongsEndSessionWithTimeout: a client that stops reading never
// answers pings; within PING_INTERVAL+PING_TIMEOUT (plus slack) it is dropped
// without a close frame, removed from health, and its game hears presence left
// reason timeout. A client that keeps reading survives many ping rounds.
func TestMissedPongsEndSessionWithTimeout(t *testing.T) {
	cfg := testConfig(t)
	// The reading client must answer every ping within PING_TIMEOUT even on a
	// loaded CI machine, so the timeout is generous and the interval short.
	cfg.PingInterval = 50 * time.Millisecond
	cfg.PingTimeout = 400 * time.Millisecond
	s := startServer(t, cfg)
	game := uuid.NewString()
	pings, opts := e2eNewPings()
	a := dial(t, s.url, opts)
	b := dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	stopped := time.Now() // b's last read has returned: it answers no ping after this
	sa := a.e2eRead()
	f := sa.expect("presence")
	e2ePresenceIs(t, f.frame, game, b.session.SID, "left", "timeout")
	if late := cfg.PingInterval + cfg.PingTimeout + e2eSlack; f.at.Sub(stopped) > late {
		t.Errorf("b dropped %s after it stopped reading, later than %s", f.at.Sub(stopped), late)
	}
	e2eHealthIs(t, s, 1, map[string]int{game: 1}) // removed at the same moment
	if code := b.expectClose(waitFor); code != -1 {
		t.Errorf("b saw close code %d, want no close frame", code)
	}
	pings.waitFor(t, pings.n.Load()+10)
	sa.alive(false)
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eCloseAll(t, s, a)
}

// TestSlowConsumerCloses1008: with SEND_QUEUE_SIZE=8, a member that stops
// reading while another floods its game is dropped (health, and presence to
// the others); the remaining members receive every frame in order; once the
// slow one reads again it finds what was queued for it, in order, then close 1008.
func TestSlowConsumerCloses1008(t *testing.T) {
	cfg := testConfig(t)
	cfg.SendQueueSize = 8
	cfg.PingInterval = time.Minute // liveness must not end the slow client first
	cfg.PingTimeout = time.Minute
	cfg.RateLimit, cfg.RateBurst = 1e6, 1_000_000
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b, c := dial(t, s.url, nil), dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b, c) // b reads nothing after this
	sa, sc := a.e2eRead(), c.e2eRead()

	// a floods decisions of 32 KiB, at most window ahead of its own echoes,
	// so that a and c, which read, never fill their queues, while the socket
	// buffers on the way to b (some MiB on loopback) fill, then b's queue.
	// Messages are built by hand and checked with one decode: under -race
	// JSON work on MiBs is what this test spends its time on.
	pad := strings.Repeat("x", 32<<10)
	decision := func(seq int) string {
		return `{"type":"submit_defensive_decision","id":"` + strconv.Itoa(seq) + `","data":{"game_id":"` + game +
			`","decision":{"seq":` + strconv.Itoa(seq) + `,"pad":"` + pad + `"}}}`
	}
	// seqOf returns the seq of a defensive_decision frame, or -1 for any other frame.
	seqOf := func(f frame) int {
		if f.Type != "defensive_decision" {
			return -1
		}
		var d struct {
			GameID   string `json:"game_id"`
			SID      string `json:"sid"`
			Decision struct{ Seq *int }
		}
		if err := json.Unmarshal(f.Data, &d); err != nil || d.Decision.Seq == nil || d.GameID != game || d.SID != a.session.SID {
			t.Fatalf("defensive_decision %.200s is not a's (%v)", f.Data, err)
		}
		return *d.Decision.Seq
	}
	const window, maxFrames, after = 4, 800, 16
	sent, echoed, dropAt, aPresence := 0, 0, -1, 0
	readA := func() {
		t.Helper()
		f := sa.next(waitFor)
		if f.Type == "presence" {
			e2ePresenceIs(t, f.frame, game, b.session.SID, "left", "disconnected")
			aPresence++
			return
		}
		if seq := seqOf(f.frame); seq != echoed || f.ID != strconv.Itoa(seq) {
			t.Fatalf("a's echo %d id %q, want %d with its id", seq, f.ID, echoed)
		}
		echoed++
	}
	for ; dropAt < 0 || sent < dropAt+after; sent++ {
		if sent == maxFrames {
			t.Fatalf("b still connected after %d frames of 32 KiB", sent)
		}
		a.send(decision(sent))
		for sent+1-echoed > window {
			readA()
		}
		if dropAt < 0 && sent%8 == 7 && s.health(t).TotalSessions == 2 {
			dropAt = sent
		}
	}
	for echoed < sent || aPresence == 0 {
		readA()
	}
	if aPresence != 1 {
		t.Fatalf("a heard b leave %d times, want once", aPresence)
	}
	e2eHealthIs(t, s, 2, map[string]int{game: 2})

	// c receives every decision, in order and without id, and b's departure once.
	next, cPresence := 0, 0
	for next < sent {
		f := sc.next(waitFor)
		if f.Type == "presence" {
			e2ePresenceIs(t, f.frame, game, b.session.SID, "left", "disconnected")
			cPresence++
			continue
		}
		if seq := seqOf(f.frame); seq != next || f.ID != "" {
			t.Fatalf("c got decision %d id %q, want %d without id", seq, f.ID, next)
		}
		next++
	}
	if cPresence != 1 {
		t.Fatalf("c heard b leave %d times, want once", cPresence)
	}
	sa.alive(false)
	sc.alive(false)

	// b reads again: a prefix of the flood, in order, then close 1008.
	code, _, frames := b.e2eRead().end(waitFor)
	for i, f := range frames {
		if seq := seqOf(f.frame); seq != i {
			t.Fatalf("b's frame %d is %s decision %d, want decision %d", i, f.Type, seq, i)
		}
	}
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("b's close code %d after %d frames, want 1008", code, len(frames))
	}
	if len(frames) >= sent {
		t.Fatalf("b received all %d frames; it was never behind", sent)
	}
	e2eCloseAll(t, s, a, c)
}

// TestRateLimitBurst: with RATE_LIMIT=5 and RATE_BURST=5, a burst of 20 gets
// the burst through and rate_limited errors, echoing ids, for the rest; the
// connection stays open, and another session's bucket is untouched.
func TestRateLimitBurst(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 5, 5
	s := startServer(t, cfg)
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	const burst = 20
	start := time.Now()
	for i := range burst {
		a.send(e2eMsg("heartbeat", fmt.Sprintf("h%d", i), nil))
	}
	elapsed := time.Since(start)
	got := map[string]string{}
	acks, limited := 0, 0
	for range burst {
		f := a.read()
		switch f.Type {
		case "heartbeat_ack":
			acks++
		case "error":
			var e e2eError
			e2eWire(t, f, &e, "code", "message")
			if e.Code != "rate_limited" || e.Message == "" {
				t.Fatalf("error %s, want rate_limited", f.Data)
			}
			limited++
		default:
			t.Fatalf("got %s %s", f.Type, f.Data)
		}
		if _, dup := got[f.ID]; dup || !strings.HasPrefix(f.ID, "h") {
			t.Fatalf("reply id %q duplicated or unknown", f.ID)
		}
		got[f.ID] = f.Type
	}
	maxAllowed := cfg.RateBurst + int(elapsed.Seconds()*cfg.RateLimit) + 1
	if acks < cfg.RateBurst || acks > maxAllowed || limited == 0 {
		t.Fatalf("%d acks and %d rate_limited in %s, want %d to %d acks and the rest limited",
			acks, limited, elapsed, cfg.RateBurst, maxAllowed)
	}
	// b has its own bucket: a whole burst goes through.
	for i := range cfg.RateBurst {
		b.send(e2eMsg("heartbeat", fmt.Sprintf("b%d", i), nil))
	}
	for i := range cfg.RateBurst {
		if f := b.expect("heartbeat_ack"); f.ID != fmt.Sprintf("b%d", i) {
			t.Fatalf("b's ack id %q, want b%d", f.ID, i)
		}
	}
	// a is still connected: once its bucket refills, a heartbeat is answered.
	n := 0
	eventually(t, "a heartbeat answered after the burst", func() bool {
		n++
		id := fmt.Sprintf("again-%d", n)
		a.send(e2eMsg("heartbeat", id, nil))
		f := a.read()
		if f.Type == "heartbeat_ack" && f.ID == id {
			return true
		}
		a.e2eErrorFrame(f, "rate_limited", id)
		return false
	})
	e2eHealthIs(t, s, 2, map[string]int{})
	e2eCloseAll(t, s, a, b)
}

// e2eErrorFrame checks that f, already read, is an error with code and id.
func (c *client) e2eErrorFrame(f frame, code, id string) {
	c.t.Helper()
	var e e2eError
	if f.Type == "error" {
		e2eWire(c.t, f, &e, "code", "message")
	}
	if f.Type != "error" || e.Code != code || f.ID != id {
		c.t.Fatalf("got %s id %q %s, want error %s id %q", f.Type, f.ID, f.Data, code, id)
	}
}

// TestRateLimitFloodCloses1008: a session that keeps sending faster than its
// rate for longer than the grace is closed with 1008, no sooner than the
// grace; the other member of its game hears it left and is unaffected.
func TestRateLimitFloodCloses1008(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 5, 5
	cfg.rateLimitGrace = 200 * time.Millisecond
	cfg.SendQueueSize = 1 << 14 // the flooder reads its errors; it must not end as a slow consumer
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	sa, sb := a.e2eRead(), b.e2eRead() // b reads, so it keeps answering pings

	// a sends a heartbeat every millisecond, 200 times its rate, until its
	// connection fails or the test ends.
	stop, flooded := make(chan struct{}), make(chan error, 1)
	start := time.Now()
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				flooded <- nil
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			err := a.ws.Write(ctx, websocket.MessageText, []byte(e2eMsg("heartbeat", fmt.Sprintf("f%d", i), nil)))
			cancel()
			if err != nil {
				flooded <- err
				return
			}
		}
	}()
	defer func() { close(stop); <-flooded }()

	sb.alive(false) // unaffected while a floods
	code, at, frames, ended := sa.tryEnd(10 * cfg.rateLimitGrace)
	acks, limited := 0, 0
	for _, f := range frames {
		switch {
		case f.Type == "heartbeat_ack":
			acks++
		case f.Type == "error":
			var e e2eError
			e2eWire(t, f.frame, &e, "code")
			if e.Code != "rate_limited" || !strings.HasPrefix(f.ID, "f") {
				t.Fatalf("a got error %s id %q, want rate_limited", f.Data, f.ID)
			}
			limited++
		default:
			t.Fatalf("a got %s %s", f.Type, f.Data)
		}
	}
	if !ended {
		t.Fatalf("a still connected after flooding for %s, %d times the %s grace: %d heartbeats answered, %d rate_limited",
			time.Since(start), 10, cfg.rateLimitGrace, acks, limited)
	}
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	if at.Sub(start) < cfg.rateLimitGrace {
		t.Errorf("closed %s into the flood, before the %s grace", at.Sub(start), cfg.rateLimitGrace)
	}
	if limited == 0 {
		t.Errorf("closed without a single rate_limited error (%d acks)", acks)
	}
	e2ePresenceIs(t, sb.expect("presence").frame, game, a.session.SID, "left", "disconnected")
	sb.alive(false)
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eCloseAll(t, s, b)
}

// TestFloodTracker checks what counts as being rate limited continuously:
// refusals without a break longer than floodGap, for longer than the grace.
func TestFloodTracker(t *testing.T) {
	const grace = 5 * time.Second
	start := time.Unix(1000, 0)
	tests := []struct {
		name     string
		every    time.Duration // spacing of refusals
		for_     time.Duration // how long the refusals go on
		wantStop bool
	}{
		{"a flood refused every 10ms is ended after the grace", 10 * time.Millisecond, 6 * time.Second, true},
		{"a flood shorter than the grace is not ended", 10 * time.Millisecond, 4 * time.Second, false},
		{"refusals with gaps longer than floodGap never add up", floodGap + time.Millisecond, time.Minute, false},
		{"refusals just inside floodGap add up", floodGap - time.Millisecond, 7 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f floodTracker
			stopped := false
			for at := time.Duration(0); at <= tc.for_ && !stopped; at += tc.every {
				stopped = f.refused(start.Add(at), grace)
			}
			if stopped != tc.wantStop {
				t.Fatalf("stopped = %v, want %v", stopped, tc.wantStop)
			}
		})
	}
}

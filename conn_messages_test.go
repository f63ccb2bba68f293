package main

// End-to-end tests of the messages a connection serves (../shared/protocol-v1.md):
// heartbeats, game commands with their replies and room events, errors that
// keep the connection open, membership as health reports it, and the messages
// that end it (too big, binary). The e2e* helpers are in conn_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

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

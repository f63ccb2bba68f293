package main

// End-to-end tests of resume (contract v2 §4, with §2's history), over real
// clients on httptest and the real mux. The wire shapes and rs* helpers at the
// top serve conn_actions_test.go and conn_goodbye_test.go too (the client,
// rsClient, is in conn_actions_test.go). Every duration these tests depend on
// is set explicitly, short, on top of testConfig (which turns resume off for
// the protocol 1 suite).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Wire shapes of protocol 2 frames, declared from the contract's field names.
type (
	rsSessionData struct {
		SID            string `json:"sid"`
		UserID         *int64 `json:"user_id"`
		Protocol       int    `json:"protocol"`
		ResumeToken    string `json:"resume_token"`
		ResumeWindowMS int64  `json:"resume_window_ms"`
		TokenExp       *int64 `json:"token_exp"`
	}
	rsMember struct {
		SID    string `json:"sid"`
		UserID *int64 `json:"user_id"`
		Status string `json:"status"`
	}
	rsJoined struct {
		GameID  string     `json:"game_id"`
		Epoch   string     `json:"epoch"`
		Offset  uint64     `json:"offset"`
		Members []rsMember `json:"members"`
	}
	rsPresence struct {
		GameID         string `json:"game_id"`
		SID            string `json:"sid"`
		UserID         *int64 `json:"user_id"`
		Status         string `json:"status"`
		Reason         string `json:"reason"`
		ResumeWindowMS *int64 `json:"resume_window_ms"`
		AwayMS         *int64 `json:"away_ms"`
		Offset         uint64 `json:"offset"`
	}
	rsResumedGame struct {
		GameID    string     `json:"game_id"`
		Epoch     string     `json:"epoch"`
		Offset    uint64     `json:"offset"`
		Recovered bool       `json:"recovered"`
		Members   []rsMember `json:"members"`
	}
	rsResumed struct {
		SID    string          `json:"sid"`
		UserID *int64          `json:"user_id"`
		AwayMS int64           `json:"away_ms"`
		Games  []rsResumedGame `json:"games"`
	}
	rsErr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Reason  string `json:"reason"`
	}
	rsPos struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
)

// join sends join_game with id and returns the checked game_joined.
func (c *rsClient) join(game, id string) rsJoined {
	c.t.Helper()
	c.send(e2eGameMsg("join_game", id, game, nil))
	f := c.expect("game_joined")
	var j rsJoined
	e2eWire(c.t, f.frame, &j, "game_id", "epoch", "offset", "members")
	if f.ID != id || j.GameID != e2eCanonical(c.t, game) || j.Epoch == "" || j.Members[0].SID != c.session.SID {
		c.t.Fatalf("game_joined %s, want id %q, game %s, an epoch, and the joiner first", f.raw, id, game)
	}
	c.games[j.GameID] = true
	for _, m := range j.Members {
		if m.Status != "connected" && m.Status != "away" {
			c.t.Fatalf("member %+v has status %q", m, m.Status)
		}
	}
	return j
}

// presence reads the next frame, checks it is presence about sid in game with
// status and reason, and returns it.
func (c *rsClient) presence(game, sid, status, reason string) rsPresence {
	c.t.Helper()
	f := c.next(waitFor)
	return rsPresenceIs(c.t, f, game, sid, status, reason)
}

// rsPresenceIs checks f is a presence without id about sid in game with
// status and reason (and the keys its status requires).
func rsPresenceIs(t *testing.T, f rsFrame, game, sid, status, reason string) rsPresence {
	t.Helper()
	if f.Type != "presence" || f.ID != "" {
		t.Fatalf("got %s, want presence %s %s without id", f.raw, status, reason)
	}
	keys := []string{"game_id", "sid", "user_id", "status", "offset"}
	switch status {
	case "away":
		keys = append(keys, "reason", "resume_window_ms")
	case "back":
		keys = append(keys, "away_ms")
	case "left":
		keys = append(keys, "reason")
	}
	var p rsPresence
	e2eWire(t, f.frame, &p, keys...)
	if p.GameID != e2eCanonical(t, game) || p.SID != sid || p.Status != status || p.Reason != reason {
		t.Fatalf("presence %s, want game %s sid %s status %s reason %q", f.Data, game, sid, status, reason)
	}
	return p
}

// joinAll has each client join game in turn, reading the joined presence
// every earlier one gets, and returns the game's epoch and latest offset.
func rsJoinAll(t *testing.T, game string, clients ...*rsClient) (string, uint64) {
	t.Helper()
	var j rsJoined
	for i, c := range clients {
		j = c.join(game, fmt.Sprintf("join-%.8s-%d", game, i))
		if len(j.Members) != i+1 || j.Offset != uint64(i+1) {
			t.Fatalf("join %d: %d members offset %d, want %d and %d", i, len(j.Members), j.Offset, i+1, i+1)
		}
		for _, earlier := range clients[:i] {
			if p := earlier.presence(game, c.session.SID, "joined", ""); p.Offset != j.Offset {
				t.Fatalf("joined presence offset %d, joiner's game_joined offset %d", p.Offset, j.Offset)
			}
		}
	}
	return j.Epoch, j.Offset
}

// rsResumeMsg builds a resume frame; games nil leaves the games map out.
func rsResumeMsg(id, token string, games map[string]rsPos) string {
	data := map[string]any{"resume_token": token}
	if games != nil {
		data["games"] = games
	}
	return e2eMsg("resume", id, data)
}

// resumed sends resume as the connection's first frame and returns the
// checked reply: the resumed session's sid and user, one entry per game.
func (c *rsClient) resume(id, token string, games map[string]rsPos, want *rsClient) rsResumed {
	c.t.Helper()
	c.send(rsResumeMsg(id, token, games))
	f := c.expect("resumed")
	var r rsResumed
	e2eWire(c.t, f.frame, &r, "sid", "user_id", "away_ms", "games")
	if f.ID != id || r.SID != want.session.SID || !sameUser(r.UserID, want.session.UserID) || r.AwayMS < 0 {
		c.t.Fatalf("resumed %s, want id %q sid %s", f.raw, id, want.session.SID)
	}
	for _, g := range r.Games {
		if g.Epoch == "" || len(g.Members) == 0 || g.Members[0].SID != r.SID {
			c.t.Fatalf("resumed game %+v lacks an epoch or lists another member first", g)
		}
		c.games[g.GameID] = true
	}
	c.session = want.session // the connection serves the resumed session from now on
	return r
}

// expectResumeFailed reads an error resume_failed with reason and id.
func (c *rsClient) expectResumeFailed(id, reason string) {
	c.t.Helper()
	f := c.expect("error")
	var e rsErr
	e2eWire(c.t, f.frame, &e, "code", "message", "reason")
	if f.ID != id || e.Code != "resume_failed" || e.Reason != reason || e.Message == "" {
		c.t.Fatalf("error %s id %q, want resume_failed reason %q id %q", f.Data, f.ID, reason, id)
	}
}

// decide sends a defensive decision {"seq":seq} into game with id.
func (c *rsClient) decide(game, id string, seq int) {
	c.send(e2eGameMsg("submit_defensive_decision", id, game, map[string]any{"decision": map[string]any{"seq": seq}}))
}

// seqOf returns the seq of a defensive_decision frame.
func seqOf(t *testing.T, f rsFrame) int {
	t.Helper()
	var d struct {
		Decision struct {
			Seq *int `json:"seq"`
		} `json:"decision"`
	}
	if f.Type != "defensive_decision" || json.Unmarshal(f.Data, &d) != nil || d.Decision.Seq == nil {
		t.Fatalf("got %s, want a defensive_decision with a seq", f.raw)
	}
	return *d.Decision.Seq
}

// rsResilient is testConfig with a resume window and nothing else timing out.
func rsResilient(t *testing.T, window time.Duration) config {
	cfg := testConfig(t)
	cfg.ResumeWindow = window
	cfg.ActionIDTTL = max(cfg.ActionIDTTL, window)
	cfg.PingInterval, cfg.PingTimeout = time.Second, 2*time.Second
	return cfg
}

// rsEnd closes clients normally, one at a time, and waits until the server
// holds nothing. Before the next one closes, every client left that shares a
// game with the one closed reads up to its left presence, so that no frame is
// being written to a client as it closes (see TestNormalCloseWhileReceiving).
func rsEnd(t *testing.T, s *testServer, clients ...*rsClient) {
	t.Helper()
	for i, c := range clients {
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
		for _, o := range clients[i+1:] {
			for g := range c.games {
				if o.games[g] {
					o.until(g, c.session.SID, "left")
					break
				}
			}
		}
	}
	rsHealthIs(t, s, 0, 0, map[string]int{})
}

// until reads frames until presence status about sid in game.
func (c *rsClient) until(game, sid, status string) rsPresence {
	c.t.Helper()
	for {
		f := c.next(waitFor)
		var p rsPresence
		if f.Type == "presence" && json.Unmarshal(f.Data, &p) == nil && p.GameID == game && p.SID == sid && p.Status == status {
			return p
		}
	}
}

// TestResumeCatchesUp: b's connection is lost while a sends five decisions
// and a roll; a new connection resumes b with its position and gets resumed
// (b's sid, recovered), then every event after its position, in offset order,
// byte for byte as the others got them (b's own away first), then live
// frames, with no gap; a and c hear back, and nothing of the new connection's
// own fresh session, which health no longer counts.
func TestResumeCatchesUp(t *testing.T) {
	cfg := rsResilient(t, 3*time.Second)
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b, c := rsDial(t, s.url, nil), rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	epoch, pos := rsJoinAll(t, game, a, b, c)

	dropped := time.Now()
	b.drop()
	var awayAt time.Time
	for _, m := range []*rsClient{a, c} {
		f := m.next(waitFor)
		p := rsPresenceIs(t, f, game, b.session.SID, "away", "disconnected")
		if p.Offset != pos+1 || p.ResumeWindowMS == nil || *p.ResumeWindowMS != cfg.ResumeWindow.Milliseconds() {
			t.Fatalf("away %s, want offset %d and resume_window_ms %d", f.Data, pos+1, cfg.ResumeWindow.Milliseconds())
		}
		if late := f.at.Sub(dropped); late > 100*time.Millisecond+e2eSlack {
			t.Errorf("away came %s after the drop", late)
		}
		awayAt = f.at
	}
	rsHealthIs(t, s, 2, 1, map[string]int{game: 3})

	// What b misses, as c (which sent none of it) received it.
	missed := map[uint64][]byte{pos + 1: nil}
	for i := range 5 {
		a.decide(game, fmt.Sprintf("m%d", i), i)
	}
	a.send(e2eGameMsg("roll_dice", "roll", game, map[string]any{"dice": []int{100, 100}}))
	for range 6 {
		a.next(waitFor)
		f := c.next(waitFor)
		missed[f.offset(t)] = f.raw
	}

	b2 := rsDial(t, s.url, nil)
	r := b2.resume("res", b.session.ResumeToken, map[string]rsPos{game: {epoch, pos}}, b)
	if len(r.Games) != 1 || r.Games[0].GameID != game || r.Games[0].Epoch != epoch || !r.Games[0].Recovered {
		t.Fatalf("resumed games %+v, want %s in epoch %s recovered", r.Games, game, epoch)
	}
	if away := time.Duration(r.AwayMS) * time.Millisecond; away > time.Since(dropped) {
		t.Fatalf("away_ms %d, but b dropped %s ago", r.AwayMS, time.Since(dropped))
	}
	if got := rsSortedMembers(r.Games[0].Members); !slices.Equal(got, rsSortedSIDs(a, b, c)) || rsAnyAway(r.Games[0].Members) {
		t.Fatalf("resumed members %+v, want a, b and c all connected", r.Games[0].Members)
	}
	next := pos + 1
	for ; next <= pos+7; next++ {
		f := b2.next(waitFor)
		if f.offset(t) != next {
			t.Fatalf("replayed %s, want offset %d next", f.raw, next)
		}
		if next == pos+1 {
			rsPresenceIs(t, f, game, b.session.SID, "away", "disconnected")
		} else if !bytes.Equal(f.raw, missed[next]) {
			t.Fatalf("replayed %s, the others got %s", f.raw, missed[next])
		}
	}
	var backOffset uint64
	for _, m := range []*rsClient{a, c} {
		p := m.presence(game, b.session.SID, "back", "")
		if p.AwayMS == nil || *p.AwayMS < 0 || time.Duration(*p.AwayMS)*time.Millisecond > time.Since(awayAt)+e2eSlack {
			t.Fatalf("back away_ms %v, b went away %s ago", p.AwayMS, time.Since(awayAt))
		}
		backOffset = p.Offset
	}
	// The resumed position covers everything replayed, and at most b's own back.
	if off := r.Games[0].Offset; off != next-1 && off != backOffset {
		t.Fatalf("resumed offset %d, want %d (last replayed) or %d (b's own back)", off, next-1, backOffset)
	}
	a.decide(game, "live", 99)
	a.expect("defensive_decision")
	c.expect("defensive_decision")
	if f := b2.next(waitFor); seqOf(t, f) != 99 || f.offset(t) != r.Games[0].Offset+1 {
		t.Fatalf("first live frame %s, want decision 99 at offset %d", f.raw, r.Games[0].Offset+1)
	}
	rsHealthIs(t, s, 3, 0, map[string]int{game: 3}) // the fresh session vanished
	for _, m := range []*rsClient{a, b2, c} {
		m.alive()
	}
	rsEnd(t, s, a, b2, c)
}

// rsSortedMembers returns members' sids, sorted.
func rsSortedMembers(members []rsMember) []string {
	var sids []string
	for _, m := range members {
		sids = append(sids, m.SID)
	}
	slices.Sort(sids)
	return sids
}

// rsSortedSIDs returns clients' session sids, sorted.
func rsSortedSIDs(clients ...*rsClient) []string {
	var sids []string
	for _, c := range clients {
		sids = append(sids, c.session.SID)
	}
	slices.Sort(sids)
	return sids
}

// rsAnyAway reports whether a member is listed other than connected.
func rsAnyAway(members []rsMember) bool {
	return slices.ContainsFunc(members, func(m rsMember) bool { return m.Status != "connected" })
}

// TestResumeRecovered: b is away while a sends five decisions; how b's resume
// names its position decides recovered: true with the history whole (and the
// six events b missed follow), false when GAME_HISTORY_FRAMES or
// GAME_HISTORY_BYTES no longer hold all it missed, the epoch is wrong, or no
// position is given; a game the session does not hold is not listed. Either
// way the first live frame comes at the resumed offset + 1.
func TestResumeRecovered(t *testing.T) {
	other := uuid.NewString()
	cases := []struct {
		name      string
		frames    int
		bytes     int
		pad       int
		games     func(game, epoch string, pos uint64) map[string]rsPos
		recovered bool
	}{
		{"whole history", 256, 262144, 0, nil, true},
		{"history frames exceeded", 5, 262144, 0, nil, false},
		{"history bytes exceeded", 256, 1024, 300, nil, false},
		{"wrong epoch", 256, 262144, 0, func(g, _ string, pos uint64) map[string]rsPos { return map[string]rsPos{g: {"wrong", pos}} }, false},
		{"no games map", 256, 262144, 0, func(string, string, uint64) map[string]rsPos { return nil }, false},
		{"empty games map", 256, 262144, 0, func(string, string, uint64) map[string]rsPos { return map[string]rsPos{} }, false},
		{"only a game not held", 256, 262144, 0, func(_, e string, pos uint64) map[string]rsPos { return map[string]rsPos{other: {e, pos}} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := rsResilient(t, 3*time.Second)
			cfg.GameHistoryFrames, cfg.GameHistoryBytes = tc.frames, tc.bytes
			s := startServer(t, cfg)
			game := uuid.NewString()
			a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
			epoch, pos := rsJoinAll(t, game, a, b)
			b.drop()
			a.presence(game, b.session.SID, "away", "disconnected")
			for i := range 5 {
				a.send(e2eGameMsg("submit_defensive_decision", fmt.Sprint(i), game,
					map[string]any{"decision": map[string]any{"seq": i, "pad": strings.Repeat("x", tc.pad)}}))
				a.expect("defensive_decision")
			}
			games := map[string]rsPos{game: {epoch, pos}}
			if tc.games != nil {
				games = tc.games(game, epoch, pos)
			}
			b2 := rsDial(t, s.url, nil)
			r := b2.resume("r", b.session.ResumeToken, games, b)
			if len(r.Games) != 1 || r.Games[0].GameID != game || r.Games[0].Epoch != epoch || r.Games[0].Recovered != tc.recovered {
				t.Fatalf("resumed games %+v, want only %s (epoch %s) recovered %t", r.Games, game, epoch, tc.recovered)
			}
			if tc.recovered {
				for want := pos + 1; want <= pos+6; want++ {
					if f := b2.next(waitFor); f.offset(t) != want {
						t.Fatalf("replayed %s, want offset %d", f.raw, want)
					}
				}
			} else if r.Games[0].Offset < pos+6 {
				t.Fatalf("resumed offset %d, want the game's latest (at least %d)", r.Games[0].Offset, pos+6)
			}
			a.presence(game, b.session.SID, "back", "")
			a.decide(game, "live", 7)
			a.expect("defensive_decision")
			if f := b2.next(waitFor); f.Type != "defensive_decision" || f.offset(t) != r.Games[0].Offset+1 {
				t.Fatalf("after resumed (recovered %t) got %s, want the live decision at offset %d", tc.recovered, f.raw, r.Games[0].Offset+1)
			}
			rsEnd(t, s, a, b2)
		})
	}
}

// TestResumeTakesOver: resuming a session whose connection is still open
// takes it over: the old connection gets goodbye taken_over (not resumable)
// and close 4001 "taken_over"; the new one gets resumed (away_ms 0) and what
// it missed after the position it names; the other member hears nothing; and
// live frames go to the new connection.
func TestResumeTakesOver(t *testing.T) {
	s := startServer(t, rsResilient(t, 2*time.Second))
	game := uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	epoch, pos := rsJoinAll(t, game, a, b)
	a.decide(game, "d", 1)
	a.expect("defensive_decision")
	missed := b.expect("defensive_decision") // b read it; the tab taking over did not

	b2 := rsDial(t, s.url, nil)
	r := b2.resume("take", b.session.ResumeToken, map[string]rsPos{game: {epoch, pos}}, b)
	if r.AwayMS != 0 || len(r.Games) != 1 || !r.Games[0].Recovered || r.Games[0].Offset != pos+1 || rsAnyAway(r.Games[0].Members) {
		t.Fatalf("resumed %+v, want away_ms 0 and %s recovered at offset %d, all connected", r, game, pos+1)
	}
	if f := b2.next(waitFor); !bytes.Equal(f.raw, missed.raw) {
		t.Fatalf("replayed %s, want %s", f.raw, missed.raw)
	}
	if before := b.expectGoodbye(waitFor, 4001, "taken_over", false); len(before) != 0 {
		t.Fatalf("taken-over connection got %v before its goodbye", rsTypes(before))
	}
	a.quiet(300 * time.Millisecond)
	rsHealthIs(t, s, 2, 0, map[string]int{game: 2})
	a.decide(game, "live", 2)
	a.expect("defensive_decision")
	if f := b2.next(waitFor); seqOf(t, f) != 2 || f.offset(t) != pos+2 {
		t.Fatalf("live frame %s, want decision 2 at offset %d", f.raw, pos+2)
	}
	rsEnd(t, s, a, b2)
}

// rsJWTDial dials as user sub (anonymous when sub is "").
func rsJWTDial(t *testing.T, s *testServer, sub string) *rsClient {
	t.Helper()
	if sub == "" {
		return rsDial(t, s.url, nil)
	}
	return rsDial(t, withQueryToken(s.url, mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid(sub))), nil)
}

// TestResumeFailures: every resume_failed reason, each leaving the connection
// serving its own fresh session (it answers, counts in health, and joins
// under its own sid), and the token it named untouched.
func TestResumeFailures(t *testing.T) {
	// freshGoesOn checks c still serves its own session after a failed resume.
	freshGoesOn := func(t *testing.T, c *rsClient) {
		t.Helper()
		c.alive()
		if j := c.join(uuid.NewString(), "after"); len(j.Members) != 1 || j.Members[0].SID != c.session.SID {
			t.Fatalf("after a failed resume the connection joined as %+v, want its own sid %s", j.Members, c.session.SID)
		}
	}
	t.Run("unknown: never issued", func(t *testing.T) {
		s := startServer(t, rsResilient(t, time.Second))
		c := rsDial(t, s.url, nil)
		c.send(rsResumeMsg("x", strings.Repeat("A", 26), nil))
		c.expectResumeFailed("x", "unknown")
		freshGoesOn(t, c)
		rsHealthIs(t, s, 1, 0, map[string]int{rsOnlyGame(t, s): 1})
		rsEnd(t, s, c)
	})
	t.Run("unknown: data also naming a game", func(t *testing.T) {
		// The one-pass decoder once read this as a resume without its data,
		// which the hub dereferenced: one frame stopped the server.
		s := startServer(t, rsResilient(t, time.Second))
		c := rsDial(t, s.url, nil)
		c.send(e2eMsg("resume", "g", map[string]any{"game_id": uuid.NewString(), "resume_token": strings.Repeat("A", 26)}))
		c.expectResumeFailed("g", "unknown")
		freshGoesOn(t, c)
		rsEnd(t, s, c)
	})
	t.Run("unknown: own token", func(t *testing.T) {
		s := startServer(t, rsResilient(t, time.Second))
		c := rsDial(t, s.url, nil)
		c.send(rsResumeMsg("own", c.session.ResumeToken, nil))
		c.expectResumeFailed("own", "unknown")
		freshGoesOn(t, c)
		rsEnd(t, s, c)
	})
	t.Run("unknown: ended with 1000", func(t *testing.T) {
		s := startServer(t, rsResilient(t, 2*time.Second))
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		_ = b.ws.Close(websocket.StatusNormalClosure, "")
		a.presence(game, b.session.SID, "left", "disconnected")
		c := rsDial(t, s.url, nil)
		c.send(rsResumeMsg("late", b.session.ResumeToken, nil))
		c.expectResumeFailed("late", "unknown")
		freshGoesOn(t, c)
		rsEnd(t, s, a, c)
	})
	t.Run("unknown: window passed", func(t *testing.T) {
		s := startServer(t, rsResilient(t, 300*time.Millisecond))
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		b.drop()
		a.presence(game, b.session.SID, "away", "disconnected")
		a.presence(game, b.session.SID, "left", "disconnected")
		c := rsDial(t, s.url, nil)
		c.send(rsResumeMsg("late", b.session.ResumeToken, nil))
		c.expectResumeFailed("late", "unknown")
		freshGoesOn(t, c)
		rsEnd(t, s, a, c)
	})
	t.Run("not_first, token untouched", func(t *testing.T) {
		s := startServer(t, rsResilient(t, 3*time.Second))
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		b.drop()
		a.presence(game, b.session.SID, "away", "disconnected")
		c := rsDial(t, s.url, nil)
		c.alive()
		c.send(rsResumeMsg("second", b.session.ResumeToken, nil))
		c.expectResumeFailed("second", "not_first")
		freshGoesOn(t, c)
		a.alive() // a heard nothing: b is still away
		rsHealthIs(t, s, 2, 1, map[string]int{game: 2, rsOtherGame(t, s, game): 1})
		b2 := rsDial(t, s.url, nil)
		b2.resume("first", b.session.ResumeToken, nil, b)
		a.presence(game, b.session.SID, "back", "")
		rsEnd(t, s, a, b2, c)
	})
	t.Run("disabled", func(t *testing.T) {
		s := startServer(t, testConfig(t)) // RESUME_WINDOW=0
		game := uuid.NewString()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		if b.session.ResumeWindowMS != 0 {
			t.Fatalf("resume_window_ms %d with RESUME_WINDOW=0", b.session.ResumeWindowMS)
		}
		rsJoinAll(t, game, a, b)
		b.drop()
		a.presence(game, b.session.SID, "left", "disconnected") // as v1: lost is left at once
		c := rsDial(t, s.url, nil)
		c.send(rsResumeMsg("r", b.session.ResumeToken, nil))
		c.expectResumeFailed("r", "disabled")
		freshGoesOn(t, c)
		rsEnd(t, s, a, c)
	})
	t.Run("user_mismatch, token untouched", func(t *testing.T) {
		cfg := rsResilient(t, 3*time.Second)
		cfg.JWTSecret = testSecret
		s := startServer(t, cfg)
		game := uuid.NewString()
		watcher, u7, anon := rsJWTDial(t, s, "9"), rsJWTDial(t, s, "7"), rsJWTDial(t, s, "")
		rsJoinAll(t, game, watcher, u7, anon)
		u7.drop()
		watcher.presence(game, u7.session.SID, "away", "disconnected")
		anon.presence(game, u7.session.SID, "away", "disconnected")
		anon.drop()
		watcher.presence(game, anon.session.SID, "away", "disconnected")
		for _, try := range []struct{ who, token string }{
			{"", u7.session.ResumeToken},    // anonymous resumes only anonymous
			{"8", u7.session.ResumeToken},   // another user
			{"7", anon.session.ResumeToken}, // a user does not take an anonymous session
		} {
			c := rsJWTDial(t, s, try.who)
			c.send(rsResumeMsg("m", try.token, nil))
			c.expectResumeFailed("m", "user_mismatch")
			freshGoesOn(t, c)
			_ = c.ws.Close(websocket.StatusNormalClosure, "")
		}
		watcher.alive() // nobody came back
		again := rsJWTDial(t, s, "7")
		if r := again.resume("ok", u7.session.ResumeToken, nil, u7); r.UserID == nil || *r.UserID != 7 {
			t.Fatalf("resumed user_id %v, want 7", r.UserID)
		}
		watcher.presence(game, u7.session.SID, "back", "")
		anon2 := rsJWTDial(t, s, "")
		anon2.resume("ok", anon.session.ResumeToken, nil, anon)
		watcher.presence(game, anon.session.SID, "back", "")
		rsEnd(t, s, watcher, again, anon2)
	})
}

// rsOnlyGame returns the one game health lists.
func rsOnlyGame(t *testing.T, s *testServer) string {
	t.Helper()
	h := rsHealthOf(t, s)
	for g := range h.SessionsPerGame {
		return g
	}
	t.Fatalf("health lists no game: %+v", h)
	return ""
}

// rsOtherGame returns the game health lists besides game.
func rsOtherGame(t *testing.T, s *testServer, game string) string {
	t.Helper()
	for g := range rsHealthOf(t, s).SessionsPerGame {
		if g != game {
			return g
		}
	}
	t.Fatal("health lists no other game")
	return ""
}

// TestResumeIsNotActivity: an away session's idle clock runs on, and resume
// does not restart it: a session idle since t0, warned, lost and resumed,
// expires SESSION_TIMEOUT after t0 (goodbye expired, close 4000), not
// SESSION_TIMEOUT after the resume.
func TestResumeIsNotActivity(t *testing.T) {
	cfg := rsResilient(t, 10*time.Second)
	cfg.SessionTimeout, cfg.ExpiryWarning, cfg.ExpiryCheckInterval = 2*time.Second, time.Second, 20*time.Millisecond
	s := startServer(t, cfg)
	a := rsDial(t, s.url, nil)
	t0 := time.Now()
	a.alive() // a's last activity
	a.expect("session_expiring")
	a.drop()
	rsHealthIs(t, s, 0, 1, map[string]int{})
	b := rsDial(t, s.url, nil)
	resumedAt := time.Now()
	b.resume("r", a.session.ResumeToken, nil, a)
	frames := b.expectGoodbye(cfg.SessionTimeout+waitFor, 4000, "expired", false)
	for _, f := range frames {
		if f.Type != "session_expiring" {
			t.Fatalf("got %s before expiry", f.raw)
		}
	}
	at := time.Now()
	if early, late := t0.Add(cfg.SessionTimeout), t0.Add(cfg.SessionTimeout+cfg.ExpiryCheckInterval+e2eSlack); at.Before(early) || at.After(late) {
		t.Fatalf("expired %s after the last activity (%s after the resume), want within [%s, %s]",
			at.Sub(t0), at.Sub(resumedAt), cfg.SessionTimeout, late.Sub(t0))
	}
	rsHealthIs(t, s, 0, 0, map[string]int{})
}

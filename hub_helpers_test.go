package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// Hub tests run the hub goroutine inside a synctest bubble and talk to it only
// through its channels. Conns are fakes: plain *conn values with no socket,
// whose out queue the test reads and whose quit and reason say whether, and
// why, the hub stopped them.

// hubInbox is the inbox size newServer gives the hub, so the tests see the
// same buffering as production.
const hubInbox = 1024

// The games the tests play in. hubGame is spelled in upper case on purpose:
// the hub must still write it back in canonical lower case.
var (
	hubGame  = uuid.MustParse("6F9619FF-8B86-D011-B42D-00C04FD430C8")
	hubGame2 = uuid.MustParse("0e4b1c7a-3f1d-4c55-9a57-4f3f4a9e1b01")
	hubGame3 = uuid.MustParse("9b8e2a44-7d0c-4e6b-8f4a-1c2d3e4f5a6b")
)

// hubDefaults is the contract's default timing: 300 s expiry, warned 60 s before.
var hubDefaults = hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}

// hubUser returns a user id to put in a fake conn.
func hubUser(n int64) *int64 { return &n }

// fakeHubConn is a conn with no socket, as the hub sees one. capacity is the
// size of its outbound queue.
func fakeHubConn(sid string, userID *int64, capacity int) *conn {
	return &conn{sid: sid, userID: userID, out: newSendQueue(capacity, testQueueBytes), quit: make(chan struct{}), connectedAt: time.Now()}
}

// startTestHub runs a hub in the current bubble and stops it when the test ends.
func startTestHub(t *testing.T, cfg hubConfig) *hub {
	t.Helper()
	h := newHub(cfg, hubInbox)
	go h.run()
	t.Cleanup(func() { stopTestHub(h) })
	return h
}

// stopTestHub asks h to shut down and waits until its goroutine has returned.
// It is safe to call for a hub that has already stopped.
func stopTestHub(h *hub) {
	h.send(shutdownMsg{})
	<-h.done
}

// hubTell hands msgs to the hub in order and waits until the hub, and every
// other goroutine in the bubble, has settled.
func hubTell(t *testing.T, h *hub, msgs ...hubMsg) {
	t.Helper()
	for _, m := range msgs {
		if !h.send(m) {
			t.Fatalf("hub refused %T: it has stopped", m)
		}
	}
	synctest.Wait()
}

// hubRegister registers each conn and fails the test if the hub refuses one.
func hubRegister(t *testing.T, h *hub, cs ...*conn) {
	t.Helper()
	for _, c := range cs {
		if !h.register(c) {
			t.Fatalf("register %s refused", c.sid)
		}
	}
}

// hubStatsOf asks the hub for its counts; the hub must be running.
func hubStatsOf(t *testing.T, h *hub) stats {
	t.Helper()
	st, ok := h.stats(0)
	if !ok {
		t.Fatal("stats: the hub has stopped")
	}
	return st
}

// checkHubStats compares the hub's counts with the expected ones.
func checkHubStats(t *testing.T, h *hub, total, users int, perGame map[uuid.UUID]int) {
	t.Helper()
	st := hubStatsOf(t, h)
	want := make(map[string]int, len(perGame))
	for g, n := range perGame {
		want[g.String()] = n
	}
	if st.TotalSessions != total || st.UniqueUsers != users || st.ActiveGames != len(want) || !sameGameCounts(seatsPerGame(st), want) {
		t.Errorf("stats = %+v, want total %d, unique users %d, games %v", st, total, users, want)
	}
}

// sameGameCounts reports whether two per-game count maps are equal.
func sameGameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// hubCmd builds the commandMsg the reader sends for cmd. Rolls carry the
// given results so that tests can tell one roll from another.
func hubCmd(c *conn, cmd command, results []int) *commandMsg {
	return prepare(c, &cmd, results)
}

// heartbeatCmd is c's heartbeat.
func heartbeatCmd(c *conn, id string) *commandMsg {
	return hubCmd(c, command{kind: cmdHeartbeat, id: id}, nil)
}

// joinCmd is c's join_game.
func joinCmd(c *conn, game uuid.UUID, id string) *commandMsg {
	return hubCmd(c, command{kind: cmdJoin, id: id, game: game}, nil)
}

// leaveCmd is c's leave_game.
func leaveCmd(c *conn, game uuid.UUID, id string) *commandMsg {
	return hubCmd(c, command{kind: cmdLeave, id: id, game: game}, nil)
}

// actionCmd is one of c's game actions (a decision or a roll) carrying n, so
// that every relayed frame is distinct.
func actionCmd(c *conn, kind cmdKind, game uuid.UUID, id string, n int) *commandMsg {
	cmd := command{kind: kind, id: id, game: game}
	if kind == cmdRoll {
		cmd.dice = []int{100}
		return hubCmd(c, cmd, []int{n})
	}
	cmd.decision = json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))
	return hubCmd(c, cmd, nil)
}

// connStopped reports whether the hub (or anyone) has stopped c.
func connStopped(c *conn) bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// checkConnStopped fails unless c was stopped with reason.
func checkConnStopped(t *testing.T, c *conn, reason closeReason) {
	t.Helper()
	if !connStopped(c) {
		t.Errorf("conn %s still running, want stopped with %q (%d)", c.sid, reason.word, reason.code)
		return
	}
	if c.reason != reason {
		t.Errorf("conn %s stopped with %+v, want %+v", c.sid, c.reason, reason)
	}
}

// checkConnRunning fails if c was stopped.
func checkConnRunning(t *testing.T, c *conn) {
	t.Helper()
	if connStopped(c) {
		t.Errorf("conn %s stopped with %+v, want it running", c.sid, c.reason)
	}
}

// takeQueued takes every frame waiting in c's queue without waiting.
func takeQueued(t *testing.T, c *conn) []frame {
	t.Helper()
	var fs []frame
	for {
		b, ok := c.out.pop()
		if !ok {
			return fs
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("conn %s got a frame that is not JSON: %q", c.sid, b)
		}
		fs = append(fs, f)
	}
}

// expectQueued takes c's queued frames and checks their types, in order.
func expectQueued(t *testing.T, c *conn, types ...string) []frame {
	t.Helper()
	fs := takeQueued(t, c)
	got := make([]string, len(fs))
	for i, f := range fs {
		got[i] = f.Type
	}
	if strings.Join(got, ",") != strings.Join(types, ",") {
		t.Fatalf("conn %s got frames %v, want %v\n%s", c.sid, got, types, dumpHubFrames(fs))
	}
	return fs
}

// dumpHubFrames formats frames for a failure message.
func dumpHubFrames(fs []frame) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "  %s id=%q %s\n", f.Type, f.ID, f.Data)
	}
	return b.String()
}

// hubPresenceData is a presence frame's data as a client reads it; Reason is nil
// when the frame has none.
type hubPresenceData struct {
	GameID string  `json:"game_id"`
	SID    string  `json:"sid"`
	UserID *int64  `json:"user_id"`
	Status string  `json:"status"`
	Reason *string `json:"reason"`
}

// checkHubPresence checks that f tells game that who has status, for reason ("" for none).
func checkHubPresence(t *testing.T, f frame, game uuid.UUID, who *conn, status, reason string) {
	t.Helper()
	var p hubPresenceData
	if f.Type != "presence" || json.Unmarshal(f.Data, &p) != nil {
		t.Fatalf("got %s %s, want presence", f.Type, f.Data)
	}
	gotReason := ""
	if p.Reason != nil {
		gotReason = *p.Reason
		if gotReason == "" {
			t.Errorf("presence %s carries an empty reason", f.Data)
		}
	}
	if p.GameID != game.String() || p.SID != who.sid || !sameHubUser(p.UserID, who.userID) ||
		p.Status != status || gotReason != reason || f.ID != "" {
		t.Errorf("presence %s id=%q, want game %s sid %s user %v status %q reason %q",
			f.Data, f.ID, game, who.sid, showHubUser(who.userID), status, reason)
	}
}

// checkHubError checks that f is an error frame with code that echoes id.
func checkHubError(t *testing.T, f frame, code, id string) {
	t.Helper()
	var e errorData
	if f.Type != "error" || json.Unmarshal(f.Data, &e) != nil {
		t.Fatalf("got %s %s, want error %s", f.Type, f.Data, code)
	}
	if e.Code != code || f.ID != id || e.Message == "" {
		t.Errorf("error %s id=%q, want code %q id %q and a message", f.Data, f.ID, code, id)
	}
}

// checkHubJoined checks a game_joined reply: its id, its game in canonical form,
// the joiner first, then exactly the others in any order.
func checkHubJoined(t *testing.T, f frame, id string, game uuid.UUID, joiner *conn, others ...*conn) {
	t.Helper()
	var d gameJoinedData
	if f.Type != "game_joined" || json.Unmarshal(f.Data, &d) != nil {
		t.Fatalf("got %s %s, want game_joined", f.Type, f.Data)
	}
	if f.ID != id || d.GameID != game.String() {
		t.Errorf("game_joined id=%q game %q, want id %q game %q", f.ID, d.GameID, id, game)
	}
	if len(d.Members) != 1+len(others) {
		t.Fatalf("game_joined members %s, want %d members", f.Data, 1+len(others))
	}
	if d.Members[0].SID != joiner.sid || !sameHubUser(d.Members[0].UserID, joiner.userID) {
		t.Errorf("game_joined members %s: want the joiner %s first", f.Data, joiner.sid)
	}
	want := make(map[string]*int64, len(others))
	for _, o := range others {
		want[o.sid] = o.userID
	}
	for _, m := range d.Members[1:] {
		u, ok := want[m.SID]
		if !ok || !sameHubUser(u, m.UserID) {
			t.Errorf("game_joined members %s: unexpected member %s (user %v)", f.Data, m.SID, showHubUser(m.UserID))
		}
		delete(want, m.SID)
	}
	if len(want) > 0 {
		t.Errorf("game_joined members %s: missing %v", f.Data, want)
	}
}

// sameHubUser compares two optional user ids.
func sameHubUser(a, b *int64) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// showHubUser prints an optional user id.
func showHubUser(u *int64) string {
	if u == nil {
		return "null"
	}
	return fmt.Sprint(*u)
}

// checkHubInvariants checks the hub's state while the hub is idle (after
// synctest.Wait or a stats round trip): the index invariants (checkIndex, from
// sessions_test.go), plus what the hub adds on top: every session's conn
// carries its sid and is still running, and nothing is left marked slow
// between messages.
func checkHubInvariants(t testing.TB, h *hub) {
	t.Helper()
	checkIndex(t, h.idx)
	if len(h.slow) != 0 {
		t.Errorf("%d sessions still marked slow between messages", len(h.slow))
	}
	away := 0
	for sid, s := range h.idx.sessions {
		switch {
		case s == nil:
		case s.conn == nil: // away: no conn, and a window that will end it
			away++
			if s.window == nil || h.cfg.resumeWindow <= 0 {
				t.Errorf("session %s is away with window timer %v (RESUME_WINDOW %s)", sid, s.window, h.cfg.resumeWindow)
			}
			if s.tok != nil {
				t.Errorf("session %s is away but keeps a token clock", sid)
			}
		case s.conn.sid != sid:
			t.Errorf("session %s has conn %v", sid, s.conn)
		case connStopped(s.conn):
			t.Errorf("session %s is live but its conn was stopped (%+v)", sid, s.conn.reason)
		case s.window != nil:
			t.Errorf("session %s is connected but its away window still runs", sid)
		}
		if h.idx.byToken[s.token] != s && s.token != ([32]byte{}) {
			t.Errorf("session %s cannot be found by its resume token", sid)
		}
	}
	if away != h.idx.away {
		t.Errorf("%d sessions are away, the index counts %d", away, h.idx.away)
	}
	for g := range h.idx.byGame {
		if h.idx.logs[g] == nil {
			t.Errorf("game %s has seats but no history", g)
		}
	}
	for g := range h.idx.logs {
		if h.idx.byGame[g] == nil {
			t.Errorf("game %s has a history but no seat", g)
		}
	}
}

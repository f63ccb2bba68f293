package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/coder/websocket"
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
func hubCmd(c *conn, cmd command, results []int) commandMsg {
	return prepare(c, cmd, results)
}

// heartbeatCmd is c's heartbeat.
func heartbeatCmd(c *conn, id string) commandMsg {
	return hubCmd(c, command{kind: cmdHeartbeat, id: id}, nil)
}

// joinCmd is c's join_game.
func joinCmd(c *conn, game uuid.UUID, id string) commandMsg {
	return hubCmd(c, command{kind: cmdJoin, id: id, game: game}, nil)
}

// leaveCmd is c's leave_game.
func leaveCmd(c *conn, game uuid.UUID, id string) commandMsg {
	return hubCmd(c, command{kind: cmdLeave, id: id, game: game}, nil)
}

// actionCmd is one of c's game actions (a decision or a roll) carrying n, so
// that every relayed frame is distinct.
func actionCmd(c *conn, kind cmdKind, game uuid.UUID, id string, n int) commandMsg {
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

func TestHubRegisterUnregister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", nil, 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 2})

		// A second conn with a taken sid is refused and changes nothing.
		dup := fakeHubConn("sid-a", hubUser(2), 8)
		if h.register(dup) {
			t.Fatal("register with a taken sid was accepted")
		}
		synctest.Wait()
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 2})
		checkConnRunning(t, a)
		checkConnRunning(t, dup)
		if h.idx.sessions["sid-a"].conn != a {
			t.Fatal("the refused conn replaced the session it collided with")
		}

		// Unregistering a sid the hub does not know is a no-op.
		hubTell(t, h, unregisterMsg{sid: "sid-nobody", reason: reasonDisconnected})
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 2})
		expectQueued(t, a)
		expectQueued(t, b)
		checkConnRunning(t, a)
		checkConnRunning(t, b)

		// A real unregister removes the session everywhere and stops its conn.
		hubTell(t, h, unregisterMsg{c: a, sid: "sid-a", reason: reasonDisconnected})
		checkHubStats(t, h, 1, 0, map[uuid.UUID]int{hubGame: 1})
		checkConnStopped(t, a, reasonDisconnected)
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "left", presenceDisconnected)

		// The handler's unregister after the hub already removed it is a no-op too.
		hubTell(t, h, unregisterMsg{c: a, sid: "sid-a", reason: reasonTimeout})
		checkHubStats(t, h, 1, 0, map[uuid.UUID]int{hubGame: 1})
		expectQueued(t, b)
		checkHubInvariants(t, h)
	})
}

func TestHubJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", nil, 8)
		c := fakeHubConn("sid-c", hubUser(2), 8)
		hubRegister(t, h, a, b, c)

		hubTell(t, h, joinCmd(a, hubGame, "j1"))
		checkHubJoined(t, expectQueued(t, a, "game_joined")[0], "j1", hubGame, a)

		hubTell(t, h, joinCmd(b, hubGame, ""))
		checkHubJoined(t, expectQueued(t, b, "game_joined")[0], "", hubGame, b, a)
		checkHubPresence(t, expectQueued(t, a, "presence")[0], hubGame, b, "joined", "")

		hubTell(t, h, joinCmd(c, hubGame, "j3"))
		checkHubJoined(t, expectQueued(t, c, "game_joined")[0], "j3", hubGame, c, a, b)
		checkHubPresence(t, expectQueued(t, a, "presence")[0], hubGame, c, "joined", "")
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, c, "joined", "")

		checkHubStats(t, h, 3, 2, map[uuid.UUID]int{hubGame: 3})
		checkHubInvariants(t, h)
	})
}

func TestHubJoinIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", hubUser(2), 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, "j"))
		takeQueued(t, a)
		first := b.out.next()

		hubTell(t, h, joinCmd(b, hubGame, "j"))
		again := b.out.next()
		if string(again) != string(first) {
			t.Errorf("second join replied %s, want the same reply as the first: %s", again, first)
		}
		expectQueued(t, b)
		expectQueued(t, a) // no second presence
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 2})
		if n := len(h.idx.sessions["sid-b"].games); n != 1 {
			t.Errorf("b is in %d games after joining one twice", n)
		}

		// With more members the others may come in another order (the
		// contract does not fix it), but the reply says the same thing.
		c := fakeHubConn("sid-c", nil, 8)
		hubRegister(t, h, c)
		hubTell(t, h, joinCmd(c, hubGame, "c"))
		takeQueued(t, a)
		takeQueued(t, b)
		checkHubJoined(t, expectQueued(t, c, "game_joined")[0], "c", hubGame, c, a, b)
		for range 10 {
			hubTell(t, h, joinCmd(c, hubGame, "c"))
			checkHubJoined(t, expectQueued(t, c, "game_joined")[0], "c", hubGame, c, a, b)
		}
		expectQueued(t, a)
		expectQueued(t, b)
		checkHubStats(t, h, 3, 2, map[uuid.UUID]int{hubGame: 3})
		checkHubInvariants(t, h)
	})
}

func TestHubTooManyGames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubDefaults
		cfg.maxGames = 2
		h := startTestHub(t, cfg)
		a := fakeHubConn("sid-a", hubUser(1), 16)
		b := fakeHubConn("sid-b", hubUser(2), 16)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(b, hubGame3, ""), joinCmd(a, hubGame, ""), joinCmd(a, hubGame2, ""))
		expectQueued(t, a, "game_joined", "game_joined")
		takeQueued(t, b)

		hubTell(t, h, joinCmd(a, hubGame3, "third"))
		checkHubError(t, expectQueued(t, a, "error")[0], codeTooManyGames, "third")
		expectQueued(t, b) // b hears of no join
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame2: 1, hubGame3: 1})

		// At the limit, joining a game already joined is still the idempotent reply.
		hubTell(t, h, joinCmd(a, hubGame, "again"))
		checkHubJoined(t, expectQueued(t, a, "game_joined")[0], "again", hubGame, a)

		// Leaving one makes room for another.
		hubTell(t, h, leaveCmd(a, hubGame2, ""), joinCmd(a, hubGame3, "now"))
		fs := expectQueued(t, a, "game_left", "game_joined")
		checkHubJoined(t, fs[1], "now", hubGame3, a, b)
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame3, a, "joined", "")
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame3: 2})
		checkHubInvariants(t, h)
	})
}

func TestHubLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", nil, 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)

		hubTell(t, h, leaveCmd(a, hubGame, "bye"))
		f := expectQueued(t, a, "game_left")[0]
		var ref gameRef
		if err := json.Unmarshal(f.Data, &ref); err != nil || f.ID != "bye" || ref.GameID != hubGame.String() {
			t.Errorf("game_left %s id=%q, want game %s id bye", f.Data, f.ID, hubGame)
		}
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "left", presenceLeft)
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 1})

		// a no longer hears the game.
		hubTell(t, h, actionCmd(b, cmdRoll, hubGame, "", 1))
		expectQueued(t, a)
		expectQueued(t, b, "dice_rolled")

		// The last one out: the game is neither counted nor listed.
		hubTell(t, h, leaveCmd(b, hubGame, ""))
		expectQueued(t, b, "game_left")
		expectQueued(t, a)
		checkHubStats(t, h, 2, 1, nil)
		checkHubInvariants(t, h)
	})
}

func TestHubNotInGame(t *testing.T) {
	kinds := []struct {
		name string
		kind cmdKind
	}{
		{"leave_game", cmdLeave},
		{"submit_defensive_decision", cmdDefensive},
		{"submit_offensive_decision", cmdOffensive},
		{"roll_dice", cmdRoll},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startTestHub(t, hubDefaults)
				a := fakeHubConn("sid-a", hubUser(1), 8)
				b := fakeHubConn("sid-b", hubUser(2), 8)
				hubRegister(t, h, a, b)
				hubTell(t, h, joinCmd(a, hubGame2, ""), joinCmd(b, hubGame, ""))
				takeQueued(t, a)
				takeQueued(t, b)
				cmd := func(game uuid.UUID, id string) commandMsg {
					if k.kind == cmdLeave {
						return leaveCmd(a, game, id)
					}
					return actionCmd(a, k.kind, game, id, 7)
				}

				// A game somebody else is in, then a game nobody is in.
				hubTell(t, h, cmd(hubGame, "x1"), cmd(hubGame3, ""))
				fs := expectQueued(t, a, "error", "error")
				checkHubError(t, fs[0], codeNotInGame, "x1")
				checkHubError(t, fs[1], codeNotInGame, "")
				expectQueued(t, b)
				checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame2: 1})

				// A game a has just left.
				hubTell(t, h, leaveCmd(a, hubGame2, ""), cmd(hubGame2, "x2"))
				checkHubError(t, expectQueued(t, a, "game_left", "error")[1], codeNotInGame, "x2")
				checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1})
				checkHubInvariants(t, h)
			})
		})
	}
}

// TestHubRelayOrder has two members send concurrently and checks that every
// member receives each sender's frames for the game in the order sent.
func TestHubRelayOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perSender = 300
		h := startTestHub(t, hubDefaults)
		senders := []*conn{fakeHubConn("sid-a", hubUser(1), 2*perSender+8), fakeHubConn("sid-b", hubUser(2), 2*perSender+8)}
		c := fakeHubConn("sid-c", nil, 2*perSender+8)
		d := fakeHubConn("sid-d", hubUser(3), 8) // in another game: hears nothing
		hubRegister(t, h, senders[0], senders[1], c, d)
		hubTell(t, h, joinCmd(senders[0], hubGame, ""), joinCmd(senders[1], hubGame, ""),
			joinCmd(c, hubGame, ""), joinCmd(d, hubGame2, ""))
		for _, x := range []*conn{senders[0], senders[1], c, d} {
			takeQueued(t, x)
		}

		kinds := []cmdKind{cmdDefensive, cmdOffensive, cmdRoll}
		sent := make([][]commandMsg, len(senders))
		for i, s := range senders {
			for n := range perSender {
				sent[i] = append(sent[i], actionCmd(s, kinds[n%len(kinds)], hubGame, fmt.Sprint("m", n), n))
			}
		}
		var wg sync.WaitGroup
		for i := range senders {
			wg.Go(func() {
				for _, m := range sent[i] {
					h.send(m)
				}
			})
		}
		wg.Wait()
		synctest.Wait()

		got := map[*conn][]frame{c: takeQueued(t, c), d: takeQueued(t, d)}
		for _, s := range senders {
			got[s] = takeQueued(t, s)
		}
		if len(got[d]) != 0 {
			t.Errorf("a conn in another game got %d frames", len(got[d]))
		}
		for _, recv := range append([]*conn{c}, senders...) {
			for i, s := range senders {
				var want []string
				for _, m := range sent[i] {
					if recv == s {
						want = append(want, string(withID(m.others, m.cmd.id)))
					} else {
						want = append(want, string(m.others))
					}
				}
				checkHubRelayed(t, recv, s, got[recv], want)
			}
		}
		checkHubInvariants(t, h)
	})
}

// checkHubRelayed checks that the frames recv got from sender are exactly
// want, in order, each with an offset the game's sequence gave it: later
// frames carry larger offsets.
func checkHubRelayed(t *testing.T, recv, sender *conn, frames []frame, want []string) {
	t.Helper()
	var from []map[string]any
	for _, f := range frames {
		var d map[string]any
		if err := json.Unmarshal(f.Data, &d); err == nil && d["sid"] == sender.sid {
			from = append(from, map[string]any{"type": f.Type, "id": f.ID, "data": d})
		}
	}
	if len(from) != len(want) {
		t.Fatalf("%s got %d frames from %s, want %d", recv.sid, len(from), sender.sid, len(want))
	}
	last := -1.0
	for i := range want {
		var w struct {
			Type string         `json:"type"`
			ID   string         `json:"id"`
			Data map[string]any `json:"data"`
		}
		_ = json.Unmarshal([]byte(want[i]), &w)
		got := from[i]["data"].(map[string]any)
		offset, _ := got["offset"].(float64)
		if offset <= last {
			t.Fatalf("%s's frame %d from %s has offset %v after %v", recv.sid, i, sender.sid, got["offset"], last)
		}
		last = offset
		delete(got, "offset")
		if from[i]["type"] != w.Type || from[i]["id"] != w.ID || !reflect.DeepEqual(got, w.Data) {
			t.Fatalf("%s's frame %d from %s is %v, want %s (less its offset)", recv.sid, i, sender.sid, from[i], want[i])
		}
	}
}

func TestHubUnregisterReasons(t *testing.T) {
	reasons := []struct {
		name   string
		reason closeReason
	}{
		{"timeout", reasonTimeout},
		{"disconnected", reasonDisconnected},
		{"too big", reasonTooBig},
		{"binary", reasonBinary},
		{"flood", reasonFlood},
	}
	for _, r := range reasons {
		t.Run(r.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startTestHub(t, hubDefaults)
				a := fakeHubConn("sid-a", hubUser(7), 8)
				b := fakeHubConn("sid-b", hubUser(8), 8)
				hubRegister(t, h, a, b)
				hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""), joinCmd(a, hubGame2, ""))
				takeQueued(t, a)
				takeQueued(t, b)
				checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 2, hubGame2: 1})

				// As the handler does: the conn ends with its reason, then unregisters.
				a.stop(r.reason)
				hubTell(t, h, unregisterMsg{c: a, sid: a.sid, reason: r.reason})
				checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "left", r.reason.presence)
				checkHubStats(t, h, 1, 1, map[uuid.UUID]int{hubGame: 1})

				// An unregister the hub gets before the conn has stopped stops it with that reason.
				hubTell(t, h, unregisterMsg{c: b, sid: b.sid, reason: r.reason})
				checkConnStopped(t, b, r.reason)
				checkHubStats(t, h, 0, 0, nil)
				checkHubInvariants(t, h)
			})
		})
	}
}

// TestHubSlowConsumer fills one member's queue; the next frame for it stops it
// as a slow consumer, removes it from every game, and the others go on.
func TestHubSlowConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 256)
		slow := fakeHubConn("sid-slow", hubUser(2), 4)
		c := fakeHubConn("sid-c", nil, 256)
		hubRegister(t, h, a, slow, c)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(slow, hubGame, ""), joinCmd(c, hubGame, ""),
			joinCmd(slow, hubGame2, ""), joinCmd(c, hubGame2, ""))
		takeQueued(t, a)
		takeQueued(t, c)
		for slow.out.len() < slow.out.limit {
			slow.out.push([]byte(`{"type":"filler"}`))
		}

		hubTell(t, h, actionCmd(a, cmdRoll, hubGame, "r0", 0))
		checkConnStopped(t, slow, reasonSlow)
		if slow.reason.code != websocket.StatusPolicyViolation {
			t.Errorf("slow consumer closed with %d, want 1008", slow.reason.code)
		}
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 2, hubGame2: 1})
		expectQueued(t, a, "dice_rolled", "presence")
		fs := expectQueued(t, c, "dice_rolled", "presence", "presence")
		seen := map[string]bool{}
		for _, f := range fs[1:] {
			var p hubPresenceData
			_ = json.Unmarshal(f.Data, &p)
			checkHubPresence(t, f, uuid.MustParse(p.GameID), slow, "left", presenceDisconnected)
			seen[p.GameID] = true
		}
		if !seen[hubGame.String()] || !seen[hubGame2.String()] {
			t.Errorf("c heard the slow consumer leave %v, want both games", seen)
		}

		// The others keep receiving everything; the stopped conn gets nothing more.
		for slow.out.len() > 0 {
			slow.out.next()
		}
		for n := 1; n <= 100; n++ {
			hubTell(t, h, actionCmd(a, cmdDefensive, hubGame, "", n))
		}
		if got := len(takeQueued(t, c)); got != 100 {
			t.Errorf("c got %d of 100 frames after the slow consumer was dropped", got)
		}
		if got := len(takeQueued(t, a)); got != 100 {
			t.Errorf("a got %d of its 100 own frames", got)
		}
		expectQueued(t, slow)

		// Its handler's unregister finds nothing.
		hubTell(t, h, unregisterMsg{c: slow, sid: slow.sid, reason: reasonSlow})
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 2, hubGame2: 1})
		checkHubInvariants(t, h)
	})
}

// TestHubSlowSender covers the sender's own reply overflowing: the others get
// the event, then hear that the sender left.
func TestHubSlowSender(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 1)
		b := fakeHubConn("sid-b", hubUser(2), 16)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""))
		takeQueued(t, a)
		hubTell(t, h, joinCmd(b, hubGame, "")) // a's one slot now holds b's presence
		takeQueued(t, b)
		checkConnRunning(t, a)

		hubTell(t, h, actionCmd(a, cmdOffensive, hubGame, "", 1))
		checkConnStopped(t, a, reasonSlow)
		fs := expectQueued(t, b, "offensive_decision", "presence")
		checkHubPresence(t, fs[1], hubGame, a, "left", presenceDisconnected)
		checkHubStats(t, h, 1, 1, map[uuid.UUID]int{hubGame: 1})
		checkHubInvariants(t, h)
	})
}

// TestHubSlowCascade drops a slow consumer whose departure overflows another
// member of a second game, which must be dropped too.
func TestHubSlowCascade(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 64)
		b := fakeHubConn("sid-b", hubUser(2), 8)
		d := fakeHubConn("sid-d", hubUser(3), 8)
		c := fakeHubConn("sid-c", hubUser(4), 64)
		hubRegister(t, h, a, b, c, d)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""),
			joinCmd(b, hubGame2, ""), joinCmd(d, hubGame2, ""), joinCmd(c, hubGame2, ""))
		takeQueued(t, a)
		takeQueued(t, c)
		for _, x := range []*conn{b, d} {
			for x.out.len() < x.out.limit {
				x.out.push([]byte(`{"type":"filler"}`))
			}
		}

		hubTell(t, h, actionCmd(a, cmdRoll, hubGame, "", 3))
		checkConnStopped(t, b, reasonSlow)
		checkConnStopped(t, d, reasonSlow)
		checkConnRunning(t, a)
		checkConnRunning(t, c)
		checkHubPresence(t, expectQueued(t, a, "dice_rolled", "presence")[1], hubGame, b, "left", presenceDisconnected)
		fs := expectQueued(t, c, "presence", "presence")
		checkHubPresence(t, fs[0], hubGame2, b, "left", presenceDisconnected)
		checkHubPresence(t, fs[1], hubGame2, d, "left", presenceDisconnected)
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame2: 1})
		checkHubInvariants(t, h)
	})
}

func TestHubStats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		checkHubStats(t, h, 0, 0, nil)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", hubUser(1), 8) // the same user twice
		c := fakeHubConn("sid-c", hubUser(2), 8)
		d := fakeHubConn("sid-d", nil, 8) // anonymous: never a user
		e := fakeHubConn("sid-e", nil, 8)
		z := fakeHubConn("sid-z", hubUser(0), 8) // user 0 is a user
		hubRegister(t, h, a, b, c, d, e, z)
		checkHubStats(t, h, 6, 3, nil)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""), joinCmd(c, hubGame, ""),
			joinCmd(d, hubGame2, ""), joinCmd(e, hubGame, ""))
		checkHubStats(t, h, 6, 3, map[uuid.UUID]int{hubGame: 4, hubGame2: 1})
		st := hubStatsOf(t, h)
		if _, ok := seatsPerGame(st)[hubGame.String()]; !ok {
			t.Errorf("sessions_per_game %v does not key games by their canonical form %s", seatsPerGame(st), hubGame)
		}
		hubTell(t, h, unregisterMsg{c: c, sid: "sid-c", reason: reasonDisconnected})
		checkHubStats(t, h, 5, 2, map[uuid.UUID]int{hubGame: 3, hubGame2: 1})
		// The snapshot shares the hub's counts copy-on-write: it still says what was.
		if got := seatsPerGame(st); got[hubGame.String()] != 4 || got[hubGame2.String()] != 1 || len(got) != 2 {
			t.Errorf("an earlier snapshot changed with the hub: %v, want %s:4 %s:1", got, hubGame, hubGame2)
		}
		hubTell(t, h, unregisterMsg{c: a, sid: "sid-a", reason: reasonDisconnected})
		checkHubStats(t, h, 4, 2, map[uuid.UUID]int{hubGame: 2, hubGame2: 1}) // user 1 still has b
		hubTell(t, h, unregisterMsg{c: b, sid: "sid-b", reason: reasonDisconnected}, unregisterMsg{c: z, sid: "sid-z", reason: reasonDisconnected})
		checkHubStats(t, h, 2, 0, map[uuid.UUID]int{hubGame: 1, hubGame2: 1})
		hubTell(t, h, unregisterMsg{c: d, sid: "sid-d", reason: reasonTimeout})
		checkHubStats(t, h, 1, 0, map[uuid.UUID]int{hubGame: 1})
		checkHubInvariants(t, h)
	})
}

func TestHubShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		conns := []*conn{fakeHubConn("sid-a", hubUser(1), 8), fakeHubConn("sid-b", nil, 8), fakeHubConn("sid-c", hubUser(2), 8)}
		hubRegister(t, h, conns...)
		hubTell(t, h, joinCmd(conns[0], hubGame, ""), joinCmd(conns[1], hubGame, ""))

		if !h.send(shutdownMsg{}) {
			t.Fatal("running hub refused shutdown")
		}
		<-h.done
		for _, c := range conns {
			checkConnStopped(t, c, reasonShutdown)
			if c.reason.code != websocket.StatusGoingAway {
				t.Errorf("shutdown closes with %d, want 1001", c.reason.code)
			}
		}

		if h.register(fakeHubConn("sid-late", nil, 8)) {
			t.Error("a stopped hub accepted a register")
		}
		if _, ok := h.stats(0); ok {
			t.Error("a stopped hub answered stats")
		}
		// h.send must report false every time, not merely when the inbox is full.
		for i := range 64 {
			if h.send(unregisterMsg{sid: "sid-a", reason: reasonDisconnected}) {
				t.Fatalf("h.send returned true after the hub stopped (attempt %d; %d messages now sit in a dead inbox)", i+1, len(h.inbox))
			}
		}
	})
}

// hubExpiringIn decodes a session_expiring frame's expires_in_ms.
func hubExpiringIn(t *testing.T, f frame) time.Duration {
	t.Helper()
	var d struct {
		ExpiresInMS *int64 `json:"expires_in_ms"`
	}
	if f.Type != "session_expiring" || json.Unmarshal(f.Data, &d) != nil || d.ExpiresInMS == nil {
		t.Fatalf("got %s %s, want session_expiring with expires_in_ms", f.Type, f.Data)
	}
	return time.Duration(*d.ExpiresInMS) * time.Millisecond
}

// TestHubSweepBoundaries sends sweeps stamped at chosen instants: the warning
// comes exactly EXPIRY_WARNING before expiry and only once per idle period,
// and expiry comes at SESSION_TIMEOUT of inactivity, not a millisecond sooner.
func TestHubSweepBoundaries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		t0 := time.Now()
		at := func(d time.Duration) sweepMsg { return sweepMsg{now: t0.Add(d)} }
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", hubUser(2), 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		time.Sleep(100 * time.Second)
		hubTell(t, h, heartbeatCmd(b, "")) // b's last activity: t0+100s; a's: t0
		takeQueued(t, a)
		takeQueued(t, b)

		hubTell(t, h, at(240*time.Second-time.Millisecond))
		expectQueued(t, a)
		hubTell(t, h, at(240*time.Second))
		if in := hubExpiringIn(t, expectQueued(t, a, "session_expiring")[0]); in != 60*time.Second {
			t.Errorf("warned %s before expiry, want 60s", in)
		}
		hubTell(t, h, at(250*time.Second), at(300*time.Second-time.Millisecond))
		expectQueued(t, a) // once per idle period
		checkConnRunning(t, a)
		expectQueued(t, b)

		hubTell(t, h, at(300*time.Second))
		checkConnStopped(t, a, reasonExpired)
		if a.reason.code != 4000 {
			t.Errorf("expiry closes with %d, want 4000", a.reason.code)
		}
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "left", presenceExpired)
		checkHubStats(t, h, 1, 1, map[uuid.UUID]int{hubGame: 1})

		// b's first sweep inside its warning window comes late: the expiry is
		// postponed, so that the warning still gives the whole 60 s.
		hubTell(t, h, at(350*time.Second))
		if in := hubExpiringIn(t, expectQueued(t, b, "session_expiring")[0]); in != 60*time.Second {
			t.Errorf("warned %s before expiry, want 60s", in)
		}
		hubTell(t, h, at(410*time.Second-time.Millisecond))
		checkConnRunning(t, b)
		hubTell(t, h, at(410*time.Second))
		checkConnStopped(t, b, reasonExpired)
		checkHubStats(t, h, 0, 0, nil)
		checkHubInvariants(t, h)
	})
}

// TestHubSweepWithoutWarning turns the warning off: expiry still happens, unannounced.
func TestHubSweepWithoutWarning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubDefaults
		cfg.expiryWarning = 0
		h := startTestHub(t, cfg)
		t0 := time.Now()
		a := fakeHubConn("sid-a", hubUser(1), 8)
		hubRegister(t, h, a)
		for _, d := range []time.Duration{240 * time.Second, 299 * time.Second, 300*time.Second - time.Millisecond} {
			hubTell(t, h, sweepMsg{now: t0.Add(d)})
		}
		expectQueued(t, a)
		checkConnRunning(t, a)
		hubTell(t, h, sweepMsg{now: t0.Add(300 * time.Second)})
		checkConnStopped(t, a, reasonExpired)
		expectQueued(t, a)
	})
}

// hubWarning is one session_expiring a conn received, and when.
type hubWarning struct {
	at, in time.Duration // since the watch's start; what the frame said
}

// watchHubExpiry lets the bubble's clock run a second at a time until c is
// stopped or limit passes since start. It records every session_expiring c
// receives and returns when c was stopped (0 if it was not). each, when not
// nil, runs after every second with the time elapsed.
func watchHubExpiry(t *testing.T, c *conn, start time.Time, limit time.Duration, each func(time.Duration)) ([]hubWarning, time.Duration) {
	t.Helper()
	var warnings []hubWarning
	for {
		time.Sleep(time.Second)
		synctest.Wait()
		elapsed := time.Since(start)
		for _, f := range takeQueued(t, c) {
			if f.Type == "session_expiring" {
				warnings = append(warnings, hubWarning{at: elapsed, in: hubExpiringIn(t, f)})
			}
		}
		if connStopped(c) {
			return warnings, elapsed
		}
		if elapsed >= limit {
			return warnings, 0
		}
		if each != nil {
			each(elapsed)
		}
	}
}

// checkHubExpiryWindow checks one idle period that began at idleFrom: exactly
// one warning, at least 60 s ahead and pointing at the 300 s mark or, when
// the janitor found the session later than that, 60 s after it found it;
// expiry no sooner than announced and no later than a janitor interval after,
// which with a 60 s warning and a 60 s janitor is within 300 s + 60 s.
func checkHubExpiryWindow(t *testing.T, warnings []hubWarning, end, idleFrom time.Duration) {
	t.Helper()
	timeout, warning, interval := hubDefaults.sessionTimeout, hubDefaults.expiryWarning, 60*time.Second
	if end == 0 {
		t.Fatalf("not expired %s after its last activity", timeout+2*interval)
	}
	if idle := end - idleFrom; idle < timeout || idle > timeout+interval {
		t.Errorf("expired after %s idle, want between %s and %s", idle, timeout, timeout+interval)
	}
	if len(warnings) != 1 {
		t.Fatalf("got %d session_expiring frames in one idle period, want 1: %+v", len(warnings), warnings)
	}
	w := warnings[0]
	if w.in < warning {
		t.Errorf("expires_in_ms %d, want at least %d", w.in.Milliseconds(), warning.Milliseconds())
	}
	if w.at-idleFrom < timeout-warning || w.at >= end {
		t.Errorf("warned after %s idle (expired at %s), want from %s idle on and before expiry", w.at-idleFrom, end-idleFrom, timeout-warning)
	}
	if want := max(idleFrom+timeout, w.at+warning); w.at+w.in != want {
		t.Errorf("warning at %s said %s to go, want it to point at %s", w.at, w.in, want)
	}
	if end < w.at+w.in || end >= w.at+w.in+interval {
		t.Errorf("expired at %s, warned at %s for %s: want no sooner and less than %s later", end, w.at, w.at+w.in, interval)
	}
}

// TestHubExpiryTiming runs the janitor every 60 s against a session that goes
// idle at various offsets from the janitor's ticks, while another member of
// its game stays active and keeps sending it frames (which are not activity).
func TestHubExpiryTiming(t *testing.T) {
	for _, offset := range []time.Duration{0, time.Second, 30 * time.Second, 59 * time.Second, 60 * time.Second, 61 * time.Second, 119 * time.Second} {
		t.Run(offset.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startTestHub(t, hubDefaults)
				startTestJanitor(t, h, 60*time.Second)
				time.Sleep(offset)
				a := fakeHubConn("sid-idle", hubUser(1), 64)
				b := fakeHubConn("sid-busy", hubUser(2), 64)
				hubRegister(t, h, a, b)
				hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
				takeQueued(t, b)
				start := time.Now()
				n := 0
				warnings, end := watchHubExpiry(t, a, start, 420*time.Second, func(elapsed time.Duration) {
					if elapsed%(30*time.Second) == 0 {
						n++
						hubTell(t, h, actionCmd(b, cmdRoll, hubGame, "", n))
					}
				})
				checkHubExpiryWindow(t, warnings, end, 0)
				checkConnStopped(t, a, reasonExpired)

				fs := takeQueued(t, b)
				if len(fs) != n+1 {
					t.Fatalf("busy member got %d frames, want its %d rolls and a presence:\n%s", len(fs), n, dumpHubFrames(fs))
				}
				for _, f := range fs[:n] {
					if f.Type != "dice_rolled" {
						t.Errorf("busy member got %s %s", f.Type, f.Data)
					}
				}
				checkHubPresence(t, fs[n], hubGame, a, "left", presenceExpired)
				checkConnRunning(t, b)
				checkHubStats(t, h, 1, 1, map[uuid.UUID]int{hubGame: 1})
			})
		})
	}
}

// TestHubActivityResetsClock warns a session, then has it act: every kind of
// client message restarts its idle period and re-arms the warning.
func TestHubActivityResetsClock(t *testing.T) {
	acts := []struct {
		name  string
		cmd   func(*conn) commandMsg
		reply string
	}{
		{"heartbeat", func(c *conn) commandMsg { return heartbeatCmd(c, "hb") }, "heartbeat_ack"},
		{"join_game", func(c *conn) commandMsg { return joinCmd(c, hubGame2, "") }, "game_joined"},
		{"join_game again", func(c *conn) commandMsg { return joinCmd(c, hubGame, "") }, "game_joined"},
		{"leave_game", func(c *conn) commandMsg { return leaveCmd(c, hubGame, "") }, "game_left"},
		{"roll_dice", func(c *conn) commandMsg { return actionCmd(c, cmdRoll, hubGame, "", 1) }, "dice_rolled"},
		{"submit_offensive_decision", func(c *conn) commandMsg { return actionCmd(c, cmdOffensive, hubGame, "", 1) }, "offensive_decision"},
		{"roll_dice in a game not joined", func(c *conn) commandMsg { return actionCmd(c, cmdRoll, hubGame3, "", 1) }, "error"},
	}
	for _, act := range acts {
		t.Run(act.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startTestHub(t, hubDefaults)
				startTestJanitor(t, h, 60*time.Second)
				start := time.Now()
				a := fakeHubConn("sid-a", hubUser(1), 16)
				hubRegister(t, h, a)
				hubTell(t, h, joinCmd(a, hubGame, ""))
				takeQueued(t, a)

				time.Sleep(250 * time.Second)
				synctest.Wait()
				if in := hubExpiringIn(t, expectQueued(t, a, "session_expiring")[0]); in != 60*time.Second {
					t.Errorf("first warning said %s, want 60s", in)
				}
				hubTell(t, h, act.cmd(a))
				expectQueued(t, a, act.reply)

				warnings, end := watchHubExpiry(t, a, start, 250*time.Second+420*time.Second, nil)
				checkHubExpiryWindow(t, warnings, end, 250*time.Second)
				checkConnStopped(t, a, reasonExpired)
			})
		})
	}
}

// TestHubSessionTimeoutZero is the operator's rollback switch: with
// SESSION_TIMEOUT 0 nothing is warned or expired, however long and however
// often the hub is asked to sweep.
func TestHubSessionTimeoutZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubDefaults
		cfg.sessionTimeout = 0
		h := startTestHub(t, cfg)
		startTestJanitor(t, h, 60*time.Second)
		t0 := time.Now()
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", nil, 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)

		time.Sleep(24 * time.Hour)
		hubTell(t, h, sweepMsg{now: t0.Add(10000 * time.Hour)})
		for _, c := range []*conn{a, b} {
			checkConnRunning(t, c)
			expectQueued(t, c)
		}
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 2})
	})
}

// The randomized test: a long seeded sequence of everything the hub is told,
// checked after every step against a model of what it should hold.

var (
	hubPropSeed  = flag.Uint64("hub.seed", 0, "seed for TestHubRandomized; 0 picks one")
	hubPropSteps = flag.Int("hub.steps", 5000, "steps of TestHubRandomized")
)

// propGames are the games of the randomized test: more than maxGames, so joins get refused.
var propGames = []uuid.UUID{hubGame, hubGame2, hubGame3,
	uuid.MustParse("11111111-2222-4333-8444-555555555555"), uuid.MustParse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")}

// propConfig is the randomized test's hub: default timing, three games a
// session, three seats a game (so joins get game_full), and sweeps of two
// sessions a step (so every sweep of more is split).
var propConfig = hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 3,
	maxSeats: 3, sweepStep: 2}

// propEnds are the reasons a conn's own handler may end it with.
var propEnds = []closeReason{reasonDisconnected, reasonTimeout, reasonTooBig, reasonBinary, reasonFlood}

// propConn is the model's record of one conn the hub accepted.
type propConn struct {
	c    *conn
	tiny bool // a queue of a few frames nobody drains: a slow consumer waiting to happen

	// while the model holds its session
	games     map[uuid.UUID]bool
	last      time.Time
	touched   int // when it was last active, in the model's count of touches: the idle order within one instant
	warned    bool
	expiresAt time.Time // what the warning announced
	queued    int       // frames in a tiny conn's queue
	want      []string  // canonical frames a drained conn should get this step
	seen      map[string]gameSeen

	// once the model has ended it
	ended     bool
	reason    closeReason
	endedStep int
	frozen    int // a tiny conn's queue length once ended
}

// propModel is what the hub should hold; its methods mirror the hub's decisions.
type propModel struct {
	cfg     hubConfig
	touches int // activity so far, to order sessions active at the same instant
	step    int
	live    map[string]*propConn
	games   map[uuid.UUID]map[*propConn]bool
	slow    []*propConn
	count   map[string]int // what happened, for the log and the coverage check
}

// deliver queues a frame for pc as the hub would, marking it slow when it does not fit.
func (m *propModel) deliver(pc *propConn, frame []byte) {
	if !pc.tiny {
		pc.want = append(pc.want, canonHubFrame(frame))
		return
	}
	if pc.queued < pc.c.out.limit {
		pc.queued++
		return
	}
	m.slow = append(m.slow, pc)
}

// refuse queues an error reply for pc as the hub would: a tiny conn takes it
// only while its queue is at most half full, and is never made slow by it.
func (m *propModel) refuse(pc *propConn, frame []byte) {
	if !pc.tiny {
		pc.want = append(pc.want, canonHubFrame(frame))
		return
	}
	if pc.queued < pc.c.out.limit/2 {
		pc.queued++
		return
	}
	m.count["error dropped"]++
}

// broadcast delivers frame to every member of game but from.
func (m *propModel) broadcast(game uuid.UUID, from *propConn, frame []byte) {
	for pc := range m.games[game] {
		if pc != from {
			m.deliver(pc, frame)
		}
	}
}

// end removes pc everywhere, tells its games why, and marks its conn stopped.
func (m *propModel) end(pc *propConn, reason closeReason) {
	if m.live[pc.c.sid] != pc {
		return
	}
	delete(m.live, pc.c.sid)
	for g := range pc.games {
		delete(m.games[g], pc)
		if len(m.games[g]) == 0 {
			delete(m.games, g)
		}
	}
	for g := range pc.games {
		m.broadcast(g, pc, encodePresence(g, pc.c.sid, pc.c.userID, "left", reason.presence))
	}
	pc.games, pc.ended, pc.reason, pc.endedStep = nil, true, reason, m.step
	m.count["ended "+reason.presence+" "+reason.word]++
}

// dropSlow ends every conn that overflowed, until none is left.
func (m *propModel) dropSlow() {
	for len(m.slow) > 0 {
		pc := m.slow[len(m.slow)-1]
		m.slow = m.slow[:len(m.slow)-1]
		m.end(pc, reasonSlow)
	}
}

// command applies one client command from a live conn at now.
func (m *propModel) command(pc *propConn, msg commandMsg, now time.Time) {
	if m.live[pc.c.sid] != pc {
		m.count["stale command"]++
		return
	}
	pc.last, pc.warned, pc.expiresAt = now, false, time.Time{}
	m.touches++
	pc.touched = m.touches
	cmd := msg.cmd
	in := pc.games[cmd.game]
	switch {
	case cmd.kind == cmdHeartbeat:
		m.deliver(pc, msg.self)
	case cmd.kind == cmdJoin && !in && len(pc.games) >= m.cfg.maxGames:
		m.count["too_many_games"]++
		m.refuse(pc, encodeError(&protoError{code: codeTooManyGames, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin && !in && len(m.games[cmd.game]) >= m.cfg.maxSeats:
		m.count["game_full"]++
		m.refuse(pc, encodeError(&protoError{code: codeGameFull, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin:
		members := []member{{SID: pc.c.sid, UserID: pc.c.userID, Status: statusConnected}}
		for o := range m.games[cmd.game] {
			if o != pc {
				members = append(members, member{SID: o.c.sid, UserID: o.c.userID, Status: statusConnected})
			}
		}
		if !in {
			pc.games[cmd.game] = true
			if m.games[cmd.game] == nil {
				m.games[cmd.game] = map[*propConn]bool{}
			}
			m.games[cmd.game][pc] = true
		}
		m.deliver(pc, encode("game_joined", cmd.id, gameJoinedData{GameID: cmd.game.String(), gameView: viewOf(nil), Members: members}))
		if !in {
			m.broadcast(cmd.game, pc, msg.others)
		}
	case !in:
		m.count["not_in_game"]++
		m.refuse(pc, encodeError(&protoError{code: codeNotInGame, id: cmd.id, message: "x"}))
	case cmd.kind == cmdLeave:
		delete(pc.games, cmd.game)
		delete(m.games[cmd.game], pc)
		if len(m.games[cmd.game]) == 0 {
			delete(m.games, cmd.game)
		}
		m.deliver(pc, msg.self)
		m.broadcast(cmd.game, pc, msg.others)
	default:
		m.count["relayed"]++
		m.deliver(pc, withID(msg.others, cmd.id))
		m.broadcast(cmd.game, pc, msg.others)
	}
	m.dropSlow()
}

// sweep expires and warns as of now, oldest first as the hub does, in steps
// of cfg.sweepStep sessions with the slow consumers dropped after each step.
func (m *propModel) sweep(now time.Time) {
	timeout, warning := m.cfg.sessionTimeout, m.cfg.expiryWarning
	order := slices.Collect(maps.Values(m.live))
	slices.SortFunc(order, func(a, b *propConn) int { return a.touched - b.touched })
	looked, steps := 0, 1
walk:
	for _, pc := range order {
		if looked == m.cfg.sweepStep {
			m.dropSlow()
			looked, steps = 0, steps+1
		}
		if m.live[pc.c.sid] != pc {
			continue // dropped as slow meanwhile: out of the idle list, never looked at
		}
		looked++
		end := pc.last.Add(timeout)
		switch {
		case pc.warned:
			if !now.Before(pc.expiresAt) {
				m.end(pc, reasonExpired)
			}
		case warning > 0 && !now.Before(end.Add(-warning)):
			pc.warned, pc.expiresAt = true, laterOf(end, now.Add(warning))
			m.count["warned"]++
			m.deliver(pc, encodeExpiring(now, pc.expiresAt, nil))
		case warning == 0 && !now.Before(end):
			m.end(pc, reasonExpired)
		default:
			break walk
		}
	}
	if steps > 1 {
		m.count["split sweep"]++
	}
	m.dropSlow()
}

// canonHubFrame reduces a frame to what the model can predict: an error's
// message only as "present", game_joined's members after the joiner in sid
// order, since the hub lists the others in map order, and no offsets or epochs.
func canonHubFrame(b []byte) string {
	var f struct {
		Type string         `json:"type"`
		ID   string         `json:"id,omitempty"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Sprintf("not JSON: %q", b)
	}
	delete(f.Data, "offset") // checked on its own, by checkOffsets: the model does not sequence
	switch f.Type {
	case "error":
		msg, _ := f.Data["message"].(string)
		f.Data["message"] = msg != ""
	case "game_joined":
		delete(f.Data, "epoch")
		if ms, ok := f.Data["members"].([]any); ok && len(ms) > 1 {
			rest := ms[1:]
			sort.Slice(rest, func(i, j int) bool {
				return fmt.Sprint(rest[i].(map[string]any)["sid"]) < fmt.Sprint(rest[j].(map[string]any)["sid"])
			})
		}
	}
	out, _ := json.Marshal(f)
	return string(out)
}

// hubProp drives the hub and the model side by side.
type hubProp struct {
	t       *testing.T
	r       *rand.Rand
	h       *hub
	m       *propModel
	conns   []*propConn // every conn the hub accepted, in order
	refused []*conn     // conns refused for a taken sid
	nextSID int
	action  string // the current step, for failure messages
}

// randomStep picks one thing to tell the hub, tells it, and applies it to the model.
func (p *hubProp) randomStep() {
	live := p.liveConns()
	n := p.r.IntN(100)
	switch {
	case len(live) == 0 || (n < 14 && len(live) < 24):
		p.register()
	case n < 16:
		p.registerTaken(live)
	case n < 22:
		p.unregister(live[p.r.IntN(len(live))])
	case n < 25:
		p.staleUnregister()
	case n < 45:
		p.command(live[p.r.IntN(len(live))], cmdJoin)
	case n < 53:
		p.command(live[p.r.IntN(len(live))], cmdLeave)
	case n < 78:
		p.command(live[p.r.IntN(len(live))], []cmdKind{cmdDefensive, cmdOffensive, cmdRoll}[p.r.IntN(3)])
	case n < 86:
		p.command(live[p.r.IntN(len(live))], cmdHeartbeat)
	case n < 89:
		p.staleCommand()
	default:
		p.advance()
	}
}

// liveConns lists the conns the model holds a session for, in a stable order.
func (p *hubProp) liveConns() []*propConn {
	var live []*propConn
	for _, pc := range p.conns {
		if !pc.ended {
			live = append(live, pc)
		}
	}
	return live
}

// register adds a fresh conn: drained or tiny, anonymous or one of five users.
func (p *hubProp) register() {
	p.nextSID++
	var user *int64
	if p.r.IntN(10) >= 3 {
		user = hubUser(int64(p.r.IntN(5)))
	}
	pc := &propConn{games: map[uuid.UUID]bool{}, last: time.Now()}
	capacity := 1 << 12
	if p.r.IntN(10) < 3 {
		pc.tiny, capacity = true, 1+p.r.IntN(3)
	}
	pc.c = fakeHubConn(fmt.Sprintf("s%04d", p.nextSID), user, capacity)
	p.action = fmt.Sprintf("register %s (user %s, queue %d)", pc.c.sid, showHubUser(user), capacity)
	if !p.h.register(pc.c) {
		p.t.Fatalf("%s: refused", p.action)
	}
	p.conns = append(p.conns, pc)
	p.m.live[pc.c.sid] = pc
	p.m.touches++
	pc.touched = p.m.touches
}

// registerTaken tries a second conn with a live session's sid.
func (p *hubProp) registerTaken(live []*propConn) {
	sid := live[p.r.IntN(len(live))].c.sid
	c := fakeHubConn(sid, hubUser(99), 4)
	p.action = "register a second conn as " + sid
	if p.h.register(c) {
		p.t.Fatalf("%s: accepted", p.action)
	}
	p.refused = append(p.refused, c)
	p.m.count["refused"]++
}

// unregister ends a live conn the way its handler would, with a random reason;
// half the time the hub hears of it before the conn has stopped.
func (p *hubProp) unregister(pc *propConn) {
	reason := propEnds[p.r.IntN(len(propEnds))]
	p.action = fmt.Sprintf("unregister %s (%s)", pc.c.sid, reason.presence)
	if p.r.IntN(2) == 0 {
		pc.c.stop(reason)
	}
	hubTell(p.t, p.h, unregisterMsg{c: pc.c, sid: pc.c.sid, reason: reason})
	p.m.end(pc, reason)
	p.m.dropSlow()
}

// staleUnregister sends what a handler sends after the hub already ended its
// session, or an unregister for a sid that never existed.
func (p *hubProp) staleUnregister() {
	var gone []*propConn
	for _, pc := range p.conns {
		if pc.ended {
			gone = append(gone, pc)
		}
	}
	msg := unregisterMsg{sid: "never-registered", reason: reasonDisconnected}
	if len(gone) > 0 {
		pc := gone[p.r.IntN(len(gone))]
		msg = unregisterMsg{c: pc.c, sid: pc.c.sid, reason: pc.c.reason}
	}
	p.action = "stale unregister " + msg.sid
	hubTell(p.t, p.h, msg)
	p.m.count["stale unregister"]++
}

// command sends one client command of kind from pc, mostly about a game pc is in.
func (p *hubProp) command(pc *propConn, kind cmdKind) {
	cmd := command{kind: kind, game: propGames[p.r.IntN(len(propGames))]}
	if kind != cmdJoin && kind != cmdHeartbeat && len(pc.games) > 0 && p.r.IntN(10) < 8 {
		var mine []uuid.UUID
		for _, g := range propGames {
			if pc.games[g] {
				mine = append(mine, g)
			}
		}
		cmd.game = mine[p.r.IntN(len(mine))]
	}
	if p.r.IntN(2) == 0 {
		cmd.id = fmt.Sprint("id", p.m.step)
	}
	var msg commandMsg
	switch kind {
	case cmdHeartbeat, cmdJoin, cmdLeave:
		msg = hubCmd(pc.c, cmd, nil)
	default:
		msg = actionCmd(pc.c, kind, cmd.game, cmd.id, p.m.step)
	}
	p.action = fmt.Sprintf("%s: command %d about %s", pc.c.sid, kind, cmd.game)
	hubTell(p.t, p.h, msg)
	p.m.command(pc, msg, time.Now())
}

// staleCommand sends a command from a conn whose session has ended, as a
// reader that has not noticed yet would: the hub must ignore it.
func (p *hubProp) staleCommand() {
	for _, pc := range p.conns {
		if pc.ended && p.r.IntN(4) == 0 {
			msg := actionCmd(pc.c, cmdRoll, propGames[0], "", p.m.step)
			p.action = "stale command from " + pc.c.sid
			hubTell(p.t, p.h, msg)
			p.m.command(pc, msg, time.Now())
			return
		}
	}
	p.advance()
}

// advance lets fake time pass and sweeps as of the new now.
func (p *hubProp) advance() {
	d := []time.Duration{0, time.Second, 10 * time.Second, 30 * time.Second, 59 * time.Second,
		60 * time.Second, 61 * time.Second, 120 * time.Second, 241 * time.Second}[p.r.IntN(9)]
	time.Sleep(d)
	now := time.Now()
	p.action = fmt.Sprintf("sweep after %s", d)
	hubTell(p.t, p.h, sweepMsg{now: now})
	p.m.sweep(now)
}

// check compares the hub with the model after a step.
func (p *hubProp) check() {
	t := p.t
	t.Helper()
	synctest.Wait()
	st := hubStatsOf(t, p.h)
	users := map[int64]bool{}
	for _, pc := range p.m.live {
		if pc.c.userID != nil {
			users[*pc.c.userID] = true
		}
	}
	per := map[string]int{}
	for g, set := range p.m.games {
		per[g.String()] = len(set)
	}
	if st.TotalSessions != len(p.m.live) || st.UniqueUsers != len(users) || st.ActiveGames != len(per) || !sameGameCounts(seatsPerGame(st), per) {
		t.Errorf("stats %+v, model: %d sessions, %d users, games %v", st, len(p.m.live), len(users), per)
	}
	for g, n := range seatsPerGame(st) {
		if n <= 0 {
			t.Errorf("game %s listed with %d sessions", g, n)
		}
	}
	checkHubInvariants(t, p.h)
	for _, pc := range p.conns {
		p.checkConn(pc)
	}
	for _, c := range p.refused {
		if connStopped(c) || c.out.len() != 0 {
			t.Errorf("refused conn %s was stopped or sent frames", c.sid)
		}
	}
}

// checkConn compares one conn with the model: stopped or not and why, its
// session present or not, and the frames it got this step.
func (p *hubProp) checkConn(pc *propConn) {
	t := p.t
	t.Helper()
	sid := pc.c.sid
	s := p.h.idx.sessions[sid]
	switch {
	case connStopped(pc.c) != pc.ended:
		t.Errorf("conn %s: stopped %v, model says ended %v (%+v)", sid, connStopped(pc.c), pc.ended, pc.c.reason)
	case pc.ended && pc.c.reason != pc.reason:
		t.Errorf("conn %s stopped with %+v, model says %+v", sid, pc.c.reason, pc.reason)
	case pc.ended && s != nil:
		t.Errorf("conn %s was stopped but its session is still in the hub", sid)
	case !pc.ended && (s == nil || s.conn != pc.c):
		t.Errorf("conn %s is live but the hub holds no session for it", sid)
	}
	fresh := pc.ended && pc.endedStep == p.m.step
	if pc.tiny {
		switch {
		case fresh:
			pc.frozen = pc.c.out.len()
		case pc.ended && pc.c.out.len() != pc.frozen:
			t.Errorf("conn %s got frames after it was stopped", sid)
		case !pc.ended && pc.c.out.len() != pc.queued:
			t.Errorf("tiny conn %s holds %d frames, model %d", sid, pc.c.out.len(), pc.queued)
		}
		return
	}
	var got []string
	var raw [][]byte
	for pc.c.out.len() > 0 {
		f := pc.c.out.next()
		raw = append(raw, f)
		got = append(got, canonHubFrame(f))
	}
	want := pc.want
	pc.want = nil
	if fresh {
		return // which presences a conn ended mid-step still got depends on the hub's order
	}
	p.checkOffsets(pc, raw)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("conn %s got frames:\n  %s\nmodel wants:\n  %s", sid, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// checkOffsets checks the offsets a drained conn's frames carry: from the
// offset its game_joined names, every event of the game, gap-free and in
// order, until it leaves; a new epoch starts over.
func (p *hubProp) checkOffsets(pc *propConn, frames [][]byte) {
	if pc.seen == nil {
		pc.seen = map[string]gameSeen{}
	}
	for _, b := range frames {
		var f struct {
			Type string `json:"type"`
			Data struct {
				GameID string  `json:"game_id"`
				Epoch  string  `json:"epoch"`
				Offset *uint64 `json:"offset"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &f) != nil || f.Data.GameID == "" {
			continue
		}
		g := f.Data.GameID
		switch {
		case f.Type == "game_joined":
			if seen, ok := pc.seen[g]; ok && seen.epoch == f.Data.Epoch && seen.last != *f.Data.Offset {
				p.t.Errorf("conn %s re-joined %s at offset %d, having seen %d", pc.c.sid, g, *f.Data.Offset, seen.last)
			}
			pc.seen[g] = gameSeen{epoch: f.Data.Epoch, last: *f.Data.Offset}
		case f.Type == "game_left":
			delete(pc.seen, g)
		case f.Data.Offset != nil:
			seen, ok := pc.seen[g]
			if !ok || *f.Data.Offset != seen.last+1 {
				p.t.Errorf("conn %s got %s of %s at offset %d after %d (joined %v): a gap or a repeat", pc.c.sid, f.Type, g, *f.Data.Offset, seen.last, ok)
			}
			seen.last = *f.Data.Offset
			pc.seen[g] = seen
		}
	}
}

// gameSeen is where a conn is in one game's sequence of events.
type gameSeen struct {
	epoch string
	last  uint64
}

// TestHubRandomized runs a long seeded sequence of registers, unregisters with
// random reasons, joins, leaves, relays, heartbeats, stale messages, fake time
// and sweeps, with drained conns and tiny never-drained ones, and checks the
// hub against the model after every step. Rerun a failure with -hub.seed.
func TestHubRandomized(t *testing.T) {
	seed := *hubPropSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -run TestHubRandomized -hub.seed=%d)", seed, seed)
	synctest.Test(t, func(t *testing.T) {
		p := &hubProp{t: t, r: rand.New(rand.NewPCG(seed, seed>>32|1)), h: startTestHub(t, propConfig),
			m: &propModel{cfg: propConfig, live: map[string]*propConn{}, games: map[uuid.UUID]map[*propConn]bool{}, count: map[string]int{}}}
		for step := range *hubPropSteps {
			p.m.step = step
			p.randomStep()
			p.check()
			if t.Failed() {
				t.Fatalf("seed %d, step %d (%s): hub and model disagree", seed, step, p.action)
			}
		}

		// Shutdown stops every conn still live with going-away.
		stopTestHub(p.h)
		for _, pc := range p.conns {
			want := pc.reason
			if !pc.ended {
				want = reasonShutdown
			}
			checkConnStopped(t, pc.c, want)
		}
		t.Logf("%d conns, %v", len(p.conns), p.m.count)
		for _, what := range []string{"ended expired expired", "ended disconnected slow_consumer", "warned",
			"too_many_games", "game_full", "not_in_game", "error dropped", "relayed", "refused", "stale command",
			"split sweep"} {
			if *hubPropSteps >= 5000 && p.m.count[what] == 0 {
				t.Errorf("%d steps never produced %q: the generator needs tuning", *hubPropSteps, what)
			}
		}
	})
}

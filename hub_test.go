package main

import (
	"testing"
	"testing/synctest"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// The hub's own loop under test: register and unregister, stats, shutdown.
// The fakes and checks they use are in hub_helpers_test.go.

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

package main

import (
	"encoding/json"
	"testing"
	"testing/synctest"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// Sessions leaving the hub under test (hubdrop.go): each reason a conn ends
// with, and slow consumers dropped after a fan-out, one after another.

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

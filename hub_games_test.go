package main

// The hub's side of §8 under testing/synctest: sweeps at chosen instants
// against game timeouts, a late sweep that postpones rather than shortens a
// warning, timeouts that change under a session, and game_updated queued
// before the backend's reply.

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// hubGamesConfig is the default timing with two states: in_progress (120 s)
// shorter than SESSION_TIMEOUT (300 s), lobby (1800 s) longer.
func hubGamesConfig() hubConfig {
	cfg := hubDefaults
	cfg.stateTimeouts = map[string]time.Duration{"in_progress": 120 * time.Second, "lobby": 1800 * time.Second}
	return cfg
}

// hubPut applies a PUT of state to game and returns the hub's reply.
func hubPut(t *testing.T, h *hub, game uuid.UUID, state string) gameReply {
	t.Helper()
	patch, aerr := decodeSettings([]byte(`{"state":"`+state+`"}`), h.cfg.stateTimeouts, h.cfg.expiryWarning)
	if aerr != nil {
		t.Fatalf("PUT %s: %+v", state, aerr)
	}
	reply := make(chan gameReply, 1)
	rep, ok := ask(h, gameUpdateMsg{game: game, patch: patch, reply: reply}, reply)
	if !ok || rep.full {
		t.Fatalf("PUT %s refused: %+v", state, rep)
	}
	return rep
}

// hubExpiring decodes a session_expiring frame.
func hubExpiring(t *testing.T, f frame) (in time.Duration, at time.Time, game *string) {
	t.Helper()
	var d rsExpiring
	if f.Type != "session_expiring" || json.Unmarshal(f.Data, &d) != nil {
		t.Fatalf("got %s %s, want session_expiring", f.Type, f.Data)
	}
	at, err := time.Parse(time.RFC3339, d.ExpiresAt)
	if err != nil {
		t.Fatalf("expires_at %q: %v", d.ExpiresAt, err)
	}
	return time.Duration(d.ExpiresInMS) * time.Millisecond, at, d.GameID
}

func TestHubExpiryFollowsTheLongestGame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubGamesConfig())
		t0 := time.Now()
		at := func(d time.Duration) sweepMsg { return sweepMsg{now: t0.Add(d)} }
		hubPut(t, h, hubGame, "in_progress")
		hubPut(t, h, hubGame2, "lobby")
		ip, both, none := fakeHubConn("sid-ip", hubUser(1), 8), fakeHubConn("sid-both", hubUser(2), 8), fakeHubConn("sid-none", hubUser(3), 8)
		hubRegister(t, h, ip, both, none)
		hubTell(t, h, joinCmd(ip, hubGame, ""), joinCmd(both, hubGame, ""), joinCmd(both, hubGame2, ""))
		for _, c := range []*conn{ip, both, none} {
			takeQueued(t, c)
		}
		hubTell(t, h, at(60*time.Second-time.Millisecond))
		expectQueued(t, ip)
		hubTell(t, h, at(60*time.Second))
		in, when, game := hubExpiring(t, expectQueued(t, ip, "session_expiring")[0])
		if in != 60*time.Second || !when.Equal(t0.Add(120*time.Second)) || game == nil || *game != hubGame.String() {
			t.Errorf("in_progress warning: in %s at %v game %v, want 60s, t0+120s, %s", in, when, game, hubGame)
		}
		hubTell(t, h, at(120*time.Second-time.Millisecond))
		checkConnRunning(t, ip)
		hubTell(t, h, at(120*time.Second))
		checkConnStopped(t, ip, reasonExpired)
		checkHubPresence(t, expectQueued(t, both, "presence")[0], hubGame, ip, "left", presenceExpired)

		hubTell(t, h, at(240*time.Second)) // SESSION_TIMEOUT's warning, for the session in no game
		if _, _, game := hubExpiring(t, expectQueued(t, none, "session_expiring")[0]); game != nil {
			t.Errorf("a session in no game warned for game %s", *game)
		}
		hubTell(t, h, at(300*time.Second))
		checkConnStopped(t, none, reasonExpired)
		expectQueued(t, both) // in lobby too: 1800 s
		hubTell(t, h, at(1740*time.Second))
		if _, _, game := hubExpiring(t, expectQueued(t, both, "session_expiring")[0]); game == nil || *game != hubGame2.String() {
			t.Errorf("the session in two games warned for %v, want the lobby game", game)
		}
		hubTell(t, h, at(1800*time.Second))
		checkConnStopped(t, both, reasonExpired)
		checkHubInvariants(t, h)
	})
}

func TestHubLateSweepPostponesExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubGamesConfig())
		t0 := time.Now()
		at := func(d time.Duration) sweepMsg { return sweepMsg{now: t0.Add(d)} }
		hubPut(t, h, hubGame, "in_progress")
		a, b := fakeHubConn("sid-a", hubUser(1), 8), fakeHubConn("sid-b", hubUser(2), 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)
		// The first sweep in a's warning window comes at 100 s, b's past its
		// whole timeout: each warning still gives 60 s, and the expiry moves.
		hubTell(t, h, at(100*time.Second))
		for _, c := range []*conn{a, b} {
			in, when, _ := hubExpiring(t, expectQueued(t, c, "session_expiring")[0])
			if in != 60*time.Second || !when.Equal(t0.Add(160*time.Second)) {
				t.Errorf("%s warned at 100 s for %s (at %v), want 60 s, t0+160 s", c.sid, in, when.Sub(t0))
			}
		}
		hubTell(t, h, at(160*time.Second-time.Millisecond))
		checkConnRunning(t, a)
		checkConnRunning(t, b)
		hubTell(t, h, at(160*time.Second))
		checkConnStopped(t, a, reasonExpired)
		checkConnStopped(t, b, reasonExpired)
		checkHubInvariants(t, h)
	})
}

// oneMember starts a hub with hubGamesConfig and seats one session, sid-a
// of user 1, in hubGame, set first to state unless it is "". It returns the
// hub, the session's conn (its queue drained) and the time it started.
func oneMember(t *testing.T, state string) (*hub, *conn, time.Time) {
	t.Helper()
	h := startTestHub(t, hubGamesConfig())
	t0 := time.Now()
	if state != "" {
		hubPut(t, h, hubGame, state)
	}
	a := fakeHubConn("sid-a", hubUser(1), 8)
	hubRegister(t, h, a)
	hubTell(t, h, joinCmd(a, hubGame, ""))
	takeQueued(t, a)
	return h, a, t0
}

func TestHubTimeoutChangesUnderASession(t *testing.T) {
	t0Sweep := func(h *hub, t0 time.Time, d time.Duration) sweepMsg { return sweepMsg{now: t0.Add(d)} }
	t.Run("a longer timeout withdraws the warning; a new one comes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, a, t0 := oneMember(t, "in_progress")
			hubTell(t, h, t0Sweep(h, t0, 60*time.Second))
			expectQueued(t, a, "session_expiring")
			time.Sleep(90 * time.Second)
			hubPut(t, h, hubGame, "lobby")
			expectQueued(t, a, "game_updated")
			hubTell(t, h, t0Sweep(h, t0, 120*time.Second), t0Sweep(h, t0, 1000*time.Second))
			checkConnRunning(t, a) // not at the announced 120 s: its game is in the lobby now
			expectQueued(t, a)
			hubTell(t, h, t0Sweep(h, t0, 1740*time.Second))
			if _, when, _ := hubExpiring(t, expectQueued(t, a, "session_expiring")[0]); !when.Equal(t0.Add(1800 * time.Second)) {
				t.Errorf("the new warning announces %v, want t0+1800 s", when.Sub(t0))
			}
			hubTell(t, h, t0Sweep(h, t0, 1800*time.Second))
			checkConnStopped(t, a, reasonExpired)
		})
	})
	t.Run("a shorter timeout keeps the announced expiry", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, a, t0 := oneMember(t, "")
			hubTell(t, h, t0Sweep(h, t0, 240*time.Second)) // SESSION_TIMEOUT's warning: expiry at 300 s
			expectQueued(t, a, "session_expiring")
			time.Sleep(250 * time.Second)
			hubPut(t, h, hubGame, "in_progress") // 120 s: past already
			expectQueued(t, a, "game_updated")
			hubTell(t, h, t0Sweep(h, t0, 300*time.Second-time.Millisecond))
			checkConnRunning(t, a) // never sooner than it was told
			hubTell(t, h, t0Sweep(h, t0, 300*time.Second))
			checkConnStopped(t, a, reasonExpired)
		})
	})
	t.Run("a shorter timeout already past warns before it expires", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, a, t0 := oneMember(t, "lobby")
			time.Sleep(600 * time.Second)
			hubPut(t, h, hubGame, "in_progress")
			expectQueued(t, a, "game_updated")
			hubTell(t, h, t0Sweep(h, t0, 601*time.Second))
			if in, _, _ := hubExpiring(t, expectQueued(t, a, "session_expiring")[0]); in != 60*time.Second {
				t.Errorf("warned for %s, want the whole 60 s", in)
			}
			hubTell(t, h, t0Sweep(h, t0, 661*time.Second-time.Millisecond))
			checkConnRunning(t, a)
			hubTell(t, h, t0Sweep(h, t0, 661*time.Second))
			checkConnStopped(t, a, reasonExpired)
			checkHubInvariants(t, h)
		})
	})
	t.Run("a kick out of the longer game", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, a, t0 := oneMember(t, "lobby")
			time.Sleep(400 * time.Second)
			reply := make(chan int, 1)
			if n, _ := ask(h, kickMsg{game: hubGame, sid: a.sid, reply: reply}, reply); n != 1 {
				t.Fatalf("kick removed %d", n)
			}
			expectQueued(t, a, "game_left") // in no game now: SESSION_TIMEOUT, past already
			hubTell(t, h, t0Sweep(h, t0, 400*time.Second))
			if in, _, game := hubExpiring(t, expectQueued(t, a, "session_expiring")[0]); in != 60*time.Second || game != nil {
				t.Errorf("warned for %s game %v, want 60 s and no game", in, game)
			}
			checkConnRunning(t, a)
			checkHubInvariants(t, h)
		})
	})
}

func TestHubGameUpdatedQueuedBeforeTheReply(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubGamesConfig())
		a, b := fakeHubConn("sid-a", hubUser(1), 8), fakeHubConn("sid-b", nil, 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)
		rep := hubPut(t, h, hubGame, "in_progress")
		// No synctest.Wait: what the reply's receipt proves is queued already.
		for _, c := range []*conn{a, b} {
			if fs := takeQueued(t, c); len(fs) != 1 || fs[0].Type != "game_updated" {
				t.Fatalf("%s holds %v when the reply arrives, want game_updated", c.sid, fs)
			}
		}
		if rep.sessions != 2 || *rep.view.State != "in_progress" {
			t.Fatalf("reply %+v", rep)
		}
	})
}

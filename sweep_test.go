package main

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// The sweep under test (sweep.go): the warning and expiry at their exact
// instants, with and without a warning, activity that resets the clock, and
// expiry turned off.

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
		cmd   func(*conn) *commandMsg
		reply string
	}{
		{"heartbeat", func(c *conn) *commandMsg { return heartbeatCmd(c, "hb") }, "heartbeat_ack"},
		{"join_game", func(c *conn) *commandMsg { return joinCmd(c, hubGame2, "") }, "game_joined"},
		{"join_game again", func(c *conn) *commandMsg { return joinCmd(c, hubGame, "") }, "game_joined"},
		{"leave_game", func(c *conn) *commandMsg { return leaveCmd(c, hubGame, "") }, "game_left"},
		{"roll_dice", func(c *conn) *commandMsg { return actionCmd(c, cmdRoll, hubGame, "", 1) }, "dice_rolled"},
		{"submit_offensive_decision", func(c *conn) *commandMsg { return actionCmd(c, cmdOffensive, hubGame, "", 1) }, "offensive_decision"},
		{"roll_dice in a game not joined", func(c *conn) *commandMsg { return actionCmd(c, cmdRoll, hubGame3, "", 1) }, "error"},
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

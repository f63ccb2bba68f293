package main

// End-to-end tests of how long a session lives (../shared/protocol-v1.md):
// expiry with its warning, what counts as activity, and the missed pongs that
// end a connection that no longer answers. The e2e* helpers are in conn_test.go.

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// e2eExpiryConfig has sessions expire after 1 s of inactivity, with a warning
// 500 ms before and a sweep every 20 ms.
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

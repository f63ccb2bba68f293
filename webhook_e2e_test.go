package main

// End-to-end tests of presence webhooks (contract v2 §9): real clients on the
// real mux, a real receiver on loopback (webhook_helpers_test.go), and, once,
// the real binary.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// stopServer shuts s down now, as its cleanup would later (which then finds
// nothing left to do), so that a test can look at what shutdown delivered.
func stopServer(t *testing.T, s *testServer) {
	t.Helper()
	if err := s.shutdown(s.cfg.ShutdownTimeout, func(context.Context) error { s.ts.Close(); return nil }); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// closeNormally ends c with a goodbye (1000).
func closeNormally(c *rsClient) { _ = c.ws.Close(websocket.StatusNormalClosure, "") }

// TestWebhookReportsEveryPresenceChange: each way a member comes, goes away,
// comes back and leaves reaches the receiver once, in offset order, signed,
// with the reason the room heard, and nothing more arrives.
func TestWebhookReportsEveryPresenceChange(t *testing.T) {
	t.Run("joined, left, joined again, goodbyes, the last one included", func(t *testing.T) {
		rcv := newHookReceiver(t)
		cfg := withWebhook(t, rsResilient(t, time.Minute), rcv, nil)
		cfg.JWTSecret = testSecret
		s := startServer(t, cfg)
		game := uuid.NewString()
		since := time.Now()
		a := rsDial(t, withQueryToken(s.url, mint(t, jwt.SigningMethodHS256, []byte(testSecret), valid("7"))), nil)
		b := rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		b.send(e2eGameMsg("leave_game", "l1", game, nil))
		b.expect("game_left")
		a.presence(game, b.session.SID, "left", "left")
		b.join(game, "j2")
		a.presence(game, b.session.SID, "joined", "")
		closeNormally(b)
		a.presence(game, b.session.SID, "left", "disconnected")
		closeNormally(a) // the game's last member: nobody in the room hears it, the backend does
		rcv.awaitEvents(t, 6)
		stopServer(t, s)
		got := accepted(rcv.snapshot())
		A, B := a.session.SID, b.session.SID
		checkEvents(t, got, game, since, hookWant{A, "joined", "", 1}, hookWant{B, "joined", "", 2},
			hookWant{B, "left", "left", 3}, hookWant{B, "joined", "", 4}, hookWant{B, "left", "disconnected", 5},
			hookWant{A, "left", "disconnected", 6})
		for _, e := range got {
			if anon := e.SID == B; anon != (e.UserID == nil) || !anon && *e.UserID != 7 {
				t.Errorf("event %s has user_id %v, want 7 for a and null for the anonymous b", e, e.UserID)
			}
		}
	})

	t.Run("away, back, away again, window over", func(t *testing.T) {
		rcv := newHookReceiver(t)
		s := startServer(t, withWebhook(t, rsResilient(t, 500*time.Millisecond), rcv, nil))
		game := uuid.NewString()
		since := time.Now()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b)
		b.drop()
		a.presence(game, b.session.SID, "away", "disconnected")
		b2 := rsDial(t, s.url, nil)
		b2.resume("r1", b.session.ResumeToken, nil, b)
		a.presence(game, b.session.SID, "back", "")
		b2.drop()
		a.presence(game, b.session.SID, "away", "disconnected")
		a.presence(game, b.session.SID, "left", "disconnected")
		closeNormally(a)
		rcv.awaitEvents(t, 7)
		stopServer(t, s)
		A, B := a.session.SID, b.session.SID
		checkEvents(t, accepted(rcv.snapshot()), game, since, hookWant{A, "joined", "", 1}, hookWant{B, "joined", "", 2},
			hookWant{B, "away", "disconnected", 3}, hookWant{B, "back", "", 4}, hookWant{B, "away", "disconnected", 5},
			hookWant{B, "left", "disconnected", 6}, hookWant{A, "left", "disconnected", 7})
	})

	t.Run("idle expiry", func(t *testing.T) {
		rcv := newHookReceiver(t)
		cfg := withWebhook(t, rsResilient(t, time.Minute), rcv, nil)
		cfg.SessionTimeout, cfg.ExpiryWarning, cfg.ExpiryCheckInterval = time.Second, 0, 20*time.Millisecond
		s := startServer(t, cfg)
		game := uuid.NewString()
		since := time.Now()
		a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
		rsJoinAll(t, game, a, b) // a's last activity is older than b's: a expires first
		rcv.awaitEvents(t, 4)
		stopServer(t, s)
		A, B := a.session.SID, b.session.SID
		checkEvents(t, accepted(rcv.snapshot()), game, since, hookWant{A, "joined", "", 1}, hookWant{B, "joined", "", 2},
			hookWant{A, "left", "expired", 3}, hookWant{B, "left", "expired", 4})
	})

	t.Run("missed pong: away and left with timeout", func(t *testing.T) {
		rcv := newHookReceiver(t)
		cfg := withWebhook(t, rsResilient(t, 300*time.Millisecond), rcv, nil)
		cfg.PingInterval, cfg.PingTimeout = 100*time.Millisecond, 300*time.Millisecond
		s := startServer(t, cfg)
		game := uuid.NewString()
		since := time.Now()
		a := rsDial(t, s.url, nil)
		a.join(game, "ja")
		b := rsDialHeld(t, s.url, nil) // reads nothing, so answers no ping
		b.send(e2eGameMsg("join_game", "jb", game, nil))
		a.presence(game, b.session.SID, "joined", "")
		a.presence(game, b.session.SID, "away", "timeout")
		a.presence(game, b.session.SID, "left", "timeout")
		closeNormally(a)
		rcv.awaitEvents(t, 5)
		stopServer(t, s)
		A, B := a.session.SID, b.session.SID
		checkEvents(t, accepted(rcv.snapshot()), game, since, hookWant{A, "joined", "", 1}, hookWant{B, "joined", "", 2},
			hookWant{B, "away", "timeout", 3}, hookWant{B, "left", "timeout", 4}, hookWant{A, "left", "disconnected", 5})
	})
}

// TestWebhookShutdownDeliversWhatIsQueued: a shutdown ends every session on
// one node, so the backend hears each seat left (disconnected, with the
// offset it would have had), and shutdown returns only once the receiver has
// it all, within the budget.
func TestWebhookShutdownDeliversWhatIsQueued(t *testing.T) {
	rcv := newHookReceiver(t)
	s := startServer(t, withWebhook(t, rsResilient(t, time.Minute), rcv, nil)) // batches wait up to 1 s
	game, game2 := uuid.NewString(), uuid.NewString()
	a, b := rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	rsJoinAll(t, game, a, b)
	a.join(game2, "j2")
	start := time.Now()
	stopServer(t, s)
	if took := time.Since(start); took > s.cfg.ShutdownTimeout {
		t.Errorf("shutdown took %s, over its budget of %s", took, s.cfg.ShutdownTimeout)
	}
	got := accepted(rcv.snapshot()) // no waiting: shutdown has delivered them already
	var summary []string
	for _, e := range got {
		who := map[string]string{a.session.SID: "a", b.session.SID: "b"}[e.SID]
		g := map[string]string{game: "g", game2: "g2"}[e.GameID]
		what := e.Status
		if e.Reason != nil {
			what += " " + *e.Reason
		}
		summary = append(summary, g+" "+who+" "+what)
	}
	// The shutdown's lefts come after the rest, in no particular order, each
	// game's with the offsets that follow its last event.
	want := []string{"g a joined", "g b joined", "g2 a joined", "g a left disconnected", "g b left disconnected", "g2 a left disconnected"}
	if len(summary) != 6 || !slices.Equal(summary[:3], want[:3]) ||
		!slices.Equal(slices.Sorted(slices.Values(summary[3:])), want[3:]) {
		t.Fatalf("events %v, want %v (the last three in any order)", summary, want)
	}
	for key, n := range checkOffsetsInOrder(t, got) {
		if want := map[bool]int{true: 4, false: 2}[strings.HasPrefix(key, game)]; n != want {
			t.Errorf("game and epoch %s had %d events, want %d", key, n, want)
		}
	}
}

// TestWebhookBatchesABurst: 256 presence changes within a moment reach the
// receiver in POSTs of at most 100 events, each game's in offset order, each
// once; the first event of a POST waited about a second at most.
func TestWebhookBatchesABurst(t *testing.T) {
	rcv := newHookReceiver(t)
	cfg := withWebhook(t, testConfig(t), rcv, nil)
	cfg.RateLimit, cfg.RateBurst = 1000, 1000
	s := startServer(t, cfg)
	games := make([]string, 16)
	for i := range games {
		games[i] = uuid.NewString()
	}
	clients := make([]*rsClient, 8)
	for i := range clients {
		clients[i] = rsDial(t, s.url, nil)
	}
	// Every client joins every game, then every one leaves them: 16 events
	// per game, in one epoch (no game empties before its last leave).
	for _, c := range clients {
		for _, g := range games {
			c.send(e2eGameMsg("join_game", "", g, nil))
		}
	}
	rcv.awaitEvents(t, 128)
	for _, c := range clients {
		for _, g := range games {
			c.send(e2eGameMsg("leave_game", "", g, nil))
		}
	}
	rcv.awaitEvents(t, 256)
	stopServer(t, s)
	posts := rcv.snapshot()
	batched := false
	for _, p := range posts {
		if len(p.events) > 100 {
			t.Errorf("a POST carried %d events, over 100", len(p.events))
		}
		batched = batched || len(p.events) > 1
		first, _ := time.Parse(time.RFC3339Nano, p.events[0].Time)
		if wait := p.at.Sub(first); wait > 2*time.Second {
			t.Errorf("a POST's first event waited %s, want about 1 s at most", wait)
		}
	}
	if !batched {
		t.Errorf("%d POSTs of one event each: nothing was batched", len(posts))
	}
	got := accepted(posts)
	if len(got) != 256 {
		t.Fatalf("%d events, want 256", len(got))
	}
	seen := map[string]bool{}
	for _, e := range got {
		key := e.GameID + e.SID + e.Status
		if seen[key] {
			t.Errorf("event %s of game %s arrived twice", e, e.GameID)
		}
		seen[key] = true
	}
	for key, n := range checkOffsetsInOrder(t, got) {
		if n != 16 {
			t.Errorf("game and epoch %s had %d events, want 16", key, n)
		}
	}
}

// checkOffsetsInOrder checks that each game's events, epoch by epoch, came
// with offsets 1, 2, 3… in arrival order, none missing or repeated, and
// returns how many each game and epoch had.
func checkOffsetsInOrder(t *testing.T, got []hookEvent) map[string]int {
	t.Helper()
	perEpoch := map[string][]uint64{}
	for _, e := range got {
		key := e.GameID + " " + e.Epoch
		perEpoch[key] = append(perEpoch[key], e.Offset)
	}
	counts := map[string]int{}
	for key, offsets := range perEpoch {
		for i, o := range offsets {
			if o != uint64(i+1) {
				t.Fatalf("game and epoch %s: offsets %v, want 1, 2, 3… in order", key, offsets)
			}
		}
		counts[key] = len(offsets)
	}
	return counts
}

// TestWebhookReceiverFailingFor3sLosesNothing: a receiver that answers 500 for
// 3 s, then recovers, gets every event once, in order: each failed batch was
// sent again, the same body freshly signed, before any later one.
func TestWebhookReceiverFailingFor3sLosesNothing(t *testing.T) {
	rcv := newHookReceiver(t)
	var firstAt time.Time
	rcv.answerWith(func(n int) int {
		if n == 0 {
			firstAt = time.Now()
		}
		if time.Since(firstAt) < 3*time.Second {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	cfg := withWebhook(t, rsResilient(t, time.Minute), rcv, func(w *webhookTiming) {
		w.batchMax, w.batchWait, w.backoffBase, w.backoffCap = 10, 50*time.Millisecond, 50*time.Millisecond, 400*time.Millisecond
	})
	cfg.RateLimit, cfg.RateBurst = 1000, 1000
	s := startServer(t, cfg)
	games := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	clients := []*rsClient{rsDial(t, s.url, nil), rsDial(t, s.url, nil), rsDial(t, s.url, nil), rsDial(t, s.url, nil)}
	churn := func(cs []*rsClient) { // each joins every game, then leaves the first
		for _, c := range cs {
			for _, g := range games {
				c.send(e2eGameMsg("join_game", "", g, nil))
			}
			c.send(e2eGameMsg("leave_game", "", games[0], nil))
		}
	}
	churn(clients[:2])
	rcv.await(t, waitFor, "failed POST", func(p []hookPost) bool { return len(p) > 0 && p[0].status == 500 })
	churn(clients[2:])    // while the receiver is failing
	const churned = 4 * 4 // three joins and a leave each
	rcv.await(t, 3*time.Second+2*waitFor, "all events", func(p []hookPost) bool { return len(accepted(p)) >= churned })
	stopServer(t, s) // and the shutdown's lefts: each client's two seats left
	posts := rcv.snapshot()
	got := accepted(posts)
	if len(got) != churned+4*2 {
		t.Fatalf("%d events, want %d: %v", len(got), churned+4*2, got)
	}
	checkOffsetsInOrder(t, got)
	// Until the first success every attempt carried the first batch, freshly signed.
	stamps := map[int64]bool{}
	for _, p := range posts {
		if p.body != posts[0].body {
			t.Fatalf("a later batch was sent before the first was accepted")
		}
		stamps[p.timestamp] = true
		if p.status == http.StatusOK {
			break
		}
	}
	if len(stamps) < 2 {
		t.Errorf("3 s of retries all carried one timestamp: retries are not signed afresh")
	}
	if s.hook.failures.Load() == 0 || s.hook.dropped.Load() != 0 {
		t.Errorf("failed POSTs %d, dropped events %d: want some and none", s.hook.failures.Load(), s.hook.dropped.Load())
	}
}

// TestWebhookHangingReceiverDelaysNoHeartbeat: while the receiver holds a POST
// (up to the 5 s POST timeout), presence changes keep queuing and every
// heartbeat_ack and health answer comes back in far less than that: neither
// the hub nor a conn waits for delivery.
func TestWebhookHangingReceiverDelaysNoHeartbeat(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.answerWith(func(n int) int {
		if n == 0 {
			return hookHang
		}
		return http.StatusOK
	})
	cfg := withWebhook(t, testConfig(t), rcv, func(w *webhookTiming) { w.batchWait = 10 * time.Millisecond })
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6 // the churner sends as fast as the server answers
	s := startServer(t, cfg)
	t.Cleanup(rcv.unhang) // before the server's shutdown, which would otherwise wait for the POST to time out
	probe, anchor, churner := rsDial(t, s.url, nil), rsDial(t, s.url, nil), rsDial(t, s.url, nil)
	game := uuid.NewString()
	anchor.join(game, "j0") // the game never empties: one epoch, offsets from 1
	churner.join(game, "j1")
	rcv.awaitHanging(t)

	var worst, worstHealth time.Duration
	rounds := 0
	for start := time.Now(); time.Since(start) < time.Second && rounds < 1500; rounds++ {
		churner.send(e2eGameMsg("leave_game", "", game, nil))
		churner.expect("game_left")
		churner.send(e2eGameMsg("join_game", "", game, nil))
		churner.expect("game_joined")
		sent := time.Now()
		id := fmt.Sprintf("hb-%d", rounds)
		probe.send(e2eMsg("heartbeat", id, nil))
		if f := probe.expect("heartbeat_ack"); f.ID != id {
			t.Fatalf("heartbeat_ack %s, want id %s", f.raw, id)
		}
		worst = max(worst, time.Since(sent))
		if rounds%20 == 0 {
			sent = time.Now()
			if status, _, err := getStatus(s.ts.URL + "/health/connections"); err != nil || status != http.StatusOK {
				t.Fatalf("health: %d %v", status, err)
			}
			worstHealth = max(worstHealth, time.Since(sent))
		}
	}
	if rcv.hangingNow() == 0 {
		t.Fatal("the receiver stopped hanging during the measurement: it measured nothing")
	}
	t.Logf("%d rounds while the receiver hung: slowest heartbeat round trip %s, slowest health %s", rounds, worst, worstHealth)
	if limit := cfg.webhookTiming.postTimeout / 5; worst > limit || worstHealth > limit {
		t.Errorf("slowest heartbeat %s, health %s: want far below the POST timeout (under %s)", worst, worstHealth, limit)
	}
	if n, _ := s.hook.queued(); n == 0 {
		t.Errorf("nothing queued behind the hanging POST")
	}
	rcv.unhang()
	total := 2 + 2*rounds
	got := rcv.awaitEvents(t, total)
	for i, e := range got {
		if e.Offset != uint64(i+1) {
			t.Fatalf("event %d has offset %d: the queue lost or reordered events", i, e.Offset)
		}
	}
}

// TestWebhookFromTheBinary: the real process, configured from its
// environment, POSTs presence to the receiver, logs only the receiver's
// scheme and host, and at SIGTERM delivers the seats' lefts before it exits.
func TestWebhookFromTheBinary(t *testing.T) {
	rcv := newHookReceiver(t)
	p := servertest.Start(t, servertest.Options{Env: map[string]string{
		"WEBHOOK_URL": rcv.url + "?key=in-the-query", "WEBHOOK_SECRET": webhookTestSecret, "RESUME_WINDOW": "0",
	}})
	game := uuid.NewString()
	since := time.Now()
	a, b := rsDial(t, p.WSURL(), nil), rsDial(t, p.WSURL(), nil)
	rsJoinAll(t, game, a, b)
	closeNormally(a)
	b.presence(game, a.session.SID, "left", "disconnected")
	rcv.awaitEvents(t, 3)
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.Log())
	}
	A, B := a.session.SID, b.session.SID
	checkEvents(t, accepted(rcv.snapshot()), game, since, hookWant{A, "joined", "", 1}, hookWant{B, "joined", "", 2},
		hookWant{A, "left", "disconnected", 3}, hookWant{B, "left", "disconnected", 4})
	log := p.Log()
	if want := `"target":"` + rcv.ts.URL + `"`; !strings.Contains(log, want) {
		t.Errorf("the log does not say %s:\n%s", want, log)
	}
	for _, secret := range []string{"in-the-query", webhookTestSecret, "/hooks/presence"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log shows %q:\n%s", secret, log)
		}
	}
}

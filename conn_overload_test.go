package main

// End-to-end tests of clients that take or send more than they may
// (../shared/protocol-v1.md): a slow consumer, a burst and a flood over the
// rate limit; and the flood tracker's own table. The e2e* helpers are in
// conn_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// TestSlowConsumerCloses1008: with SEND_QUEUE_SIZE=8, a member that stops
// reading while another floods its game is dropped (health, and presence to
// the others); the remaining members receive every frame in order; once the
// slow one reads again it finds what was queued for it, in order, then close 1008.
func TestSlowConsumerCloses1008(t *testing.T) {
	cfg := testConfig(t)
	cfg.SendQueueSize = 8
	cfg.PingInterval = time.Minute // liveness must not end the slow client first
	cfg.PingTimeout = time.Minute
	cfg.RateLimit, cfg.RateBurst = 1e6, 1_000_000
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b, c := dial(t, s.url, nil), dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b, c) // b reads nothing after this
	sa, sc := a.e2eRead(), c.e2eRead()

	// a floods decisions of 32 KiB, at most window ahead of its own echoes,
	// so that a and c, which read, never fill their queues, while the socket
	// buffers on the way to b (some MiB on loopback) fill, then b's queue.
	// Messages are built by hand and checked with one decode: under -race
	// JSON work on MiBs is what this test spends its time on.
	pad := strings.Repeat("x", 32<<10)
	decision := func(seq int) string {
		return `{"type":"submit_defensive_decision","id":"` + strconv.Itoa(seq) + `","data":{"game_id":"` + game +
			`","decision":{"seq":` + strconv.Itoa(seq) + `,"pad":"` + pad + `"}}}`
	}
	// seqOf returns the seq of a defensive_decision frame, or -1 for any other frame.
	seqOf := func(f frame) int {
		if f.Type != "defensive_decision" {
			return -1
		}
		var d struct {
			GameID   string `json:"game_id"`
			SID      string `json:"sid"`
			Decision struct{ Seq *int }
		}
		if err := json.Unmarshal(f.Data, &d); err != nil || d.Decision.Seq == nil || d.GameID != game || d.SID != a.session.SID {
			t.Fatalf("defensive_decision %.200s is not a's (%v)", f.Data, err)
		}
		return *d.Decision.Seq
	}
	const window, maxFrames, after = 4, 800, 16
	sent, echoed, dropAt, aPresence := 0, 0, -1, 0
	readA := func() {
		t.Helper()
		f := sa.next(waitFor)
		if f.Type == "presence" {
			e2ePresenceIs(t, f.frame, game, b.session.SID, "left", "disconnected")
			aPresence++
			return
		}
		if seq := seqOf(f.frame); seq != echoed || f.ID != strconv.Itoa(seq) {
			t.Fatalf("a's echo %d id %q, want %d with its id", seq, f.ID, echoed)
		}
		echoed++
	}
	for ; dropAt < 0 || sent < dropAt+after; sent++ {
		if sent == maxFrames {
			t.Fatalf("b still connected after %d frames of 32 KiB", sent)
		}
		a.send(decision(sent))
		for sent+1-echoed > window {
			readA()
		}
		if dropAt < 0 && sent%8 == 7 && s.health(t).TotalSessions == 2 {
			dropAt = sent
		}
	}
	for echoed < sent || aPresence == 0 {
		readA()
	}
	if aPresence != 1 {
		t.Fatalf("a heard b leave %d times, want once", aPresence)
	}
	e2eHealthIs(t, s, 2, map[string]int{game: 2})

	// c receives every decision, in order and without id, and b's departure once.
	next, cPresence := 0, 0
	for next < sent {
		f := sc.next(waitFor)
		if f.Type == "presence" {
			e2ePresenceIs(t, f.frame, game, b.session.SID, "left", "disconnected")
			cPresence++
			continue
		}
		if seq := seqOf(f.frame); seq != next || f.ID != "" {
			t.Fatalf("c got decision %d id %q, want %d without id", seq, f.ID, next)
		}
		next++
	}
	if cPresence != 1 {
		t.Fatalf("c heard b leave %d times, want once", cPresence)
	}
	sa.alive(false)
	sc.alive(false)

	// b reads again: a prefix of the flood, in order, then close 1008.
	code, _, frames := b.e2eRead().end(waitFor)
	for i, f := range frames {
		if seq := seqOf(f.frame); seq != i {
			t.Fatalf("b's frame %d is %s decision %d, want decision %d", i, f.Type, seq, i)
		}
	}
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("b's close code %d after %d frames, want 1008", code, len(frames))
	}
	if len(frames) >= sent {
		t.Fatalf("b received all %d frames; it was never behind", sent)
	}
	e2eCloseAll(t, s, a, c)
}

// TestRateLimitBurst: with RATE_LIMIT=5 and RATE_BURST=5, a burst of 20 gets
// the burst through and rate_limited errors, echoing ids, for the rest; the
// connection stays open, and another session's bucket is untouched.
func TestRateLimitBurst(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 5, 5
	s := startServer(t, cfg)
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	const burst = 20
	start := time.Now()
	for i := range burst {
		a.send(e2eMsg("heartbeat", fmt.Sprintf("h%d", i), nil))
	}
	elapsed := time.Since(start)
	got := map[string]string{}
	acks, limited := 0, 0
	for range burst {
		f := a.read()
		switch f.Type {
		case "heartbeat_ack":
			acks++
		case "error":
			var e e2eError
			e2eWire(t, f, &e, "code", "message")
			if e.Code != "rate_limited" || e.Message == "" {
				t.Fatalf("error %s, want rate_limited", f.Data)
			}
			limited++
		default:
			t.Fatalf("got %s %s", f.Type, f.Data)
		}
		if _, dup := got[f.ID]; dup || !strings.HasPrefix(f.ID, "h") {
			t.Fatalf("reply id %q duplicated or unknown", f.ID)
		}
		got[f.ID] = f.Type
	}
	maxAllowed := cfg.RateBurst + int(elapsed.Seconds()*cfg.RateLimit) + 1
	if acks < cfg.RateBurst || acks > maxAllowed || limited == 0 {
		t.Fatalf("%d acks and %d rate_limited in %s, want %d to %d acks and the rest limited",
			acks, limited, elapsed, cfg.RateBurst, maxAllowed)
	}
	// b has its own bucket: a whole burst goes through.
	for i := range cfg.RateBurst {
		b.send(e2eMsg("heartbeat", fmt.Sprintf("b%d", i), nil))
	}
	for i := range cfg.RateBurst {
		if f := b.expect("heartbeat_ack"); f.ID != fmt.Sprintf("b%d", i) {
			t.Fatalf("b's ack id %q, want b%d", f.ID, i)
		}
	}
	// a is still connected: once its bucket refills, a heartbeat is answered.
	n := 0
	eventually(t, "a heartbeat answered after the burst", func() bool {
		n++
		id := fmt.Sprintf("again-%d", n)
		a.send(e2eMsg("heartbeat", id, nil))
		f := a.read()
		if f.Type == "heartbeat_ack" && f.ID == id {
			return true
		}
		a.e2eErrorFrame(f, "rate_limited", id)
		return false
	})
	e2eHealthIs(t, s, 2, map[string]int{})
	e2eCloseAll(t, s, a, b)
}

// e2eErrorFrame checks that f, already read, is an error with code and id.
func (c *client) e2eErrorFrame(f frame, code, id string) {
	c.t.Helper()
	var e e2eError
	if f.Type == "error" {
		e2eWire(c.t, f, &e, "code", "message")
	}
	if f.Type != "error" || e.Code != code || f.ID != id {
		c.t.Fatalf("got %s id %q %s, want error %s id %q", f.Type, f.ID, f.Data, code, id)
	}
}

// TestRateLimitFloodCloses1008: a session that keeps sending faster than its
// rate for longer than the grace is closed with 1008, no sooner than the
// grace; the other member of its game hears it left and is unaffected.
func TestRateLimitFloodCloses1008(t *testing.T) {
	cfg := testConfig(t)
	cfg.RateLimit, cfg.RateBurst = 5, 5
	cfg.rateLimitGrace = 200 * time.Millisecond
	cfg.SendQueueSize = 1 << 14 // the flooder reads its errors; it must not end as a slow consumer
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := dial(t, s.url, nil), dial(t, s.url, nil)
	e2eJoinAll(t, game, a, b)
	sa, sb := a.e2eRead(), b.e2eRead() // b reads, so it keeps answering pings

	// a sends a heartbeat every millisecond, 200 times its rate, until its
	// connection fails or the test ends.
	stop, flooded := make(chan struct{}), make(chan error, 1)
	start := time.Now()
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				flooded <- nil
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			err := a.ws.Write(ctx, websocket.MessageText, []byte(e2eMsg("heartbeat", fmt.Sprintf("f%d", i), nil)))
			cancel()
			if err != nil {
				flooded <- err
				return
			}
		}
	}()
	defer func() { close(stop); <-flooded }()

	sb.alive(false) // unaffected while a floods
	code, at, frames, ended := sa.tryEnd(10 * cfg.rateLimitGrace)
	acks, limited := 0, 0
	for _, f := range frames {
		switch {
		case f.Type == "heartbeat_ack":
			acks++
		case f.Type == "error":
			var e e2eError
			e2eWire(t, f.frame, &e, "code")
			if e.Code != "rate_limited" || !strings.HasPrefix(f.ID, "f") {
				t.Fatalf("a got error %s id %q, want rate_limited", f.Data, f.ID)
			}
			limited++
		default:
			t.Fatalf("a got %s %s", f.Type, f.Data)
		}
	}
	if !ended {
		t.Fatalf("a still connected after flooding for %s, %d times the %s grace: %d heartbeats answered, %d rate_limited",
			time.Since(start), 10, cfg.rateLimitGrace, acks, limited)
	}
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	if at.Sub(start) < cfg.rateLimitGrace {
		t.Errorf("closed %s into the flood, before the %s grace", at.Sub(start), cfg.rateLimitGrace)
	}
	if limited == 0 {
		t.Errorf("closed without a single rate_limited error (%d acks)", acks)
	}
	e2ePresenceIs(t, sb.expect("presence").frame, game, a.session.SID, "left", "disconnected")
	sb.alive(false)
	e2eHealthIs(t, s, 1, map[string]int{game: 1})
	e2eCloseAll(t, s, b)
}

// TestFloodTracker checks what counts as being rate limited continuously:
// refusals without a break longer than floodGap, for longer than the grace.
func TestFloodTracker(t *testing.T) {
	const grace = 5 * time.Second
	start := time.Unix(1000, 0)
	tests := []struct {
		name     string
		every    time.Duration // spacing of refusals
		for_     time.Duration // how long the refusals go on
		wantStop bool
	}{
		{"a flood refused every 10ms is ended after the grace", 10 * time.Millisecond, 6 * time.Second, true},
		{"a flood shorter than the grace is not ended", 10 * time.Millisecond, 4 * time.Second, false},
		{"refusals with gaps longer than floodGap never add up", floodGap + time.Millisecond, time.Minute, false},
		{"refusals just inside floodGap add up", floodGap - time.Millisecond, 7 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f floodTracker
			stopped := false
			for at := time.Duration(0); at <= tc.for_ && !stopped; at += tc.every {
				stopped = f.refused(start.Add(at), grace)
			}
			if stopped != tc.wantStop {
				t.Fatalf("stopped = %v, want %v", stopped, tc.wantStop)
			}
		})
	}
}

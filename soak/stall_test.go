package soak

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestSoakStalledReader checks what happens to a connection the server has
// dropped as a slow consumer while its client keeps the TCP connection open
// and never reads again. The contract closes a connection whose peer stops
// answering pings within PING_INTERVAL + PING_TIMEOUT; such a peer answers
// none. Before the writer had a write deadline, the dropped connection's
// writer stayed blocked in a write forever, no ping was ever sent, and the
// connection (two goroutines, a socket and a MAX_SESSIONS slot) was held
// until the client read or went.
func TestSoakStalledReader(t *testing.T) {
	const interval, timeout = 2 * time.Second, 2 * time.Second
	p := startServer(t, map[string]string{
		"SEND_QUEUE_SIZE": "64",
		"PING_INTERVAL":   interval.String(),
		"PING_TIMEOUT":    timeout.String(),
		"MAX_SESSIONS":    "2",
		"SESSION_TIMEOUT": "0",
		"RATE_LIMIT":      "100000",
		"RATE_BURST":      "100000",
		"LOG_LEVEL":       "info",
	})
	baseG := restingGoroutines(t, p)
	game := uuid.NewString()

	slow, err := dial(t.Context(), p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.ws.CloseNow()
	if err := slow.join(game); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.readUntil(10*time.Second, func(f *frameIn) bool { return f.Type == "game_joined" }); err != nil {
		t.Fatal(err)
	}
	fast, err := dial(t.Context(), p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The fast member keeps at most 16 decisions unread by itself, so that
	// its own queue of 64 cannot be the one that overflows.
	var back atomic.Int64
	progress := make(chan struct{}, 1)
	fast.startReader(func(f *frameIn, _ int64) {
		if f.isDecision() && f.Data.SID == fast.sid {
			back.Add(1)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	})
	defer func() { _ = fast.ws.CloseNow(); <-fast.done }()
	if err := fast.join(game); err != nil {
		t.Fatal(err)
	}
	// Fill the slow member's TCP buffers and queue until the server drops it,
	// before its first ping is due, so that no ping is in flight.
	pad := strings.Repeat("x", 1500)
	var dropped time.Time
	for seq := 1; seq <= 10000 && dropped.IsZero(); seq++ {
		for int64(seq-1)-back.Load() >= 16 {
			select {
			case <-progress:
			case <-fast.done:
				t.Fatalf("the fast member's connection ended: %v; server: %s", fast.err, endings(p))
			}
		}
		if err := fast.submit(game, decision{Seq: seq, Pad: pad}); err != nil {
			_ = fast.ws.CloseNow()
			<-fast.done
			code, reason := closeStatus(fast.err)
			t.Fatalf("the fast member's send %d: %v; its connection ended with %d %q; server: %s", seq, err, code, reason, endings(p))
		}
		if seq%50 == 0 {
			if h, err := getHealth(p); err == nil && h.TotalSessions == 1 {
				dropped = time.Now()
			}
		}
	}
	if dropped.IsZero() {
		t.Fatal("the slow member was never dropped")
	}
	_ = fast.ws.CloseNow()
	<-fast.done
	waitHealth(t, p, 10*time.Second, "idle", health.idle)

	// Within the liveness bound (plus slack) the server must have let go.
	bound := interval + timeout + 2*time.Second
	var last health
	ok, _ := poll(time.Until(dropped.Add(bound)), 100*time.Millisecond, func() (bool, string) {
		h, err := getHealth(p)
		last = h
		return err == nil && h.Goroutines <= baseG+1, "" // the dropped connection alone is +2
	})
	held := time.Since(dropped)
	// And the slots of MAX_SESSIONS=2 are both free for new sessions.
	var refused error
	for range 2 {
		c, err := dial(t.Context(), p, 10*time.Second)
		if err != nil {
			refused = err
			break
		}
		defer c.ws.CloseNow()
	}
	table(t, "stalled reader, dropped as slow consumer, client never reads again", [][]string{
		{"server goroutines: baseline / at the end", itoa(baseG) + " / " + itoa(last.Goroutines)},
		{"watched after the drop", held.Round(time.Millisecond).String() + " (bound " + bound.String() + " incl. 2 s slack)"},
		{"2nd new session, MAX_SESSIONS=2, health 0", errString(refused)},
	})
	if !ok {
		t.Errorf("%s after the drop the server still holds %d goroutines over its baseline for the dropped connection; "+
			"the contract closes a peer that answers no ping within PING_INTERVAL + PING_TIMEOUT = %s", held.Round(time.Millisecond), last.Goroutines-baseG, interval+timeout)
	}
	if refused != nil {
		t.Errorf("health says no session, yet a second session under MAX_SESSIONS=2 is refused: %v", refused)
	}
}

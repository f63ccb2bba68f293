package soak

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

const (
	floodMembers = 4
	floodEvery   = 50 * time.Millisecond // each normal member's pace: RATE_LIMIT exactly
	floodQuiet   = 3 * time.Second       // the baseline phase, without the flooder
	floodWindow  = 64                    // the flooder's messages in flight (each is answered, by an error or its event)
)

// normalMember keeps to the rate limit and measures how long the others'
// decisions take to reach it. Its reader goroutine alone writes the fields
// below the atomics; the test reads them after done.
type normalMember struct {
	*client
	normals map[string]bool // the sids of all normal members, set before the reader starts
	joined  *countdown

	sent       atomic.Int64 // decisions its sender has sent
	gotNormals atomic.Int64 // decisions received from the other normal members
	lefts      atomic.Int64 // presence "left" frames received (only the flooder leaves)

	members    map[string]bool
	joinedOnce bool
	lastSeq    map[string]int
	outOfOrder int
	samples    []latency
	fromOthers int // decisions from a non-normal member (the flooder)
	errFrames  []string
	left       map[string]string // sid -> reason of presence "left"
}

type latency struct{ sent, took int64 }

func (m *normalMember) handle(f *frameIn, at int64) {
	switch {
	case f.Type == "game_joined":
		for _, mb := range f.Data.Members {
			m.members[mb.SID] = true
		}
	case f.Type == "presence" && f.Data.Status == "joined":
		m.members[f.Data.SID] = true
	case f.Type == "presence" && f.Data.Status == "left":
		m.left[f.Data.SID] = f.Data.Reason
		m.lefts.Add(1)
	case f.isDecision() && f.Data.SID == m.sid:
	case f.isDecision() && m.normals[f.Data.SID]:
		d := f.Data.Decision
		if d.Seq != m.lastSeq[f.Data.SID]+1 {
			m.outOfOrder++
		}
		m.lastSeq[f.Data.SID] = d.Seq
		m.samples = append(m.samples, latency{sent: d.Sent, took: at - d.Sent})
		m.gotNormals.Add(1)
	case f.isDecision():
		m.fromOthers++
	case f.Type == "error":
		m.errFrames = append(m.errFrames, string(f.Data.Code)+": "+f.Data.Message)
	}
	if !m.joinedOnce && len(m.members) == floodMembers {
		m.joinedOnce = true
		m.joined.done()
	}
}

// flooder sends as fast as its replies come back and counts the refusals.
type flooder struct {
	*client
	window   chan struct{}
	limited  atomic.Int64
	firstLim atomic.Int64 // arrival of the first rate_limited error; 0 until then
	accepted atomic.Int64 // its own decisions relayed back
}

func (f *flooder) handle(fr *frameIn, at int64) {
	if fr.Type == "error" && fr.Data.Code == "rate_limited" {
		f.limited.Add(1)
		f.firstLim.CompareAndSwap(0, at)
	}
	if fr.isDecision() && fr.Data.SID == f.sid {
		f.accepted.Add(1)
	}
	if fr.ID != "" {
		select {
		case <-f.window:
		default:
		}
	}
}

// TestSoakFlood has four members of a game exchange decisions at the rate
// limit while a fifth floods. The flooder must be refused with rate_limited
// and closed with 1008 after the contract's grace of continuous limiting; the
// four must lose nothing, in order, and their latency is reported for a quiet
// phase and for the flood phase side by side.
func TestSoakFlood(t *testing.T) {
	grace := *flagFlood
	capFlood := max(15*time.Second, 3*grace)
	p := startServer(t, map[string]string{
		"RATE_LIMIT":      "20",
		"RATE_BURST":      "40",
		"PING_INTERVAL":   "5s",
		"PING_TIMEOUT":    "5s",
		"SESSION_TIMEOUT": "0",
		"LOG_LEVEL":       "info",
	})
	game := uuid.NewString()

	joined := newCountdown(floodMembers)
	normals := map[string]bool{}
	members := make([]*normalMember, floodMembers)
	for i := range members {
		c, err := dial(t.Context(), p, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.ws.CloseNow() }()
		normals[c.sid] = true
		members[i] = &normalMember{client: c, normals: normals, joined: joined,
			members: map[string]bool{}, lastSeq: map[string]int{}, left: map[string]string{}}
	}
	for _, m := range members {
		m.startReader(m.handle)
		defer func() { _ = m.ws.CloseNow(); <-m.done }()
		if err := m.join(game); err != nil {
			t.Fatal(err)
		}
	}
	if !joined.wait(10 * time.Second) {
		t.Fatal("the members did not all see the game of four")
	}

	// Each member sends a decision every 50 ms until stopped.
	stop := make(chan struct{})
	var senders sync.WaitGroup
	var sendErr atomic.Value
	for _, m := range members {
		senders.Add(1)
		go func() {
			defer senders.Done()
			tick := time.NewTicker(floodEvery)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				seq := int(m.sent.Load()) + 1
				if err := m.submit(game, decision{Seq: seq, Sent: now()}); err != nil {
					sendErr.CompareAndSwap(nil, err.Error())
					return
				}
				m.sent.Store(int64(seq))
			}
		}()
	}
	stopSenders := sync.OnceFunc(func() { close(stop); senders.Wait() })
	defer stopSenders()

	quietStart := now()
	<-time.After(floodQuiet) // the quiet phase's length: pacing, not synchronisation

	// The flooder joins, then sends as fast as its answers come back.
	fl := &flooder{window: make(chan struct{}, floodWindow)}
	c, err := dial(t.Context(), p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fl.client = c
	defer func() { _ = c.ws.CloseNow() }()
	if err := c.join(game); err != nil {
		t.Fatal(err)
	}
	if _, err := c.readUntil(10*time.Second, func(f *frameIn) bool { return f.Type == "game_joined" }); err != nil {
		t.Fatalf("flooder's game_joined: %v", err)
	}
	c.startReader(fl.handle)
	defer func() { _ = c.ws.CloseNow(); <-c.done }()
	floodStart := now()
	sentFlood := 0
	capTimer := time.NewTimer(capFlood)
	defer capTimer.Stop()
flood:
	for {
		select {
		case fl.window <- struct{}{}:
		case <-c.done:
			break flood
		case <-capTimer.C:
			break flood
		}
		sentFlood++
		if err := c.send(5*time.Second, "submit_offensive_decision", "f"+strconv.Itoa(sentFlood),
			map[string]any{"game_id": game, "decision": map[string]int{"n": sentFlood}}); err != nil {
			break // the server has closed it (or is closing it)
		}
	}
	// The close frame arrives on the reader; wait for it, bounded.
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.ws.CloseNow()
		<-c.done
	}
	floodEnd := now()
	closeCode, closeReason := closeStatus(c.err)

	// Stop the members and wait until every decision they sent has arrived,
	// and the flooder's departure too (the hub announces it once the
	// flooder's close handshake is over).
	stopSenders()
	var want int64
	for _, m := range members {
		want += m.sent.Load()
	}
	want *= floodMembers - 1
	ok, desc := poll(15*time.Second, 20*time.Millisecond, func() (bool, string) {
		var got, lefts int64
		for _, m := range members {
			got += m.gotNormals.Load()
			lefts += min(m.lefts.Load(), 1)
		}
		return got == want && lefts == floodMembers,
			fmt.Sprintf("%d of %d decisions, %d of %d members saw the flooder leave", got, want, lefts, floodMembers)
	})
	if !ok {
		t.Errorf("not within 15 s: %s", desc)
	}
	for _, m := range members {
		if err := m.ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Errorf("closing a member: %v", err)
		}
		<-m.done
	}

	// Figures.
	var quiet, flooded []time.Duration
	var outOfOrder, fromFlooder int
	for _, m := range members {
		outOfOrder += m.outOfOrder
		fromFlooder += m.fromOthers
		for _, s := range m.samples {
			switch {
			case s.sent >= quietStart && s.sent < floodStart:
				quiet = append(quiet, time.Duration(s.took))
			case s.sent >= floodStart && s.sent <= floodEnd:
				flooded = append(flooded, time.Duration(s.took))
			}
		}
	}
	q, f := percentiles(quiet), percentiles(flooded)
	rows := [][]string{{"latency", "quiet", "flood", "flood/quiet"}}
	for i, name := range []string{"p50", "p90", "p99", "max"} {
		ratio := "-"
		if q[i] > 0 {
			ratio = fmt.Sprintf("%.2f", float64(f[i])/float64(q[i]))
		}
		rows = append(rows, []string{name, ms(q[i]), ms(f[i]), ratio})
	}
	rows = append(rows, []string{"samples", strconv.Itoa(len(quiet)), strconv.Itoa(len(flooded)), ""})
	table(t, fmt.Sprintf("flood: %d members at one decision per %s each, end-to-end latency at the other members", floodMembers, floodEvery), rows)
	firstLim := fl.firstLim.Load()
	limitedFor := time.Duration(0)
	if firstLim > 0 {
		limitedFor = time.Duration(floodEnd - firstLim)
	}
	table(t, "flooder", [][]string{
		{"messages sent", strconv.Itoa(sentFlood)},
		{"rate_limited errors", strconv.FormatInt(fl.limited.Load(), 10)},
		{"accepted (its own copy back)", strconv.FormatInt(fl.accepted.Load(), 10)},
		{"its decisions relayed, summed over the 4 members", strconv.Itoa(fromFlooder)},
		{"first refusal to close", limitedFor.Round(time.Millisecond).String()},
		{"close", fmt.Sprintf("%d %q", closeCode, closeReason)},
		{"members' decisions delivered / lost / out of order", fmt.Sprintf("%d / %d / %d", want, want-sumGot(members), outOfOrder)},
	})

	// Assertions.
	if v := sendErr.Load(); v != nil {
		t.Errorf("a member's send failed: %v", v)
	}
	if fl.limited.Load() == 0 {
		t.Error("the flooder was never refused with rate_limited")
	}
	if closeCode != websocket.StatusPolicyViolation || closeReason != "rate_limited" {
		t.Errorf("the flooder's connection ended with close %d %q (%v); want 1008 \"rate_limited\"", closeCode, closeReason, c.err)
	}
	if firstLim > 0 && (limitedFor < grace-500*time.Millisecond || limitedFor > grace+3*time.Second) {
		t.Errorf("the flooder was closed %s after its first refusal; want about %s", limitedFor, grace)
	}
	if outOfOrder != 0 {
		t.Errorf("%d of the members' decisions arrived out of order", outOfOrder)
	}
	for i, m := range members {
		if len(m.errFrames) > 0 {
			t.Errorf("member %d, sending at the rate limit, got errors: %q", i, m.errFrames)
		}
		if m.left[c.sid] != "disconnected" {
			t.Errorf("member %d saw the flooder leave with reason %q, want disconnected", i, m.left[c.sid])
		}
	}
	// Speed is reported, not asserted; this bound only catches a stall.
	if q[2] > time.Second || f[2] > time.Second {
		t.Errorf("p99 latency quiet %s, flood %s: above the 1 s sanity bound", q[2], f[2])
	}
	if len(quiet) == 0 || len(flooded) == 0 {
		t.Errorf("no latency samples: quiet %d, flood %d", len(quiet), len(flooded))
	}
	if t.Failed() {
		t.Logf("server: %s", endings(p))
	}
}

func sumGot(members []*normalMember) int64 {
	var n int64
	for _, m := range members {
		n += m.gotNormals.Load()
	}
	return n
}

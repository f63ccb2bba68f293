package soak

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

const (
	slowQueue     = 64   // SEND_QUEUE_SIZE for this test
	slowDecisions = 2000 // decisions each busy member sends
	slowPad       = 1500 // bytes of padding per decision, so the slow member's TCP buffers fill early
	// slowWindow is how many of a busy member's decisions may be unread by
	// any busy member (itself included). Every frame in a busy member's queue
	// is one it has not read, so its queue holds at most 3 x 16 = 48
	// decisions and a presence or two: below 64 however late this process
	// or the server schedules a reader or a writer. Only the member that stops
	// reading can overflow its queue.
	slowWindow = 16
)

// flow is the busy members' flow control: recv[r][s] counts the decisions of
// busy member s that busy member r has read; progress[s] wakes member s's sender.
type flow struct {
	recv     [3][3]atomic.Int64
	progress [3]chan struct{}
}

// room reports whether sender s, having sent sent decisions, may send another.
func (fl *flow) room(s, sent int) bool {
	for r := range 3 {
		if int64(sent)-fl.recv[r][s].Load() >= slowWindow {
			return false
		}
	}
	return true
}

// busyMember is one of the members that keep reading. Its reader goroutine
// alone writes the fields below the flow; the test reads them after done.
type busyMember struct {
	*client
	idx      int
	index    map[string]int // busy members' sids to their index, set before the readers start
	flow     *flow
	slowSID  string
	complete *countdown // counts down when it has everything and has seen the slow member go
	joined   *countdown

	lastSeq    map[string]int
	got        map[string]int // decisions per sender, its own included
	outOfOrder int
	slowLeft   string // the reason of the slow member's presence "left"; "" until seen
	slowLeftAt int64
	members    map[string]bool
	errFrames  []string
	strays     int // decisions from anyone but a busy member
	doneOnce   bool
	joinedOnce bool
}

func (m *busyMember) handle(f *frameIn, at int64) {
	switch {
	case f.Type == "game_joined":
		for _, mb := range f.Data.Members {
			m.members[mb.SID] = true
		}
	case f.Type == "presence" && f.Data.Status == "joined":
		m.members[f.Data.SID] = true
	case f.Type == "presence" && f.Data.Status == "left" && f.Data.SID == m.slowSID:
		m.slowLeft, m.slowLeftAt = f.Data.Reason, at
	case f.isDecision():
		s, ok := m.index[f.Data.SID]
		if !ok {
			m.strays++
			break
		}
		if f.Data.Decision.Seq != m.lastSeq[f.Data.SID]+1 {
			m.outOfOrder++
		}
		m.lastSeq[f.Data.SID] = f.Data.Decision.Seq
		m.got[f.Data.SID]++
		m.flow.recv[m.idx][s].Add(1)
		select {
		case m.flow.progress[s] <- struct{}{}:
		default:
		}
	case f.Type == "error":
		m.errFrames = append(m.errFrames, string(f.Data.Code)+": "+f.Data.Message)
	}
	if !m.joinedOnce && len(m.members) == 4 {
		m.joinedOnce = true
		m.joined.done()
	}
	if !m.doneOnce && m.slowLeft != "" && len(m.got) == 3 {
		all := true
		for _, n := range m.got {
			all = all && n == slowDecisions
		}
		if all {
			m.doneOnce = true
			m.complete.done()
		}
	}
}

// others returns the sids of the other two busy members.
func (m *busyMember) others() []string {
	var o []string
	for sid := range m.index {
		if sid != m.sid {
			o = append(o, sid)
		}
	}
	return o
}

// TestSoakSlowConsumer has one member of a busy game of four stop reading
// while the other three send thousands of decisions at full speed. The
// server must end the slow member as a slow consumer (1008) without losing
// or reordering anything for the others, who must hear that it left.
func TestSoakSlowConsumer(t *testing.T) {
	p := startServer(t, map[string]string{
		"SEND_QUEUE_SIZE": strconv.Itoa(slowQueue),
		// No ping during the test: a ping waiting for a pong that a stalled
		// reader never sends would end the connection as timeout, without
		// the close frame this test wants to see (see the stall figure).
		"PING_INTERVAL":   "30s",
		"PING_TIMEOUT":    "10s",
		"SESSION_TIMEOUT": "0",
		"RATE_LIMIT":      "100000",
		"RATE_BURST":      "100000",
		"LOG_LEVEL":       "info",
	})
	baseG := restingGoroutines(t, p)
	game := uuid.NewString()

	// The slow member joins, reads its game_joined, and then reads nothing more.
	slow, err := dial(t.Context(), p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.ws.CloseNow()
	if err := slow.join(game); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.readUntil(10*time.Second, func(f *frameIn) bool { return f.Type == "game_joined" }); err != nil {
		t.Fatalf("slow member's game_joined: %v", err)
	}

	joined, complete := newCountdown(3), newCountdown(3)
	fl := &flow{}
	index := map[string]int{}
	busy := make([]*busyMember, 3)
	for i := range busy {
		c, err := dial(t.Context(), p, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.ws.CloseNow() }()
		index[c.sid] = i
		fl.progress[i] = make(chan struct{}, 1)
		busy[i] = &busyMember{client: c, idx: i, index: index, flow: fl, slowSID: slow.sid,
			complete: complete, joined: joined, lastSeq: map[string]int{}, got: map[string]int{}, members: map[string]bool{}}
	}
	for _, m := range busy {
		m.startReader(m.handle)
		defer func() { _ = m.ws.CloseNow(); <-m.done }()
		if err := m.join(game); err != nil {
			t.Fatal(err)
		}
	}
	if !joined.wait(10 * time.Second) {
		t.Fatal("the busy members did not all see the game of four")
	}

	// Full speed, within the window.
	pad := strings.Repeat("x", slowPad)
	start := now()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var sendErrs atomic.Int64
	var firstSendErr atomic.Value
	sendersDone := newCountdown(3)
	for i, m := range busy {
		go func() {
			defer sendersDone.done()
			for seq := 1; seq <= slowDecisions; seq++ {
				for !fl.room(i, seq-1) {
					select {
					case <-fl.progress[i]:
					case <-ctx.Done():
						return
					}
				}
				if err := m.submit(game, decision{Seq: seq, Sent: now(), Pad: pad}); err != nil {
					sendErrs.Add(1)
					firstSendErr.CompareAndSwap(nil, err.Error())
					return
				}
			}
		}()
	}
	allIn := complete.wait(60 * time.Second)
	exchange := time.Duration(now() - start)
	cancel()
	if !sendersDone.wait(10 * time.Second) {
		t.Error("the senders did not finish")
	}
	if n := sendErrs.Load(); n > 0 {
		t.Errorf("%d senders failed; first: %v", n, firstSendErr.Load())
	}
	for i, m := range busy {
		if m.ended() {
			code, reason := closeStatus(m.err)
			t.Errorf("busy member %d was ended: close %d %q: %v", i, code, reason, m.err)
		}
	}

	// The slow member is gone from health; the three others are still in.
	waitHealth(t, p, 10*time.Second, "slow member gone from health", func(h health) bool {
		return h.TotalSessions == 3 && h.SessionsPerGame[game] == 3
	})
	// The others leave; the slow member still reads nothing.
	for _, m := range busy {
		if err := m.ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Errorf("closing a busy member: %v", err)
		}
		<-m.done
	}
	waitHealth(t, p, 10*time.Second, "idle once the busy members left", health.idle)
	// What the server still holds for a consumer it has dropped but whose
	// TCP connection is open and full: its writer is blocked in a write, its
	// reader in a read.
	hStall, err := getHealth(p)
	if err != nil {
		t.Fatal(err)
	}
	stalled := hStall.Goroutines - baseG

	// The slow member reads at last: what was buffered, then the close frame.
	var slowGot map[string]int
	slowDisorder := 0
	closeCode, closeReason, readErr := websocket.StatusCode(-1), "", error(nil)
	{
		slowGot = map[string]int{}
		last := map[string]int{}
		_, readErr = slow.readUntil(30*time.Second, func(f *frameIn) bool {
			if f.isDecision() {
				if f.Data.Decision.Seq != last[f.Data.SID]+1 {
					slowDisorder++
				}
				last[f.Data.SID] = f.Data.Decision.Seq
				slowGot[f.Data.SID]++
			}
			return false
		})
		closeCode, closeReason = closeStatus(readErr)
	}
	var afterG int
	waitHealth(t, p, 15*time.Second, "goroutines back to baseline", func(h health) bool {
		afterG = h.Goroutines
		return h.idle() && h.Goroutines >= baseG-2 && h.Goroutines <= baseG+2
	})

	// Figures.
	slowTotal := 0
	for _, n := range slowGot {
		slowTotal += n
	}
	rows := [][]string{{"busy member", "sent", "got from the other two", "lost", "disorder", "slow left", "seen after"}}
	for i, m := range busy {
		o := m.others()
		got := m.got[o[0]] + m.got[o[1]]
		rows = append(rows, []string{
			strconv.Itoa(i + 1), strconv.Itoa(slowDecisions), strconv.Itoa(got),
			strconv.Itoa(2*slowDecisions - got), strconv.Itoa(m.outOfOrder), m.slowLeft,
			time.Duration(m.slowLeftAt - start).Round(time.Millisecond).String(),
		})
	}
	table(t, fmt.Sprintf("slow consumer: 3 busy members x %d decisions of ~%d bytes, send queue %d, exchange %s",
		slowDecisions, slowPad, slowQueue, exchange.Round(time.Millisecond)), rows)
	table(t, "slow member", [][]string{
		{"dropped after (presence left at the others)", time.Duration(busy[0].slowLeftAt - start).Round(time.Millisecond).String()},
		{"decisions it read afterwards, of 6000 sent to the game", strconv.Itoa(slowTotal)},
		{"gaps or reorderings in them", strconv.Itoa(slowDisorder)},
		{"close it read after them", fmt.Sprintf("%d %q", closeCode, closeReason)},
		{"server goroutines: baseline / dropped but stalled / after", fmt.Sprintf("%d / %d (+%d) / %d", baseG, hStall.Goroutines, stalled, afterG)},
	})

	// Assertions.
	if !allIn {
		t.Errorf("the busy members did not all get every decision and the slow member's departure within 60 s")
	}
	for i, m := range busy {
		for _, o := range m.others() {
			if m.got[o] != slowDecisions {
				t.Errorf("busy member %d got %d of %d decisions from %s", i, m.got[o], slowDecisions, o)
			}
		}
		if m.got[m.sid] != slowDecisions || m.outOfOrder != 0 || len(m.errFrames) > 0 || m.strays > 0 {
			t.Errorf("busy member %d: %d own decisions back, %d out of order, %d from strangers, errors %q",
				i, m.got[m.sid], m.outOfOrder, m.strays, m.errFrames)
		}
		if m.slowLeft != "disconnected" {
			t.Errorf("busy member %d saw the slow member leave with reason %q, want disconnected", i, m.slowLeft)
		}
	}
	// What reached the slow member is, per sender, an unbroken prefix: the
	// queue is first in, first out, and nothing is queued after the overflow.
	if slowDisorder != 0 {
		t.Errorf("the slow member's %d decisions have %d gaps or reorderings", slowTotal, slowDisorder)
	}
	if slowTotal >= 3*slowDecisions {
		t.Errorf("the slow member got all %d decisions: it was never a slow consumer (TCP buffers larger than the test assumes?)", slowTotal)
	}
	// 1008 is reachable: no ping was in flight, so the server's writer, once
	// the client reads again, finishes its blocked write and sends the close.
	if closeCode != websocket.StatusPolicyViolation || closeReason != "slow_consumer" {
		t.Errorf("the slow member's connection ended with close %d %q (%v); want 1008 \"slow_consumer\"", closeCode, closeReason, readErr)
	}
	if t.Failed() {
		t.Logf("server: %s", endings(p))
	}
}

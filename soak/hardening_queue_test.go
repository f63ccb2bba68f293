package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

const (
	bytesQueue      = 2 << 20 // SEND_QUEUE_BYTES for this test; SEND_QUEUE_SIZE stays 256
	bytesPad        = 900_000 // bytes of padding per decision, under MAX_MESSAGE_BYTES=1000000
	bytesDecisions  = 200     // decisions the sender sends: 180 MB, which 256 frames would all hold
	bytesNonReaders = 3
	// bytesWindow is how many of the sender's decisions may be unread by a
	// reading member (the sender included): its queue then holds at most two
	// decisions, 1.8 MB of the 2 MiB, however late this process reads, so
	// only a non-reader can overflow its queue.
	bytesWindow = 2
	// bytesGrowth bounds the server's peak RSS over its RSS before the
	// decisions. A queue bounded in frames only would keep up to 256 of them
	// (all 200 here, 180 MB) for the non-readers; in bytes it keeps 2 MiB each.
	bytesGrowth = 100 << 20
)

// padKey starts the padding of a decision as the server relays it.
var padKey = []byte(`"pad":"`)

// decodeBig decodes a frame that may carry a decision's padding without
// running the padding through the JSON decoder (46 ms a frame under -race):
// the padding is checked to be all x and cut out, the rest decoded as usual.
// It returns the frame and the padding's length.
func decodeBig(b []byte) (*frameIn, int, error) {
	padLen := 0
	if i := bytes.Index(b, padKey); i >= 0 {
		start := i + len(padKey)
		j := bytes.IndexByte(b[start:], '"')
		if j < 0 {
			return nil, 0, fmt.Errorf("unterminated pad in a frame of %d bytes", len(b))
		}
		if n := bytes.Count(b[start:start+j], []byte{'x'}); n != j {
			return nil, 0, fmt.Errorf("pad of %d bytes holds %d x", j, n)
		}
		padLen = j
		b = append(append(make([]byte, 0, len(b)-j), b[:start]...), b[start+j:]...)
	}
	f := new(frameIn)
	if err := json.Unmarshal(b, f); err != nil {
		return nil, 0, fmt.Errorf("undecodable frame %.300q: %w", b, err)
	}
	return f, padLen, nil
}

// readInto reads one message into buf and returns it.
func readInto(ws *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := ws.Reader(context.Background())
	if err != nil {
		return nil, err
	}
	n := 0
	for {
		if n == len(buf) {
			return nil, fmt.Errorf("a message over %d bytes", len(buf))
		}
		k, err := r.Read(buf[n:])
		n += k
		if err == io.EOF {
			return buf[:n], nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// reading is a member that reads every frame. Its reader goroutine alone
// writes the fields below recv; the test reads them after done.
type reading struct {
	*client
	from     string        // the sender's sid
	recv     atomic.Int64  // the sender's decisions read
	progress chan struct{} // shared: wakes the sender

	lastSeq   int
	badSeq    int
	badPad    int
	left      map[string]leftSeen // sid -> its presence left
	errFrames []string
}

// leftSeen is a presence left and how many of the sender's decisions the
// member had read before it: the hub announces a slow consumer's end right
// after the fan-out that overflowed it, so this is the decision that did.
type leftSeen struct {
	reason string
	after  int
}

func (m *reading) run() {
	go func() {
		defer close(m.done)
		// One buffer for every frame: io.ReadAll's growing copies of 900 KB
		// cost seconds under -race.
		buf := make([]byte, 1<<20)
		for {
			b, err := readInto(m.ws, buf)
			if err != nil {
				m.err = err
				return
			}
			f, padLen, err := decodeBig(b)
			if err != nil {
				m.err = err
				_ = m.ws.CloseNow()
				return
			}
			switch {
			case f.isDecision() && f.Data.SID == m.from:
				if f.Data.Decision.Seq != m.lastSeq+1 {
					m.badSeq++
				}
				if padLen != bytesPad {
					m.badPad++
				}
				m.lastSeq = f.Data.Decision.Seq
				m.recv.Add(1)
				select {
				case m.progress <- struct{}{}:
				default:
				}
			case f.Type == "presence" && f.Data.Status == "left":
				m.left[f.Data.SID] = leftSeen{reason: f.Data.Reason, after: m.lastSeq}
			case f.Type == "error":
				m.errFrames = append(m.errFrames, string(f.Data.Code)+": "+f.Data.Message)
			}
		}
	}()
}

// TestSoakQueueBytes has three members of a game stop reading while a fourth
// sends 200 decisions of 900 KB. Each non-reader must be dropped once its
// queue would pass SEND_QUEUE_BYTES=2 MiB, after a handful of decisions
// rather than 256 frames; the reading members must get every decision, in
// order, intact; and the server's peak RSS must stay far below what 256
// queued frames of 900 KB would take.
func TestSoakQueueBytes(t *testing.T) {
	p := startServer(t, map[string]string{
		"SEND_QUEUE_BYTES":  strconv.Itoa(bytesQueue),
		"MAX_MESSAGE_BYTES": "1000000",
		// No ping while the test runs, and a write deadline far away: a
		// non-reader can only be dropped as a slow consumer.
		"PING_INTERVAL":   "30s",
		"PING_TIMEOUT":    "30s",
		"SESSION_TIMEOUT": "0",
		"RATE_LIMIT":      "100000",
		"RATE_BURST":      "100000",
	})
	game := uuid.NewString()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	nonReaders := make([]*client, bytesNonReaders)
	for i := range nonReaders {
		c, err := dial(ctx, p, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.ws.CloseNow()
		if err := c.join(game); err != nil {
			t.Fatal(err)
		}
		if _, err := c.readUntil(10*time.Second, func(f *frameIn) bool { return f.Type == "game_joined" }); err != nil {
			t.Fatalf("non-reader %d's game_joined: %v", i, err)
		}
		nonReaders[i] = c // and it reads nothing more
	}
	sender, err := dial(ctx, p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	progress := make(chan struct{}, 1)
	members := make([]*reading, 3) // members[0] is the sender itself
	for i := range members {
		c := sender
		if i > 0 {
			if c, err = dial(ctx, p, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		m := &reading{client: c, from: sender.sid, progress: progress, left: map[string]leftSeen{}}
		m.run()
		defer func() { _ = m.ws.CloseNow(); <-m.done }()
		if err := c.join(game); err != nil {
			t.Fatal(err)
		}
		members[i] = m
	}
	waitHealth(t, p, 10*time.Second, "six in the game", func(h health) bool { return h.SessionsPerGame[game] == 6 })
	before, err := readProcMem(p)
	if err != nil {
		t.Fatal(err)
	}

	pad := strings.Repeat("x", bytesPad)
	start := time.Now()
	for seq := 1; seq <= bytesDecisions; seq++ {
		for _, m := range members {
			for int64(seq-1)-m.recv.Load() >= bytesWindow {
				select {
				case <-progress:
				case <-m.done:
					t.Fatalf("a reading member's connection ended at decision %d: %v; server: %s", seq, m.err, endings(p))
				case <-ctx.Done():
					t.Fatalf("decision %d: the reading members did not keep up within 60 s", seq)
				}
			}
		}
		msg := fmt.Appendf(nil, `{"type":"submit_defensive_decision","id":"d%d","data":{"game_id":%q,"decision":{"seq":%d,"sent":%d,"pad":"`,
			seq, game, seq, now())
		msg = append(append(msg, pad...), `"}}}`...)
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		err := sender.ws.Write(wctx, websocket.MessageText, msg)
		wcancel()
		if err != nil {
			t.Fatalf("sending decision %d: %v; server: %s", seq, err, endings(p))
		}
	}
	ok, desc := poll(20*time.Second, 20*time.Millisecond, func() (bool, string) {
		var got []string
		all := true
		for _, m := range members {
			all = all && m.recv.Load() == bytesDecisions
			got = append(got, strconv.FormatInt(m.recv.Load(), 10))
		}
		return all, "decisions read by the sender and the two readers: " + strings.Join(got, ", ")
	})
	exchange := time.Since(start)
	after, err := readProcMem(p)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Errorf("not every decision arrived within 20 s of the last: %s", desc)
	}
	gone, inHealth := poll(10*time.Second, 50*time.Millisecond, func() (bool, string) {
		h, err := getHealth(p)
		if err != nil {
			return false, err.Error()
		}
		return h.TotalSessions == 3 && h.SessionsPerGame[game] == 3, h.String()
	})
	if !gone {
		t.Errorf("the non-readers are still in health 10 s after the last decision: %s", inHealth)
	}
	for _, m := range members {
		if err := m.ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Errorf("closing a member: %v", err)
		}
		<-m.done
	}

	// Figures.
	frameBytes := bytesPad + 200 // the pad and the envelope around it
	rows := [][]string{{"non-reader", "dropped after decision", "as", "seen by all three"}}
	var worst int
	for i, c := range nonReaders {
		seen, ok := members[0].left[c.sid]
		same := true
		for _, m := range members[1:] {
			same = same && m.left[c.sid] == seen
		}
		worst = max(worst, seen.after)
		after := strconv.Itoa(seen.after)
		if !ok {
			after = "never"
		}
		rows = append(rows, []string{strconv.Itoa(i + 1), after, seen.reason, strconv.FormatBool(same)})
	}
	table(t, fmt.Sprintf("queue bounded in bytes: %d decisions of %d KB, SEND_QUEUE_BYTES %s (%d frames), SEND_QUEUE_SIZE 256, exchange %s",
		bytesDecisions, bytesPad/1000, mb(bytesQueue), bytesQueue/frameBytes, exchange.Round(time.Millisecond)), rows)
	growth := after.hwm - before.rss
	table(t, "server memory", [][]string{
		{"latest drop", fmt.Sprintf("after decision %d: %.1f MB sent to each non-reader", worst, float64(worst*frameBytes)/1e6)},
		{"VmRSS before the decisions", mb(before.rss)},
		{"VmHWM (peak) after them", mb(after.hwm)},
		{"VmRSS after them", mb(after.rss)},
		{"peak growth", mb(growth) + fmt.Sprintf(" (bound %s; 256 queued frames would be %s)", mb(bytesGrowth), mb(256*int64(frameBytes)))},
	})

	// Assertions.
	for i, c := range nonReaders {
		for j, m := range members {
			seen, ok := m.left[c.sid]
			switch {
			case !ok:
				t.Errorf("member %d never saw non-reader %d leave: it was not dropped within %d decisions", j, i+1, bytesDecisions)
			case seen.reason != "disconnected":
				t.Errorf("member %d saw non-reader %d leave with reason %q, want disconnected (a slow consumer)", j, i+1, seen.reason)
			case seen.after >= 64:
				t.Errorf("non-reader %d was dropped after decision %d: its queue took far more than SEND_QUEUE_BYTES=%s (%d frames)",
					i+1, seen.after, mb(bytesQueue), bytesQueue/frameBytes)
			}
		}
	}
	for j, m := range members {
		if m.badSeq != 0 || m.badPad != 0 || len(m.errFrames) > 0 {
			t.Errorf("member %d: %d decisions out of order, %d with a damaged pad, errors %q", j, m.badSeq, m.badPad, m.errFrames)
		}
	}
	if growth >= bytesGrowth {
		t.Errorf("the server's peak RSS grew by %s, not under %s: the non-readers' queues held more than SEND_QUEUE_BYTES",
			mb(growth), mb(bytesGrowth))
	}
	if t.Failed() {
		t.Logf("server: %s", endings(p))
	}
}

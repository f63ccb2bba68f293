package soak

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"dugout/internal/servertest"

	"github.com/google/uuid"
)

// TestSoakEmptyFragments has a raw client open a text message with FIN=0 and
// follow it with empty continuation frames, six bytes each, without end: the
// payload never grows, so MAX_MESSAGE_BYTES alone would never end it. The
// server must end it with 1009 once its frames take more than
// MAX_MESSAGE_BYTES + 64 KiB on the wire, and not before. The client writes
// in steps, each followed by a ping (control frames may come between
// fragments): a pong says the server read the step and carried on, a close
// frame says the message is past its budget.
func TestSoakEmptyFragments(t *testing.T) {
	const maxMessage, slack = 1000, 64 << 10
	const firstStep, step = 10_000, 100 // empty frames: 60 KB, under the budget; then 600 bytes a step
	p := startServer(t, map[string]string{
		"MAX_MESSAGE_BYTES": strconv.Itoa(maxMessage),
		"PING_INTERVAL":     "30s",
		"PING_TIMEOUT":      "5s",
		"SESSION_TIMEOUT":   "0",
	})
	c, err := dialRaw(p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	answers := make(chan closeFrame, 64) // a pong (code -1) or the close: one a step, two at most
	others := 0
	c.startReader(func(op byte, payload []byte, at int64) {
		switch op {
		case opPong:
			answers <- closeFrame{code: -1, at: at}
		case opClose:
			answers <- parseClose(payload, at)
		case opText:
			if !strings.Contains(string(payload), `"type":"goodbye"`) { // the goodbye before the close is expected
				others++
			}
		default:
			others++
		}
	})
	defer c.stopReader()

	first := appendFrame(nil, false, opText, []byte(`{"type":"heartbeat",`))
	empties := func(n int) []byte {
		var b []byte
		for range n {
			b = appendFrame(b, false, opContinuation, nil)
		}
		return appendFrame(b, true, opPing, nil)
	}
	frameLen := len(appendFrame(nil, false, opContinuation, nil))
	budget := maxMessage + slack
	need := (budget-len(first))/frameLen + 1 // the empty frame that takes the message past the budget
	start := now()
	frames := 0
	cf := closeFrame{code: -1}
	var pongAt int // frames written when the last pong came back
	for cf.code < 0 && frames < 2*need {
		b := empties(step)
		if frames == 0 {
			b = append(append([]byte{}, first...), empties(firstStep)...)
		}
		if _, err := c.write(b, 5*time.Second); err != nil {
			t.Fatalf("writing after %d empty frames: %v; server: %s", frames, err, endings(p))
		}
		if frames == 0 {
			frames = firstStep
		} else {
			frames += step
		}
		select {
		case a := <-answers:
			if a.code < 0 {
				pongAt = frames
			}
			cf = a
		case <-c.done:
			t.Fatalf("the connection ended after %d empty frames without a close frame: %v", frames, c.err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no pong and no close within 5 s of empty frame %d; server: %s", frames, endings(p))
		}
	}
	took := time.Duration(cf.at - start)
	closedCleanly := cf.code >= 0 && c.finish(cf.code, 5*time.Second)
	table(t, "empty-fragment flood, MAX_MESSAGE_BYTES=1000", [][]string{
		{"wire budget of one message", fmt.Sprintf("%d bytes: the %d-byte first frame and %d empty %d-byte frames",
			budget, len(first), need, frameLen)},
		{"last pong (the server still reading)", fmt.Sprintf("after %d empty frames", pongAt)},
		{"close", fmt.Sprintf("%s after %d empty frames, %s", cf, frames, took.Round(time.Millisecond))},
	})
	if cf.code != 1009 || cf.reason != "too_big" {
		t.Fatalf("the fragment flood ended with %s after %d empty frames, want 1009 \"too_big\"; server: %s",
			cf, frames, endings(p))
	}
	if frames < need {
		t.Errorf("closed after %d empty frames: before the wire budget of %d bytes is used (%d frames)", frames, budget, need)
	}
	// The read that passes the budget fails only once the library has used
	// what it had buffered from it, so the step that passes it may still be
	// answered; the next read ends it.
	if frames > need+2*step {
		t.Errorf("closed after %d empty frames: past the wire budget of %d bytes (%d frames)", frames, budget, need)
	}
	if others > 0 {
		t.Errorf("%d other frames before the close", others)
	}
	if !closedCleanly {
		t.Errorf("the server did not close the socket within 5 s of the client's close: %v", c.err)
	}
}

// TestSoakFloodCut has a raw client join a game and then send 1 MB messages
// as fast as loopback takes them, never reading, so it neither reads its
// rate_limited errors nor answers the close. After the flood grace the
// server must drop its session at once (the game hears it leave within a
// second or so, not after PING_TIMEOUT=30s), stop reading from it, and let
// the socket go, so that the flooder's writes soon fail or block.
func TestSoakFloodCut(t *testing.T) {
	const msgSize = 999_000 // under MAX_MESSAGE_BYTES=1000000
	grace := *flagFlood
	p := startServer(t, map[string]string{
		"RATE_LIMIT":      "1",
		"RATE_BURST":      "2",
		"PING_INTERVAL":   "25s",
		"PING_TIMEOUT":    "30s",
		"SESSION_TIMEOUT": "0",
	})
	game := uuid.NewString()

	obs, err := dial(t.Context(), p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	joined, left := make(chan string, 4), make(chan string, 4)
	var leftAt atomic.Int64
	obs.startReader(func(f *frameIn, at int64) {
		if f.Type != "presence" {
			return
		}
		switch f.Data.Status {
		case "joined":
			joined <- f.Data.SID
		case "left":
			leftAt.CompareAndSwap(0, at)
			left <- f.Data.SID + " " + f.Data.Reason
		}
	})
	defer func() { _ = obs.ws.CloseNow(); <-obs.done }()
	if err := obs.join(game); err != nil {
		t.Fatal(err)
	}

	fl, err := dialRaw(p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.nc.Close() // it has no reader: it never reads
	if err := fl.send(fmt.Sprintf(`{"type":"join_game","id":"j","data":{"game_id":%q}}`, game), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case sid := <-joined:
		if sid != fl.sid {
			t.Fatalf("presence joined for %s, not the flooder %s", sid, fl.sid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the observer did not see the flooder join")
	}

	head := `{"type":"heartbeat","id":"f","data":{"pad":"`
	msg := head + strings.Repeat("x", msgSize-len(head)-3) + `"}}`
	frame := appendFrame(nil, true, opText, []byte(msg))
	var (
		written    atomic.Int64 // bytes the flooder's writes took
		firstRefd  atomic.Int64 // when the first refused message (the 2nd, after join and one accepted) was written
		blocked    atomic.Int64 // writes that timed out with nothing written
		writeErr   error
		stop, done = make(chan struct{}), make(chan struct{})
	)
	start := now()
	go func() {
		defer close(done)
		off, msgs := 0, 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := fl.write(frame[off:], 200*time.Millisecond)
			written.Add(int64(n))
			if off += n; off == len(frame) {
				off = 0
				if msgs++; msgs == 2 {
					firstRefd.Store(now())
				}
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if n == 0 {
					blocked.Add(1)
				}
				continue
			}
			if err != nil {
				writeErr = err
				return
			}
		}
	}()
	stopFlood := func() { close(stop); <-done }

	var gone string
	select {
	case gone = <-left:
	case <-time.After(grace + 10*time.Second):
		stopFlood()
		t.Fatalf("the flooder was not dropped within %s; %s written; server: %s", grace+10*time.Second, mb(written.Load()), endings(p))
	}
	at := written.Load()
	// The measurement window: what the flooder can still write.
	<-time.After(2 * time.Second)
	after := written.Load() - at
	blockedAfter := blocked.Load()
	h, herr := getHealth(p)
	ended := endedLine(p, fl.sid)
	stopFlood()

	refusedFor := time.Duration(leftAt.Load() - firstRefd.Load())
	flood := time.Duration(leftAt.Load() - start)
	table(t, "flooder of 1 MB messages that never reads, RATE_LIMIT=1 RATE_BURST=2, PING_TIMEOUT=30s", [][]string{
		{"written before the drop", fmt.Sprintf("%s in %s (%.0f MB/s)", mb(at), flood.Round(time.Millisecond), float64(at)/1e6/flood.Seconds())},
		{"dropped (presence left) after the first refused message", refusedFor.Round(time.Millisecond).String() + " (grace " + grace.String() + ")"},
		{"written in the 2 s after the drop", mb(after)},
		{"writes that blocked 200 ms without a byte", strconv.FormatInt(blockedAfter, 10)},
		{"writes ended by", errString(writeErr)},
		{"server log: connection ended", ended},
	})

	if want := fl.sid + " disconnected"; gone != want {
		t.Errorf("presence left %q, want %q", gone, want)
	}
	if refusedFor < grace-500*time.Millisecond || refusedFor > grace+2*time.Second {
		t.Errorf("the flooder left its game %s after its first refused message; want within a second or so of the %s grace",
			refusedFor.Round(time.Millisecond), grace)
	}
	if herr != nil || h.TotalSessions != 1 || h.SessionsPerGame[game] != 1 {
		t.Errorf("2 s after the drop health is %s (%v); want the observer alone", h, herr)
	}
	// The server reads at most 64 KiB after the close; the rest is what the
	// kernel buffers take before the socket is gone.
	if after > 32<<20 {
		t.Errorf("the flooder wrote %s in the 2 s after it was dropped: the server kept reading it", mb(after))
	}
	if !strings.Contains(ended, `"code":1008`) {
		t.Errorf("2 s after the drop the server has not let the flooder's connection go: log line %q", ended)
	}
}

// endedLine returns the server's "connection ended" log line for sid, or "none".
func endedLine(p *servertest.Proc, sid string) string {
	for _, line := range strings.Split(p.Log(), "\n") {
		var l struct{ Message, SID string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Message == "connection ended" && l.SID == sid {
			return line
		}
	}
	return "none"
}

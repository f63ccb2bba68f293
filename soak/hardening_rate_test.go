package soak

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// The rate limits of the hardening tests: the defaults.
const (
	limitRate  = 20 // RATE_LIMIT: messages per second; pings and pongs get twice this
	limitBurst = 40 // RATE_BURST; pings and pongs get twice this
)

// burstReader reads everything a bursting client is sent. Its reader
// goroutine alone writes the fields below the atomics; the test reads them
// after done.
type burstReader struct {
	n        int    // messages in the burst, ids b0 .. b<n-1>
	reply    string // the type of an accepted burst message's reply
	probeAck chan string
	closing  chan struct{} // closed when a close frame arrives

	accepted atomic.Int64 // replies to burst messages
	limited  atomic.Int64 // rate_limited errors to burst messages
	refused  int          // rate_limited errors to probes

	badIDs    []string // rate_limited errors whose id is no message's
	errFrames []string // other errors
	closed    closeFrame
	others    int // any other frame
}

func (r *burstReader) handle(op byte, payload []byte, at int64) {
	if op == opClose {
		if r.closed.code < 0 {
			r.closed = parseClose(payload, at)
			close(r.closing)
		}
		return
	}
	var f frameIn
	if op != opText || json.Unmarshal(payload, &f) != nil {
		r.others++
		return
	}
	switch {
	case f.Type == r.reply && r.burstID(f.ID):
		r.accepted.Add(1)
	case f.Type == "heartbeat_ack" && strings.HasPrefix(f.ID, "p"):
		select {
		case r.probeAck <- f.ID:
		default:
		}
	case f.Type == "error" && f.Data.Code == "rate_limited":
		switch {
		case r.burstID(f.ID):
			r.limited.Add(1)
		case strings.HasPrefix(f.ID, "p"):
			r.refused++
		case len(r.badIDs) < 5:
			r.badIDs = append(r.badIDs, f.ID)
		}
	case f.Type == "error":
		r.errFrames = append(r.errFrames, string(f.Data.Code)+": "+f.Data.Message)
	default:
		r.others++
	}
}

// burstID reports whether id is one of the burst's.
func (r *burstReader) burstID(id string) bool {
	i, err := strconv.Atoi(strings.TrimPrefix(id, "b"))
	return strings.HasPrefix(id, "b") && err == nil && i >= 0 && i < r.n
}

// TestSoakBurstWhileReading has a client write 2,000 heartbeats, and another
// 10,000 join_game, in one write each (the server reads them as fast as
// loopback goes), while reading everything it is sent as fast as it can. At
// RATE_BURST=40 nearly all are refused, and the error replies outpace what
// the client reads; the server must drop the errors it cannot queue rather
// than end the client as a slow consumer. The client must get rate_limited
// errors echoing its ids, stay connected, and be served once the bucket
// refills.
func TestSoakBurstWhileReading(t *testing.T) {
	p := startServer(t, map[string]string{
		"RATE_LIMIT":      strconv.Itoa(limitRate),
		"RATE_BURST":      strconv.Itoa(limitBurst),
		"SEND_QUEUE_SIZE": "256",
		"PING_INTERVAL":   "30s",
		"PING_TIMEOUT":    "5s",
		"SESSION_TIMEOUT": "0",
	})
	game := uuid.NewString()
	cases := []struct {
		name  string
		n     int
		reply string
		msg   func(i int) string
	}{
		{"2000 heartbeats", 2000, "heartbeat_ack", func(i int) string {
			return fmt.Sprintf(`{"type":"heartbeat","id":"b%d"}`, i)
		}},
		{"10000 join_game", 10000, "game_joined", func(i int) string {
			return fmt.Sprintf(`{"type":"join_game","id":"b%d","data":{"game_id":%q}}`, i, game)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			waitHealth(t, p, 10*time.Second, "idle before the burst", health.idle)
			c, err := dialRaw(p, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			r := &burstReader{n: tc.n, reply: tc.reply, probeAck: make(chan string, 1),
				closing: make(chan struct{}), closed: closeFrame{code: -1}}
			c.startReader(r.handle)
			defer c.stopReader()

			var burst []byte
			for i := range tc.n {
				burst = appendFrame(burst, true, opText, []byte(tc.msg(i)))
			}
			start := time.Now()
			if _, err := c.write(burst, 20*time.Second); err != nil {
				t.Fatalf("writing the burst: %v", err)
			}
			wrote := time.Since(start)

			// A heartbeat every 100 ms (half the rate limit) until one is
			// answered: the first after the bucket has a token again.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			deadline := time.NewTimer(5 * time.Second)
			defer deadline.Stop()
			probes := 0
			var acked string
			for acked == "" {
				probes++
				if err := c.send(fmt.Sprintf(`{"type":"heartbeat","id":"p%d"}`, probes), 5*time.Second); err != nil {
					c.stopReader()
					t.Fatalf("sending probe %d: %v (closed with %s)", probes, err, r.closed)
				}
				select {
				case acked = <-r.probeAck:
				case <-tick.C:
				case <-c.done:
					t.Fatalf("the connection ended after the burst: %v; close %s; server: %s", c.err, r.closed, endings(p))
				case <-deadline.C:
					t.Fatalf("no heartbeat answered within 5 s of the burst (%d probes); server: %s", probes, endings(p))
				}
			}
			servedAfter := time.Since(start)
			h, err := getHealth(p)
			if err != nil {
				t.Fatal(err)
			}
			// Every burst reply was queued before the probe's ack: all are in.
			accepted, limited := r.accepted.Load(), r.limited.Load()

			serverClosed := false
			select {
			case <-r.closing:
				serverClosed = true
			default:
			}
			// The client closes; the server must answer and close the socket.
			closedCleanly := c.finish(1000, 5*time.Second)
			if serverClosed {
				t.Errorf("the server closed the bursting client with %s; it must stay connected", r.closed)
			}

			table(t, "burst of "+tc.name+" in one write, reading all the while", [][]string{
				{"burst written in", wrote.Round(time.Millisecond).String()},
				{"answered (" + tc.reply + ")", strconv.FormatInt(accepted, 10)},
				{"rate_limited errors received", strconv.FormatInt(limited, 10)},
				{"errors dropped by the server (queue half full)", strconv.FormatInt(int64(tc.n)-accepted-limited, 10)},
				{"heartbeat answered after the burst began", fmt.Sprintf("%s (probe %d, %d refused)", servedAfter.Round(time.Millisecond), probes, r.refused)},
				{"server's close frame (answering the client's)", r.closed.String()},
			})

			if h.TotalSessions != 1 {
				t.Errorf("after the burst health counts %d sessions, want the bursting client's 1", h.TotalSessions)
			}
			if limited == 0 {
				t.Error("no rate_limited error reached the client")
			}
			if len(r.badIDs) > 0 {
				t.Errorf("rate_limited errors with ids that are no message's: %q", r.badIDs)
			}
			if len(r.errFrames) > 0 || r.others > 0 {
				t.Errorf("unexpected frames: errors %q, %d others", r.errFrames, r.others)
			}
			// The bucket: RATE_BURST at once, then RATE_LIMIT a second.
			if most := int64(limitBurst + limitRate*servedAfter.Seconds() + 1); accepted > most || accepted == 0 {
				t.Errorf("%d burst messages were answered; the limiter allows 1 to %d in %s", accepted, most, servedAfter.Round(time.Millisecond))
			}
			if !closedCleanly {
				t.Errorf("the server did not close the connection within 5 s of the client's close: %v", c.err)
			}
		})
	}
}

// TestSoakPingFlood has a raw client send 5,000 pings a second, over a
// hundred times what RATE_LIMIT x 2 allows. Its pings beyond the limit must go
// unanswered, it must be closed with 1008 "rate_limited" after the flood
// grace, and a bystander's heartbeats must be answered all the while.
func TestSoakPingFlood(t *testing.T) {
	const batch, every = 50, 10 * time.Millisecond // 5,000 pings a second
	grace := *flagFlood
	p := startServer(t, map[string]string{
		"RATE_LIMIT":      strconv.Itoa(limitRate),
		"RATE_BURST":      strconv.Itoa(limitBurst),
		"PING_INTERVAL":   "30s",
		"PING_TIMEOUT":    "5s",
		"SESSION_TIMEOUT": "0",
	})

	// The bystander sends a heartbeat every 100 ms, id h<send time>.
	by, err := dial(t.Context(), p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var acks atomic.Int64
	var lat []time.Duration
	var byErrs []string
	by.startReader(func(f *frameIn, at int64) {
		switch {
		case f.Type == "heartbeat_ack" && strings.HasPrefix(f.ID, "h"):
			sent, _ := strconv.ParseInt(f.ID[1:], 10, 64)
			lat = append(lat, time.Duration(at-sent))
			acks.Add(1)
		case f.Type == "error":
			byErrs = append(byErrs, string(f.Data.Code))
		}
	})
	defer func() { _ = by.ws.CloseNow(); <-by.done }()

	c, err := dialRaw(p, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var pongs atomic.Int64
	closed := make(chan struct{})
	cf := closeFrame{code: -1}
	c.startReader(func(op byte, payload []byte, at int64) {
		switch op {
		case opPong:
			pongs.Add(1)
		case opClose:
			if cf.code < 0 {
				cf = parseClose(payload, at)
				close(closed)
			}
		}
	})
	defer c.stopReader()

	var pings []byte
	for range batch {
		pings = appendFrame(pings, true, opPing, nil)
	}
	stop, pingerDone := make(chan struct{}), make(chan struct{})
	var sent atomic.Int64
	var pingErr error
	start := now()
	go func() {
		defer close(pingerDone)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if _, err := c.write(pings, 5*time.Second); err != nil {
				pingErr = err
				return
			}
			sent.Add(batch)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(grace + 10*time.Second)
	defer deadline.Stop()
	heartbeats := 0
	timedOut := false
flood:
	for {
		select {
		case <-closed:
			break flood
		case <-deadline.C:
			timedOut = true
			break flood
		case <-tick.C:
			heartbeats++
			if err := by.send(5*time.Second, "heartbeat", "h"+strconv.FormatInt(now(), 10), nil); err != nil {
				t.Errorf("bystander's heartbeat %d: %v", heartbeats, err)
				break flood
			}
		}
	}
	close(stop)
	<-pingerDone
	closedCleanly := false
	if timedOut {
		c.stopReader() // cf is the reader's until it has returned
	} else {
		closedCleanly = c.finish(cf.code, 10*time.Second)
	}
	ok, _ := poll(5*time.Second, 20*time.Millisecond, func() (bool, string) { return acks.Load() == int64(heartbeats), "" })
	if !ok {
		t.Errorf("the bystander got %d acks for %d heartbeats", acks.Load(), heartbeats)
	}
	if by.ended() {
		t.Errorf("the bystander's connection ended: %v", by.err)
	}
	if err := by.ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("closing the bystander: %v", err)
	}
	<-by.done

	closedAfter := time.Duration(cf.at - start)
	pc := percentiles(lat)
	table(t, fmt.Sprintf("ping flood: %d pings every %s, control limit %d/s burst %d", batch, every, 2*limitRate, 2*limitBurst), [][]string{
		{"pings sent", strconv.FormatInt(sent.Load(), 10)},
		{"pongs received", strconv.FormatInt(pongs.Load(), 10)},
		{"close", fmt.Sprintf("%s after %s (grace %s)", cf, closedAfter.Round(time.Millisecond), grace)},
		{"bystander heartbeats / acks", fmt.Sprintf("%d / %d", heartbeats, acks.Load())},
		{"bystander ack latency p50 / p99 / max", ms(pc[0]) + " / " + ms(pc[2]) + " / " + ms(pc[3])},
	})

	if timedOut {
		t.Fatalf("no close frame within %s of the flood's start; %d pings sent, %d pongs; pinger: %v; server: %s",
			grace+10*time.Second, sent.Load(), pongs.Load(), pingErr, endings(p))
	}
	if cf.code != 1008 || cf.reason != "rate_limited" {
		t.Errorf("the ping flooder was closed with %s, want 1008 \"rate_limited\"", cf)
	}
	if closedAfter < grace-500*time.Millisecond || closedAfter > grace+3*time.Second {
		t.Errorf("the ping flooder was closed %s after its first ping; want about the %s grace", closedAfter.Round(time.Millisecond), grace)
	}
	if most := int64(2*limitBurst) + int64(2*limitRate*closedAfter.Seconds()) + 1; pongs.Load() > most || pongs.Load() == 0 {
		t.Errorf("%d pings were answered in %s; the control limit allows 1 to %d", pongs.Load(), closedAfter.Round(time.Millisecond), most)
	}
	if !closedCleanly {
		t.Errorf("the server did not close the socket within 10 s of the client's close: %v", c.err)
	}
	if len(byErrs) > 0 {
		t.Errorf("the bystander got errors: %q", byErrs)
	}
	if pc[2] > time.Second {
		t.Errorf("bystander p99 latency %s: above the 1 s sanity bound", pc[2])
	}
}

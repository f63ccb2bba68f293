package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// The hot paths, measured with allocations. Run:
//   go test -run '^$' -bench . -benchmem -count 6 | tee new.txt   (benchstat to compare)

// BenchmarkDecode measures decoding and validating one client frame.
func BenchmarkDecode(b *testing.B) {
	frames := map[string]string{
		"heartbeat": `{"type":"heartbeat","id":"h1"}`,
		"join":      `{"type":"join_game","id":"j1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8"}}`,
		"decision":  `{"type":"submit_defensive_decision","id":"d1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","decision":{"shift":"infield_in","seq":12345}}}`,
		"dice":      `{"type":"roll_dice","id":"r1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","dice":[6,6,6,20]}}`,
		"bad_json":  `{"type":"heartbeat"`,
	}
	for name, f := range frames {
		msg := []byte(f)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = decode(msg)
			}
		})
	}
}

// benchHub is a hub stepped directly on the benchmark goroutine, the way its
// own goroutine steps it, with members whose queues are drained in place.
type benchHub struct {
	h     *hub
	conns []*conn
}

// newBenchHub registers n sessions, all active at now, on a hub that counts
// what it does, as the server's does.
func newBenchHub(b *testing.B, n int, cfg hubConfig, now time.Time) *benchHub {
	b.Helper()
	cfg.metrics = newMetrics()
	bh := &benchHub{h: newHub(cfg, 1)}
	for i := range n {
		c := &conn{sid: fmt.Sprintf("s%07d", i), out: newSendQueue(8, testQueueBytes), quit: make(chan struct{})}
		bh.conns = append(bh.conns, c)
		if !bh.h.idx.add(newSession(c), now) {
			b.Fatal("duplicate sid")
		}
	}
	return bh
}

// drain empties every member's queue so that nobody becomes a slow consumer,
// counting each frame as its writer would.
func (bh *benchHub) drain(conns []*conn) {
	for _, c := range conns {
		for c.out.len() > 0 {
			bh.h.cfg.metrics.frameSent(c.out.next())
		}
	}
}

// BenchmarkRelay measures the hub's part of a decision relayed to a game of 4:
// membership check, activity, and four queue sends of one shared encoding.
func BenchmarkRelay(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}
	bh := newBenchHub(b, 4, cfg, time.Now())
	game := uuid.New()
	for _, c := range bh.conns {
		bh.h.handle(prepare(c, &command{kind: cmdJoin, game: game}, nil))
	}
	bh.drain(bh.conns)
	sender := bh.conns[0]
	cmd := command{kind: cmdDefensive, id: "d1", game: game, decision: []byte(`{"seq":1}`)}
	msg := prepare(sender, &cmd, nil)
	b.ReportAllocs()
	for b.Loop() {
		bh.h.handle(msg)
		bh.drain(bh.conns)
	}
}

// BenchmarkRelayWithEncode adds the reader's part: decoding the frame and
// encoding the event once for the sender and once for everyone else.
func BenchmarkRelayWithEncode(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}
	bh := newBenchHub(b, 4, cfg, time.Now())
	game := uuid.MustParse("6f9619ff-8b86-d011-b42d-00c04fd430c8")
	for _, c := range bh.conns {
		bh.h.handle(prepare(c, &command{kind: cmdJoin, game: game}, nil))
	}
	bh.drain(bh.conns)
	sender := bh.conns[0]
	frame := []byte(`{"type":"submit_defensive_decision","id":"d1","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","decision":{"seq":1}}}`)
	b.ReportAllocs()
	for b.Loop() {
		cmd, perr := decode(frame)
		if perr != nil {
			b.Fatal(perr)
		}
		bh.h.cfg.metrics.frameReceived(cmd.kind, len(frame)) // as the reader counts it
		bh.h.handle(prepare(sender, &cmd, nil))
		bh.drain(bh.conns)
	}
}

// BenchmarkJoinLeave measures a session joining a game of 3 and leaving it.
func BenchmarkJoinLeave(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 16, maxSeats: 100}
	bh := newBenchHub(b, 4, cfg, time.Now())
	game := uuid.New()
	for _, c := range bh.conns[1:] {
		bh.h.handle(prepare(c, &command{kind: cmdJoin, game: game}, nil))
	}
	bh.drain(bh.conns)
	c := bh.conns[0]
	join := prepare(c, &command{kind: cmdJoin, game: game}, nil)
	leave := prepare(c, &command{kind: cmdLeave, game: game}, nil)
	b.ReportAllocs()
	for b.Loop() {
		bh.h.handle(join)
		bh.h.handle(leave)
		bh.drain(bh.conns)
	}
}

// BenchmarkSweep measures one janitor sweep over n sessions of which `due`
// are due: half for expiry, half for a warning; the rest are fresh. The
// sweep's cost should follow the due sessions, not n.
func BenchmarkSweep(b *testing.B) {
	const timeout, warning = 300 * time.Second, 60 * time.Second
	cfg := hubConfig{sessionTimeout: timeout, expiryWarning: warning, maxGames: 16, maxSeats: 100}
	now := time.Unix(1_000_000, 0)
	for _, n := range []int{10_000, 100_000} {
		for _, due := range []int{0, 100, 1000} {
			b.Run(fmt.Sprintf("sessions=%d/due=%d", n, due), func(b *testing.B) {
				bh := newBenchHub(b, n, cfg, now)
				dueConns := bh.conns[:due]
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					bh.drain(dueConns)
					// Re-arm: expired sessions come back, warned ones forget the
					// warning, and all of them go to the idle end of the list.
					for i, c := range dueConns {
						s := bh.h.idx.sessions[c.sid]
						if s == nil {
							s = newSession(c)
							bh.h.idx.add(s, now)
						}
						s.warned = false
						s.lastActivity = now.Add(-timeout + warning/2) // warn
						if i < due/2 {
							s.lastActivity = now.Add(-timeout - time.Second) // expire
						}
					}
					for i := due - 1; i >= 0; i-- {
						pushOldest(bh.h.idx, bh.h.idx.sessions[dueConns[i].sid])
					}
					b.StartTimer()
					bh.h.handle(sweepMsg{now: now})
					for bh.h.sweeping {
						bh.h.sweepSome()
						bh.h.dropSlow()
					}
				}
			})
		}
	}
}

// pushOldest moves s to the longest-idle end of its idle list.
func pushOldest(x *index, s *session) {
	l := x.byTimeout[s.timeout]
	x.unlinkFrom(l, s)
	s.newer, s.older = l.oldest, nil
	if l.oldest != nil {
		l.oldest.older = s
	} else {
		l.newest = s
	}
	l.oldest = s
}

// BenchmarkSweepStep measures the longest a sweep holds the hub at once: one
// step that expires defaultSweepStep sessions, each in a game of 4 whose other
// members hear of it.
func BenchmarkSweepStep(b *testing.B) {
	const timeout = 300 * time.Second
	cfg := hubConfig{sessionTimeout: timeout, maxGames: 16, maxSeats: 100}
	now := time.Unix(1_000_000, 0)
	bh := newBenchHub(b, 4*defaultSweepStep, cfg, now)
	for i, c := range bh.conns {
		bh.h.idx.join(bh.h.idx.sessions[c.sid], uuid.UUID{byte(i / 4), 1})
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		bh := newBenchHub(b, 4*defaultSweepStep, cfg, now.Add(timeout))
		for i, c := range bh.conns {
			bh.h.idx.join(bh.h.idx.sessions[c.sid], uuid.UUID{byte(i / 4), 1})
			if i%4 == 0 {
				pushOldest(bh.h.idx, bh.h.idx.sessions[c.sid])
				bh.h.idx.sessions[c.sid].lastActivity = now
			}
		}
		bh.h.handle(sweepMsg{now: now.Add(timeout)})
		b.StartTimer()
		bh.h.sweepSome()
		bh.h.dropSlow()
	}
}

// BenchmarkRefusedMessage measures what the reader spends on a message the
// rate limiter refuses, a 1 MB one included: the scan for its id and the
// error frame, never a decode.
func BenchmarkRefusedMessage(b *testing.B) {
	for name, msg := range map[string][]byte{
		"small":    []byte(`{"type":"heartbeat","id":"h1"}`),
		"1MB":      []byte(`{"type":"heartbeat","id":"f1","data":{"pad":"` + strings.Repeat("x", 1_000_000) + `"}}`),
		"1MB_noid": []byte(`{"type":"heartbeat","data":{"pad":"` + strings.Repeat("x", 1_000_000) + `"},"id":"f1"}`),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = encodeError(&protoError{code: codeRateLimited, id: scanID(msg), message: "too many messages; slow down"})
			}
		})
	}
}

// BenchmarkDecodeHugeDice measures decoding a roll_dice of 1 MB of dice,
// refused at the eleventh die (it took 172 ms when the whole list was decoded).
func BenchmarkDecodeHugeDice(b *testing.B) {
	msg := []byte(`{"type":"roll_dice","id":"r","data":{"game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","dice":[` +
		strings.Repeat("6,", 499_000) + `6]}}`)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = decode(msg)
	}
}

// BenchmarkControlFrame measures the server's own accounting for one client
// ping: the wire meter and the ping limiter (the pong is the library's).
func BenchmarkControlFrame(b *testing.B) {
	c := &conn{raw: &meteredConn{budget: 1 << 20}, control: controlGuard{
		limiter: rate.NewLimiter(rate.Inf, 1), grace: 5 * time.Second}}
	payload := []byte("1234567890")
	b.ReportAllocs()
	for b.Loop() {
		c.controlFrame(payload)
	}
}

// BenchmarkHealth measures /health/connections at 100,000 games: the hub's
// part (a copy-on-write snapshot), and the whole call, with the counts
// unchanged since the last call (the rendering is reused) and changed.
func BenchmarkHealth(b *testing.B) {
	cfg, err := loadConfig(nil)
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(cfg, zerolog.New(io.Discard))
	defer func() { _ = s.shutdown(time.Second, func(context.Context) error { return nil }) }()
	conns := make([]*conn, 100_000/16)
	for i := range conns {
		conns[i] = &conn{sid: fmt.Sprintf("s%07d", i), out: newSendQueue(64, testQueueBytes), quit: make(chan struct{})}
		if !s.hub.register(conns[i]) {
			b.Fatal("register refused")
		}
		for g := range 16 {
			s.hub.send(prepare(conns[i], &command{kind: cmdJoin, game: uuid.UUID{byte(i), byte(i >> 8), byte(g), 7}}, nil))
		}
	}
	if st, _ := s.hub.stats(0); st.ActiveGames != 100_000 {
		b.Fatalf("%d games, want 100000", st.ActiveGames)
	}
	call := func() int {
		rec := httptest.NewRecorder()
		s.serveConnections(rec, httptest.NewRequest("GET", "/health/connections", nil))
		return rec.Body.Len()
	}
	b.Run("hub_snapshot", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.hub.stats(0)
		}
	})
	b.Run("unchanged", func(b *testing.B) {
		call()
		b.ReportAllocs()
		for b.Loop() {
			b.SetBytes(int64(call()))
		}
	})
	b.Run("changed", func(b *testing.B) {
		game := uuid.UUID{0xff, 1}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			kind := cmdJoin
			if i%2 == 1 {
				kind = cmdLeave
			}
			s.hub.send(prepare(conns[0], &command{kind: kind, game: game}, nil))
			b.SetBytes(int64(call()))
			for conns[0].out.len() > 0 {
				conns[0].out.next()
			}
		}
	})
}

// BenchmarkNonReader measures the memory one member that never reads can
// hold: 1 MB decisions are relayed to it until it is dropped as a slow
// consumer, and the most its queue held is reported (B/member). Bounded by
// SEND_QUEUE_BYTES; the frame bound alone let it hold 256 MB.
func BenchmarkNonReader(b *testing.B) {
	cfg := hubConfig{sessionTimeout: 300 * time.Second, maxGames: 16, maxSeats: 100}
	decision := command{kind: cmdDefensive, game: uuid.UUID{1}, decision: json.RawMessage(`{"pad":"` + strings.Repeat("x", 1_000_000) + `"}`)}
	peak := 0
	b.ReportAllocs()
	for b.Loop() {
		h := newHub(cfg, 1)
		sender := &conn{sid: "sender", out: newSendQueue(256, 1<<40), quit: make(chan struct{})}
		reader := &conn{sid: "reader", out: newSendQueue(256, 4194304), quit: make(chan struct{})}
		for _, c := range []*conn{sender, reader} {
			h.idx.add(newSession(c), time.Now())
			h.idx.join(h.idx.sessions[c.sid], decision.game)
		}
		m := prepare(sender, &decision, nil)
		for h.idx.sessions["reader"] != nil {
			h.handle(m)
			peak = max(peak, reader.out.size())
			sender.out.discard()
		}
	}
	b.ReportMetric(float64(peak), "B/member")
}

// BenchmarkHubTurn measures one turn of the running hub loop, a request and
// its reply, with the turn timed and observed (metrics) and without: the
// difference is what timing the hub's steps costs.
func BenchmarkHubTurn(b *testing.B) {
	for _, tc := range []struct {
		name string
		m    *metrics
	}{{"metrics", newMetrics()}, {"none", nil}} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHub(hubConfig{maxGames: 16, maxSeats: 100, metrics: tc.m}, 1)
			go h.run()
			defer func() { h.send(shutdownMsg{}); <-h.done }()
			b.ReportAllocs()
			for b.Loop() {
				h.askCounts()
			}
		})
	}
}

// BenchmarkTurnTiming measures what the hub loop adds per turn: two clock
// readings and one histogram observation.
func BenchmarkTurnTiming(b *testing.B) {
	m := newMetrics()
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		m.hubTurn(time.Since(start))
	}
}

// BenchmarkFrameSent measures the writer's counting of one frame: its type
// read from its first bytes, two atomic adds.
func BenchmarkFrameSent(b *testing.B) {
	m := newMetrics()
	frame := withID(encodeEvent(command{kind: cmdDefensive, decision: []byte(`{"seq":1}`)}, "s", nil, nil), "d1")
	b.ReportAllocs()
	for b.Loop() {
		m.frameSent(frame)
	}
}

// BenchmarkPingRound measures what one ping round costs the server per idle
// connection: the ping, its pong, and the accounting of both, on real
// sockets, with clients that answer pings from fixed buffers and so allocate
// nothing themselves. allocs/op and B/op are per connection and round; a
// conn's garbage per round is what an idle server accumulates between
// collections, and so what its resident memory grows by (2.2 KB in 30
// allocations with the library's Ping; none since liveness.go). stack-B/conn is
// how much goroutine stack the rounds added per connection, read after a
// collection (which shrinks stacks that use less than a quarter of
// themselves): the stack a pong handled deep in a Read would leave behind.
func BenchmarkPingRound(b *testing.B) {
	const conns = 64
	cfg := testConfig(b)
	cfg.PingInterval = 2 * time.Millisecond
	cfg.PingTimeout = time.Second
	// Pongs are rate limited like messages; these come a hundred times faster.
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6
	s := startServer(b, cfg)
	pongs := make(chan struct{}, conns)
	clients := make([]*pongClient, conns)
	for i := range clients {
		clients[i] = dialPongClient(b, s.ts.Listener.Addr().String(), pongs, nil)
	}
	// Stacks are read without a collection first, which would shrink what
	// the rounds grew, and from before the first round, which is the one
	// that grows them if any does (TestPingRoundsKeepStacks).
	stacks := func() uint64 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	before := stacks()
	for range 4 * conns { // a few rounds first, so that what the first ones set up is not counted as allocations
		<-pongs
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		<-pongs // N pongs in all: the allocations per op are per conn and round
	}
	b.StopTimer()
	b.ReportMetric(float64(int64(stacks())-int64(before))/conns, "stack-B/conn")
	for _, c := range clients {
		c.close()
	}
}

// pongClient is a bare WebSocket client that answers every ping with a pong
// and reads everything else, allocating nothing once connected.
type pongClient struct {
	nc   net.Conn
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// dialPongClient connects to addr's /ws by hand and answers its pings,
// telling pongs of each pong it wrote, and texts (when not nil) of each
// message it read but the session frame.
func dialPongClient(tb testing.TB, addr string, pongs, texts chan<- struct{}) *pongClient {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("handshake: %v %v", resp, err)
	}
	c := &pongClient{nc: nc, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		var hdr [8]byte
		payload := make([]byte, 1<<16)
		pong := make([]byte, 6+125)
		messages := 0
		for {
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return
			}
			b0, n := hdr[0], int(hdr[1]&0x7f) // hdr is reused for a longer length
			switch n {
			case 126:
				if _, err := io.ReadFull(br, hdr[:2]); err != nil {
					return
				}
				n = int(binary.BigEndian.Uint16(hdr[:2]))
			case 127:
				if _, err := io.ReadFull(br, hdr[:8]); err != nil {
					return
				}
				n = int(binary.BigEndian.Uint64(hdr[:8]))
			}
			p := payload[:n]
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			if op := b0 & 0x0f; op != 0x9 { // not a ping
				// The end of a data message, fragmented or not; the first is
				// the session frame.
				if fin := b0&0x80 != 0; fin && op <= 0x1 && texts != nil {
					if messages++; messages > 1 {
						texts <- struct{}{}
					}
				}
				continue
			}
			// A masked pong with the zero mask: its payload goes as it is.
			pong[0], pong[1] = 0x8a, 0x80|byte(n)
			clear(pong[2:6])
			copy(pong[6:], p)
			if _, err := nc.Write(pong[:6+n]); err != nil {
				return
			}
			select {
			case pongs <- struct{}{}:
			case <-c.stop:
				return
			}
		}
	}()
	tb.Cleanup(c.close)
	return c
}

// send writes msg as one text frame, masked with the zero mask.
func (c *pongClient) send(tb testing.TB, msg string) {
	tb.Helper()
	f := []byte{0x81, 0x80 | byte(len(msg))}
	if len(msg) > 125 {
		f = binary.BigEndian.AppendUint16([]byte{0x81, 0x80 | 126}, uint16(len(msg)))
	}
	f = append(f, 0, 0, 0, 0) // the mask
	if _, err := c.nc.Write(append(f, msg...)); err != nil {
		tb.Fatal(err)
	}
}

func (c *pongClient) close() {
	c.once.Do(func() {
		close(c.stop)
		_ = c.nc.Close()
	})
	<-c.done
}

// BenchmarkHandshake measures one connect, from the client's dial to its
// session frame, on a real socket: the upgrade read by front, the
// hub's registration, the session frame, and the conn's two goroutines
// started. B/op is what a connect allocates, client included (a dial and a
// fixed buffer); what the conn does not keep is garbage, and a connect
// rate pays for its garbage in collections. Conns are closed in batches
// off the clock, and their ends awaited, so that no teardown is timed.
func BenchmarkHandshake(b *testing.B) {
	const batch = 256
	cfg := testConfig(b)
	cfg.ResumeWindow = 0 // a closed conn's session is not held: the batches would pile up
	s := startServer(b, cfg)
	addr := s.ts.Listener.Addr().String()
	req := []byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	buf := make([]byte, 4096)
	open := make([]net.Conn, 0, batch)
	closeAll := func() {
		for _, nc := range open {
			_ = nc.Close()
		}
		open = open[:0]
		s.handlers.Wait() // every conn's reader and writer have ended
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readSessionFrame(nc, buf); err != nil {
			b.Fatal(err)
		}
		open = append(open, nc)
		if len(open) == batch {
			b.StopTimer()
			closeAll()
			b.StartTimer()
		}
	}
	b.StopTimer()
	closeAll()
}

// readSessionFrame reads a 101 response and the text frame behind it into
// buf, which holds both.
func readSessionFrame(nc net.Conn, buf []byte) error {
	n := 0
	for {
		m, err := nc.Read(buf[n:])
		if err != nil {
			return err
		}
		n += m
		head := bytes.Index(buf[:n], []byte("\r\n\r\n"))
		if head < 0 || n < head+4+2 {
			continue
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
			return fmt.Errorf("handshake answered %q", buf[:n])
		}
		f := buf[head+4 : n]
		size, hdr := int(f[1]&0x7f), 2
		if size == 126 {
			if len(f) < 4 {
				continue
			}
			size, hdr = int(binary.BigEndian.Uint16(f[2:4])), 4
		}
		if len(f) >= hdr+size {
			return nil
		}
	}
}

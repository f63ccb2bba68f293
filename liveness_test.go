package main

// Tests of liveness.go: the pong scanner on byte streams cut every way, and
// the server's pings and the client's pongs on real sockets, from hand-written
// clients that control every byte and every write.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// clientFrame is a client frame on the wire: masked with key, its length in
// the shortest form unless long forces the 8-byte one.
func clientFrame(b0 byte, payload []byte, key [4]byte, long bool) []byte {
	f := []byte{b0, 0x80}
	switch n := len(payload); {
	case long || n > 0xffff:
		f[1] |= 127
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	case n > 125:
		f[1] |= 126
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f[1] |= byte(n)
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

// pongFrame is a client's pong to the ping numbered seq.
func pongFrame(seq uint64) []byte {
	return clientFrame(0x8a, binary.BigEndian.AppendUint64(nil, seq), [4]byte{0x12, 0x34, 0x56, 0x78}, false)
}

// scanAll runs a scanner over stream cut into the given chunk sizes (the last
// repeated), as reads would deliver it, and returns what it handed on and the
// pongs it took.
func scanAll(stream []byte, chunks []int) (kept []byte, seqs []uint64) {
	var s pongScanner
	pong := func(seq uint64) { seqs = append(seqs, seq) }
	buf := make([]byte, len(stream)+maxHeaderLen)
	for i := 0; len(stream) > 0; i++ {
		n := min(chunks[min(i, len(chunks)-1)], len(stream))
		k := copy(buf, s.held[:s.nheld])
		k += copy(buf[k:], stream[:n])
		stream = stream[n:]
		kept = append(kept, buf[:s.scan(buf[:k], pong)]...)
	}
	return kept, seqs
}

// TestPongScannerTakesOnlyItsPongs: in a stream of every kind of client
// frame, the scanner takes out exactly the well-formed pongs with an 8-byte
// payload, reports their numbers in order, and hands on every other byte as
// it came, however the stream is cut into reads.
func TestPongScannerTakesOnlyItsPongs(t *testing.T) {
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	var want []byte
	add := func(f []byte) []byte { want = append(want, f...); return f }
	var stream []byte
	stream = append(stream, add(clientFrame(0x81, []byte(`{"type":"heartbeat"}`), key, false))...)
	stream = append(stream, pongFrame(1)...)
	stream = append(stream, add(clientFrame(0x81, bytes.Repeat([]byte("x"), 300), key, false))...)   // 2-byte length
	stream = append(stream, add(clientFrame(0x81, bytes.Repeat([]byte("y"), 70000), key, false))...) // 8-byte length
	stream = append(stream, add(clientFrame(0x81, []byte("z"), key, true))...)                       // 8-byte length, 1 byte
	stream = append(stream, add(clientFrame(0x89, binary.BigEndian.AppendUint64(nil, 7), key, false))...)
	stream = append(stream, add(clientFrame(0x8a, []byte("abc"), key, false))...)                         // a pong of another size
	stream = append(stream, add(clientFrame(0x0a, binary.BigEndian.AppendUint64(nil, 9), key, false))...) // fragmented pong
	stream = append(stream, add(clientFrame(0xca, binary.BigEndian.AppendUint64(nil, 9), key, false))...) // RSV1 set
	stream = append(stream, add([]byte{0x8a, 0x08, 0, 0, 0, 0, 0, 0, 0, 9})...)                           // unmasked pong
	stream = append(stream, add(clientFrame(0x01, []byte("part"), key, false))...)                        // a fragment…
	stream = append(stream, pongFrame(2)...)                                                              // …a pong between fragments…
	stream = append(stream, add(clientFrame(0x80, []byte("end"), key, false))...)                         // …and the last one
	stream = append(stream, pongFrame(3)...)
	stream = append(stream, pongFrame(1<<63|5)...)
	stream = append(stream, add(clientFrame(0x88, []byte{0x03, 0xe8}, key, false))...)

	for _, chunks := range [][]int{{len(stream)}, {1}, {2}, {3}, {5}, {13}, {14}, {15}, {1024}, {6, 1, 7, 2, 100}} {
		t.Run(fmt.Sprint(chunks), func(t *testing.T) {
			kept, seqs := scanAll(stream, chunks)
			if !bytes.Equal(kept, want) {
				t.Fatalf("handed on %d bytes, want %d: the stream without its pongs", len(kept), len(want))
			}
			if !slices.Equal(seqs, []uint64{1, 2, 3, 1<<63 | 5}) {
				t.Fatalf("took pongs %v, want [1 2 3 %d]", seqs, uint64(1<<63|5))
			}
		})
	}
}

// refScan is the scanner's specification on a whole stream at once: every
// frame but the well-formed 8-byte pongs, and a trailing incomplete header
// (or pong) left out.
func refScan(b []byte) (kept []byte, seqs []uint64) {
	for len(b) > 0 {
		if len(b) < 2 {
			return kept, seqs
		}
		ext := map[byte]int{126: 2, 127: 8}[b[1]&0x7f]
		hlen := 2 + ext + int(b[1]>>7)*4
		if len(b) < hlen {
			return kept, seqs
		}
		plen := uint64(b[1] & 0x7f)
		if ext == 2 {
			plen = uint64(binary.BigEndian.Uint16(b[2:]))
		} else if ext == 8 {
			plen = binary.BigEndian.Uint64(b[2:])
		}
		if b[0] == 0x8a && b[1] == 0x88 {
			if len(b) < 14 {
				return kept, seqs
			}
			var p [8]byte
			for i := range p {
				p[i] = b[6+i] ^ b[2+i%4]
			}
			seqs = append(seqs, binary.BigEndian.Uint64(p[:]))
			b = b[14:]
			continue
		}
		n := uint64(hlen) + min(plen, uint64(len(b)-hlen))
		kept = append(kept, b[:n]...)
		b = b[n:]
	}
	return kept, seqs
}

// FuzzPongScanner: on any bytes, cut into reads any way, the scanner hands on
// and takes exactly what the whole-stream specification does.
func FuzzPongScanner(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(append(pongFrame(42), clientFrame(0x81, []byte("hi"), key, false)...), []byte{1})
	f.Add(append(clientFrame(0x81, bytes.Repeat([]byte("a"), 200), key, false), pongFrame(1)...), []byte{3, 14, 1})
	f.Add(clientFrame(0x82, []byte("bin"), key, true), []byte{15})
	f.Add([]byte{0x8a, 0x88, 1, 2}, []byte{1})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		chunks := []int{len(stream) + 1}
		if len(cuts) > 0 {
			chunks = chunks[:0]
			for _, c := range cuts {
				chunks = append(chunks, int(c%32)+1)
			}
		}
		kept, seqs := scanAll(stream, chunks)
		wantKept, wantSeqs := refScan(stream)
		if !bytes.Equal(kept, wantKept) || !slices.Equal(seqs, wantSeqs) {
			t.Fatalf("cut %v: kept %x pongs %v, want %x pongs %v", chunks, kept, seqs, wantKept, wantSeqs)
		}
	})
}

// readUntil reads server frames until want accepts one, within waitFor,
// failing the test on a read error or a close frame (what names the wait).
func (p *rawPeer) readUntil(t *testing.T, what string, want func(op byte, payload []byte) bool) []byte {
	t.Helper()
	_ = p.nc.SetReadDeadline(time.Now().Add(waitFor))
	for {
		op, payload, err := p.readFrame()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if op == 0x8 {
			t.Fatalf("closed with %x while waiting for %s", payload, what)
		}
		if want(op, payload) {
			return payload
		}
	}
}

// pingOf reads server frames until a ping and returns its number.
func (p *rawPeer) pingOf(t *testing.T) uint64 {
	t.Helper()
	payload := p.readUntil(t, "a ping", func(op byte, _ []byte) bool { return op == 0x9 })
	if len(payload) != 8 {
		t.Fatalf("ping payload %x, want 8 bytes", payload)
	}
	return binary.BigEndian.Uint64(payload)
}

// write writes b, failing the test on an error.
func (p *rawPeer) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectHeartbeatAck sends a heartbeat and reads until its ack: the conn is
// served, and whatever it was sent before was read as it should be.
func (p *rawPeer) expectHeartbeatAck(t *testing.T) {
	t.Helper()
	p.write(t, clientFrame(0x81, []byte(`{"type":"heartbeat","id":"hb"}`), [4]byte{9, 8, 7, 6}, false))
	p.readUntil(t, "heartbeat_ack", func(op byte, payload []byte) bool {
		return op == 0x1 && bytes.Contains(payload, []byte(`"heartbeat_ack"`))
	})
}

// TestPongsAnswerPingsInAnyCut: a client that answers each ping with its
// number, the pong written whole, or cut into two writes with a pause between
// (so the server reads it in two), keeps its connection over many more rounds
// than PING_TIMEOUT allows unanswered, and its round trips are counted.
func TestPongsAnswerPingsInAnyCut(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = 20 * time.Millisecond
	cfg.PingTimeout = 400 * time.Millisecond
	s := startServer(t, cfg)
	p := dialRaw(t, strings.TrimPrefix(s.ts.URL, "http://"))
	last := uint64(0)
	for round := range 30 {
		seq := p.pingOf(t)
		if seq <= last {
			t.Fatalf("ping %d after ping %d", seq, last)
		}
		last = seq
		pong := pongFrame(seq)
		if cut := round % 3; cut > 0 {
			p.write(t, pong[:cut*4])
			time.Sleep(30 * time.Millisecond) // two reads on the server's side, not one
			pong = pong[cut*4:]
		}
		p.write(t, pong)
	}
	p.expectHeartbeatAck(t)
	_, fams := scrape(t, s)
	if n := metricValue(t, fams, "dugout_ping_rtt_seconds"); n < 25 {
		t.Errorf("dugout_ping_rtt_seconds counted %v round trips, want most of 30", n)
	}
}

// TestWrongPongsLeaveThePingUnanswered: pongs that carry another number than
// the ping's answer nothing, and the conn ends for its missing pong, with no
// close frame, within PING_INTERVAL + PING_TIMEOUT.
func TestWrongPongsLeaveThePingUnanswered(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = 50 * time.Millisecond
	cfg.PingTimeout = 300 * time.Millisecond
	s := startServer(t, cfg)
	p := dialRaw(t, strings.TrimPrefix(s.ts.URL, "http://"))
	start := time.Now()
	seq := p.pingOf(t)
	p.write(t, pongFrame(seq+1))
	p.write(t, pongFrame(seq-1))
	code, cut, err := p.closeCode(waitFor)
	if err != nil || !cut || code != -1 {
		t.Fatalf("close code %d, cut %v, err %v; want the socket cut with no close frame", code, cut, err)
	}
	if late := cfg.PingInterval + cfg.PingTimeout + e2eSlack; time.Since(start) > late {
		t.Errorf("cut after %s, later than %s", time.Since(start), late)
	}
}

// TestPongFloodIsRateLimited: the pongs the server takes off the wire count
// against the control frame limit like the library's: a client that sends
// them without a pause is ended as a flooder after the grace.
func TestPongFloodIsRateLimited(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute
	cfg.rateLimitGrace = 300 * time.Millisecond
	s := startServer(t, cfg)
	p := dialRaw(t, strings.TrimPrefix(s.ts.URL, "http://"))
	flood := bytes.Repeat(pongFrame(12345), 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := p.nc.Write(flood); err != nil {
				return
			}
		}
	}()
	code, _, err := p.closeCode(waitFor)
	_ = p.nc.Close()
	<-done
	if err != nil || code != int(reasonFlood.code) {
		t.Fatalf("close code %d (%v), want %d", code, err, reasonFlood.code)
	}
}

// TestOtherControlFramesReachTheLibrary: a pong of another size is left to
// the library, which takes it quietly; a fragmented pong is left to it too,
// and it refuses it as a protocol error.
func TestOtherControlFramesReachTheLibrary(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute
	s := startServer(t, cfg)
	addr := strings.TrimPrefix(s.ts.URL, "http://")
	p := dialRaw(t, addr)
	p.write(t, clientFrame(0x8a, []byte("abc"), [4]byte{1, 1, 1, 1}, false))
	p.expectHeartbeatAck(t)

	q := dialRaw(t, addr)
	q.write(t, clientFrame(0x0a, binary.BigEndian.AppendUint64(nil, 1), [4]byte{1, 1, 1, 1}, false))
	if code, _, err := q.closeCode(waitFor); err != nil || code != 1002 {
		t.Fatalf("fragmented pong: close code %d (%v), want 1002", code, err)
	}
}

// TestFramesRightBehindTheHandshakeAreRead: frames a client sends in the same
// write as its handshake, which net/http reads ahead with the request, reach
// the library: the pong among them is taken, the heartbeat is answered.
func TestFramesRightBehindTheHandshakeAreRead(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = time.Minute
	s := startServer(t, cfg)
	addr := strings.TrimPrefix(s.ts.URL, "http://")
	nc, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	b := append([]byte(req), pongFrame(1)...)
	b = append(b, clientFrame(0x81, []byte(`{"type":"heartbeat","id":"early"}`), [4]byte{5, 6, 7, 8}, false)...)
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	var types []string
	for len(types) < 2 {
		op, payload, err := p.readFrame()
		if err != nil {
			t.Fatalf("after %v: %v", types, err)
		}
		var f frame
		if op != 1 || json.Unmarshal(payload, &f) != nil {
			t.Fatalf("after %v: opcode %d %q", types, op, payload)
		}
		types = append(types, f.Type+"/"+f.ID)
	}
	if !slices.Equal(types, []string{"session/", "heartbeat_ack/early"}) {
		t.Fatalf("got %v, want the session frame, then the early heartbeat's ack", types)
	}
}

// TestPingsAmongLargeFramesAndPongReplies: the writer's pings go onto the
// socket between whole frames while the writer sends frames larger than its
// buffer (two writes each) and the reader has the library answer the
// client's own pings (writes from another goroutine). A hand-written client
// pings and sends 3 KB decisions, answers every ping, and parses every byte
// it gets: a ping inside a frame and the stream would not parse. (Why a ping
// cannot land inside one is structural: only the writer writes it, between
// its own frames, and the library's frames from the reader are single small
// writes. A variant writing pings from a goroutine of their own passed this
// test too: the window between a large frame's two writes is too short to hit.)
func TestPingsAmongLargeFramesAndPongReplies(t *testing.T) {
	cfg := testConfig(t)
	cfg.PingInterval = time.Millisecond
	cfg.PingTimeout = 2 * time.Second
	cfg.RateLimit, cfg.RateBurst = 1e6, 1e6
	s := startServer(t, cfg)
	p := dialRaw(t, strings.TrimPrefix(s.ts.URL, "http://"))
	var wmu sync.Mutex // the client's two writers: the sender and the pong answerer
	send := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := p.nc.Write(b)
		return err
	}
	key := [4]byte{7, 7, 7, 7}
	game := "9b1f7c2e-1d3a-4c5b-8e6f-0a1b2c3d4e5f"
	echoes := make(chan string, 1)
	var pings, pongs int
	readErr := make(chan error, 1)
	go func() {
		readErr <- func() error {
			for {
				op, payload, err := p.readFrame()
				if err != nil {
					return err
				}
				switch op {
				case 0x1:
					var f frame
					if err := json.Unmarshal(payload, &f); err != nil {
						return fmt.Errorf("text frame of %d bytes does not parse: %v", len(payload), err)
					}
					if f.Type == "defensive_decision" || f.Type == "game_joined" {
						echoes <- f.ID
					}
				case 0x9:
					pings++
					if len(payload) != 8 {
						return fmt.Errorf("ping payload %x", payload)
					}
					if err := send(clientFrame(0x8a, payload, key, false)); err != nil {
						return err
					}
				case 0xa:
					pongs++
				default:
					return fmt.Errorf("opcode %d in the stream", op)
				}
			}
		}()
	}()
	expect := func(id string) {
		t.Helper()
		select {
		case got := <-echoes:
			if got != id {
				t.Fatalf("got the echo of %q, want %q", got, id)
			}
		case err := <-readErr:
			t.Fatalf("client's read: %v", err)
		case <-time.After(waitFor):
			t.Fatalf("no echo of %q", id)
		}
	}
	if err := send(clientFrame(0x81, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+game+`"}}`), key, false)); err != nil {
		t.Fatal(err)
	}
	expect("j")
	pad := strings.Repeat("x", 3000)
	const decisions = 500
	for i := range decisions {
		id := fmt.Sprint("d", i)
		msg := `{"type":"submit_defensive_decision","id":"` + id + `","data":{"game_id":"` + game + `","decision":{"pad":"` + pad + `"}}}`
		if err := send(append(clientFrame(0x89, []byte("ab"), key, false), clientFrame(0x81, []byte(msg), key, false)...)); err != nil {
			t.Fatal(err)
		}
		expect(id)
	}
	_ = p.nc.Close()
	<-readErr
	t.Logf("%d pings, %d pongs over %d decisions", pings, pongs, decisions)
	if pings < 20 || pongs < decisions/2 {
		t.Fatalf("the client got %d pings and %d pongs over %d decisions: the test exercised little", pings, pongs, decisions)
	}
}

package main

import (
	"encoding/binary"
	"sync/atomic"
	"time"
)

// Liveness: the server's pings, written by the writer between its frames,
// and the client's pongs, taken off the wire before the WebSocket library
// sees them.
//
// The library's own Ping waits for its pong, so it needs a goroutine per
// ping, and it and the library's handling of every control frame it reads
// allocate contexts and timers: about 2.2 KB of garbage per connection and
// ping round (BenchmarkPingRound). An idle server makes garbage at no other
// time, so that is what its heap, and its resident memory, grows by between
// collections: a third more per idle connection after four rounds (25.0 to
// 33.7 KiB, bench/README.md). Here a round allocates nothing: the ping is a
// 10-byte frame the writer writes itself, and its pong is recognised in the
// bytes the reader reads. That happens inside the idle reader's blocked Read,
// so whatever the pong handler needs is stacked on the frames the reader
// waits under: readLoop keeps those small (TestPingRoundsKeepStacks).

// pingFrameLen is the server's ping on the wire: FIN and opcode 9, an
// unmasked 8-byte payload, which is the ping's sequence number.
const pingFrameLen = 2 + 8

// pingState is the ping in flight, shared by the writer that sends it and
// the reader that sees its pong.
type pingState struct {
	seq    atomic.Uint64      // payload of the last ping sent
	sentAt atomic.Int64       // when it was written, Unix ns; 0 once its pong is in
	rtt    atomic.Int64       // its round trip once answered, ns, until recorded; else 0
	frame  [pingFrameLen]byte // the writer's, to write the ping from
}

// ping writes the next ping, unless the last one is still unanswered: one
// ping at a time, and a peer that has not answered the last one is already
// on its way out. A write that cannot finish within timeout ends the conn
// like a missing pong.
func (c *conn) ping(timeout time.Duration) {
	select {
	case <-c.quit:
		return // the select that woke the writer chose the tick over the quit: no ping after a goodbye
	default:
	}
	if c.pings.sentAt.Load() != 0 {
		return
	}
	c.recordRoundTrip()
	seq := c.pings.seq.Add(1)
	frame := c.pings.frame[:] // kept in the conn: a slice passed to the socket's interface escapes
	frame[0], frame[1] = 0x89, 8
	binary.BigEndian.PutUint64(frame[2:], seq)
	c.pings.sentAt.Store(monotonic())
	c.pongDue.Reset(timeout)
	_ = c.raw.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.raw.Write(frame)
	_ = c.raw.SetWriteDeadline(time.Time{})
	if err != nil {
		c.writeFailed(err)
	}
}

// pongDeadline runs on the writer when PING_TIMEOUT has passed since the last
// ping (with a PING_INTERVAL shorter than that, only when its pong is
// missing: the next ping moves the deadline). Without its pong the peer is
// presumed gone, and the socket is closed outright, since a write blocked on
// it must be cut.
func (c *conn) pongDeadline() {
	if c.pings.sentAt.Load() == 0 {
		c.recordRoundTrip()
		return
	}
	c.met.pongTimeout()
	c.stop(reasonTimeout)
	_ = c.raw.Close()
}

// recordRoundTrip records the last ping's round trip once, on the writer: it
// keeps the reader's part of a pong to a few atomic loads and stores, so a
// pong costs the reader no deeper stack than the Read it arrives in.
func (c *conn) recordRoundTrip() {
	if rtt := c.pings.rtt.Swap(0); rtt != 0 {
		c.met.pingRoundTrip(time.Duration(rtt))
	}
}

// pong takes a pong the client sent with the 8-byte payload seq (unmasked),
// read off the wire on the reader (or, during a close handshake, on the
// writer). It answers the ping in flight when seq is its number; any pong
// counts against the control frame rate limit, as the library's would.
func (c *conn) pong(seq uint64) {
	c.controlAllowed()
	sent := c.pings.sentAt.Load()
	if sent == 0 || seq != c.pings.seq.Load() {
		return // unsolicited, or late for a ping already answered
	}
	c.pings.rtt.Store(max(1, monotonic()-sent))
	c.pings.sentAt.Store(0)
}

// monoBase is where monotonic counts from.
var monoBase = time.Now()

// monotonic is the time since monoBase on the monotonic clock, ns, at least 1
// (0 marks no ping in flight): a wall clock step cannot make a round trip up.
func monotonic() int64 { return max(1, int64(time.Since(monoBase))) }

// pongScanner finds the client's pongs in the bytes read from its socket and
// takes them out, so the library reads a stream without them. It tracks the
// frame boundaries: a frame's header is parsed whole, held back from the
// library while it is incomplete (14 bytes at most), and a frame's payload is
// passed on without a look. Only a well-formed pong with an 8-byte payload
// (the server's pings' size) is taken; every other frame, malformed ones
// included, goes to the library as it came, to be answered or refused there.
type pongScanner struct {
	held  [maxHeaderLen]byte // an incomplete header from the last read
	nheld int
	skip  uint64 // payload bytes of the current frame still to pass on
}

// maxHeaderLen is the longest client frame header: 2 bytes, an 8-byte
// length, a 4-byte mask. A whole pong with an 8-byte payload is as long.
const maxHeaderLen = 2 + 8 + 4

// scan processes b, the held bytes followed by those just read, in place: it
// moves what the library is to read to the front and returns its length,
// holds back an incomplete header, and calls pong for each pong it takes out.
func (s *pongScanner) scan(b []byte, pong func(seq uint64)) int {
	w, i := 0, 0
	for i < len(b) {
		if s.skip > 0 {
			n := int(min(s.skip, uint64(len(b)-i)))
			w += copy(b[w:], b[i:i+n])
			i += n
			s.skip -= uint64(n)
			continue
		}
		hlen, plen, ok := frameHeader(b[i:])
		if !ok {
			break // incomplete: held back below
		}
		if isPong(b[i:], plen) {
			if len(b)-i < hlen+8 {
				break // the pong's payload is still to come
			}
			var p [8]byte
			copy(p[:], b[i+hlen:i+hlen+8])
			mask8(&p, b[i+hlen-4:i+hlen])
			pong(binary.BigEndian.Uint64(p[:]))
			i += hlen + 8
			continue
		}
		w += copy(b[w:], b[i:i+hlen])
		i += hlen
		s.skip = plen
	}
	s.nheld = copy(s.held[:], b[i:])
	return w
}

// frameHeader parses the frame header at the start of b: its length and the
// payload length it announces; ok is false while b holds less than a header.
func frameHeader(b []byte) (hlen int, plen uint64, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	ext := 0 // bytes of extended length
	switch b[1] & 0x7f {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	hlen = 2 + ext
	if b[1]&0x80 != 0 {
		hlen += 4 // the mask
	}
	if len(b) < hlen {
		return 0, 0, false
	}
	switch ext {
	case 0:
		plen = uint64(b[1] & 0x7f)
	case 2:
		plen = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 8:
		plen = binary.BigEndian.Uint64(b[2:10])
	}
	return hlen, plen, true
}

// isPong reports whether the frame whose header starts b is a pong the
// scanner takes: FIN, no reserved bits, opcode 10, masked (as a client's
// frames must be), an 8-byte payload.
func isPong(b []byte, plen uint64) bool {
	return b[0] == 0x8a && b[1] == 0x80|8 && plen == 8
}

// mask8 unmasks an 8-byte payload with its 4-byte key.
func mask8(p *[8]byte, key []byte) {
	for i := range p {
		p[i] ^= key[i%4]
	}
}

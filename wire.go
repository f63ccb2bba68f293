package main

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// The WebSocket library bounds a message by its payload (MAX_MESSAGE_BYTES),
// but not by the frames it arrives in: a client can send empty continuation
// frames forever, each one a header to parse, and the message never ends, so
// neither the read limit nor the rate limiter ever sees it. meteredConn counts
// the bytes every data frame takes on the wire instead, and ends a message
// whose frames take more than its payload could need.
const (
	// wireSlack is what a message may take on the wire beyond its
	// MAX_MESSAGE_BYTES of payload: frame headers (up to 14 bytes each, so a
	// few thousand fragments), and what the socket's read buffer fetched ahead
	// of the message's end.
	wireSlack = 64 << 10

	// closeReadBudget is what a stopped conn may still read: enough for the
	// peer's answer to a close frame behind a few frames already in flight,
	// not a flooder's next megabytes.
	closeReadBudget = 64 << 10
)

// errWireBudget ends a read whose frames have outgrown the budget; the conn
// ends as a message too big.
var errWireBudget = errors.New("frames exceed what one message may take on the wire")

// meteredConn is the hijacked socket with a count of the bytes read since
// the last whole message. Pings and pongs are taken back out of the count
// (they are rate limited on their own), so only data frames are metered.
// Its methods are safe from any goroutine: the reader counts while it reads,
// a close handshake may read on the writer, and stop may come from the hub.
type meteredConn struct {
	net.Conn

	// set at construction
	budget int64 // bytes one message may take on the wire: MAX_MESSAGE_BYTES + wireSlack
	// bandwidth paces the reads to paceFactor times what the rate limit
	// lets a client send: RATE_LIMIT messages of MAX_MESSAGE_BYTES a second,
	// in bursts of RATE_BURST. Past it the socket is simply read later, so
	// TCP's flow control slows the client down at no cost to the server: a
	// flood of megabyte messages no longer costs a core in reads alone.
	// nil: unpaced.
	bandwidth *rate.Limiter

	// set at hijack
	pending []byte           // what net/http read past the handshake: read first
	pong    func(seq uint64) // the conn's pong handler; nil leaves pongs to the library
	frames  pongScanner      // used only inside the library's reads, one at a time

	read    atomic.Int64 // bytes since the last whole message (or since stop)
	stopped atomic.Bool  // the conn is ending: the budget is closeReadBudget from then on
}

// Read reads from the socket and fails once the bytes since the last whole
// message exceed the budget. The read that crosses it is not handed on: what
// it holds is the flood itself, not something to answer.
//
// The client's pongs to the server's pings are taken out of what is handed on
// (liveness.go), and a read that held nothing else reads again: a pong
// arriving while the reader waits for a message leaves it waiting where it
// was, and the library never hears of it.
func (m *meteredConn) Read(p []byte) (int, error) {
	if m.pong == nil {
		n, err := m.readWire(p)
		if cerr := m.count(n, n); cerr != nil {
			return 0, cerr
		}
		return n, err
	}
	for {
		if len(p) <= m.frames.nheld {
			return 0, io.ErrShortBuffer // the library's buffered reads are far larger
		}
		k := copy(p, m.frames.held[:m.frames.nheld])
		n, err := m.readWire(p[k:])
		kept := m.frames.scan(p[:k+n], m.pong)
		if cerr := m.count(kept, n); cerr != nil {
			return 0, cerr
		}
		if kept > 0 || err != nil {
			return kept, err
		}
	}
}

// readWire reads what net/http had read ahead, then the socket.
func (m *meteredConn) readWire(p []byte) (int, error) {
	if len(m.pending) > 0 {
		n := copy(p, m.pending)
		m.pending = m.pending[n:]
		return n, nil
	}
	return m.Conn.Read(p)
}

// count counts a read of n bytes off the wire, of which kept are handed on,
// and fails once the count since the last whole message passes the budget;
// a read within it is paced. A stopped conn counts every byte, pongs too: a
// flooder ended for its pongs reads no more than any other closing conn.
func (m *meteredConn) count(kept, n int) error {
	limit, counted := m.budget, kept
	if m.stopped.Load() {
		limit, counted = closeReadBudget, n
	}
	if m.read.Add(int64(counted)) > limit {
		return errWireBudget
	}
	m.pace(n)
	return nil
}

// maxPause bounds one pause of a paced read, so that a conn that is stopped
// meanwhile notices soon; the debt carries over to the next read.
const maxPause = time.Second

// pace waits until the bandwidth allows n more bytes. Runs on whichever
// goroutine reads (the reader, or the writer during a close handshake).
func (m *meteredConn) pace(n int) {
	if m.bandwidth == nil || n == 0 || m.stopped.Load() {
		return
	}
	r := m.bandwidth.ReserveN(time.Now(), min(n, m.bandwidth.Burst()))
	if d := r.Delay(); d > 0 {
		time.Sleep(min(d, maxPause))
	}
}

// messageDone starts a new count: a whole message has been read.
func (m *meteredConn) messageDone() {
	if !m.stopped.Load() {
		m.read.Store(0)
	}
}

// uncount takes n bytes of a control frame back out of the count.
func (m *meteredConn) uncount(n int) {
	if !m.stopped.Load() {
		m.read.Add(-int64(n))
	}
}

// ending switches to the close budget, counted from now.
func (m *meteredConn) ending() {
	m.stopped.Store(true)
	m.read.Store(0)
}

// paceFactor is how far past the rate limit's own bandwidth reads are paced.
// More than one, so that a client flooding with the largest messages is
// still refused most of them, and so ended after the flood grace; small, so
// that it costs a small part of a core meanwhile.
const paceFactor = 4

// newBandwidth returns the read pacing for a client allowed perSecond
// messages of maxBytes each, in bursts of burst messages.
func newBandwidth(perSecond float64, burst int, maxBytes int64) *rate.Limiter {
	limit := paceFactor * perSecond * float64(maxBytes)
	return rate.NewLimiter(rate.Limit(limit), int(min(paceFactor*int64(burst)*maxBytes, 1<<40)))
}

// controlFrameBytes is what a client's control frame with a payload of n
// bytes takes on the wire: a 2-byte header and a 4-byte mask (a control
// payload is at most 125 bytes, so its length fits the first header).
func controlFrameBytes(n int) int { return 2 + 4 + n }

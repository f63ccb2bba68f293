package main

import (
	"errors"
	"net"
	"sync/atomic"
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

	read    atomic.Int64 // bytes since the last whole message (or since stop)
	stopped atomic.Bool  // the conn is ending: the budget is closeReadBudget from then on
}

// Read reads from the socket and fails once the bytes since the last whole
// message exceed the budget. The read that crosses it is not handed on: what
// it holds is the flood itself, not something to answer.
func (m *meteredConn) Read(p []byte) (int, error) {
	n, err := m.Conn.Read(p)
	limit := m.budget
	if m.stopped.Load() {
		limit = closeReadBudget
	}
	if m.read.Add(int64(n)) > limit {
		return 0, errWireBudget
	}
	return n, err
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

// controlFrameBytes is what a client's control frame with a payload of n
// bytes takes on the wire: a 2-byte header and a 4-byte mask (a control
// payload is at most 125 bytes, so its length fits the first header).
func controlFrameBytes(n int) int { return 2 + 4 + n }

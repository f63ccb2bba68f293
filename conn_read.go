package main

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"math/big"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// The reader: what serveConn's goroutine does with each client message, from
// reading it whole to handing the hub a typed command, and the rate limits it
// keeps on messages and on control frames.

// readLoop reads client messages until the conn ends, leaving why in c.rd.
// It rate-limits and decodes here, so the hub receives only valid, typed
// commands. A refused message costs a bounded scan for its id, never a decode;
// a reply to a refused message is dropped rather than queued when the queue
// is half full, so it cannot make its own sender a slow consumer.
//
// An idle connection's reader waits in ws.Reader, right under this frame, and
// the client's pongs are taken off the wire inside that wait (liveness.go):
// everything the reader does with a message is in readAndServe, not inlined,
// so that its locals are not on the stack while it waits. A few hundred bytes
// more there, and the first pong grows every idle reader's stack from 4 KiB
// to 8 (TestPingRoundsKeepStacks). Messages are served on that same 4 KiB:
// nothing the reader keeps between messages is on its stack (readState is
// the conn's, and results go there rather than back up the frames), and the
// frames a player's usual messages need are kept small and written without
// json.Marshal's reflection, with some 600 bytes to spare
// (TestMessagesKeepStacks). What needs encoding/json (a resume, a
// refresh_token, a malformed frame) is served aside (serveAside). Only
// refusals decided on the reader (over the rate limit, bad dice) are encoded
// there by json.Marshal, and may grow that client's reader.
func (s *server) readLoop(c *conn) {
	c.rd = readState{limiter: rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst), first: true}
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			c.rd.reason = readErrorReason(err)
			return
		}
		if end := s.readAndServe(c, typ, r); end {
			return
		}
	}
}

// readAndServe reads the rest of the message the reader has begun and serves
// it, and reports whether the conn ends (why is c.rd.reason).
//
//go:noinline
func (s *server) readAndServe(c *conn, typ websocket.MessageType, r io.Reader) bool {
	msg, err := readMessage(r, s.cfg.MaxMessageBytes)
	if err != nil {
		c.rd.reason = readErrorReason(err)
		return true
	}
	select {
	case <-c.quit:
		putReadBuffer(msg)
		c.rd.reason = c.reason // ended by the hub or the writer: what was read meanwhile is not served
		return true
	default:
	}
	end := s.serveMessage(c, typ, *msg)
	putReadBuffer(msg) // serveMessage keeps nothing of it: decode copies what a command holds
	return end
}

// readState is what the reader keeps from one message to the next. It is
// the conn's, not on the reader's stack, which an idle connection keeps for
// its whole life (see readLoop).
type readState struct {
	reason  closeReason // why the conn ends, once it does
	limiter *rate.Limiter
	flood   floodTracker
	first   bool // no client frame read yet
}

// serveMessage handles one message the reader read, and reports whether the
// conn ends (why is c.rd.reason). It is a function of its own, not inlined,
// so that its locals are on the reader's stack only while a message is
// handled, and the refusals and the commands that wait for the hub are
// steps of their own, so that the messages clients send most fit the stack
// an idle reader has (TestMessagesKeepStacks). What decodeFast does not
// decode is served aside.
//
//go:noinline
func (s *server) serveMessage(c *conn, typ websocket.MessageType, msg []byte) bool {
	st := &c.rd
	first := st.first
	st.first = false
	c.raw.messageDone()
	if typ != websocket.MessageText {
		s.met.frameReceived(0, len(msg))
		st.reason = reasonBinary
		return true
	}
	if !st.limiter.Allow() {
		return s.refuseRate(c, msg)
	}
	cmd, perr, ok := decodeFast(msg)
	switch {
	case !ok:
		return s.serveAside(c, msg, first)
	case perr != nil:
		s.refuseInvalid(c, msg, perr)
		return false
	}
	return s.serveCommand(c, &cmd, len(msg), first)
}

// serveAside serves a message decodeFast left to decodeStrict (a resume, a
// refresh_token, anything refused) on a goroutine of its own, which the
// reader waits for. encoding/json's reflection and a token's verification
// need more stack than the 4 KiB an idle reader waits on, and a stack grown
// once is kept: one resume made a reader 8 KiB for the connection's life,
// and after a restart every connection is a resumed one. A message a
// client sends a few times in a connection's life can afford a goroutine.
//
//go:noinline
func (s *server) serveAside(c *conn, msg []byte, first bool) bool {
	end := make(chan bool, 1)
	go func() {
		cmd, perr := decodeStrict(msg)
		if perr != nil {
			s.refuseInvalid(c, msg, perr)
			end <- false
			return
		}
		end <- s.serveCommand(c, &cmd, len(msg), first)
	}()
	return <-end
}

// serveCommand serves a decoded command of size bytes, and reports whether
// the conn ends (why is c.rd.reason).
func (s *server) serveCommand(c *conn, cmd *command, size int, first bool) bool {
	s.met.frameReceived(cmd.kind, size)
	var ok bool
	switch cmd.kind {
	case cmdResume:
		ok = s.resume(c, cmd, first)
	case cmdRefresh:
		ok = s.refreshToken(c, cmd)
	default:
		ok = s.forward(c, cmd)
	}
	if !ok {
		c.rd.reason = reasonShutdown // the hub has stopped
	}
	return !ok
}

// refuseRate answers a message over the rate limit, and reports whether the
// conn ends, as a flooder.
//
//go:noinline
func (s *server) refuseRate(c *conn, msg []byte) bool {
	s.met.frameReceived(scanType(msg), len(msg))
	if c.rd.flood.refused(time.Now(), s.cfg.rateLimitGrace) {
		c.rd.reason = reasonFlood
		return true
	}
	c.out.offer(encodeError(&protoError{code: codeRateLimited, id: scanID(msg), message: "too many messages; slow down"}))
	return false
}

// refuseInvalid answers a message decode refused.
//
//go:noinline
func (s *server) refuseInvalid(c *conn, msg []byte, perr *protoError) {
	kind := scanType(msg) // the error path only: a valid frame's kind is decode's
	s.met.frameReceived(kind, len(msg))
	if kind == cmdResume {
		s.met.resumed(resumeInvalid)
	}
	c.out.offer(encodeError(perr))
}

// forward hands the hub a command, with what can be encoded outside it, and
// reports false once the hub has stopped.
//
//go:noinline
func (s *server) forward(c *conn, cmd *command) bool {
	var results []int
	if cmd.kind == cmdRoll {
		results = rollDice(cmd.dice)
	}
	return s.hub.send(prepare(c, cmd, results))
}

// resume asks the hub to give c the session cmd names, and waits for the
// answer: from then on the conn serves that session, under its sid (the
// reader's own field: the hub reads a conn's sid only when registering it).
// A resume that is not the conn's first client frame is refused here. It
// reports false once the hub has stopped.
func (s *server) resume(c *conn, cmd *command, first bool) bool {
	if !first {
		s.met.resumed(resumeNotFirst)
		c.out.offer(encodeError(&protoError{code: codeResumeFailed, id: cmd.id, reason: resumeNotFirst,
			message: "resume must be the first frame a connection sends"}))
		return true
	}
	reply := make(chan string, 1)
	if !s.hub.send(resumeMsg{c: c, sid: c.sid, id: cmd.id, req: cmd.resume, reply: reply}) {
		return false
	}
	select {
	case c.sid = <-reply:
		return true
	case <-s.hub.done:
		return false
	}
}

// controlGuard rate-limits the pings and pongs a client sends, which the
// library answers inside Read where the message rate limiter never sees them:
// a client that pings faster than twice RATE_LIMIT for longer than the flood
// grace is ended like a message flooder.
type controlGuard struct {
	limiter *rate.Limiter
	flood   floodTracker
	grace   time.Duration
}

// controlFrame accounts for one ping or pong the client sent, with payload,
// and reports whether the library may answer it (a ping's pong). Runs inside
// ws.Read, on the reader or, during a close handshake, on the writer.
func (c *conn) controlFrame(payload []byte) bool {
	c.raw.uncount(controlFrameBytes(len(payload)))
	return c.controlAllowed()
}

// controlAllowed counts one control frame against the rate limit, and ends a
// conn that floods them.
func (c *conn) controlAllowed() bool {
	if c.control.limiter.Allow() {
		return true
	}
	if c.control.flood.refused(time.Now(), c.control.grace) {
		c.stop(reasonFlood)
	}
	return false
}

// floodGap is how long a client must go without a refused message for its
// rate limiting to count as over. A client that sends a little too fast is
// refused now and then, with gaps; a flood is refused without a break.
const floodGap = time.Second

// floodTracker tells a client that is rate limited now and then from one that
// is rate limited continuously, which the contract ends after a grace period.
type floodTracker struct {
	since       time.Time // first refusal of the current run; zero when none
	lastRefusal time.Time
}

// refused records a refused message at now and reports whether the run of
// refusals has lasted longer than grace.
func (f *floodTracker) refused(now time.Time, grace time.Duration) bool {
	if f.since.IsZero() || now.Sub(f.lastRefusal) > floodGap {
		f.since = now
	}
	f.lastRefusal = now
	return now.Sub(f.since) > grace
}

// prepare encodes, outside the hub, every frame a command can produce that
// does not depend on the hub's state. results are a roll's dice results (nil
// for other commands); the reader rolls them, tests choose them.
func prepare(c *conn, cmd *command, results []int) *commandMsg {
	m := &commandMsg{c: c, sid: c.sid, cmd: *cmd, results: results}
	if cmd.id != "" && cmd.kind != cmdHeartbeat {
		m.digest = actionDigest(m.cmd)
	}
	switch cmd.kind {
	case cmdHeartbeat:
		m.self = encodeHeartbeatAck(cmd.id, time.Now())
	case cmdJoin:
		m.others, m.note = encodePresence(cmd.game, c.sid, c.userID, "joined", ""), presenceNote{"joined", ""}
	case cmdLeave:
		m.self = encodeGameLeft(cmd.id, cmd.game)
		m.others, m.note = encodePresence(cmd.game, c.sid, c.userID, "left", presenceLeft), presenceNote{"left", presenceLeft}
	default:
		m.others = encodeEvent(m.cmd, c.sid, c.userID, results)
	}
	return m
}

// errTooBig is a message larger than MAX_MESSAGE_BYTES.
var errTooBig = errors.New("message larger than MAX_MESSAGE_BYTES")

// readMessage reads the rest of a message the reader has begun, r, of at most
// max bytes. A larger one is not read further: the conn ends as too big (the
// wire meter bounds what the close handshake may still read of it).
//
// The message is read into a pooled buffer, taken only once its first frame
// has arrived (an idle reader holds none), and handed to the caller, who
// gives it back with putReadBuffer once the message is served. Messages made
// garbage of their own (io.ReadAll's 512-byte start and doublings, then an
// exact copy) were a fifth of what a relayed decision allocated, and under
// fan-out load garbage sets how often the collector runs, each run scanning
// every connection's two stacks.
func readMessage(r io.Reader, max int64) (*[]byte, error) {
	bp := readBuffers.Get().(*[]byte)
	buf := (*bp)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		room := min(int64(cap(buf)-len(buf)), max+1-int64(len(buf)))
		n, err := r.Read(buf[len(buf) : len(buf)+int(room)])
		buf = buf[:len(buf)+n]
		*bp = buf
		switch {
		case int64(len(buf)) > max:
			putReadBuffer(bp)
			return nil, errTooBig
		case err == io.EOF:
			return bp, nil
		case err != nil:
			putReadBuffer(bp)
			return nil, err
		}
	}
}

// readBuffers are the readers' scratch buffers.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledRead is the largest scratch buffer kept for the next message: one
// megabyte message must not pin a megabyte for good.
const maxPooledRead = 64 << 10

// putReadBuffer gives back a buffer readMessage returned.
func putReadBuffer(bp *[]byte) {
	if cap(*bp) <= maxPooledRead {
		*bp = (*bp)[:0]
		readBuffers.Put(bp)
	}
}

// readErrorReason maps the error that ended a read to the conn's close reason.
func readErrorReason(err error) closeReason {
	if errors.Is(err, errTooBig) || errors.Is(err, errWireBudget) {
		return reasonTooBig
	}
	if code := websocket.CloseStatus(err); code != -1 {
		return peerClosed(code)
	}
	return reasonDisconnected
}

// rollDice rolls each die with crypto/rand.
func rollDice(dice []int) []int {
	results := make([]int, len(dice))
	for i, sides := range dice {
		n, err := rand.Int(rand.Reader, big.NewInt(int64(sides)))
		if err != nil {
			panic("crypto/rand failed: " + err.Error()) // the runtime itself is broken
		}
		results[i] = int(n.Int64()) + 1
	}
	return results
}

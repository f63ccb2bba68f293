package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// The /ws handler and a conn's life: accepted, registered, served, stopped.
// Its reader is in conn_read.go, its writer in conn_write.go, and the
// handshake's token check in conn_auth.go.

// conn is one accepted WebSocket connection: a reader (serveConn's goroutine)
// and a writer goroutine.
type conn struct {
	// set at construction
	ws  *websocket.Conn
	raw *meteredConn // the hijacked socket, closed outright when a close handshake cannot finish
	// sid is the session the conn serves: its own until a resume gives it
	// another. Written only by the reader (after the hub's answer to the
	// resume); the hub reads it only when the conn registers.
	sid         string
	userID      *int64
	tokenExp    int64    // exp of the handshake's JWT, Unix s; 0 for none
	token       [32]byte // SHA-256 of the resume token of the session it registers
	remote      string
	connectedAt time.Time
	cutAfter    time.Duration // how long a stopped conn's close may take before its socket is cut
	met         *metrics      // nil counts nothing

	// the hub and the reader push frames without waiting; only the writer pops.
	out *sendQueue

	// the ping in flight (liveness.go): sent by the writer, answered on the
	// reader; pongDue is the writer's, from its start.
	pings   pingState
	pongDue *time.Timer

	// the client's pings and pongs, rate limited like its messages; used only
	// inside ws.Read, which the library runs one caller at a time.
	control controlGuard

	// closed once by stop; reason and cut are written before and read only after.
	quit     chan struct{}
	stopOnce sync.Once
	reason   closeReason
	cut      *time.Timer // closes the socket cutAfter after stop; nil for a conn with no socket

	rd readState // the reader's own

	// set by startWriter, for endConn
	writerDone chan struct{}
	stopHard   func() bool // cuts the socket past the shutdown budget unless called first
}

// stop asks the conn to end. Safe from any goroutine; never blocks; the first
// reason wins. What the conn had queued is released at once, its reader may
// read only what a close handshake needs, and its socket is closed outright
// if the close has not finished within cutAfter: a peer that reads nothing
// holds nothing of the server's for longer than that.
func (c *conn) stop(r closeReason) {
	c.stopOnce.Do(func() {
		c.reason = r
		// Counted here, where the end is decided, before the peer or the room
		// can hear of it: a scrape after either sees it.
		c.met.closed(r)
		c.out.discard()
		if c.raw != nil { // the hub tests' conns have no socket
			c.raw.ending()
			c.cut = time.AfterFunc(c.cutAfter, func() { _ = c.raw.Close() })
		}
		close(c.quit)
	})
}

// queue hands frame to the writer without waiting. A full queue means the
// client is not keeping up, and it is ended as a slow consumer.
func (c *conn) queue(frame []byte) {
	if !c.out.push(frame) {
		c.stop(reasonSlow)
	}
}

// serveWS is the /ws handler: it checks the handshake, accepts, registers the
// session with the hub, and hands the conn to serveConn on a goroutine of its
// own. Returning right away lets front or net/http drop everything it kept
// for the request (its goroutine's deep stack, the request and response),
// which an idle connection would otherwise carry for its whole life.
func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	// Counted before Accept, so once the HTTP server's Shutdown returns (and
	// with it front's Close, which waits for its handshakes) no conn can
	// appear that shutdown would miss.
	s.handlers.Add(1)
	defer s.handlers.Done()
	if s.draining.Load() {
		s.met.handshake(handshakeDraining)
		s.refuseBusy(w, "server is shutting down")
		return
	}
	userID, exp, err := s.authenticate(r)
	if err != nil {
		s.met.handshake(handshakeUnauthorized)
		s.log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("handshake refused: bad token")
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if s.slots != nil {
		select {
		case s.slots <- struct{}{}:
		default:
			s.met.handshake(handshakeBusy)
			s.refuseBusy(w, "too many sessions")
			return
		}
	}
	c, ok := s.accept(w, r, userID, exp)
	if !ok {
		s.releaseSlot()
		return
	}
	s.handlers.Add(1) // while this handler's own count is held, so Wait cannot miss it
	go s.serveConn(c)
}

// accept upgrades the request, sends the session frame and registers the
// session, which its token's exp (0 for none) governs. The upgrade and the
// greeting are steps of their own, not inlined here, because the handshake
// runs at the depth of request handling (front's, or net/http's): with
// this frame's locals under the library's hijack, net/http's header write at
// the bottom of it grew every handshake's stack from 8 to 16 KiB, a copy of
// the whole stack per connect.
func (s *server) accept(w http.ResponseWriter, r *http.Request, userID *int64, exp int64) (*conn, bool) {
	c := &conn{
		sid: rand.Text(), userID: userID, tokenExp: exp, remote: r.RemoteAddr, cutAfter: s.cfg.PingTimeout, met: s.met,
		out:  newSendQueue(s.cfg.SendQueueSize, s.cfg.SendQueueBytes),
		quit: make(chan struct{}),
		control: controlGuard{limiter: rate.NewLimiter(rate.Limit(2*s.cfg.RateLimit), 2*s.cfg.RateBurst),
			grace: s.cfg.rateLimitGrace},
	}
	if !s.upgrade(w, r, c) || !s.greet(c) {
		return nil, false
	}
	return c, true
}

// upgrade runs the library's handshake for c, which then has its socket.
//
//go:noinline
func (s *server) upgrade(w http.ResponseWriter, r *http.Request, c *conn) bool {
	hj := &hijackRecorder{ResponseWriter: w, budget: s.cfg.MaxMessageBytes + wireSlack,
		bandwidth: newBandwidth(s.cfg.RateLimit, s.cfg.RateBurst, s.cfg.MaxMessageBytes), pong: c.pong}
	opts := s.acceptOpts // a copy: the callbacks are this conn's
	opts.OnPingReceived = func(_ context.Context, payload []byte) bool { return c.controlFrame(payload) }
	opts.OnPongReceived = func(_ context.Context, payload []byte) { c.controlFrame(payload) }
	ws, err := websocket.Accept(hj, r, &opts)
	if err != nil {
		if hj.status == http.StatusForbidden { // the library's answer to an Origin not allowed
			s.met.handshake(handshakeForbiddenOrigin)
		} else {
			s.met.handshake(handshakeBadRequest)
		}
		s.log.Debug().Err(err).Str("remote", r.RemoteAddr).Msg("handshake refused")
		return false // Accept has written the status
	}
	// The size limit is the reader's own (readMessage): the library's would
	// close the conn itself, with no goodbye and its own close text.
	ws.SetReadLimit(-1)
	c.ws, c.raw, c.connectedAt = ws, hj.conn, time.Now()
	return true
}

// greet registers an upgraded conn's session with the hub and sends it the
// session frame.
//
//go:noinline
func (s *server) greet(c *conn) bool {
	token := rand.Text() // 130 random bits; only its hash is kept, and it is never logged
	c.token = hashToken(token)
	if !s.hub.register(c) {
		s.met.handshake(handshakeDraining) // the hub has stopped: the server is on its way out
		_ = c.ws.Close(reasonShutdown.code, reasonShutdown.word)
		return false
	}
	s.met.handshake(handshakeAccepted)
	// The session frame is written here, once the session exists (so a client
	// that reads it finds itself in health) and before the writer starts:
	// anything the hub queues meanwhile waits for the writer, so the session
	// frame is first on the wire, and the writer starts with a small stack
	// that an idle connection never grows. It fits any socket buffer; the
	// deadline is for a broken peer, which then ends like any other. It is
	// the socket's, as the writer's are: a context would be three more
	// allocations per handshake, and garbage is what the connect rate pays in
	// collections.
	_ = c.raw.SetWriteDeadline(time.Now().Add(s.cfg.PingTimeout))
	hello := encode("session", "", sessionData{
		SID: c.sid, UserID: c.userID,
		PingIntervalMS:   s.cfg.PingInterval.Milliseconds(),
		SessionTimeoutMS: s.cfg.SessionTimeout.Milliseconds(),
		Protocol:         protocolVersion,
		ResumeToken:      token,
		ResumeWindowMS:   s.cfg.ResumeWindow.Milliseconds(),
		TokenExp:         expJSON(c.tokenExp),
	})
	s.met.frameSent(hello)
	err := c.ws.Write(context.Background(), websocket.MessageText, hello)
	_ = c.raw.SetWriteDeadline(time.Time{})
	if err != nil {
		c.stop(reasonDisconnected)
	}
	return true
}

// serveConn owns a registered conn's life: it is the reader, it starts the
// writer, and it returns only after the writer has, telling the hub last.
// Its frame is the bottom of the reader's stack, under every message the
// reader serves, so what it does before and after reading is in steps of
// its own, not inlined, and it defers nothing (see readLoop).
func (s *server) serveConn(c *conn) {
	s.startWriter(c)
	s.readLoop(c)
	s.endConn(c)
}

// startWriter starts c's writer, and arranges for c's socket to be cut past
// the shutdown budget, where close handshakes still wait on frozen peers.
//
//go:noinline
func (s *server) startWriter(c *conn) {
	c.stopHard = context.AfterFunc(s.hardStop, func() { _ = c.raw.Close() })
	c.writerDone = make(chan struct{})
	go func() {
		defer close(c.writerDone)
		c.writeLoop(s.cfg.PingInterval, s.cfg.PingTimeout)
	}()
}

// endConn ends a conn whose reader has returned.
//
//go:noinline
func (s *server) endConn(c *conn) {
	c.stop(c.rd.reason)
	// The hub hears at once, not after the close handshake: until it does, the
	// session is still in health and in its games, and is sent their frames.
	s.hub.send(unregisterMsg{c: c, sid: c.sid, reason: c.reason})
	<-c.writerDone
	c.cut.Stop()
	s.logEnd(c)
	c.stopHard()
	s.releaseSlot()
	s.handlers.Done()
}

// logEnd writes the one line a conn's end gets: reason is what its games heard
// (empty for a takeover, which they do not hear), close the goodbye's word.
func (s *server) logEnd(c *conn) {
	s.log.Info().Str("sid", c.sid).Any("user_id", c.userID).Str("remote", c.remote).
		Str("reason", c.reason.presence).Int("code", int(c.reason.code)).Str("close", c.reason.word).
		Dur("duration", time.Since(c.connectedAt)).Msg("connection ended")
}

// refuseBusy answers a handshake the server cannot take now with 503 and a
// Retry-After drawn from 1 s to SHUTDOWN_RETRY_SPREAD, so that refused
// clients spread their retries instead of coming back together.
func (s *server) refuseBusy(w http.ResponseWriter, why string) {
	spread := max(1, int64(math.Ceil(s.cfg.ShutdownRetrySpread.Seconds())))
	w.Header().Set("Retry-After", strconv.FormatInt(1+mrand.Int64N(spread), 10))
	http.Error(w, why, http.StatusServiceUnavailable)
}

// releaseSlot gives back a MAX_SESSIONS slot taken by serveWS.
func (s *server) releaseSlot() {
	if s.slots != nil {
		<-s.slots
	}
}

// hijackRecorder lets the handler keep the raw socket that Accept hijacks, so
// a close handshake stuck on a frozen peer can be cut at the shutdown budget,
// and hands the library a metered socket in its place, with buffers of its
// own size.
type hijackRecorder struct {
	http.ResponseWriter
	budget    int64         // the meteredConn's budget
	bandwidth *rate.Limiter // and its pacing
	pong      func(seq uint64)
	conn      *meteredConn
	status    int // of a refused handshake, which the library answers itself
}

// The library reads and writes through buffers it keeps for the conn's
// life. net/http's are 4 KiB each, half of what an idle connection costs
// beside its two stacks (and, dropped at the hijack, garbage every connect
// made: front reads handshakes with the session's own reader). These hold
// any message a client sends in one read (a decision is a few hundred
// bytes), and any frame the server sends but a large game_joined or resumed
// in one write: a larger frame costs a second write syscall, at any buffer
// size.
const (
	readBufferSize  = 1024
	writeBufferSize = 2048
)

// WriteHeader remembers the status of a refused handshake, which tells the
// handshakes counter an Origin refused from a malformed request.
func (h *hijackRecorder) WriteHeader(status int) {
	h.status = status
	h.ResponseWriter.WriteHeader(status)
}

// Hijack hijacks the underlying connection and remembers it, metered. The
// metering is a step of its own, not inlined, so that this frame stays small
// under net/http's header write (see accept).
func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nc, brw, err
	}
	return h.keep(nc, brw)
}

//go:noinline
func (h *hijackRecorder) keep(nc net.Conn, brw *bufio.ReadWriter) (net.Conn, *bufio.ReadWriter, error) {
	h.conn = &meteredConn{Conn: nc, budget: h.budget, bandwidth: h.bandwidth, pong: h.pong}
	if n := brw.Reader.Buffered(); n > 0 { // a client that sent frames right behind its handshake
		b, _ := brw.Reader.Peek(n)
		h.conn.pending = bytes.Clone(b)
	}
	br := brw.Reader
	if br.Size() == readBufferSize { // front's, which read the request: the session reads with it from now on
		br.Reset(h.conn)
	} else { // net/http's (a kept-alive connection's upgrade, or the tests' servers)
		br = bufio.NewReaderSize(h.conn, readBufferSize)
	}
	return h.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(h.conn, writeBufferSize)), nil
}

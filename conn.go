package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// conn is one accepted WebSocket connection: a reader (serveConn's goroutine)
// and a writer goroutine, plus a short-lived goroutine while a ping waits for
// its pong.
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

	// the ping in flight, if any: set by the writer, cleared by the ping.
	pinging atomic.Bool
	pings   sync.WaitGroup

	// the client's pings and pongs, rate limited like its messages; used only
	// inside ws.Read, which the library runs one caller at a time.
	control controlGuard

	// closed once by stop; reason and cut are written before and read only after.
	quit     chan struct{}
	stopOnce sync.Once
	reason   closeReason
	cut      *time.Timer // closes the socket cutAfter after stop; nil for a conn with no socket
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
// own. Returning right away lets net/http drop everything it kept for the
// request (its goroutine's deep stack, the request and response), which an
// idle connection would otherwise carry for its whole life.
func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	// Counted before Accept, so once the HTTP server's Shutdown returns no
	// conn can appear that shutdown would miss.
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
// session, which its token's exp (0 for none) governs.
func (s *server) accept(w http.ResponseWriter, r *http.Request, userID *int64, exp int64) (*conn, bool) {
	c := &conn{
		sid: rand.Text(), userID: userID, tokenExp: exp, remote: r.RemoteAddr, cutAfter: s.cfg.PingTimeout, met: s.met,
		out:  newSendQueue(s.cfg.SendQueueSize, s.cfg.SendQueueBytes),
		quit: make(chan struct{}),
		control: controlGuard{limiter: rate.NewLimiter(rate.Limit(2*s.cfg.RateLimit), 2*s.cfg.RateBurst),
			grace: s.cfg.rateLimitGrace},
	}
	hj := &hijackRecorder{ResponseWriter: w, budget: s.cfg.MaxMessageBytes + wireSlack,
		bandwidth: newBandwidth(s.cfg.RateLimit, s.cfg.RateBurst, s.cfg.MaxMessageBytes)}
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
		return nil, false // Accept has written the status
	}
	// The size limit is the reader's own (readMessage): the library's would
	// close the conn itself, with no goodbye and its own close text.
	ws.SetReadLimit(-1)
	token := rand.Text() // 130 random bits; only its hash is kept, and it is never logged
	c.ws, c.raw, c.connectedAt, c.token = ws, hj.conn, time.Now(), hashToken(token)
	if !s.hub.register(c) {
		s.met.handshake(handshakeDraining) // the hub has stopped: the server is on its way out
		_ = ws.Close(reasonShutdown.code, reasonShutdown.word)
		return nil, false
	}
	s.met.handshake(handshakeAccepted)
	// The session frame is written here, once the session exists (so a client
	// that reads it finds itself in health) and before the writer starts:
	// anything the hub queues meanwhile waits for the writer, so the session
	// frame is first on the wire, and the writer starts with a small stack
	// that an idle connection never grows. It fits any socket buffer; the
	// deadline is for a broken peer, which then ends like any other.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PingTimeout)
	hello := encode("session", "", sessionData{
		SID: c.sid, UserID: userID,
		PingIntervalMS:   s.cfg.PingInterval.Milliseconds(),
		SessionTimeoutMS: s.cfg.SessionTimeout.Milliseconds(),
		Protocol:         protocolVersion,
		ResumeToken:      token,
		ResumeWindowMS:   s.cfg.ResumeWindow.Milliseconds(),
		TokenExp:         expJSON(exp),
	})
	s.met.frameSent(hello)
	err = ws.Write(ctx, websocket.MessageText, hello)
	cancel()
	if err != nil {
		c.stop(reasonDisconnected)
	}
	return c, true
}

// serveConn owns a registered conn's life: it is the reader, it starts the
// writer, and it returns only after the writer (and any ping in flight) has,
// telling the hub last.
func (s *server) serveConn(c *conn) {
	defer s.handlers.Done()
	defer s.releaseSlot()
	// Past the shutdown budget, close handshakes still waiting on frozen peers are cut.
	stopHard := context.AfterFunc(s.hardStop, func() { _ = c.raw.Close() })
	defer stopHard()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(s.cfg.PingInterval, s.cfg.PingTimeout)
	}()
	c.stop(s.readLoop(c))
	// The hub hears at once, not after the close handshake: until it does, the
	// session is still in health and in its games, and is sent their frames.
	s.hub.send(unregisterMsg{c: c, sid: c.sid, reason: c.reason})
	<-writerDone
	c.cut.Stop()
	s.logEnd(c)
}

// logEnd writes the one line a conn's end gets: reason is what its games heard
// (empty for a takeover, which they do not hear), close the goodbye's word. Apart from serveConn, whose
// frame stays on an idle connection's stack, and not inlined into it.
//
//go:noinline
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

// readLoop reads client messages until the conn ends, and returns why it ended.
// It rate-limits and decodes here, so the hub receives only valid, typed
// commands. A refused message costs a bounded scan for its id, never a decode;
// a reply to a refused message is dropped rather than queued when the queue
// is half full, so it cannot make its own sender a slow consumer.
func (s *server) readLoop(c *conn) closeReason {
	st := &readState{limiter: rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst), first: true}
	for {
		typ, msg, err := readMessage(c.ws, s.cfg.MaxMessageBytes)
		if err != nil {
			return readErrorReason(err)
		}
		select {
		case <-c.quit:
			return c.reason // ended by the hub or the writer: what was read meanwhile is not served
		default:
		}
		if r, end := s.serveMessage(c, st, typ, msg); end {
			return r
		}
	}
}

// readState is what the reader keeps from one message to the next.
type readState struct {
	limiter *rate.Limiter
	flood   floodTracker
	first   bool // no client frame read yet
}

// serveMessage handles one message the reader read, and reports whether the
// conn ends, and why. It is a function of its own, not inlined, so that its
// locals are on the reader's stack only while a message is handled: an idle
// connection's reader waits in readLoop with a stack small enough to stay in
// its first 8 KiB (a frame more, and every idle connection costs 4 KiB more).
//
//go:noinline
func (s *server) serveMessage(c *conn, st *readState, typ websocket.MessageType, msg []byte) (closeReason, bool) {
	first := st.first
	st.first = false
	c.raw.messageDone()
	if typ != websocket.MessageText {
		s.met.frameReceived(0, len(msg))
		return reasonBinary, true
	}
	if !st.limiter.Allow() {
		s.met.frameReceived(scanType(msg), len(msg))
		if st.flood.refused(time.Now(), s.cfg.rateLimitGrace) {
			return reasonFlood, true
		}
		c.out.offer(encodeError(&protoError{code: codeRateLimited, id: scanID(msg), message: "too many messages; slow down"}))
		return closeReason{}, false
	}
	cmd, perr := decode(msg)
	if perr != nil {
		kind := scanType(msg) // the error path only: a valid frame's kind is decode's
		s.met.frameReceived(kind, len(msg))
		if kind == cmdResume {
			s.met.resumed(resumeInvalid)
		}
		c.out.offer(encodeError(perr))
		return closeReason{}, false
	}
	s.met.frameReceived(cmd.kind, len(msg))
	if cmd.kind == cmdResume {
		if !s.resume(c, cmd, first) {
			return reasonShutdown, true
		}
		return closeReason{}, false
	}
	if cmd.kind == cmdRefresh {
		if !s.refreshToken(c, cmd) {
			return reasonShutdown, true
		}
		return closeReason{}, false
	}
	var results []int
	if cmd.kind == cmdRoll {
		results = rollDice(cmd.dice)
	}
	if !s.hub.send(prepare(c, cmd, results)) {
		return reasonShutdown, true
	}
	return closeReason{}, false
}

// resume asks the hub to give c the session cmd names, and waits for the
// answer: from then on the conn serves that session, under its sid (the
// reader's own field: the hub reads a conn's sid only when registering it).
// A resume that is not the conn's first client frame is refused here. It
// reports false once the hub has stopped.
func (s *server) resume(c *conn, cmd command, first bool) bool {
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
func prepare(c *conn, cmd command, results []int) commandMsg {
	m := commandMsg{c: c, sid: c.sid, cmd: cmd, results: results}
	if cmd.id != "" && cmd.kind != cmdHeartbeat {
		m.digest = actionDigest(cmd)
	}
	switch cmd.kind {
	case cmdHeartbeat:
		m.self = encodeHeartbeatAck(cmd.id, time.Now())
	case cmdJoin:
		m.others, m.note = encodePresence(cmd.game, c.sid, c.userID, "joined", ""), presenceNote{"joined", ""}
	case cmdLeave:
		m.self = encode("game_left", cmd.id, gameRef{GameID: cmd.game.String()})
		m.others, m.note = encodePresence(cmd.game, c.sid, c.userID, "left", presenceLeft), presenceNote{"left", presenceLeft}
	default:
		m.others = encodeEvent(cmd, c.sid, c.userID, results)
	}
	return m
}

// errTooBig is a message larger than MAX_MESSAGE_BYTES.
var errTooBig = errors.New("message larger than MAX_MESSAGE_BYTES")

// readMessage reads one whole message of at most max bytes. A larger one is
// not read further: the conn ends as too big (the wire meter bounds what the
// close handshake may still read of it).
func readMessage(ws *websocket.Conn, max int64) (websocket.MessageType, []byte, error) {
	typ, r, err := ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	msg, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return 0, nil, err
	}
	if int64(len(msg)) > max {
		return 0, nil, errTooBig
	}
	return typ, msg, nil
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

// writeLoop owns every write on the conn and the ping schedule. It returns
// after quit, once the close handshake is done and no ping is in flight.
func (c *conn) writeLoop(pingInterval, pingTimeout time.Duration) {
	ticker := time.NewTicker(pingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-c.out.ready:
			c.writeQueued(pingTimeout)
		case <-ticker.C:
			// One ping at a time: a peer that has not answered the last one
			// is already on its way out. The ping clears the flag itself, so
			// an answered ping costs the writer no second wake-up.
			if c.pinging.CompareAndSwap(false, true) {
				c.pings.Add(1)
				go c.ping(pingTimeout)
			}
		case <-c.quit:
			c.close(pingTimeout)
			c.pings.Wait() // a ping in flight ends with the socket
			return
		}
	}
}

// writeBatch bounds the frames written per wake-up, so that a queue that
// keeps refilling cannot hold off the ping schedule or the quit signal.
const writeBatch = 64

// writeQueued writes up to writeBatch queued frames, and asks to be woken
// again when frames remain. A peer that accepts no data for timeout is as dead
// as one that answers no ping: the write deadline keeps a full socket from
// holding the writer (and so the ping schedule and the close) forever.
func (c *conn) writeQueued(timeout time.Duration) {
	_ = c.raw.SetWriteDeadline(time.Now().Add(timeout))
	defer func() { _ = c.raw.SetWriteDeadline(time.Time{}) }()
	for range writeBatch {
		frame, ok := c.out.pop()
		if !ok {
			return
		}
		c.met.frameSent(frame)
		if err := c.ws.Write(context.Background(), websocket.MessageText, frame); err != nil {
			c.writeFailed(err)
			return
		}
	}
	if c.out.len() > 0 {
		select {
		case c.out.ready <- struct{}{}:
		default:
		}
	}
}

// writeFailed ends a conn whose write failed. A peer that accepted no data
// for the write deadline is as dead as one that misses a pong. Any other
// failure means the socket is going anyway, and the reader, which sees why
// (the client's own close frame, with its code, or a lost connection), names
// the reason: a client that closes with 1000 while frames are on their way to
// it said goodbye, and its session ends rather than going away.
func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.stop(reasonTimeout)
		return
	}
	_ = c.raw.Close() // the reader returns at once, with the reason
}

// ping sends one ping and waits up to timeout for its pong. A missing pong
// ends the conn with no close frame: the peer is presumed gone, and a write
// blocked on it must be cut, so the socket is closed outright.
func (c *conn) ping(timeout time.Duration) {
	defer c.pings.Done()
	defer c.pinging.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	sent := time.Now()
	err := c.ws.Ping(ctx)
	switch {
	case err == nil:
		c.met.pingRoundTrip(time.Since(sent))
	case ctx.Err() != nil:
		c.met.pongTimeout()
		c.stop(reasonTimeout)
		_ = c.raw.Close()
	}
}

// close sends the goodbye and performs the single close handshake for the
// conn's reason, or drops the socket when the peer is presumed dead.
func (c *conn) close(timeout time.Duration) {
	if !c.reason.sendsClose {
		_ = c.ws.CloseNow()
		return
	}
	// The handshake gets timeout, not the library's own 5 s + 5 s: a peer
	// that neither reads nor answers is cut like one that misses a pong.
	_ = c.raw.SetDeadline(time.Now().Add(timeout))
	goodbye := encodeGoodbye(c.reason)
	c.met.frameSent(goodbye)
	if c.ws.Write(context.Background(), websocket.MessageText, goodbye) != nil {
		_ = c.ws.CloseNow()
		return
	}
	_ = c.ws.Close(c.reason.code, c.reason.word)
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

// hijackRecorder lets the handler keep the raw socket that Accept hijacks, so
// a close handshake stuck on a frozen peer can be cut at the shutdown budget,
// and hands the library a metered socket in its place.
type hijackRecorder struct {
	http.ResponseWriter
	budget    int64         // the meteredConn's budget
	bandwidth *rate.Limiter // and its pacing
	conn      *meteredConn
	status    int // of a refused handshake, which the library answers itself
}

// WriteHeader remembers the status of a refused handshake, which tells the
// handshakes counter an Origin refused from a malformed request.
func (h *hijackRecorder) WriteHeader(status int) {
	h.status = status
	h.ResponseWriter.WriteHeader(status)
}

// Hijack hijacks the underlying connection and remembers it, metered.
func (h *hijackRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nc, brw, err
	}
	h.conn = &meteredConn{Conn: nc, budget: h.budget, bandwidth: h.bandwidth}
	return h.conn, brw, nil
}

// authenticate returns the user id a request's token proves, nil for an
// anonymous request, with the token's exp (0 for none), or an error for a
// token that must be refused: an expired token is refused here, so a session
// can only be resumed on a token valid now. With no JWT_SECRET tokens are not
// accepted: they are ignored and the session is anonymous.
func (s *server) authenticate(r *http.Request) (*int64, int64, error) {
	if s.cfg.JWTSecret == "" {
		return nil, 0, nil
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		if ck, err := r.Cookie("access_token"); err == nil {
			token = ck.Value
		}
	}
	if token == "" {
		if s.cfg.RequireAuth {
			return nil, 0, errors.New("authentication required")
		}
		return nil, 0, nil
	}
	claims, err := s.parseJWT(token)
	if err != nil {
		return nil, 0, fmt.Errorf("invalid token: %w", err)
	}
	id, err := subjectID(claims["sub"])
	if err != nil {
		return nil, 0, fmt.Errorf("invalid token: %w", err)
	}
	return &id, expOf(claims), nil
}

// subjectID reads the integer user id from a token's sub claim, which may be
// a decimal string (as RFC 7519 has it) or a JSON number.
func subjectID(sub any) (int64, error) {
	switch v := sub.(type) {
	case string:
		if id, err := strconv.ParseInt(v, 10, 64); err == nil {
			return id, nil
		}
	case json.Number:
		if id, err := v.Int64(); err == nil {
			return id, nil
		}
	}
	return 0, errors.New("sub must hold an integer user id")
}

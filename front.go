package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"
)

// front is the listener net/http serves, and the reader of every new
// connection's first request before net/http sees it. A WebSocket upgrade to
// /ws it reads and hands to serveWS itself; anything else it passes on to
// net/http untouched, the bytes it read included.
//
// Why: net/http gives each connection a 4 KiB reader and a 4 KiB writer
// before it has read a byte, and a hijack takes both with it. A session keeps
// buffers of its own size (see readBufferSize), so under net/http every
// connect left 8 KiB of garbage and some 3 KB of request parsing, which made
// a connect burst run half again as many collections as a server that keeps
// net/http's buffers, and left the burst's garbage in RSS until the forced
// collection. Read here, a handshake costs the 1 KiB reader the session then
// keeps, and the request.
//
// Only a connection's first request is read here. A connection passed on is
// net/http's from then on, counted and timed as if it had just arrived (its
// first request may take up to HTTP_TIMEOUT here and as long again there),
// so an upgrade that follows a plain request on a kept-alive connection is
// served by net/http's route to serveWS, as any request is.
type front struct {
	ln    net.Listener
	s     *server
	plain *plainConns // counts a connection here as a plain one until it is a session

	// set at construction
	timeout   time.Duration // for reading the request and writing an answer, as net/http's timeouts (0: none)
	headerMax int64         // bytes of request line and headers, as net/http's MaxHeaderBytes

	conns chan net.Conn // those passed on, for net/http's Accept
	done  chan struct{} // closed by Close
	once  sync.Once
	err   error // why the accept loop stopped; set before done is closed

	mu      sync.Mutex
	reading map[net.Conn]struct{} // connections whose first request is being read
	wg      sync.WaitGroup        // the accept loop and every connection's goroutine here
}

// wsRequestLine is how a request serveWS answers begins, up to the path's end.
var wsRequestLine = []byte("GET /ws")

// newFront starts accepting on ln.
func newFront(ln net.Listener, s *server, plain *plainConns, timeout time.Duration, headerMax int) *front {
	f := &front{ln: ln, s: s, plain: plain, timeout: timeout, headerMax: int64(headerMax) + 4096,
		conns: make(chan net.Conn), done: make(chan struct{}), reading: make(map[net.Conn]struct{})}
	f.wg.Add(1)
	go f.acceptLoop()
	return f
}

// Accept returns the next connection for net/http.
func (f *front) Accept() (net.Conn, error) {
	select {
	case c := <-f.conns:
		return c, nil
	case <-f.done:
		return nil, f.err
	}
}

// Addr is the listener's.
func (f *front) Addr() net.Addr { return f.ln.Addr() }

// Close stops accepting, closes the connections whose request is still being
// read (as net/http's Shutdown closes its idle ones), and returns once every
// goroutine here has: a handshake already in serveWS finishes there, counted
// in the server's handlers.
func (f *front) Close() error {
	f.stop(net.ErrClosed)
	err := f.ln.Close()
	f.mu.Lock()
	for c := range f.reading {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil // the accept loop closed it first
	}
	return err
}

func (f *front) stop(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.done)
	})
}

// acceptLoop accepts until the listener fails for good, waiting out errors
// that pass (too many open files) as net/http's Serve does.
func (f *front) acceptLoop() {
	defer f.wg.Done()
	var delay time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { // net/http's own test, for EMFILE and the like
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				f.s.log.Warn().Err(err).Dur("retry_in", delay).Msg("accept failed")
				select {
				case <-time.After(delay):
					continue
				case <-f.done:
					return
				}
			}
			f.stop(err)
			_ = f.ln.Close()
			return
		}
		delay = 0
		f.mu.Lock()
		select {
		case <-f.done: // Close sweeps reading once done is closed: this one could be missed
			f.mu.Unlock()
			_ = c.Close()
			continue
		default:
		}
		f.reading[c] = struct{}{}
		f.wg.Add(1)
		f.mu.Unlock()
		f.plain.track(c, http.StateNew)
		go f.serve(c)
	}
}

// serve reads c's first request line: an upgrade to /ws is read and served
// here, anything else is passed on to net/http.
func (f *front) serve(c net.Conn) {
	defer f.wg.Done()
	if f.timeout > 0 {
		_ = c.SetReadDeadline(time.Now().Add(f.timeout))
	}
	lr := &headerLimit{r: c, n: f.headerMax}
	br := bufio.NewReaderSize(lr, readBufferSize)
	b, err := br.Peek(len(wsRequestLine) + 1)
	if err != nil { // closed, timed out, or too short to be any request
		f.done1(c)
		f.end(c)
		return
	}
	if !bytes.HasPrefix(b, wsRequestLine) || (b[len(wsRequestLine)] != ' ' && b[len(wsRequestLine)] != '?') {
		b, _ = br.Peek(br.Buffered())
		f.passOn(&readConn{Conn: c, read: bytes.Clone(b)})
		return
	}
	r, err := http.ReadRequest(br)
	f.done1(c)
	switch {
	case err == nil:
	case lr.n <= 0:
		f.refuse(c, http.StatusRequestHeaderFieldsTooLarge, true)
		return
	case quietReadError(err): // gone, or too slow: net/http answers these with nothing
		f.end(c)
		return
	default:
		f.refuse(c, http.StatusBadRequest, true)
		return
	}
	// What net/http's server checks beyond parsing (ReadRequest refuses two
	// Hosts itself): an HTTP/1 request, and one with a Host from 1.1 on.
	switch {
	case r.ProtoMajor != 1:
		f.refuse(c, http.StatusHTTPVersionNotSupported, false)
		return
	case r.Host == "" && r.ProtoAtLeast(1, 1):
		f.refuse(c, http.StatusBadRequest, false)
		return
	}
	f.plain.track(c, http.StateActive) // in a request: never cut to make room
	r.RemoteAddr = c.RemoteAddr().String()
	w := &frontResponse{c: c, br: br, header: make(http.Header), timeout: f.timeout}
	f.handle(w, r)
	if w.hijacked {
		f.plain.track(c, http.StateHijacked)
		return
	}
	if w.finish() && br.Buffered() > 0 {
		linger(c) // the client sent more behind its request
	}
	f.end(c)
}

// end closes a connection front has answered or given up on.
func (f *front) end(c net.Conn) {
	_ = c.Close()
	f.plain.track(c, http.StateClosed)
}

// quietReadError is net/http's isCommonNetReadError: a request cut short by
// the client or by the read deadline gets no answer.
func quietReadError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, io.EOF) || (errors.As(err, &ne) && ne.Timeout()) || (errors.As(err, &oe) && oe.Op == "read")
}

// handle runs serveWS, which net/http would have run for r, and answers a
// panic in it as net/http does: logged, and the connection closed.
func (f *front) handle(w *frontResponse, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			w.status = -1 // nothing more is written
			if p != http.ErrAbortHandler {
				f.s.log.Error().Interface("panic", p).Str("remote", r.RemoteAddr).Bytes("stack", debug.Stack()).
					Msg("panic serving a handshake")
			}
		}
	}()
	f.s.serveWS(w, r)
}

// done1 says c's request is no longer being read here.
func (f *front) done1(c net.Conn) {
	f.mu.Lock()
	delete(f.reading, c)
	f.mu.Unlock()
}

// passOn hands c to net/http, which counts it as its own from then on.
func (f *front) passOn(c *readConn) {
	f.done1(c.Conn)
	f.plain.track(c.Conn, http.StateClosed)
	select {
	case f.conns <- c:
	case <-f.done:
		_ = c.Close()
	}
}

// refuse answers a request that was not read whole or not served, as
// net/http does; unread says bytes of it may still be on their way.
func (f *front) refuse(c net.Conn, status int, unread bool) {
	w := &frontResponse{c: c, header: make(http.Header), timeout: f.timeout}
	http.Error(w, http.StatusText(status), status)
	if w.finish() && unread {
		linger(c)
	}
	f.end(c)
}

// Closing a socket with bytes unread in it resets the connection, and some
// clients' stacks (BSD's, Windows') then drop the answer they had not read
// yet. So, as net/http's closeWriteAndWait, an answer sent with unread bytes
// behind it is followed by a lingering close: the write side is shut, and
// what the client still sends is read and dropped, for a bounded time and
// amount. (Linux keeps the answer, so no test here can see the difference.)
const (
	lingerTime  = 500 * time.Millisecond // net/http's rstAvoidanceDelay
	lingerBytes = 256 << 10
)

func linger(c net.Conn) {
	cw, ok := c.(closeWriter)
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.Copy(io.Discard, io.LimitReader(c, lingerBytes))
}

// headerLimit ends the request's bytes at net/http's limit, so that a request
// line or headers past it are refused with 431 as net/http refuses them. The
// session's reader no longer reads through it: the hijack gives it the socket.
type headerLimit struct {
	r io.Reader
	n int64
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// readConn is a connection passed on to net/http with the bytes read from it
// here, which net/http reads first.
type readConn struct {
	net.Conn
	read []byte
}

// closeWriter is a socket whose write side can be shut alone (a TCP one).
type closeWriter interface{ CloseWrite() error }

// CloseWrite is the socket's: net/http shuts a connection's write side
// before closing one whose request it did not read whole, so that a client
// reads its answer before the reset that unread bytes cause (BSD stacks
// drop the answer on a reset; Linux's keep it).
func (c *readConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *readConn) Read(p []byte) (int, error) {
	if len(c.read) > 0 {
		n := copy(p, c.read)
		c.read = c.read[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// frontResponse is the http.ResponseWriter of a handshake read by front: the
// 101 is written at the hijack, as net/http writes it, and any other answer,
// which ends the connection, once serveWS has returned.
type frontResponse struct {
	c        net.Conn
	br       *bufio.Reader // what read the request, and what the session reads with
	header   http.Header
	status   int // 0 until written; -1 once nothing more may be written (a panic, a failed 101)
	body     bytes.Buffer
	hijacked bool
	timeout  time.Duration
}

func (w *frontResponse) Header() http.Header { return w.header }

func (w *frontResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *frontResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// finish writes an answer that is not an upgrade, in one write, and asks the
// client to close: a refused handshake's client comes back on a new
// connection. It says whether the answer was written.
func (w *frontResponse) finish() bool {
	if w.status < 0 {
		return false
	}
	w.WriteHeader(http.StatusOK)
	resp := &http.Response{StatusCode: w.status, ProtoMajor: 1, ProtoMinor: 1, Header: w.header,
		ContentLength: int64(w.body.Len()), Body: io.NopCloser(&w.body), Close: true}
	var out bytes.Buffer // Response.Write writes piece by piece: a syscall, and a packet, each
	if resp.Write(&out) != nil {
		return false
	}
	w.deadline()
	_, err := w.c.Write(out.Bytes())
	return err == nil
}

// deadline bounds the write of an answer, as net/http's WriteTimeout does.
func (w *frontResponse) deadline() {
	if w.timeout > 0 {
		_ = w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	}
}

// Hijack writes the 101 and its headers and gives up the connection, with
// the reader that holds whatever the client sent behind its request.
func (w *frontResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status != http.StatusSwitchingProtocols {
		return nil, nil, errors.New("hijack without a 101")
	}
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = w.header.Write(&head)
	head.WriteString("\r\n")
	w.deadline()
	if _, err := w.c.Write(head.Bytes()); err != nil {
		w.status = -1 // part of a 101 may be on the wire: nothing more can follow it
		return nil, nil, err
	}
	_ = w.c.SetDeadline(time.Time{}) // the session's liveness is the pings'
	w.hijacked = true
	return w.c, bufio.NewReadWriter(w.br, nil), nil
}

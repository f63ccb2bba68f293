// Package tcpproxy is a loopback TCP proxy for partition tests in Go: put it
// between a dugout process and Redis, and the link can hang, heal or be
// reset the way a network does it, which neither end can fake from inside.
// e2e/tcpproxy.mjs is its counterpart for the browser tests.
package tcpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialWithin bounds the dial to the target; a loopback dial is immediate, so
// this only matters when the target is gone or frozen.
const dialWithin = 5 * time.Second

// Proxy forwards every connection it accepts to one target.
type Proxy struct {
	// Set at construction.
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by close: ends dials in flight
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop, dials in flight and every link's pumps

	mu         sync.Mutex
	blackholed bool           // new connections are blackholed too; guarded by mu
	closed     bool           // no link is added after close; guarded by mu
	links      map[*link]bool // open links; guarded by mu
}

// link is one accepted connection and its connection to the target.
type link struct {
	client     net.Conn
	upstream   net.Conn // nil when accepted during a blackhole: the target never hears of it
	blackholed atomic.Bool
	pumps      atomic.Int32 // directions still running; the last one closes the link
	closeOnce  sync.Once
}

// Start listens on 127.0.0.1 at a port of its own and forwards every
// connection to target ("host:port") in both directions. When the test ends
// the listener and every connection are closed, and Start's goroutines have
// returned before the cleanup does.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcpproxy: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, cancel: cancel, links: map[*link]bool{}}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's "127.0.0.1:port", to give the client instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Conns is how many links the proxy holds open, blackholed ones included.
// A connection being dialled to the target is not counted yet.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// Blackhole makes the network silent: from now on the bytes of every link,
// in both directions, are read and dropped, and the connections stay open, so
// each peer sees a hang rather than a reset, as in a partition. Connections
// accepted while blackholed are read and dropped too, and are not forwarded:
// the target never sees them, as it would not across a partition.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = true
	for l := range p.links {
		l.blackholed.Store(true)
	}
}

// Heal ends the blackhole: connections accepted from now on are forwarded,
// and every blackholed link is reset on both sides. A blackholed link is not
// resumed because the bytes it dropped leave both ends out of step (a
// half-read reply, a command the server never got), as real TCP state goes
// stale across a long partition; closing it is what the client's keepalive
// or timeout would end up doing, only sooner, and the client reconnects.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.blackholed = false
	var stale []*link
	for l := range p.links {
		if l.blackholed.Load() {
			stale = append(stale, l)
			delete(p.links, l)
		}
	}
	p.mu.Unlock()
	for _, l := range stale {
		l.close(true)
	}
}

// Cut resets every current link on both sides at once (RST, with linger 0),
// as a network that drops does. It does not change the mode: connections
// after Cut are forwarded or blackholed as before.
func (p *Proxy) Cut() {
	for _, l := range p.takeLinks() {
		l.close(true)
	}
}

// takeLinks removes every link from the set and returns them.
func (p *Proxy) takeLinks() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := make([]*link, 0, len(p.links))
	for l := range p.links {
		all = append(all, l)
	}
	clear(p.links)
	return all
}

// close stops accepting, ends dials in flight, resets every link and waits
// for every goroutine of the proxy to return.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// acceptLoop hands every accepted connection to its own goroutine, so that
// one slow dial to the target does not hold up the next client.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // the listener is closed; a loopback listener fails no other way worth retrying
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve starts client's link: blackholed at once while the proxy is
// blackholed, forwarded to a fresh connection to the target otherwise.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if p.addHeld(client) {
		return
	}
	d := net.Dialer{Timeout: dialWithin}
	upstream, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		resetConn(client) // the client sees a refused target as a reset, not a hang
		return
	}
	l := &link{client: client, upstream: upstream}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		l.close(true)
		return
	}
	if p.blackholed {
		l.blackholed.Store(true) // Blackhole came while dialling
	}
	p.links[l] = true
	l.pumps.Store(2)
	p.wg.Add(2)
	go p.pump(l, client, upstream)
	go p.pump(l, upstream, client)
}

// addHeld takes client as a blackholed link with no target and reports
// true, if the proxy is blackholed (or closed: then client is just closed).
// The check and the adding share one lock so that a Heal cannot fall between
// them and leave a link with no target that no Heal would close.
func (p *Proxy) addHeld(client net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		resetConn(client)
		return true
	}
	if !p.blackholed {
		return false
	}
	l := &link{client: client}
	l.blackholed.Store(true)
	p.links[l] = true
	l.pumps.Store(1)
	p.wg.Add(1)
	go p.pump(l, client, nil)
	return true
}

// pump copies src to dst while l is not blackholed and drops what it reads
// while it is (dst is nil for a link that never had a target). Forwarding,
// an EOF from src half-closes dst, as the JS proxy passes on an end; any
// other failure closes the link. Blackholed, an ending src is not passed on:
// across a partition the other side would not hear it. The last pump to
// return closes the link and removes it.
func (p *Proxy) pump(l *link, src, dst net.Conn) {
	defer p.wg.Done()
	defer func() {
		if l.pumps.Add(-1) == 0 {
			p.remove(l)
			l.close(false)
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && dst != nil && !l.blackholed.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.close(false)
				return
			}
		}
		if err == nil {
			continue
		}
		if l.blackholed.Load() || dst == nil {
			return
		}
		if errors.Is(err, io.EOF) {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
		}
		l.close(false)
		return
	}
}

// remove takes l out of the set, if it is still there.
func (p *Proxy) remove(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// close closes both sides of l once; with reset, each side gets an RST
// instead of a FIN. Closing the conns is also what ends l's pumps.
func (l *link) close(reset bool) {
	l.closeOnce.Do(func() {
		for _, c := range []net.Conn{l.client, l.upstream} {
			if c == nil {
				continue
			}
			if reset {
				resetConn(c)
			} else {
				_ = c.Close()
			}
		}
	})
}

// resetConn closes c with linger 0, so the peer gets an RST at once rather
// than a FIN it may take for an orderly end.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
)

// plainConns keeps plain HTTP connections (those not upgraded to a
// WebSocket) from taking the descriptors kept in reserve for the probes.
// Timeouts alone do not: a client can open a thousand connections and keep
// each one idle just under HTTP_IDLE_TIMEOUT, and then /livez goes
// unanswered and a liveness probe restarts the process, dropping every
// player. So past its limit, the connections that are doing nothing are
// closed, the longest-waiting first: one idle between two requests at once,
// one that has sent no request yet only once it has waited plainGrace (so a
// burst of handshakes, a reconnect storm, is not cut before it is read). One
// in the middle of a request is never cut here.
type plainConns struct {
	// set at construction
	limit int // plain connections at once; 0: no limit

	mu      sync.Mutex
	open    int                   // plain connections open now
	idle    map[net.Conn]waiting  // those doing nothing
	closing map[net.Conn]struct{} // closed here; net/http has not yet said so
}

// waiting is how long a connection has been doing nothing, and whether it
// has yet to send its first request.
type waiting struct {
	since time.Time
	fresh bool
}

// plainGrace is how long a plain connection may do nothing before it can be
// closed to make room: a client that means to send a request sends it at once.
const plainGrace = time.Second

// newPlainConns returns a tracker that lets limit plain connections be open.
func newPlainConns(limit int) *plainConns {
	return &plainConns{limit: limit, idle: make(map[net.Conn]waiting), closing: make(map[net.Conn]struct{})}
}

// track is the HTTP server's ConnState hook.
func (p *plainConns) track(c net.Conn, state http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch state {
	case http.StateNew:
		p.open++
		p.idle[c] = waiting{since: time.Now(), fresh: true}
		p.evict(time.Now())
	case http.StateIdle:
		p.idle[c] = waiting{since: time.Now()}
		p.evict(time.Now())
	case http.StateActive:
		delete(p.idle, c)
	case http.StateHijacked, http.StateClosed:
		p.open--
		delete(p.idle, c)
		delete(p.closing, c)
	}
}

// watch evicts every plainGrace until ctx ends, so that connections that all
// arrived at once are closed once they have outstayed the grace, even when no
// new connection comes to trigger it.
func (p *plainConns) watch(ctx context.Context) {
	if p.limit <= 0 {
		return
	}
	t := time.NewTicker(plainGrace / 2)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			p.mu.Lock()
			p.evict(now)
			p.mu.Unlock()
		case <-ctx.Done():
			return
		}
	}
}

// evict closes the longest-waiting closable connections while more than
// limit are open. Called with mu held; the scan is paid only past the limit.
func (p *plainConns) evict(now time.Time) {
	for p.limit > 0 && p.open-len(p.closing) > p.limit {
		var oldest net.Conn
		var since time.Time
		for c, w := range p.idle {
			if w.fresh && now.Sub(w.since) < plainGrace {
				continue // it may be about to send its request
			}
			if oldest == nil || w.since.Before(since) {
				oldest, since = c, w.since
			}
		}
		if oldest == nil {
			return
		}
		delete(p.idle, oldest)
		p.closing[oldest] = struct{}{}
		_ = oldest.Close()
	}
}

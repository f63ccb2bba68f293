package main

import (
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
// player. So past its limit, the connections that are doing nothing (waiting
// for a first request, or idle between two) are closed, the longest-waiting
// first; one in the middle of a request is never cut here.
type plainConns struct {
	// set at construction
	limit int // plain connections at once; 0: no limit

	mu      sync.Mutex
	open    int                    // plain connections open now
	idle    map[net.Conn]time.Time // those doing nothing, since when
	closing map[net.Conn]struct{}  // closed here; net/http has not yet said so
}

// newPlainConns returns a tracker that lets limit plain connections be open.
func newPlainConns(limit int) *plainConns {
	return &plainConns{limit: limit, idle: make(map[net.Conn]time.Time), closing: make(map[net.Conn]struct{})}
}

// track is the HTTP server's ConnState hook.
func (p *plainConns) track(c net.Conn, state http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch state {
	case http.StateNew:
		p.open++
		p.idle[c] = time.Now()
		p.evict()
	case http.StateIdle:
		p.idle[c] = time.Now()
		p.evict()
	case http.StateActive:
		delete(p.idle, c)
	case http.StateHijacked, http.StateClosed:
		p.open--
		delete(p.idle, c)
		delete(p.closing, c)
	}
}

// evict closes the longest-waiting idle connections while more than limit
// are open. Called with mu held; the scan is paid only past the limit.
func (p *plainConns) evict() {
	for p.limit > 0 && p.open-len(p.closing) > p.limit && len(p.idle) > 0 {
		var oldest net.Conn
		var since time.Time
		for c, t := range p.idle {
			if oldest == nil || t.Before(since) {
				oldest, since = c, t
			}
		}
		delete(p.idle, oldest)
		p.closing[oldest] = struct{}{}
		_ = oldest.Close()
	}
}

package main

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// TestPlainConnsEvictsIdle checks that past its limit the tracker closes the
// longest-idle plain connections once they have done nothing for plainGrace,
// and never one in the middle of a request.
func TestPlainConnsEvictsIdle(t *testing.T) {
	p := newPlainConns(3)
	type end struct{ ours, peer net.Conn }
	open := func(state http.ConnState) end {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		e := end{a, b}
		p.track(a, http.StateNew)
		if state != http.StateNew {
			p.track(a, state)
		}
		return e
	}
	closed := func(e end) bool {
		return e.ours.SetDeadline(time.Time{}) != nil // a pipe refuses deadlines once closed
	}
	busy := open(http.StateActive)
	idle1 := open(http.StateIdle)
	idle2 := open(http.StateNew)
	for i, e := range []end{busy, idle1, idle2} {
		if closed(e) {
			t.Fatalf("connection %d closed while within the limit", i)
		}
	}
	fresh := open(http.StateNew) // the fourth: idle1, between two requests, goes
	if !closed(idle1) || closed(busy) || closed(idle2) || closed(fresh) {
		t.Fatalf("past the limit: busy %v, idle1 %v, idle2 %v, fresh %v closed; want only idle1",
			closed(busy), closed(idle1), closed(idle2), closed(fresh))
	}
	p.track(idle1.ours, http.StateClosed)  // net/http reports it
	p.track(busy.ours, http.StateHijacked) // upgraded: no longer plain
	open(http.StateNew)
	if closed(idle2) || closed(fresh) {
		t.Fatal("a connection was closed with room to spare")
	}
	if p.open != 3 || len(p.closing) != 0 {
		t.Fatalf("open %d, closing %d; want 3 and 0", p.open, len(p.closing))
	}
}

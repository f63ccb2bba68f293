package main

import (
	"time"
)

// How a session leaves the hub: a lost conn goes away for the resume window or
// ends at once, a dropped session is removed with its games told why, and the
// sessions a fan-out overflowed are dropped once it is over.

// lost handles the end of s's conn for r: the session goes away for the
// resume window when r leaves it resumable, and ends otherwise. Runs on the
// hub goroutine.
func (h *hub) lost(s *session, r closeReason) {
	if h.cfg.resumeWindow > 0 && r.away != "" {
		h.goAway(s, r)
		return
	}
	h.drop(s, r.presence, r)
}

// drop removes s, tells its games it left with presence (nothing when
// presence is ""), and stops its conn, if it has one, with r. Runs on the
// hub goroutine.
func (h *hub) drop(s *session, presence string, r closeReason) {
	h.stopWindow(s)
	h.stopToken(s)
	conn := s.conn
	// Counted by cause: a slow consumer's games hear disconnected when it
	// cannot go away (RESUME_WINDOW=0), but it ended as slow_consumer.
	why := presence
	if r.away != "" {
		why = r.away
	}
	h.cfg.metrics.sessionEnded(why, 1)
	if conn == nil {
		h.cfg.metrics.away(time.Since(s.awaySince), false)
	}
	if presence != "" {
		// Told before the seats go, so that a game's last member leaving is
		// an event with an offset like any other (the webhook reports it).
		for g := range s.games {
			h.presence(g, s, presenceNote{"left", presence}, encodePresence(g, s.sid, s.userID, "left", presence))
		}
	}
	_, games := h.idx.remove(s.sid)
	h.endRecord(s)
	if h.cl != nil {
		delete(h.cl.gates, s)
	}
	for _, g := range games {
		h.forgetIfUnheld(g)
	}
	if conn != nil {
		conn.stop(r)
	}
}

// dropSlow deals with every session that overflowed its queue. Dropping one
// tells its games, which may overflow others, so it runs until none is left.
func (h *hub) dropSlow() {
	for len(h.slow) > 0 {
		s := h.slow[len(h.slow)-1]
		h.slow = h.slow[:len(h.slow)-1]
		if h.idx.sessions[s.sid] == s && s.conn != nil {
			h.lost(s, reasonSlow)
		}
	}
}

package main

import (
	"time"
)

// The sweep, one step per turn of the hub's loop: a sweepMsg starts it (hub.go),
// each step walks the idle lists and the heap (idle.go), and judge decides for
// each session it looks at whether to warn it, expire it, or leave it be.

// sweepSome does one step of the sweep in progress: it warns and expires idle
// sessions as of sweepAt, walking each idle list from the index's cursor (the
// longest idle of that list at the start), then the heap of sessions off the
// lists while its top is due, then forgets seatless settings past their time,
// and looks at no more than sweepStep sessions. Each list's walk is over at
// its first session that needs nothing, so the work is proportional to the
// sessions it warns or expires (and those already warned), plus one look per
// list. Runs on the hub goroutine.
func (h *hub) sweepSome() {
	now, x := h.sweepAt, h.idx
	h.sweeping = false
	for looked := 0; ; {
		if looked == h.cfg.sweepStep {
			h.sweeping = true // the next step goes on from here
			return
		}
		switch {
		case h.sweepList < len(x.lists):
			s := x.cursor
			if s == nil {
				if h.sweepList++; h.sweepList < len(x.lists) {
					x.cursor = x.lists[h.sweepList].oldest
				}
				continue
			}
			looked++
			x.cursor = s.newer // on before acting: ending s unlinks it
			if !h.judge(s, now) {
				x.cursor = nil // the rest of this list is younger still
			}
		case h.sweepList == len(x.lists):
			s := x.lateTop()
			if s == nil || dueAt(s, h.cfg.expiryWarning).After(now) {
				h.sweepList++
				continue
			}
			looked++
			if !h.judge(s, now) { // cannot be, as it is due; but a top left in place must not spin the sweep
				h.sweepList++
			}
		default:
			if !x.settings.expireOne(now) {
				return
			}
			looked++
		}
	}
}

// judge warns or expires s as of now, and reports whether it needed either
// or had been warned already: false means a session that needs nothing yet.
// A warning always announces an expiry at least EXPIRY_WARNING ahead: a sweep
// that comes late, or a timeout that shrank, postpones the expiry rather than
// shortening the warning. Runs on the hub goroutine.
func (h *hub) judge(s *session, now time.Time) bool {
	warning, end := h.cfg.expiryWarning, s.lastActivity.Add(s.timeout)
	switch {
	case s.warned:
		if !now.Before(s.expiresAt) {
			h.drop(s, presenceExpired, reasonExpired)
		}
	case warning > 0 && !now.Before(end.Add(-warning)):
		at := laterOf(end, now.Add(warning))
		h.idx.warn(s, at)
		h.deliver(s, encodeExpiring(now, at, h.timeoutGame(s)))
	case warning == 0 && !now.Before(end):
		h.drop(s, presenceExpired, reasonExpired)
	default:
		return false
	}
	return true
}

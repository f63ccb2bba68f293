package main

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// Sessions no longer share one idle timeout: a session's is the largest of
// its games' (contract v2 §8). One list ordered by last activity no longer
// tells a sweep where to stop, since a session further on may have a shorter
// timeout and be due already. So the index keeps one idle list per timeout it
// knows in advance (SESSION_TIMEOUT and each GAME_STATE_TIMEOUTS entry), each
// ordered by last activity, so that touching a session stays O(1) and a sweep
// stops at each list's first session that needs nothing. A session whose
// timeout changed without activity of its own (the backend changed a game's
// state, a kick, a supersede) cannot be put in order in its new list at O(1),
// and neither can one whose timeout is a backend's own idle_timeout_ms: those
// wait in a heap ordered by when they are next due, and go back to their list
// at their next activity. A sweep's work is then the sessions it warns,
// expires or has warned already, the due ones of the heap, and one look per
// list: a handful, fixed by the configuration.

// idleList is the sessions of one timeout that have been active since their
// timeout last changed, oldest activity first.
type idleList struct {
	timeout        time.Duration
	oldest, newest *session
}

// lateHeap is the sessions off the lists, soonest due first (ties by sid, so
// that the order of a sweep is the same on every run). warning is the
// configured EXPIRY_WARNING, which decides when an unwarned session is due.
type lateHeap struct {
	sessions []*session
	warning  time.Duration
}

func (q *lateHeap) Len() int { return len(q.sessions) }
func (q *lateHeap) Less(i, j int) bool {
	a, b := q.sessions[i], q.sessions[j]
	da, db := dueAt(a, q.warning), dueAt(b, q.warning)
	if !da.Equal(db) {
		return da.Before(db)
	}
	return strings.Compare(a.sid, b.sid) < 0
}
func (q *lateHeap) Swap(i, j int) {
	q.sessions[i], q.sessions[j] = q.sessions[j], q.sessions[i]
	q.sessions[i].heapAt, q.sessions[j].heapAt = i+1, j+1
}
func (q *lateHeap) Push(v any) {
	s := v.(*session)
	q.sessions = append(q.sessions, s)
	s.heapAt = len(q.sessions)
}
func (q *lateHeap) Pop() any {
	n := len(q.sessions) - 1
	s := q.sessions[n]
	q.sessions[n] = nil
	q.sessions = q.sessions[:n]
	s.heapAt = 0
	return s
}

// dueAt is when a sweep first has something to do for s: expire it, when it
// has been warned; otherwise warn it (expire it, with no warning configured).
func dueAt(s *session, warning time.Duration) time.Time {
	switch {
	case s.warned:
		return s.expiresAt
	case warning > 0:
		return s.lastActivity.Add(s.timeout - warning)
	default:
		return s.lastActivity.Add(s.timeout)
	}
}

// setTimeouts gives the index its lists: base is the timeout of a session in
// no game, listed the others known in advance. It must be called while the
// index holds no session.
func (x *index) setTimeouts(base, warning time.Duration, listed []time.Duration) {
	all := append([]time.Duration{base}, listed...)
	slices.Sort(all)
	all = slices.Compact(all)
	x.lists = x.lists[:0]
	x.byTimeout = make(map[time.Duration]*idleList, len(all))
	for _, t := range all {
		l := &idleList{timeout: t}
		x.lists = append(x.lists, l)
		x.byTimeout[t] = l
	}
	x.base = x.byTimeout[base]
	x.baseTimeout = base
	x.late.warning = warning
}

// place puts s, active now, at the young end of its timeout's list, or in
// the heap when its timeout has no list.
func (x *index) place(s *session) {
	if l := x.byTimeout[s.timeout]; l != nil {
		l.pushNewest(s)
		return
	}
	heap.Push(&x.late, s)
}

// detach takes s out of its list or the heap, moving a sweep's cursor on.
func (x *index) detach(s *session) {
	if s.heapAt != 0 {
		heap.Remove(&x.late, s.heapAt-1)
		return
	}
	if l := x.byTimeout[s.timeout]; l != nil {
		x.unlinkFrom(l, s)
	}
}

// touch records client activity: s becomes the newest of its list and earns
// a new warning for its next idle period.
func (x *index) touch(s *session, now time.Time) {
	s.lastActivity = now
	s.warned, s.expiresAt = false, time.Time{}
	if l := x.byTimeout[s.timeout]; l != nil && s.heapAt == 0 && l.newest == s {
		return
	}
	x.detach(s)
	x.place(s)
}

// retime gives s the idle timeout t. active says s was touched in this hub
// step, so it belongs at the young end of its new list; a session whose
// timeout changes without activity of its own waits in the heap. A warning
// already sent stays true when the timeout shrinks (the session expires when
// it was told, never sooner); when the timeout grows past the expiry it
// announced, the warning is withdrawn and a sweep sends a new one, with the
// new time, when it is due.
func (x *index) retime(s *session, t time.Duration, active bool) {
	if t == s.timeout {
		return
	}
	x.detach(s)
	s.timeout = t
	if s.warned && s.lastActivity.Add(t).After(s.expiresAt) {
		s.warned, s.expiresAt = false, time.Time{}
	}
	if active {
		x.place(s)
		return
	}
	heap.Push(&x.late, s)
}

// warn records that s was told it expires at at.
func (x *index) warn(s *session, at time.Time) {
	s.warned, s.expiresAt = true, at
	if s.heapAt != 0 {
		heap.Fix(&x.late, s.heapAt-1)
	}
}

// lateTop returns the heap's soonest due session, nil when it is empty.
func (x *index) lateTop() *session {
	if len(x.late.sessions) == 0 {
		return nil
	}
	return x.late.sessions[0]
}

// pushNewest appends s at the young end of l.
func (l *idleList) pushNewest(s *session) {
	s.older, s.newer = l.newest, nil
	if l.newest != nil {
		l.newest.newer = s
	} else {
		l.oldest = s
	}
	l.newest = s
}

// unlinkFrom takes s out of l, moving the sweep's cursor on past it.
func (x *index) unlinkFrom(l *idleList, s *session) {
	if x.cursor == s {
		x.cursor = s.newer
	}
	if s.older != nil {
		s.older.newer = s.newer
	} else if l.oldest == s {
		l.oldest = s.newer
	}
	if s.newer != nil {
		s.newer.older = s.older
	} else if l.newest == s {
		l.newest = s.older
	}
	s.older, s.newer = nil, nil
}

// laterOf returns the later of a and b.
func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

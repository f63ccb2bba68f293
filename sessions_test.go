package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

// checkIndex fails t unless every invariant of x holds:
//   - every session in byUser and byGame is in sessions under its own sid, and
//     every session is in the user set of its user and the game set of each of its games;
//   - no user set and no game set is empty, and anonymous sessions are in no user set;
//   - a session's games set is nil or non-empty;
//   - the idle lists, walked from oldest by newer and from newest by older,
//     and the heap together hold exactly the sessions, each once; each list
//     holds sessions of its timeout, ordered by non-decreasing lastActivity.
//
// It reports with Errorf only, so a test can run it through a recorder, and it
// never loops forever on a corrupted list.
func checkIndex(t testing.TB, x *index) {
	t.Helper()
	for sid, s := range x.sessions {
		if s == nil {
			t.Errorf("sessions[%q] is nil", sid)
			continue
		}
		if s.sid != sid {
			t.Errorf("sessions[%q] holds session %q", sid, s.sid)
		}
		if s.userID != nil {
			if _, ok := x.byUser[*s.userID][s]; !ok {
				t.Errorf("session %q is missing from the set of its user %d", s.sid, *s.userID)
			}
		}
		if s.games != nil && len(s.games) == 0 {
			t.Errorf("session %q has an empty games set; want nil", s.sid)
		}
		for g := range s.games {
			if _, ok := x.byGame[g][s]; !ok {
				t.Errorf("session %q is in game %s but missing from its member set", s.sid, g)
			}
		}
	}
	for user, set := range x.byUser {
		if len(set) == 0 {
			t.Errorf("user %d has an empty session set", user)
		}
		for s := range set {
			if x.sessions[s.sid] != s {
				t.Errorf("user %d's set holds session %q, which is not in sessions", user, s.sid)
			}
			switch {
			case s.userID == nil:
				t.Errorf("user %d's set holds anonymous session %q", user, s.sid)
			case *s.userID != user:
				t.Errorf("user %d's set holds session %q of user %d", user, s.sid, *s.userID)
			}
		}
	}
	for g, set := range x.byGame {
		if len(set) == 0 {
			t.Errorf("game %s has an empty member set", g)
		}
		for s := range set {
			if x.sessions[s.sid] != s {
				t.Errorf("game %s's members hold session %q, which is not in sessions", g, s.sid)
			}
			if _, ok := s.games[g]; !ok {
				t.Errorf("game %s's members hold session %q, which is not in that game", g, s.sid)
			}
		}
	}
	held := 0
	for _, log := range x.logs {
		held += log.bytes
	}
	if held != x.historyHeld {
		t.Errorf("the index counts %d bytes of history; its games hold %d", x.historyHeld, held)
	}
	checkIndexIdleList(t, x)
}

// checkIndexIdleList is checkIndex's part for the idle lists and the heap:
// every session is on the list of its timeout or in the heap, exactly once.
func checkIndexIdleList(t testing.TB, x *index) {
	t.Helper()
	seen := make(map[*session]bool, len(x.sessions))
	for _, l := range x.lists {
		if x.byTimeout[l.timeout] != l {
			t.Errorf("the list of %s is not the one byTimeout holds", l.timeout)
		}
		checkIdleList(t, x, l, seen)
	}
	for i, s := range x.late.sessions {
		if seen[s] {
			t.Errorf("session %q is both on a list and in the heap", s.sid)
		}
		seen[s] = true
		if s.heapAt != i+1 {
			t.Errorf("session %q at heap place %d says %d", s.sid, i+1, s.heapAt)
		}
		if x.sessions[s.sid] != s {
			t.Errorf("the heap holds session %q, which is not in sessions", s.sid)
		}
		if i > 0 && x.late.Less(i, (i-1)/2) {
			t.Errorf("heap out of order at %q", s.sid)
		}
	}
	if len(seen) != len(x.sessions) {
		t.Errorf("the lists and the heap hold %d sessions, sessions holds %d", len(seen), len(x.sessions))
	}
}

// checkIdleList checks one idle list, adding the sessions it holds to seen.
func checkIdleList(t testing.TB, x *index, l *idleList, seen map[*session]bool) {
	t.Helper()
	var forward []*session
	var prev *session
	for s := l.oldest; s != nil; s = s.newer {
		if seen[s] {
			t.Errorf("idle list visits session %q twice walking from oldest", s.sid)
			return
		}
		seen[s] = true
		if x.sessions[s.sid] != s {
			t.Errorf("idle list holds session %q, which is not in sessions", s.sid)
		}
		if s.timeout != l.timeout || s.heapAt != 0 {
			t.Errorf("session %q of timeout %s (heap place %d) is on the list of %s", s.sid, s.timeout, s.heapAt, l.timeout)
		}
		if s.older != prev {
			t.Errorf("session %q's older link does not point at the session before it", s.sid)
		}
		if prev != nil && s.lastActivity.Before(prev.lastActivity) {
			t.Errorf("idle list out of order: %q (%v) after %q (%v)", s.sid, s.lastActivity, prev.sid, prev.lastActivity)
		}
		forward = append(forward, s)
		prev = s
	}
	if l.newest != prev {
		t.Errorf("newest is not the last session walking from oldest")
	}
	var backward []*session
	back := map[*session]bool{}
	for s := l.newest; s != nil; s = s.older {
		if back[s] {
			t.Errorf("idle list visits session %q twice walking from newest", s.sid)
			return
		}
		back[s] = true
		backward = append(backward, s)
	}
	slices.Reverse(backward)
	if !slices.Equal(forward, backward) {
		t.Errorf("idle list differs walked from oldest (%v) and from newest (%v)", indexSIDsOf(forward), indexSIDsOf(backward))
	}
}

// indexSIDsOf lists the sids of sessions, for messages.
func indexSIDsOf(ss []*session) []string {
	sids := make([]string, len(ss))
	for i, s := range ss {
		sids[i] = s.sid
	}
	return sids
}

// indexIdleSIDs lists the idle list from oldest to newest by its links, stopping
// after more steps than there are sessions so a cycle cannot hang a test.
func indexIdleSIDs(x *index) []string {
	var sids []string
	for s := x.base.oldest; s != nil && len(sids) <= len(x.sessions); s = s.newer {
		sids = append(sids, s.sid)
	}
	return sids
}

// indexT0 is the clock's start in the index tests.
var indexT0 = time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC)

// indexAt is the test clock n seconds after indexT0.
func indexAt(n int) time.Time { return indexT0.Add(time.Duration(n) * time.Second) }

// indexUser returns a pointer to a user id.
func indexUser(n int64) *int64 { return &n }

// indexSession returns a fresh session; user nil makes it anonymous. Index
// methods never touch conn, so it stays nil.
func indexSession(sid string, user *int64) *session {
	return &session{sid: sid, userID: user}
}

// Games of the index tests.
var (
	indexGameA = uuid.MustParse("11111111-1111-4111-8111-111111111111")
	indexGameB = uuid.MustParse("22222222-2222-4222-8222-222222222222")
	indexGameC = uuid.MustParse("33333333-3333-4333-8333-333333333333")
)

// indexOf builds an index holding sessions added one second apart, in order.
func indexOf(t *testing.T, ss ...*session) *index {
	t.Helper()
	x := newIndex()
	for i, s := range ss {
		if !x.add(s, indexAt(i)) {
			t.Fatalf("add %q refused", s.sid)
		}
	}
	checkIndex(t, x)
	return x
}

// indexJoin joins s to game, failing unless it was a new membership.
func indexJoin(t *testing.T, x *index, s *session, game uuid.UUID) {
	t.Helper()
	if !x.join(s, game) {
		t.Fatalf("join %q to %s returned false", s.sid, game)
	}
}

// indexMembers lists game's members, sorted.
func indexMembers(x *index, game uuid.UUID) []string {
	var sids []string
	for s := range x.members(game) {
		sids = append(sids, s.sid)
	}
	slices.Sort(sids)
	return sids
}

// indexTBRecorder is a testing.TB that records errors instead of failing, so
// TestCheckIndexCatches can show checkIndex notices each broken invariant.
// It overrides the methods checkIndex calls; anything else reaches the real test.
type indexTBRecorder struct {
	testing.TB
	errs []string
}

// Helper does nothing: the recorder reports no lines.
func (r *indexTBRecorder) Helper() {}

// Errorf records one failure.
func (r *indexTBRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestCheckIndexCatches checks checkIndex accepts a valid index and reports
// each way of breaking one invariant, so its silence elsewhere means something.
func TestCheckIndexCatches(t *testing.T) {
	cases := []struct {
		name    string
		corrupt func(x *index, a, b, c *session)
	}{
		{"nothing broken", nil},
		{"sessions key is not the sid", func(x *index, a, b, c *session) { delete(x.sessions, "a"); x.sessions["z"] = a }},
		{"session missing from its user set", func(x *index, a, b, c *session) { delete(x.byUser[1], b) }},
		{"user set holds a stranger", func(x *index, a, b, c *session) {
			x.byUser[1][indexSession("stranger", indexUser(1))] = struct{}{}
		}},
		{"anonymous session in a user set", func(x *index, a, b, c *session) { x.byUser[5] = map[*session]struct{}{c: {}} }},
		{"session under another user", func(x *index, a, b, c *session) {
			delete(x.byUser[1], b)
			x.byUser[2] = map[*session]struct{}{b: {}}
		}},
		{"empty user set", func(x *index, a, b, c *session) { x.byUser[3] = map[*session]struct{}{} }},
		{"empty game set", func(x *index, a, b, c *session) { x.byGame[indexGameC] = map[*session]struct{}{} }},
		{"session missing from a game set", func(x *index, a, b, c *session) { delete(x.byGame[indexGameB], a) }},
		{"game set holds a session not in the game", func(x *index, a, b, c *session) { x.byGame[indexGameB][c] = struct{}{} }},
		{"game set holds a stranger", func(x *index, a, b, c *session) {
			s := indexSession("stranger", nil)
			s.games = map[uuid.UUID]struct{}{indexGameA: {}}
			x.byGame[indexGameA][s] = struct{}{}
		}},
		{"empty non-nil games set", func(x *index, a, b, c *session) { c.games = map[uuid.UUID]struct{}{} }},
		{"session missing from the idle list", func(x *index, a, b, c *session) { x.unlinkFrom(x.base, b) }},
		{"idle list holds a stranger", func(x *index, a, b, c *session) {
			s := indexSession("stranger", nil)
			s.lastActivity = indexAt(100)
			x.base.pushNewest(s)
		}},
		{"idle list out of order", func(x *index, a, b, c *session) { a.lastActivity = indexAt(100) }},
		{"broken older link", func(x *index, a, b, c *session) { c.older = a }},
		{"newest is not the last", func(x *index, a, b, c *session) { x.base.newest = b }},
		{"oldest is not the first", func(x *index, a, b, c *session) { x.base.oldest = b }},
		{"cycle in the idle list", func(x *index, a, b, c *session) { c.newer = a }},
		{"cycle walking back", func(x *index, a, b, c *session) { a.older = c }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b, c := indexSession("a", indexUser(1)), indexSession("b", indexUser(1)), indexSession("c", nil)
			x := indexOf(t, a, b, c)
			indexJoin(t, x, a, indexGameA)
			indexJoin(t, x, a, indexGameB)
			indexJoin(t, x, b, indexGameA)
			if tc.corrupt != nil {
				tc.corrupt(x, a, b, c)
			}
			rec := &indexTBRecorder{TB: t}
			checkIndex(rec, x)
			if broken := tc.corrupt != nil; broken != (len(rec.errs) > 0) {
				t.Errorf("broken=%v but checkIndex reported %d errors: %v", broken, len(rec.errs), rec.errs)
			}
		})
	}
}

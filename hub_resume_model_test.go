package main

// TestHubRandomizedResume's model: what the hub should hold and send, written
// from the contract (PROTOCOL.md: Sessions that outlive their connection,
// Idle timeout by game state, Seat policy) rather than from the hub's code.
// Frames are compared as summaries (type and the fields the contract gives
// them), per conn and per step, in any order: offsets check the order of a
// game's events.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// rpSession is the model's record of one session.
type rpSession struct {
	sid, token string
	user       *int64
	conn       *conn // the conn serving it; nil while away
	prev       *conn // the conn that served it last, whose position a resume names
	capacity   int   // SEND_QUEUE_SIZE of its conn
	ended      bool
	games      map[uuid.UUID]bool
	last       time.Time     // last activity
	timeout    time.Duration // the largest of its games' idle timeouts
	expiresAt  time.Time     // what its warning announced; zero when not warned
	awaySince  time.Time
	awayReason string
	actions    map[string]rpAction
	lastSent   command                     // the last command sent with an id, which it may retry
	seen       map[*conn]map[string]rpSeen // per conn that served it: where it is in each game

	// during the current step
	want   []string // summaries of the frames its conn should get
	got    []string // summaries of the frames its conn got, taken early (a resume's)
	pushed int      // frames pushed to its conn: what SEND_QUEUE_SIZE bounds (a replay is forced, not pushed)
}

// rpSeen is where a conn is in one game: the epoch and the last offset it
// was sent; skip is its own back event, which it is never sent, and upTo the
// game's offset when it resumed (what follows resumed up to there is replay).
type rpSeen struct {
	epoch            string
	last, skip, upTo uint64
}

// rpAction is an action the model remembers: what it was and when it ran.
type rpAction struct {
	key string
	at  time.Time
}

// rpSettings is what the backend set for a game, as the contract reads a PUT.
type rpSettings struct {
	state   string
	timeout time.Duration
	single  bool
}

// rpProp drives the hub and the model side by side.
type rpProp struct {
	t        *testing.T
	r        *rand.Rand
	h        *hub
	cfg      hubConfig
	sessions []*rpSession
	settings map[uuid.UUID]*rpSettings
	stops    map[*conn]closeReason // conns that no longer serve a session, and why they were stopped
	slow     []*rpSession          // overflowed during the current message
	step     int
	nextSID  int
	action   string
	count    map[string]int
}

// live returns the sessions the model holds, connected or away.
func (r *rpProp) live(connected bool) []*rpSession {
	var out []*rpSession
	for _, s := range r.sessions {
		if !s.ended && (!connected || s.conn != nil) {
			out = append(out, s)
		}
	}
	return out
}

// members returns game's seats, connected or away, by sid.
func (r *rpProp) members(game uuid.UUID) []*rpSession {
	var out []*rpSession
	for _, s := range r.live(false) {
		if s.games[game] {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *rpSession) int { return strings.Compare(a.sid, b.sid) })
	return out
}

// deliver pushes a frame to s's conn: dropped while away, and an overflow
// makes s a slow consumer.
func (r *rpProp) deliver(s *rpSession, sum string) {
	if s.ended || s.conn == nil {
		return
	}
	s.want = append(s.want, sum)
	if s.pushed++; s.pushed > s.capacity && !slices.Contains(r.slow, s) {
		r.slow = append(r.slow, s)
	}
}

// offer queues an error reply to s's own message while its queue is at most
// half full, and drops it otherwise: a refusal never makes s slow.
func (r *rpProp) offer(s *rpSession, sum string) {
	if s.conn != nil && s.pushed < s.capacity/2 {
		s.want = append(s.want, sum)
		s.pushed++
	}
}

// event delivers a game event to every member of game but except.
func (r *rpProp) event(game uuid.UUID, except *rpSession, sum string) {
	for _, o := range r.members(game) {
		if o != except {
			r.deliver(o, sum)
		}
	}
}

// goAway detaches s from its conn, stopped for reason at at: its games hear away.
func (r *rpProp) goAway(s *rpSession, reason closeReason, at time.Time) {
	r.stops[s.conn] = reason
	s.prev, s.conn, s.awaySince, s.awayReason = s.conn, nil, at, reason.away
	s.want, s.pushed = nil, 0
	for g := range s.games {
		r.event(g, s, rpPresence(g, s, statusAway, reason.away))
	}
}

// end ends s: its games hear left with presence ("" for nothing) and its
// conn, if it has one, is stopped with stop.
func (r *rpProp) end(s *rpSession, presence string, stop closeReason) {
	if presence != "" {
		for g := range s.games {
			r.event(g, s, rpPresence(g, s, "left", presence))
		}
	}
	if s.conn != nil {
		r.stops[s.conn] = stop
	}
	s.ended, s.conn, s.games, s.want, s.pushed = true, nil, nil, nil, 0
}

// dropSlow sends every slow consumer away, until none is left (each away
// is an event that may overflow another).
func (r *rpProp) dropSlow(at time.Time) {
	for len(r.slow) > 0 {
		s := r.slow[0]
		r.slow = r.slow[1:]
		if !s.ended && s.conn != nil {
			r.count["slow_consumer"]++
			r.goAway(s, reasonSlow, at)
		}
	}
}

// unseat ends s's seat in game for reason (kicked, or superseded by by): s is
// told game_left, the others hear left, and s takes its remaining games' timeout.
func (r *rpProp) unseat(s *rpSession, game uuid.UUID, reason, by string) {
	r.deliver(s, fmt.Sprintf("game_left %s %s %s", game, reason, by))
	r.event(game, s, rpPresence(game, s, "left", reason))
	delete(s.games, game)
	r.retime(s)
}

// rivals are the seats in a single_seat game of s's user's other sessions,
// connected or away, by sid; anonymous sessions have none.
func (r *rpProp) rivals(s *rpSession, game uuid.UUID) []*rpSession {
	if g := r.settings[game]; s.user == nil || g == nil || !g.single {
		return nil
	}
	var out []*rpSession
	for _, o := range r.members(game) {
		if o != s && o.user != nil && *o.user == *s.user {
			out = append(out, o)
		}
	}
	return out
}

// timeoutOf is s's idle timeout, the largest of its games' (SESSION_TIMEOUT
// for a game without one, and in no game), and the game that sets it: the
// lowest id among those whose own timeout it is, nil for none.
func (r *rpProp) timeoutOf(s *rpSession) (time.Duration, *uuid.UUID) {
	t := r.cfg.sessionTimeout
	if len(s.games) > 0 {
		t = 0
	}
	own := func(g uuid.UUID) (time.Duration, bool) {
		if st := r.settings[g]; st != nil && st.timeout > 0 {
			return st.timeout, true
		}
		return r.cfg.sessionTimeout, false
	}
	for g := range s.games {
		d, _ := own(g)
		t = max(t, d)
	}
	var by *uuid.UUID
	for g := range s.games {
		if d, timed := own(g); timed && d == t && (by == nil || bytes.Compare(g[:], by[:]) < 0) {
			id := g
			by = &id
		}
	}
	return t, by
}

// retime gives s its games' timeout: a warning stands unless the new timeout
// ends later than the expiry it announced, which withdraws it.
func (r *rpProp) retime(s *rpSession) {
	t, _ := r.timeoutOf(s)
	if t == s.timeout {
		return
	}
	s.timeout = t
	if !s.expiresAt.IsZero() && s.last.Add(t).After(s.expiresAt) {
		s.expiresAt = time.Time{}
		r.count["warning withdrawn"]++
	}
}

// warn records that s is told, at now, that it expires at at.
func (r *rpProp) warn(s *rpSession, now, at time.Time) {
	s.expiresAt = at
	_, by := r.timeoutOf(s)
	game := ""
	if by != nil {
		game = by.String()
	}
	r.deliver(s, fmt.Sprintf("session_expiring %s %s", at.UTC().Format(expiresAtLayout), game))
}

// sweep warns and expires as of now: every session due, whatever list or
// heap it sits in. A warning announces at least EXPIRY_WARNING ahead (a late
// sweep postpones the expiry); an expiry comes no sooner than announced.
func (r *rpProp) sweep(now time.Time) {
	for _, s := range r.live(false) {
		if s.ended {
			continue
		}
		end := s.last.Add(s.timeout)
		switch {
		case !s.expiresAt.IsZero():
			if !now.Before(s.expiresAt) {
				r.end(s, presenceExpired, reasonExpired)
				r.count["expired"]++
			}
		case !now.Before(end.Add(-r.cfg.expiryWarning)):
			if now.Add(r.cfg.expiryWarning).After(end) {
				r.count["late warning"]++
			}
			r.warn(s, now, laterOf(end, now.Add(r.cfg.expiryWarning)))
		}
	}
	r.dropSlow(now)
}

// view is a game's settings as members are told them: null for a state or
// a timeout the backend never set.
func (r *rpProp) view(game uuid.UUID) string {
	g := r.settings[game]
	if g == nil {
		return rpView(nil, nil, seatMulti)
	}
	var state *string
	var ms *int64
	if g.state != "" {
		state = &g.state
	}
	if g.timeout > 0 {
		t := g.timeout.Milliseconds()
		ms = &t
	}
	policy := seatMulti
	if g.single {
		policy = seatSingle
	}
	return rpView(state, ms, policy)
}

// rpPresence summarises a presence event about s.
func rpPresence(game uuid.UUID, s *rpSession, status, reason string) string {
	return fmt.Sprintf("presence %s %s %s %s", game, s.sid, status, reason)
}

// rpFrame is a queued frame, decoded, with its bytes.
type rpFrame struct {
	frame
	raw []byte
	dup bool
}

// rpTake takes c's queued frames.
func rpTake(t *testing.T, c *conn) []rpFrame {
	t.Helper()
	var fs []rpFrame
	for {
		b, ok := c.out.pop()
		if !ok {
			return fs
		}
		f := rpFrame{raw: b, dup: bytes.HasPrefix(b, []byte(`{"dup":true,`))}
		if err := json.Unmarshal(b, &f.frame); err != nil {
			t.Fatalf("conn %s got a frame that is not JSON: %q", c.sid, b)
		}
		fs = append(fs, f)
	}
}

// rpDump shows frames for a failure message.
func rpDump(fs []rpFrame) string {
	var b bytes.Buffer
	for _, f := range fs {
		b.Write(f.raw)
		b.WriteByte(' ')
	}
	return b.String()
}

// rpData is every field of a server frame's data the summaries use.
type rpData struct {
	GameID        string  `json:"game_id"`
	SID           string  `json:"sid"`
	Status        string  `json:"status"`
	Reason        string  `json:"reason"`
	BySID         string  `json:"by_sid"`
	Code          string  `json:"code"`
	ExpiresAt     string  `json:"expires_at"`
	State         *string `json:"state"`
	IdleTimeoutMS *int64  `json:"idle_timeout_ms"`
	SeatPolicy    string  `json:"seat_policy"`
	Epoch         string  `json:"epoch"`
	Offset        *uint64 `json:"offset"`
}

// rpView is a frame's settings, as the model's view writes them.
func rpView(state *string, ms *int64, policy string) string {
	st, t := "null", "null"
	if state != nil {
		st = *state
	}
	if ms != nil {
		t = fmt.Sprint(*ms)
	}
	return st + " " + t + " " + policy
}

// summary is what the model predicts of a frame.
func (f rpFrame) summary(d rpData) string {
	switch {
	case f.dup:
		return "dup"
	case f.Type == "presence":
		return fmt.Sprintf("presence %s %s %s %s", d.GameID, d.SID, d.Status, d.Reason)
	case f.Type == "game_left":
		return fmt.Sprintf("game_left %s %s %s", d.GameID, d.Reason, d.BySID)
	case f.Type == "game_updated" || f.Type == "game_joined":
		return fmt.Sprintf("%s %s %s", f.Type, d.GameID, rpView(d.State, d.IdleTimeoutMS, d.SeatPolicy))
	case f.Type == "session_expiring":
		return fmt.Sprintf("session_expiring %s %s", d.ExpiresAt, d.GameID)
	case f.Type == "error":
		return fmt.Sprintf("error %s %s", d.Code, d.Reason)
	}
	return fmt.Sprintf("%s %s %s", f.Type, d.GameID, d.SID)
}

// seeFrames checks the offsets of frames c got while serving s (from the
// offset its game_joined or resumed names, every event, gap-free, in order)
// and notes their summaries in s.got, but for a resume's replay.
func (r *rpProp) seeFrames(s *rpSession, c *conn, frames []rpFrame) {
	seen := s.seen[c]
	if seen == nil {
		seen = map[string]rpSeen{}
		s.seen[c] = seen
	}
	for _, f := range frames {
		var d rpData
		if err := json.Unmarshal(f.Data, &d); err != nil {
			r.t.Errorf("%s got %s", s.sid, f.raw)
			continue
		}
		g, in := seen[d.GameID]
		switch {
		case f.dup: // a remembered reply: its offset is the first run's
		case f.Type == "game_joined":
			seen[d.GameID] = rpSeen{epoch: d.Epoch, last: *d.Offset}
		case f.Type == "game_left":
			delete(seen, d.GameID)
		case d.Offset != nil:
			if !in || *d.Offset != g.last+1 && !(g.skip == g.last+1 && *d.Offset == g.last+2) {
				r.t.Errorf("%s (conn %p) got %s of %s at offset %d after %d (joined %v)", s.sid, c, f.Type, d.GameID, *d.Offset, g.last, in)
			}
			g.last = *d.Offset
			seen[d.GameID] = g
			if *d.Offset <= g.upTo {
				continue // replay: the events it missed, which the model does not predict
			}
		}
		s.got = append(s.got, f.summary(d))
	}
}

// drain takes every connected session's frames and compares them with the model's.
func (r *rpProp) drain() {
	for _, s := range r.live(true) {
		r.seeFrames(s, s.conn, rpTake(r.t, s.conn))
		slices.Sort(s.got)
		slices.Sort(s.want)
		if !slices.Equal(s.got, s.want) {
			r.t.Errorf("%s (queue %d) got\n\t%s\nwant\n\t%s", s.sid, s.capacity, strings.Join(s.got, "\n\t"), strings.Join(s.want, "\n\t"))
		}
		s.got, s.want, s.pushed = nil, nil, 0
	}
}

// check compares the hub with the model after a step.
func (r *rpProp) check() {
	t := r.t
	r.drain()
	held := 0
	for _, s := range r.sessions {
		hs := r.h.idx.sessions[s.sid]
		if s.ended {
			if hs != nil {
				t.Errorf("session %s is in the hub, the model ended it", s.sid)
			}
			continue
		}
		held++
		switch {
		case hs == nil:
			t.Errorf("session %s is missing from the hub", s.sid)
			continue
		case hs.conn != s.conn:
			t.Errorf("session %s: the hub's conn %p, the model's %p", s.sid, hs.conn, s.conn)
		case len(hs.games) != len(s.games):
			t.Errorf("session %s in %d games, the model says %d", s.sid, len(hs.games), len(s.games))
		case hs.timeout != s.timeout || !hs.lastActivity.Equal(s.last):
			t.Errorf("session %s: timeout %s since %v, the model %s since %v", s.sid, hs.timeout, hs.lastActivity, s.timeout, s.last)
		case hs.warned == s.expiresAt.IsZero() || hs.warned && !hs.expiresAt.Equal(s.expiresAt):
			t.Errorf("session %s: warned %v for %v, the model %v", s.sid, hs.warned, hs.expiresAt, s.expiresAt)
		}
		for g := range s.games {
			if _, in := hs.games[g]; !in {
				t.Errorf("session %s is not in %s, the model says it is", s.sid, g)
			}
		}
		if s.conn != nil && connStopped(s.conn) {
			t.Errorf("session %s's conn was stopped (%+v)", s.sid, s.conn.reason)
		}
	}
	if held != len(r.h.idx.sessions) {
		t.Errorf("the hub holds %d sessions, the model %d", len(r.h.idx.sessions), held)
	}
	for c, want := range r.stops {
		if !connStopped(c) || c.reason != want {
			t.Errorf("conn %s no longer serves a session: stopped %v with %+v, want %+v", c.sid, connStopped(c), c.reason, want)
		}
	}
	checkHubInvariants(t, r.h)
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// TestHubRandomizedResume is the hub's randomized test for sessions that
// outlive their connection: registers, connections lost for every reason
// (away) or ended with a goodbye, resumes of away, connected (takeover),
// ended and unknown sessions by the same or another user, joins, leaves and
// actions with ids drawn from a small pool (so retries and reused ids are
// common), and fake time that ends windows, expires sessions and forgets
// action ids. After every step the hub's sessions, their state (connected or
// away), their games and their conns are compared with a model, the hub's
// invariants are checked, every drained conn's offsets are gap-free from its
// game_joined or resumed, and a retried action is answered to its sender
// alone (dup, or id_reused). Rerun a failure with -hub.seed.
func TestHubRandomizedResume(t *testing.T) {
	seed := *hubPropSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -run TestHubRandomizedResume -hub.seed=%d)", seed, seed)
	synctest.Test(t, func(t *testing.T) {
		cfg := resumeConfig()
		cfg.maxGames, cfg.maxSeats = 3, 100
		r := &rpProp{t: t, r: rand.New(rand.NewPCG(seed, 1)), h: startTestHub(t, cfg), cfg: cfg,
			byToken: map[string]*rpSession{}, count: map[string]int{}}
		steps := *hubPropSteps / 2
		for r.step = 0; r.step < steps; r.step++ {
			r.randomStep()
			r.check()
			if t.Failed() {
				t.Fatalf("step %d: %s", r.step, r.action)
			}
		}
		t.Logf("%d sessions, %v", len(r.sessions), r.count)
		for _, what := range []string{"away", "ended", "back", "takeover", "unknown", "user_mismatch", "window over",
			"expired", "dup", "id_reused", "action ran"} {
			if steps >= 2500 && r.count[what] == 0 {
				t.Errorf("%d steps never produced %q: the generator needs tuning", steps, what)
			}
		}
	})
}

// resumeConfig is the hub's default timing with a resume window and an
// action memory.
func resumeConfig() hubConfig {
	cfg := hubDefaults
	cfg.maxSeats = 100
	cfg.resumeWindow = 60 * time.Second
	cfg.actionTTL, cfg.actionMax = 120*time.Second, 256
	return cfg
}

// rpSession is the model's record of one session.
type rpSession struct {
	sid, token string
	user       *int64
	conn       *conn // the conn serving it; nil while away
	ended      bool
	games      map[uuid.UUID]bool
	last       time.Time // last activity
	expiresAt  time.Time // what its warning announced; zero when not warned
	awaySince  time.Time
	actions    map[string]rpAction
	lastSent   command                       // the last command sent with an id, which it may retry
	seen       map[*conn]map[string]gameSeen // per conn that served it: where it is in each game
}

// rpAction is an action the model remembers: what it was and when it ran.
type rpAction struct {
	key string
	at  time.Time
}

// rpProp drives the hub and the model side by side.
type rpProp struct {
	t        *testing.T
	r        *rand.Rand
	h        *hub
	cfg      hubConfig
	sessions []*rpSession
	byToken  map[string]*rpSession
	retired  []*conn // conns that no longer serve a session: stopped
	step     int
	nextSID  int
	action   string
	count    map[string]int
}

// rpGames are the games the sessions play in: more than maxGames.
var rpGames = []uuid.UUID{hubGame, hubGame2, hubGame3, uuid.MustParse("11111111-2222-4333-8444-555555555555")}

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

// randomStep picks one thing to tell the hub, tells it, and applies it to the model.
func (r *rpProp) randomStep() {
	connected := r.live(true)
	n := r.r.IntN(100)
	switch {
	case n < 12 || len(connected) < 2:
		r.register(nil, true)
	case n < 24:
		r.lose(connected[r.r.IntN(len(connected))])
	case n < 36:
		r.resume()
	case n < 90:
		r.command(connected[r.r.IntN(len(connected))])
	default:
		r.advance()
	}
}

// register adds a session on a fresh conn, anonymous or one of two users:
// user, or one drawn at random when pick is set.
func (r *rpProp) register(user *int64, pick bool) *rpSession {
	r.nextSID++
	if pick && r.r.IntN(3) > 0 {
		user = hubUser(int64(1 + r.r.IntN(2)))
	}
	s := &rpSession{sid: fmt.Sprintf("s%04d", r.nextSID), token: fmt.Sprintf("t%04d", r.nextSID), user: user,
		games: map[uuid.UUID]bool{}, last: time.Now(), actions: map[string]rpAction{}, seen: map[*conn]map[string]gameSeen{}}
	s.conn = tokenConn(s.sid, user, s.token)
	r.action = "register " + s.sid
	hubRegister(r.t, r.h, s.conn)
	r.sessions = append(r.sessions, s)
	r.byToken[s.token] = s
	return s
}

// rpReasons are the ways a conn can end that the hub hears of from its reader.
var rpReasons = []closeReason{reasonDisconnected, reasonTimeout, peerClosed(1001), peerClosed(4321),
	peerClosed(1000), reasonTooBig, reasonBinary, reasonFlood}

// lose ends s's conn for a random reason: lost reasons leave s away, goodbyes end it.
func (r *rpProp) lose(s *rpSession) {
	reason := rpReasons[r.r.IntN(len(rpReasons))]
	r.action = fmt.Sprintf("%s's conn ends (%d %q)", s.sid, reason.code, reason.away)
	c := s.conn
	c.stop(reason)
	hubTell(r.t, r.h, unregisterMsg{c: c, sid: s.sid, reason: reason})
	r.retired = append(r.retired, c)
	if reason.away != "" {
		s.conn, s.awaySince = nil, time.Now()
		r.count["away"]++
		return
	}
	r.end(s)
	r.count["ended"]++
}

// end marks s ended in the model.
func (r *rpProp) end(s *rpSession) {
	if s.conn != nil {
		r.retired = append(r.retired, s.conn)
	}
	s.ended, s.conn, s.games = true, nil, nil
}

// resume opens a fresh session and resumes with the token of a random
// session (any state) or of none, mostly as the same user.
func (r *rpProp) resume() {
	var away []*rpSession
	for _, s := range r.live(false) {
		if s.conn == nil {
			away = append(away, s)
		}
	}
	var target *rpSession
	switch n := r.r.IntN(10); {
	case n < 5 && len(away) > 0:
		target = away[r.r.IntN(len(away))]
	case n < 7 && len(r.live(true)) > 0:
		connected := r.live(true)
		target = connected[r.r.IntN(len(connected))]
	case n < 9 && len(r.sessions) > 0:
		target = r.sessions[r.r.IntN(len(r.sessions))]
	}
	token := "never-issued"
	if target != nil {
		token = target.token
	}
	user := hubUser(int64(1 + r.r.IntN(2)))
	if target != nil && r.r.IntN(5) > 0 {
		user = target.user // usually the session's own user
	} else if r.r.IntN(3) == 0 {
		user = nil
	}
	fresh := r.register(user, false)
	c := fresh.conn
	r.action = fmt.Sprintf("%s resumes %s", fresh.sid, token)
	sid := hubResume(r.t, r.h, c, token)
	switch {
	case target == nil || target.ended || target == fresh:
		r.count["unknown"]++
		r.expectFailure(c, resumeUnknown, sid, fresh)
	case !sameUser(target.user, user):
		r.count["user_mismatch"]++
		r.expectFailure(c, resumeUserMismatch, sid, fresh)
	default:
		if sid != target.sid {
			r.t.Errorf("resume answered sid %s, want %s", sid, target.sid)
		}
		fresh.ended = true // dropped silently: no conn of its own to retire
		if old := target.conn; old != nil {
			r.count["takeover"]++
			r.retired = append(r.retired, old)
			if !connStopped(old) || old.reason != reasonTakenOver {
				r.t.Errorf("the taken-over conn of %s: stopped %v with %+v", target.sid, connStopped(old), old.reason)
			}
		} else {
			r.count["back"]++
		}
		target.conn = c
		if !target.expiresAt.IsZero() {
			// The new conn hears the warning again, with at least EXPIRY_WARNING left.
			target.expiresAt = laterOf(target.expiresAt, time.Now().Add(r.cfg.expiryWarning))
		}
		frames := rpTake(r.t, c)
		if len(frames) == 0 || frames[0].Type != "resumed" {
			r.t.Errorf("a resumed conn got %s first, want resumed", rpDump(frames))
			return
		}
		r.seeFrames(target, c, frames)
	}
}

// hubResume sends c's resume of token, naming no positions, and returns the
// sid c serves afterwards, as the reader would learn it.
func hubResume(t *testing.T, h *hub, c *conn, token string) string {
	t.Helper()
	reply := make(chan string, 1)
	hubTell(t, h, resumeMsg{c: c, sid: c.sid, id: "r", req: &resumeRequest{token: token}, reply: reply})
	sid := <-reply
	c.sid = sid
	return sid
}

// expectFailure checks a failed resume: the error with its reason, and the
// conn going on as its own fresh session.
func (r *rpProp) expectFailure(c *conn, reason, sid string, fresh *rpSession) {
	frames := rpTake(r.t, c)
	var d struct {
		Code   string `json:"code"`
		Reason string `json:"reason"`
	}
	if len(frames) != 1 || frames[0].Type != "error" || json.Unmarshal(frames[0].Data, &d) != nil ||
		d.Code != codeResumeFailed || d.Reason != reason || sid != fresh.sid {
		r.t.Errorf("a failed resume (%s) answered sid %s and %s", reason, sid, rpDump(frames))
	}
}

// command sends a join, leave or action from s, with an id from a small pool
// half the time, so that retries and reused ids are common.
func (r *rpProp) command(s *rpSession) {
	game := rpGames[r.r.IntN(len(rpGames))]
	kind := []cmdKind{cmdJoin, cmdJoin, cmdLeave, cmdDefensive, cmdRoll}[r.r.IntN(5)]
	id := ""
	if r.r.IntN(2) == 0 {
		id = fmt.Sprint("a", r.r.IntN(4))
	}
	if s.lastSent.id != "" && r.r.IntN(4) == 0 {
		// A client retrying its last action as it was: the dups a random id
		// and game would make only by luck.
		kind, id, game = s.lastSent.kind, s.lastSent.id, s.lastSent.game
	}
	cmd := command{kind: kind, id: id, game: game}
	if id != "" {
		s.lastSent = cmd
	}
	var msg commandMsg
	switch kind {
	case cmdJoin, cmdLeave:
		msg = hubCmd(s.conn, cmd, nil)
	default:
		msg = actionCmd(s.conn, kind, game, id, 0) // the same data every time: a retry is a retry
	}
	msg.sid, msg.digest = s.sid, actionDigest(msg.cmd)
	r.action = fmt.Sprintf("%s: %s %d about %s", s.sid, id, kind, game)
	r.drain()
	hubTell(r.t, r.h, msg)
	now := time.Now()
	s.last, s.expiresAt = now, time.Time{}
	key := fmt.Sprint(kind, game)
	if a, ok := s.actions[id]; ok && now.Sub(a.at) >= r.cfg.actionTTL {
		delete(s.actions, id)
	}
	if a, ok := s.actions[id]; ok && id != "" {
		frames := rpTake(r.t, s.conn)
		want := "dup"
		if a.key != key {
			want = "id_reused"
		}
		r.count[want]++
		switch {
		case len(frames) != 1:
			r.t.Errorf("a %s got %d frames, want 1: %s", want, len(frames), rpDump(frames))
		case want == "dup" && !frames[0].dup:
			r.t.Errorf("a retry got %s, want the remembered reply with dup", frames[0].raw)
		case want == "id_reused":
			checkHubError(r.t, frames[0].frame, codeIDReused, id)
		}
		for _, o := range r.live(true) {
			if o != s && o.conn.out.len() != 0 {
				r.t.Errorf("%s heard of %s's %s", o.sid, s.sid, want)
			}
		}
		return
	}
	ran := false
	switch kind {
	case cmdJoin:
		if !s.games[game] && len(s.games) < r.cfg.maxGames {
			s.games[game], ran = true, true
		} else {
			ran = s.games[game]
		}
	case cmdLeave:
		ran = s.games[game]
		delete(s.games, game)
	default:
		ran = s.games[game]
	}
	if ran && id != "" {
		s.actions[id] = rpAction{key: key, at: now}
		r.count["action ran"]++
	}
}

// advance lets fake time pass, windows end and ids be forgotten, and sweeps.
func (r *rpProp) advance() {
	d := []time.Duration{time.Second, time.Second, 30 * time.Second, 30 * time.Second, 59 * time.Second,
		61 * time.Second, 130 * time.Second, 301 * time.Second}[r.r.IntN(8)]
	r.action = fmt.Sprintf("sweep after %s", d)
	// A round trip first: the window timers that fire during the sleep make
	// the hub write what check just read, and this message is what orders the
	// two for the race detector (fake time orders them in fact).
	hubStatsOf(r.t, r.h)
	time.Sleep(d)
	hubTell(r.t, r.h, sweepMsg{now: time.Now()})
	now := time.Now()
	for _, s := range r.live(false) {
		if s.conn == nil && now.Sub(s.awaySince) >= r.cfg.resumeWindow { // the window's timer fired during the sleep
			r.end(s)
			r.count["window over"]++
		}
	}
	for _, s := range r.live(false) {
		// Warned first, at least EXPIRY_WARNING ahead; expired once that time has come.
		end := s.last.Add(r.cfg.sessionTimeout)
		if s.expiresAt.IsZero() && !now.Before(end.Add(-r.cfg.expiryWarning)) {
			s.expiresAt = laterOf(end, now.Add(r.cfg.expiryWarning))
			continue
		}
		if !s.expiresAt.IsZero() && !now.Before(s.expiresAt) {
			if s.conn != nil {
				r.retired = append(r.retired, s.conn)
			}
			r.end(s)
			r.count["expired"]++
		}
	}
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

// drain takes every live conn's frames and checks their offsets.
func (r *rpProp) drain() {
	for _, s := range r.live(true) {
		r.seeFrames(s, s.conn, rpTake(r.t, s.conn))
	}
}

// seeFrames checks the offsets of frames c got while serving s: from the
// offset its game_joined or resumed names, every event, gap-free, in order.
func (r *rpProp) seeFrames(s *rpSession, c *conn, frames []rpFrame) {
	seen := s.seen[c]
	if seen == nil {
		seen = map[string]gameSeen{}
		s.seen[c] = seen
	}
	for _, f := range frames {
		if f.Type == "resumed" {
			var d resumedData
			_ = json.Unmarshal(f.Data, &d)
			for _, g := range d.Games {
				seen[g.GameID] = gameSeen{epoch: g.Epoch, last: g.Offset}
			}
			continue
		}
		if f.dup {
			continue // a remembered reply: its offset is the first run's
		}
		var d struct {
			GameID string  `json:"game_id"`
			Epoch  string  `json:"epoch"`
			Offset *uint64 `json:"offset"`
		}
		if json.Unmarshal(f.Data, &d) != nil || d.GameID == "" {
			continue
		}
		switch {
		case f.Type == "game_joined":
			seen[d.GameID] = gameSeen{epoch: d.Epoch, last: *d.Offset}
		case f.Type == "game_left":
			delete(seen, d.GameID)
		case d.Offset != nil:
			g, ok := seen[d.GameID]
			if !ok || *d.Offset != g.last+1 {
				r.t.Errorf("%s (conn %p) got %s of %s at offset %d after %d (joined %v)", s.sid, c, f.Type, d.GameID, *d.Offset, g.last, ok)
			}
			g.last = *d.Offset
			seen[d.GameID] = g
		}
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
	for _, c := range r.retired {
		if !connStopped(c) {
			t.Errorf("conn %s no longer serves a session but was not stopped", c.sid)
		}
	}
	checkHubInvariants(t, r.h)
}

// tokenConn is a fake conn whose session's resume token is token.
func tokenConn(sid string, userID *int64, token string) *conn {
	c := fakeHubConn(sid, userID, 1<<12)
	c.token = hashToken(token)
	return c
}

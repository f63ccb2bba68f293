package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// TestHubRandomizedResume is the hub's randomized test for sessions that
// outlive their connection, where they meet the game backend: registers
// (some with a queue of a few frames), connections lost for every reason
// (away) or ended with a goodbye, resumes of away, connected (takeover),
// ended and unknown sessions by the same or another user, naming the
// positions their last conn reached (so replays are common), joins, leaves
// and actions with ids drawn from a small pool (so retries and reused ids are
// common), the backend's settings (state, idle_timeout_ms, seat_policy,
// through the API's decodeSettings) and kicks by sid and by user, of
// connected and away seats, and fake time that ends windows, warns and
// expires sessions by their games' timeouts and forgets action ids. After
// every step the model (hub_resume_model_test.go) is compared with the hub:
// its sessions, their state, games, conns, timeout and warning; every conn
// that serves none was stopped for the reason the model gives it (so none as
// slow_consumer unless it overflowed by the model's count, in which a
// replay never counts); every drained conn's offsets are gap-free; and every
// connected session heard exactly what the model says, in summary. Rerun a
// failure with -hub.seed.
func TestHubRandomizedResume(t *testing.T) {
	seed := *hubPropSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	// The random seed finds what no one thought of; two fixed ones make the
	// coverage check below deterministic, since a rare case (a supersede on
	// resume, say) may not come up in one random walk.
	count := map[string]int{}
	steps := *hubPropSteps / 2
	for _, s := range []uint64{seed, 1, 2} {
		if !rpWalk(t, s, steps, count) {
			return
		}
	}
	for _, what := range []string{"away", "ended", "back", "takeover", "unknown", "user_mismatch", "window over",
		"expired", "dup", "id_reused", "action ran", "recovered", "game_updated", "kick connected", "kick away",
		"superseded on join", "superseded on resume", "superseded away", "anonymous kept", "warned again",
		"late warning", "warning withdrawn", "slow_consumer"} {
		if steps >= 2500 && count[what] == 0 {
			t.Errorf("3 walks of %d steps never produced %q: the generator needs tuning", steps, what)
		}
	}
}

// rpWalk runs one random walk of steps from seed, adds what it did to count,
// and reports whether the hub matched the model all along.
func rpWalk(t *testing.T, seed uint64, steps int, count map[string]int) bool {
	t.Logf("seed %d (rerun with -run TestHubRandomizedResume -hub.seed=%d)", seed, seed)
	synctest.Test(t, func(t *testing.T) {
		cfg := resumeConfig()
		cfg.maxGames, cfg.maxSeats = 3, 100
		// in_progress shorter than SESSION_TIMEOUT, lobby and final longer;
		// seatless settings kept for the whole run.
		cfg.stateTimeouts = map[string]time.Duration{"in_progress": 120 * time.Second, "final": 400 * time.Second, "lobby": 600 * time.Second}
		cfg.settingsTTL = 1000 * time.Hour
		r := &rpProp{t: t, r: rand.New(rand.NewPCG(seed, 1)), h: startTestHub(t, cfg), cfg: cfg,
			settings: map[uuid.UUID]*rpSettings{}, stops: map[*conn]closeReason{}, count: map[string]int{}}
		for r.step = 0; r.step < steps; r.step++ {
			r.randomStep()
			r.check()
			if t.Failed() {
				t.Fatalf("seed %d, step %d: %s", seed, r.step, r.action)
			}
		}
		t.Logf("%d sessions, %v", len(r.sessions), r.count)
		for k, v := range r.count {
			count[k] += v
		}
	})
	return !t.Failed()
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

// rpGames are the games the sessions play in: more than maxGames.
var rpGames = []uuid.UUID{hubGame, hubGame2, hubGame3, uuid.MustParse("11111111-2222-4333-8444-555555555555")}

// randomStep picks one thing to tell the hub, tells it, and applies it to the model.
func (r *rpProp) randomStep() {
	connected := r.live(true)
	n := r.r.IntN(100)
	switch {
	case n < 10 || len(connected) < 2:
		r.register(nil, true)
	case n < 20:
		r.lose(connected[r.r.IntN(len(connected))])
	case n < 32:
		r.resume()
	case n < 80:
		r.command(connected[r.r.IntN(len(connected))])
	case n < 86:
		r.put()
	case n < 92:
		r.kick()
	default:
		r.advance()
	}
}

// register adds a session on a fresh conn, anonymous or one of two users:
// user, or one drawn at random when pick is set. One in two has a queue of
// two frames.
func (r *rpProp) register(user *int64, pick bool) *rpSession {
	r.nextSID++
	if pick && r.r.IntN(3) > 0 {
		user = hubUser(int64(1 + r.r.IntN(2)))
	}
	capacity := 1 << 12
	if r.r.IntN(2) == 0 {
		capacity = 2
	}
	s := &rpSession{sid: fmt.Sprintf("s%04d", r.nextSID), token: fmt.Sprintf("t%04d", r.nextSID), user: user, capacity: capacity,
		games: map[uuid.UUID]bool{}, last: time.Now(), timeout: r.cfg.sessionTimeout, actions: map[string]rpAction{},
		seen: map[*conn]map[string]rpSeen{}}
	s.conn = tokenConn(s.sid, user, s.token, capacity)
	r.action = "register " + s.sid
	hubRegister(r.t, r.h, s.conn)
	r.sessions = append(r.sessions, s)
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
	if reason.away != "" {
		r.goAway(s, reason, time.Now())
		r.count["away"]++
	} else {
		r.end(s, reason.presence, reason)
		r.count["ended"]++
	}
	r.dropSlow(time.Now())
}

// resume opens a fresh session and resumes with the token of a random
// session (any state) or of none, mostly as the same user, naming (mostly)
// the positions its last conn reached.
func (r *rpProp) resume() {
	var away []*rpSession
	for _, s := range r.live(false) {
		if s.conn == nil {
			away = append(away, s)
		}
	}
	var rivalled []*rpSession // sessions a resume would make supersede a seat
	for _, s := range r.live(false) {
		if slices.ContainsFunc(slices.Collect(maps.Keys(s.games)), func(g uuid.UUID) bool { return len(r.rivals(s, g)) > 0 }) {
			rivalled = append(rivalled, s)
		}
	}
	var target *rpSession
	switch n := r.r.IntN(10); {
	case n < 4 && len(rivalled) > 0:
		target = rivalled[r.r.IntN(len(rivalled))]
	case n < 5 && len(away) > 0:
		target = away[r.r.IntN(len(away))]
	case n < 7 && len(r.live(true)) > 0:
		connected := r.live(true)
		target = connected[r.r.IntN(len(connected))]
	case n < 9 && len(r.sessions) > 0:
		target = r.sessions[r.r.IntN(len(r.sessions))]
	}
	token := "never-issued"
	var positions map[uuid.UUID]gamePosition
	if target != nil {
		token = target.token
		last := target.conn
		if last == nil {
			last = target.prev
		}
		if r.r.IntN(4) > 0 {
			positions = map[uuid.UUID]gamePosition{}
			for g, at := range target.seen[last] {
				positions[uuid.MustParse(g)] = gamePosition{epoch: at.epoch, offset: at.last}
			}
		}
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
	sid := hubResume(r.t, r.h, c, token, positions)
	switch {
	case target == nil || target.ended || target == fresh:
		r.count["unknown"]++
		r.offer(fresh, "error "+codeResumeFailed+" "+resumeUnknown)
	case !sameUser(target.user, user):
		r.count["user_mismatch"]++
		r.offer(fresh, "error "+codeResumeFailed+" "+resumeUserMismatch)
	default:
		r.resumed(target, fresh, positions)
		return
	}
	if sid != fresh.sid {
		r.t.Errorf("a failed resume answered sid %s, want %s", sid, fresh.sid)
	}
}

// resumed applies target's successful resume by fresh's conn to the model:
// an old conn taken over, back, the resumed reply and its replay, the
// warning repeated, then the supersedes it makes, as live frames.
func (r *rpProp) resumed(target, fresh *rpSession, positions map[uuid.UUID]gamePosition) {
	c, now := fresh.conn, time.Now()
	if c.sid != target.sid {
		r.t.Errorf("resume answered sid %s, want %s", c.sid, target.sid)
	}
	fresh.ended = true // dropped silently: no conn of its own to stop
	wasAway := target.conn == nil
	if wasAway {
		r.count["back"]++
		for g := range target.games {
			r.event(g, target, rpPresence(g, target, "back", ""))
		}
	} else {
		r.count["takeover"]++
		r.stops[target.conn] = reasonTakenOver
		target.prev = target.conn
	}
	target.conn, target.capacity, target.want, target.pushed = c, fresh.capacity, nil, 0
	if !target.expiresAt.IsZero() {
		// The new conn hears the warning again, with at least EXPIRY_WARNING left.
		r.count["warned again"]++
		r.warn(target, now, laterOf(target.expiresAt, now.Add(r.cfg.expiryWarning)))
	}
	var games []uuid.UUID
	for g := range target.games {
		games = append(games, g)
	}
	slices.SortFunc(games, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	for _, g := range games {
		for _, o := range r.rivals(target, g) {
			r.count["superseded on resume"]++
			if o.conn == nil {
				r.count["superseded away"]++
			}
			r.unseat(o, g, presenceSuperseded, target.sid)
		}
	}
	r.dropSlow(now)
	if target.conn != c {
		return // the live frames overflowed its queue: stopped, and what it held dropped
	}
	frames := rpTake(r.t, c)
	var d resumedData
	if len(frames) == 0 || frames[0].Type != "resumed" || json.Unmarshal(frames[0].Data, &d) != nil {
		r.t.Errorf("a resumed conn got %s first, want resumed", rpDump(frames))
		return
	}
	seen := map[string]rpSeen{}
	target.seen[c] = seen
	var held []string
	for _, g := range d.Games {
		held = append(held, g.GameID)
		if got, want := rpView(g.State, g.IdleTimeoutMS, g.SeatPolicy), r.view(uuid.MustParse(g.GameID)); got != want {
			r.t.Errorf("resumed shows %s as %s, the model %s", g.GameID, got, want)
		}
		at := rpSeen{epoch: g.Epoch, last: g.Offset, upTo: g.Offset}
		if pos, named := positions[uuid.MustParse(g.GameID)]; g.Recovered && named {
			r.count["recovered"]++
			at.last = pos.offset
			if wasAway {
				at.skip = g.Offset // its own back, never sent to it
			}
		}
		seen[g.GameID] = at
	}
	var want []string
	for g := range target.games {
		want = append(want, g.String())
	}
	slices.Sort(held)
	slices.Sort(want)
	if !slices.Equal(held, want) {
		r.t.Errorf("resumed lists %v, the model holds %v", held, want)
	}
	r.seeFrames(target, c, frames[1:])
}

// hubResume sends c's resume of token, naming positions, and returns the
// sid c serves afterwards, as the reader would learn it.
func hubResume(t *testing.T, h *hub, c *conn, token string, positions map[uuid.UUID]gamePosition) string {
	t.Helper()
	reply := make(chan string, 1)
	hubTell(t, h, resumeMsg{c: c, sid: c.sid, id: "r", req: &resumeRequest{token: token, games: positions}, reply: reply})
	sid := <-reply
	c.sid = sid
	return sid
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
	if kind == cmdJoin && r.r.IntN(3) == 0 {
		// Where another session of its user sits: a supersede in a
		// single_seat game, two seats of one user in a multi_seat one.
		for _, g := range rpGames {
			if slices.ContainsFunc(r.members(g), func(o *rpSession) bool { return o != s && o.user != nil && sameUser(o.user, s.user) }) {
				game = g
				if slices.ContainsFunc(r.members(g), func(o *rpSession) bool { return o.conn == nil && sameUser(o.user, s.user) }) {
					break // an away one first
				}
			}
		}
	}
	cmd := command{kind: kind, id: id, game: game}
	if id != "" {
		s.lastSent = cmd
	}
	var msg *commandMsg
	switch kind {
	case cmdJoin, cmdLeave:
		msg = hubCmd(s.conn, cmd, nil)
	default:
		msg = actionCmd(s.conn, kind, game, id, 0) // the same data every time: a retry is a retry
	}
	msg.sid, msg.digest = s.sid, actionDigest(msg.cmd)
	r.action = fmt.Sprintf("%s: %s %d about %s", s.sid, id, kind, game)
	hubTell(r.t, r.h, msg)
	now := time.Now()
	s.last, s.expiresAt = now, time.Time{}
	key := fmt.Sprint(kind, game)
	if a, ok := s.actions[id]; ok && now.Sub(a.at) >= r.cfg.actionTTL {
		delete(s.actions, id)
	}
	if a, ok := s.actions[id]; ok && id != "" {
		if a.key == key {
			r.count["dup"]++
			r.deliver(s, "dup") // the sender alone
		} else {
			r.count["id_reused"]++
			r.offer(s, "error "+codeIDReused+" ")
		}
		r.dropSlow(now)
		return
	}
	ran := r.commandRan(s, kind, game)
	if ran && id != "" {
		s.actions[id] = rpAction{key: key, at: now}
		r.count["action ran"]++
	}
	r.dropSlow(now)
}

// commandRan applies a command that is no retry to the model and reports
// whether it ran (was answered by no error).
func (r *rpProp) commandRan(s *rpSession, kind cmdKind, game uuid.UUID) bool {
	in := s.games[game]
	switch {
	case kind == cmdJoin && !in && len(s.games) >= r.cfg.maxGames:
		r.offer(s, "error "+codeTooManyGames+" ")
		return false
	case kind == cmdJoin:
		for _, o := range r.rivals(s, game) {
			r.count["superseded on join"]++
			if o.conn == nil {
				r.count["superseded away"]++
			}
			r.unseat(o, game, presenceSuperseded, s.sid)
		}
		if g := r.settings[game]; s.user == nil && g != nil && g.single && slices.ContainsFunc(r.members(game),
			func(o *rpSession) bool { return o != s && o.user == nil }) {
			r.count["anonymous kept"]++
		}
		if !in {
			r.event(game, s, rpPresence(game, s, "joined", ""))
			s.games[game] = true
			r.retime(s)
		}
		r.deliver(s, "game_joined "+game.String()+" "+r.view(game))
	case !in:
		r.offer(s, "error "+codeNotInGame+" ")
		return false
	case kind == cmdLeave:
		r.deliver(s, "game_left "+game.String()+"  ")
		r.event(game, s, rpPresence(game, s, "left", presenceLeft))
		delete(s.games, game)
		r.retime(s)
	default:
		sum := map[cmdKind]string{cmdDefensive: "defensive_decision", cmdRoll: "dice_rolled"}[kind] + " " + game.String() + " " + s.sid
		r.deliver(s, sum)
		r.event(game, s, sum)
	}
	return true
}

// rpStates, rpTimeouts and rpPolicies are what a PUT sets ("" and 0 leave
// the field out): states of GAME_STATE_TIMEOUTS, timeouts of no state (one
// shorter than SESSION_TIMEOUT, one longer), and single_seat most often.
var (
	rpStates   = []string{"", "in_progress", "final", "lobby"}
	rpTimeouts = []time.Duration{0, 0, 90 * time.Second, 450 * time.Second}
	rpPolicies = []string{"", seatMulti, seatSingle, seatSingle}
)

// put sends the backend's PUT of a game's settings, decoded by the API's own
// decodeSettings: every member hears game_updated, and takes the timeout.
func (r *rpProp) put() {
	game := rpGames[r.r.IntN(len(rpGames))]
	body := map[string]any{}
	if st := rpStates[r.r.IntN(len(rpStates))]; st != "" {
		body["state"] = st
	}
	if d := rpTimeouts[r.r.IntN(len(rpTimeouts))]; d != 0 {
		body["idle_timeout_ms"] = d.Milliseconds()
	}
	if p := rpPolicies[r.r.IntN(len(rpPolicies))]; p != "" || len(body) == 0 {
		body["seat_policy"] = p
		if p == "" {
			body["seat_policy"] = seatSingle
		}
	}
	raw, _ := json.Marshal(body)
	r.action = fmt.Sprintf("PUT %s %s", game, raw)
	patch, aerr := decodeSettings(raw, r.cfg.stateTimeouts, r.cfg.expiryWarning)
	if aerr != nil {
		r.t.Errorf("refused: %+v", aerr)
		return
	}
	reply := make(chan gameReply, 1)
	rep, ok := ask(r.h, gameUpdateMsg{game: game, patch: patch, reply: reply}, reply)
	synctest.Wait() // the slow consumers it made are dropped after the reply
	// The model reads the body as the contract does: idle_timeout_ms wins
	// over the state's timeout; what the body leaves out stays.
	g := r.settings[game]
	if g == nil {
		g = &rpSettings{}
		r.settings[game] = g
	}
	if st, ok := body["state"].(string); ok {
		g.state, g.timeout = st, r.cfg.stateTimeouts[st]
	}
	if ms, ok := body["idle_timeout_ms"].(int64); ok {
		g.timeout = time.Duration(ms) * time.Millisecond
	}
	if p, ok := body["seat_policy"].(string); ok {
		g.single = p == seatSingle
	}
	members := r.members(game)
	if got := rpView(rep.view.State, rep.view.IdleTimeoutMS, rep.view.SeatPolicy); !ok || got != r.view(game) || rep.sessions != len(members) {
		r.t.Errorf("the hub answered %+v (%s), the model %s with %d seats", rep, got, r.view(game), len(members))
	}
	r.count["game_updated"]++
	r.event(game, nil, "game_updated "+game.String()+" "+r.view(game))
	for _, s := range members {
		r.retime(s)
	}
	r.dropSlow(time.Now())
}

// kick sends the backend's kick of a game's seats, by the sid of any session
// the model knows (seated away, seated, or any: ended or elsewhere) or by
// user (3 has no session).
func (r *rpProp) kick() {
	game := rpGames[r.r.IntN(len(rpGames))]
	m := kickMsg{game: game, reply: make(chan int, 1)}
	seated, away := r.members(game), []*rpSession{}
	for _, s := range seated {
		if s.conn == nil {
			away = append(away, s)
		}
	}
	switch n := r.r.IntN(6); {
	case n < 2 && len(away) > 0:
		m.sid = away[r.r.IntN(len(away))].sid
	case n < 3 && len(seated) > 0:
		m.sid = seated[r.r.IntN(len(seated))].sid
	case n < 4 && len(r.sessions) > 0:
		m.sid = r.sessions[r.r.IntN(len(r.sessions))].sid
	default:
		m.userID = hubUser(int64(1 + r.r.IntN(3)))
	}
	r.action = fmt.Sprintf("kick from %s sid %q user %v", game, m.sid, showHubUser(m.userID))
	n, _ := ask(r.h, m, m.reply)
	synctest.Wait()
	var victims []*rpSession
	for _, s := range r.members(game) {
		if s.sid == m.sid || m.userID != nil && s.user != nil && *s.user == *m.userID {
			victims = append(victims, s)
		}
	}
	for _, s := range victims {
		if s.conn == nil {
			r.count["kick away"]++
		} else {
			r.count["kick connected"]++
		}
		r.unseat(s, game, presenceKicked, "")
	}
	r.dropSlow(time.Now())
	if n != len(victims) {
		r.t.Errorf("the kick removed %d seats, the model %d", n, len(victims))
	}
}

// advance lets fake time pass (windows end as their timers fire, ids are
// forgotten) and then sweeps.
func (r *rpProp) advance() {
	d := []time.Duration{time.Second, time.Second, 30 * time.Second, 30 * time.Second, 59 * time.Second,
		61 * time.Second, 130 * time.Second, 301 * time.Second}[r.r.IntN(8)]
	r.action = fmt.Sprintf("sweep after %s", d)
	// A round trip first: the window timers that fire during the sleep make
	// the hub write what check just read, and this message is what orders the
	// two for the race detector (fake time orders them in fact).
	hubStatsOf(r.t, r.h)
	time.Sleep(d)
	synctest.Wait() // the windows that end now are over before the sweep
	end := time.Now()
	for {
		// The windows in the order they end; a slow consumer one makes goes
		// away then, and its own window may end within the sleep too.
		var at time.Time
		for _, s := range r.live(false) {
			if w := s.awaySince.Add(r.cfg.resumeWindow); s.conn == nil && !w.After(end) && (at.IsZero() || w.Before(at)) {
				at = w
			}
		}
		if at.IsZero() {
			break
		}
		for _, s := range r.live(false) {
			if s.conn == nil && s.awaySince.Add(r.cfg.resumeWindow).Equal(at) {
				r.count["window over"]++
				r.end(s, s.awayReason, closeReason{})
			}
		}
		r.dropSlow(at)
	}
	hubTell(r.t, r.h, sweepMsg{now: end})
	r.sweep(end)
}

// tokenConn is a fake conn, with a queue of capacity frames, whose session's
// resume token is token.
func tokenConn(sid string, userID *int64, token string, capacity int) *conn {
	c := fakeHubConn(sid, userID, capacity)
	c.token = hashToken(token)
	return c
}

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// The randomized test: a long seeded sequence of everything the hub is told,
// checked after every step against a model of what it should hold.

var (
	hubPropSeed  = flag.Uint64("hub.seed", 0, "seed for TestHubRandomized; 0 picks one")
	hubPropSteps = flag.Int("hub.steps", 5000, "steps of TestHubRandomized")
)

// propGames are the games of the randomized test: more than maxGames, so joins get refused.
var propGames = []uuid.UUID{hubGame, hubGame2, hubGame3,
	uuid.MustParse("11111111-2222-4333-8444-555555555555"), uuid.MustParse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")}

// propConfig is the randomized test's hub: default timing, three games a
// session, three seats a game (so joins get game_full), and sweeps of two
// sessions a step (so every sweep of more is split).
var propConfig = hubConfig{sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second, maxGames: 3,
	maxSeats: 3, sweepStep: 2}

// propEnds are the reasons a conn's own handler may end it with.
var propEnds = []closeReason{reasonDisconnected, reasonTimeout, reasonTooBig, reasonBinary, reasonFlood}

// propConn is the model's record of one conn the hub accepted.
type propConn struct {
	c    *conn
	tiny bool // a queue of a few frames nobody drains: a slow consumer waiting to happen

	// while the model holds its session
	games     map[uuid.UUID]bool
	last      time.Time
	touched   int // when it was last active, in the model's count of touches: the idle order within one instant
	warned    bool
	expiresAt time.Time // what the warning announced
	queued    int       // frames in a tiny conn's queue
	want      []string  // canonical frames a drained conn should get this step
	seen      map[string]gameSeen

	// once the model has ended it
	ended     bool
	reason    closeReason
	endedStep int
	frozen    int // a tiny conn's queue length once ended
}

// propModel is what the hub should hold; its methods mirror the hub's decisions.
type propModel struct {
	cfg     hubConfig
	touches int // activity so far, to order sessions active at the same instant
	step    int
	live    map[string]*propConn
	games   map[uuid.UUID]map[*propConn]bool
	slow    []*propConn
	count   map[string]int // what happened, for the log and the coverage check
}

// deliver queues a frame for pc as the hub would, marking it slow when it does not fit.
func (m *propModel) deliver(pc *propConn, frame []byte) {
	if !pc.tiny {
		pc.want = append(pc.want, canonHubFrame(frame))
		return
	}
	if pc.queued < pc.c.out.limit {
		pc.queued++
		return
	}
	m.slow = append(m.slow, pc)
}

// refuse queues an error reply for pc as the hub would: a tiny conn takes it
// only while its queue is at most half full, and is never made slow by it.
func (m *propModel) refuse(pc *propConn, frame []byte) {
	if !pc.tiny {
		pc.want = append(pc.want, canonHubFrame(frame))
		return
	}
	if pc.queued < pc.c.out.limit/2 {
		pc.queued++
		return
	}
	m.count["error dropped"]++
}

// broadcast delivers frame to every member of game but from.
func (m *propModel) broadcast(game uuid.UUID, from *propConn, frame []byte) {
	for pc := range m.games[game] {
		if pc != from {
			m.deliver(pc, frame)
		}
	}
}

// end removes pc everywhere, tells its games why, and marks its conn stopped.
func (m *propModel) end(pc *propConn, reason closeReason) {
	if m.live[pc.c.sid] != pc {
		return
	}
	delete(m.live, pc.c.sid)
	for g := range pc.games {
		delete(m.games[g], pc)
		if len(m.games[g]) == 0 {
			delete(m.games, g)
		}
	}
	for g := range pc.games {
		m.broadcast(g, pc, encodePresence(g, pc.c.sid, pc.c.userID, "left", reason.presence))
	}
	pc.games, pc.ended, pc.reason, pc.endedStep = nil, true, reason, m.step
	m.count["ended "+reason.presence+" "+reason.word]++
}

// dropSlow ends every conn that overflowed, until none is left.
func (m *propModel) dropSlow() {
	for len(m.slow) > 0 {
		pc := m.slow[len(m.slow)-1]
		m.slow = m.slow[:len(m.slow)-1]
		m.end(pc, reasonSlow)
	}
}

// command applies one client command from a live conn at now.
func (m *propModel) command(pc *propConn, msg *commandMsg, now time.Time) {
	if m.live[pc.c.sid] != pc {
		m.count["stale command"]++
		return
	}
	pc.last, pc.warned, pc.expiresAt = now, false, time.Time{}
	m.touches++
	pc.touched = m.touches
	cmd := msg.cmd
	in := pc.games[cmd.game]
	switch {
	case cmd.kind == cmdHeartbeat:
		m.deliver(pc, msg.self)
	case cmd.kind == cmdJoin && !in && len(pc.games) >= m.cfg.maxGames:
		m.count["too_many_games"]++
		m.refuse(pc, encodeError(&protoError{code: codeTooManyGames, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin && !in && len(m.games[cmd.game]) >= m.cfg.maxSeats:
		m.count["game_full"]++
		m.refuse(pc, encodeError(&protoError{code: codeGameFull, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin:
		members := []member{{SID: pc.c.sid, UserID: pc.c.userID, Status: statusConnected}}
		for o := range m.games[cmd.game] {
			if o != pc {
				members = append(members, member{SID: o.c.sid, UserID: o.c.userID, Status: statusConnected})
			}
		}
		if !in {
			pc.games[cmd.game] = true
			if m.games[cmd.game] == nil {
				m.games[cmd.game] = map[*propConn]bool{}
			}
			m.games[cmd.game][pc] = true
		}
		m.deliver(pc, encode("game_joined", cmd.id, gameJoinedData{GameID: cmd.game.String(), gameView: viewOf(nil), Members: members}))
		if !in {
			m.broadcast(cmd.game, pc, msg.others)
		}
	case !in:
		m.count["not_in_game"]++
		m.refuse(pc, encodeError(&protoError{code: codeNotInGame, id: cmd.id, message: "x"}))
	case cmd.kind == cmdLeave:
		delete(pc.games, cmd.game)
		delete(m.games[cmd.game], pc)
		if len(m.games[cmd.game]) == 0 {
			delete(m.games, cmd.game)
		}
		m.deliver(pc, msg.self)
		m.broadcast(cmd.game, pc, msg.others)
	default:
		m.count["relayed"]++
		m.deliver(pc, withID(msg.others, cmd.id))
		m.broadcast(cmd.game, pc, msg.others)
	}
	m.dropSlow()
}

// sweep expires and warns as of now, oldest first as the hub does, in steps
// of cfg.sweepStep sessions with the slow consumers dropped after each step.
func (m *propModel) sweep(now time.Time) {
	timeout, warning := m.cfg.sessionTimeout, m.cfg.expiryWarning
	order := slices.Collect(maps.Values(m.live))
	slices.SortFunc(order, func(a, b *propConn) int { return a.touched - b.touched })
	looked, steps := 0, 1
walk:
	for _, pc := range order {
		if looked == m.cfg.sweepStep {
			m.dropSlow()
			looked, steps = 0, steps+1
		}
		if m.live[pc.c.sid] != pc {
			continue // dropped as slow meanwhile: out of the idle list, never looked at
		}
		looked++
		end := pc.last.Add(timeout)
		switch {
		case pc.warned:
			if !now.Before(pc.expiresAt) {
				m.end(pc, reasonExpired)
			}
		case warning > 0 && !now.Before(end.Add(-warning)):
			pc.warned, pc.expiresAt = true, laterOf(end, now.Add(warning))
			m.count["warned"]++
			m.deliver(pc, encodeExpiring(now, pc.expiresAt, nil))
		case warning == 0 && !now.Before(end):
			m.end(pc, reasonExpired)
		default:
			break walk
		}
	}
	if steps > 1 {
		m.count["split sweep"]++
	}
	m.dropSlow()
}

// canonHubFrame reduces a frame to what the model can predict: an error's
// message only as "present", game_joined's members after the joiner in sid
// order, since the hub lists the others in map order, and no offsets or epochs.
func canonHubFrame(b []byte) string {
	var f struct {
		Type string         `json:"type"`
		ID   string         `json:"id,omitempty"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Sprintf("not JSON: %q", b)
	}
	delete(f.Data, "offset") // checked on its own, by checkOffsets: the model does not sequence
	switch f.Type {
	case "error":
		msg, _ := f.Data["message"].(string)
		f.Data["message"] = msg != ""
	case "game_joined":
		delete(f.Data, "epoch")
		if ms, ok := f.Data["members"].([]any); ok && len(ms) > 1 {
			rest := ms[1:]
			sort.Slice(rest, func(i, j int) bool {
				return fmt.Sprint(rest[i].(map[string]any)["sid"]) < fmt.Sprint(rest[j].(map[string]any)["sid"])
			})
		}
	}
	out, _ := json.Marshal(f)
	return string(out)
}

// hubProp drives the hub and the model side by side.
type hubProp struct {
	t       *testing.T
	r       *rand.Rand
	h       *hub
	m       *propModel
	conns   []*propConn // every conn the hub accepted, in order
	refused []*conn     // conns refused for a taken sid
	nextSID int
	action  string // the current step, for failure messages
}

// randomStep picks one thing to tell the hub, tells it, and applies it to the model.
func (p *hubProp) randomStep() {
	live := p.liveConns()
	n := p.r.IntN(100)
	switch {
	case len(live) == 0 || (n < 14 && len(live) < 24):
		p.register()
	case n < 16:
		p.registerTaken(live)
	case n < 22:
		p.unregister(live[p.r.IntN(len(live))])
	case n < 25:
		p.staleUnregister()
	case n < 45:
		p.command(live[p.r.IntN(len(live))], cmdJoin)
	case n < 53:
		p.command(live[p.r.IntN(len(live))], cmdLeave)
	case n < 78:
		p.command(live[p.r.IntN(len(live))], []cmdKind{cmdDefensive, cmdOffensive, cmdRoll}[p.r.IntN(3)])
	case n < 86:
		p.command(live[p.r.IntN(len(live))], cmdHeartbeat)
	case n < 89:
		p.staleCommand()
	default:
		p.advance()
	}
}

// liveConns lists the conns the model holds a session for, in a stable order.
func (p *hubProp) liveConns() []*propConn {
	var live []*propConn
	for _, pc := range p.conns {
		if !pc.ended {
			live = append(live, pc)
		}
	}
	return live
}

// register adds a fresh conn: drained or tiny, anonymous or one of five users.
func (p *hubProp) register() {
	p.nextSID++
	var user *int64
	if p.r.IntN(10) >= 3 {
		user = hubUser(int64(p.r.IntN(5)))
	}
	pc := &propConn{games: map[uuid.UUID]bool{}, last: time.Now()}
	capacity := 1 << 12
	if p.r.IntN(10) < 3 {
		pc.tiny, capacity = true, 1+p.r.IntN(3)
	}
	pc.c = fakeHubConn(fmt.Sprintf("s%04d", p.nextSID), user, capacity)
	p.action = fmt.Sprintf("register %s (user %s, queue %d)", pc.c.sid, showHubUser(user), capacity)
	if !p.h.register(pc.c) {
		p.t.Fatalf("%s: refused", p.action)
	}
	p.conns = append(p.conns, pc)
	p.m.live[pc.c.sid] = pc
	p.m.touches++
	pc.touched = p.m.touches
}

// registerTaken tries a second conn with a live session's sid.
func (p *hubProp) registerTaken(live []*propConn) {
	sid := live[p.r.IntN(len(live))].c.sid
	c := fakeHubConn(sid, hubUser(99), 4)
	p.action = "register a second conn as " + sid
	if p.h.register(c) {
		p.t.Fatalf("%s: accepted", p.action)
	}
	p.refused = append(p.refused, c)
	p.m.count["refused"]++
}

// unregister ends a live conn the way its handler would, with a random reason;
// half the time the hub hears of it before the conn has stopped.
func (p *hubProp) unregister(pc *propConn) {
	reason := propEnds[p.r.IntN(len(propEnds))]
	p.action = fmt.Sprintf("unregister %s (%s)", pc.c.sid, reason.presence)
	if p.r.IntN(2) == 0 {
		pc.c.stop(reason)
	}
	hubTell(p.t, p.h, unregisterMsg{c: pc.c, sid: pc.c.sid, reason: reason})
	p.m.end(pc, reason)
	p.m.dropSlow()
}

// staleUnregister sends what a handler sends after the hub already ended its
// session, or an unregister for a sid that never existed.
func (p *hubProp) staleUnregister() {
	var gone []*propConn
	for _, pc := range p.conns {
		if pc.ended {
			gone = append(gone, pc)
		}
	}
	msg := unregisterMsg{sid: "never-registered", reason: reasonDisconnected}
	if len(gone) > 0 {
		pc := gone[p.r.IntN(len(gone))]
		msg = unregisterMsg{c: pc.c, sid: pc.c.sid, reason: pc.c.reason}
	}
	p.action = "stale unregister " + msg.sid
	hubTell(p.t, p.h, msg)
	p.m.count["stale unregister"]++
}

// command sends one client command of kind from pc, mostly about a game pc is in.
func (p *hubProp) command(pc *propConn, kind cmdKind) {
	cmd := command{kind: kind, game: propGames[p.r.IntN(len(propGames))]}
	if kind != cmdJoin && kind != cmdHeartbeat && len(pc.games) > 0 && p.r.IntN(10) < 8 {
		var mine []uuid.UUID
		for _, g := range propGames {
			if pc.games[g] {
				mine = append(mine, g)
			}
		}
		cmd.game = mine[p.r.IntN(len(mine))]
	}
	if p.r.IntN(2) == 0 {
		cmd.id = fmt.Sprint("id", p.m.step)
	}
	var msg *commandMsg
	switch kind {
	case cmdHeartbeat, cmdJoin, cmdLeave:
		msg = hubCmd(pc.c, cmd, nil)
	default:
		msg = actionCmd(pc.c, kind, cmd.game, cmd.id, p.m.step)
	}
	p.action = fmt.Sprintf("%s: command %d about %s", pc.c.sid, kind, cmd.game)
	hubTell(p.t, p.h, msg)
	p.m.command(pc, msg, time.Now())
}

// staleCommand sends a command from a conn whose session has ended, as a
// reader that has not noticed yet would: the hub must ignore it.
func (p *hubProp) staleCommand() {
	for _, pc := range p.conns {
		if pc.ended && p.r.IntN(4) == 0 {
			msg := actionCmd(pc.c, cmdRoll, propGames[0], "", p.m.step)
			p.action = "stale command from " + pc.c.sid
			hubTell(p.t, p.h, msg)
			p.m.command(pc, msg, time.Now())
			return
		}
	}
	p.advance()
}

// advance lets fake time pass and sweeps as of the new now.
func (p *hubProp) advance() {
	d := []time.Duration{0, time.Second, 10 * time.Second, 30 * time.Second, 59 * time.Second,
		60 * time.Second, 61 * time.Second, 120 * time.Second, 241 * time.Second}[p.r.IntN(9)]
	time.Sleep(d)
	now := time.Now()
	p.action = fmt.Sprintf("sweep after %s", d)
	hubTell(p.t, p.h, sweepMsg{now: now})
	p.m.sweep(now)
}

// check compares the hub with the model after a step.
func (p *hubProp) check() {
	t := p.t
	t.Helper()
	synctest.Wait()
	st := hubStatsOf(t, p.h)
	users := map[int64]bool{}
	for _, pc := range p.m.live {
		if pc.c.userID != nil {
			users[*pc.c.userID] = true
		}
	}
	per := map[string]int{}
	for g, set := range p.m.games {
		per[g.String()] = len(set)
	}
	if st.TotalSessions != len(p.m.live) || st.UniqueUsers != len(users) || st.ActiveGames != len(per) || !sameGameCounts(seatsPerGame(st), per) {
		t.Errorf("stats %+v, model: %d sessions, %d users, games %v", st, len(p.m.live), len(users), per)
	}
	for g, n := range seatsPerGame(st) {
		if n <= 0 {
			t.Errorf("game %s listed with %d sessions", g, n)
		}
	}
	checkHubInvariants(t, p.h)
	for _, pc := range p.conns {
		p.checkConn(pc)
	}
	for _, c := range p.refused {
		if connStopped(c) || c.out.len() != 0 {
			t.Errorf("refused conn %s was stopped or sent frames", c.sid)
		}
	}
}

// checkConn compares one conn with the model: stopped or not and why, its
// session present or not, and the frames it got this step.
func (p *hubProp) checkConn(pc *propConn) {
	t := p.t
	t.Helper()
	sid := pc.c.sid
	s := p.h.idx.sessions[sid]
	switch {
	case connStopped(pc.c) != pc.ended:
		t.Errorf("conn %s: stopped %v, model says ended %v (%+v)", sid, connStopped(pc.c), pc.ended, pc.c.reason)
	case pc.ended && pc.c.reason != pc.reason:
		t.Errorf("conn %s stopped with %+v, model says %+v", sid, pc.c.reason, pc.reason)
	case pc.ended && s != nil:
		t.Errorf("conn %s was stopped but its session is still in the hub", sid)
	case !pc.ended && (s == nil || s.conn != pc.c):
		t.Errorf("conn %s is live but the hub holds no session for it", sid)
	}
	fresh := pc.ended && pc.endedStep == p.m.step
	if pc.tiny {
		switch {
		case fresh:
			pc.frozen = pc.c.out.len()
		case pc.ended && pc.c.out.len() != pc.frozen:
			t.Errorf("conn %s got frames after it was stopped", sid)
		case !pc.ended && pc.c.out.len() != pc.queued:
			t.Errorf("tiny conn %s holds %d frames, model %d", sid, pc.c.out.len(), pc.queued)
		}
		return
	}
	var got []string
	var raw [][]byte
	for pc.c.out.len() > 0 {
		f := pc.c.out.next()
		raw = append(raw, f)
		got = append(got, canonHubFrame(f))
	}
	want := pc.want
	pc.want = nil
	if fresh {
		return // which presences a conn ended mid-step still got depends on the hub's order
	}
	p.checkOffsets(pc, raw)
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("conn %s got frames:\n  %s\nmodel wants:\n  %s", sid, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// checkOffsets checks the offsets a drained conn's frames carry: from the
// offset its game_joined names, every event of the game, gap-free and in
// order, until it leaves; a new epoch starts over.
func (p *hubProp) checkOffsets(pc *propConn, frames [][]byte) {
	if pc.seen == nil {
		pc.seen = map[string]gameSeen{}
	}
	for _, b := range frames {
		var f struct {
			Type string `json:"type"`
			Data struct {
				GameID string  `json:"game_id"`
				Epoch  string  `json:"epoch"`
				Offset *uint64 `json:"offset"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &f) != nil || f.Data.GameID == "" {
			continue
		}
		g := f.Data.GameID
		switch {
		case f.Type == "game_joined":
			if seen, ok := pc.seen[g]; ok && seen.epoch == f.Data.Epoch && seen.last != *f.Data.Offset {
				p.t.Errorf("conn %s re-joined %s at offset %d, having seen %d", pc.c.sid, g, *f.Data.Offset, seen.last)
			}
			pc.seen[g] = gameSeen{epoch: f.Data.Epoch, last: *f.Data.Offset}
		case f.Type == "game_left":
			delete(pc.seen, g)
		case f.Data.Offset != nil:
			seen, ok := pc.seen[g]
			if !ok || *f.Data.Offset != seen.last+1 {
				p.t.Errorf("conn %s got %s of %s at offset %d after %d (joined %v): a gap or a repeat", pc.c.sid, f.Type, g, *f.Data.Offset, seen.last, ok)
			}
			seen.last = *f.Data.Offset
			pc.seen[g] = seen
		}
	}
}

// gameSeen is where a conn is in one game's sequence of events.
type gameSeen struct {
	epoch string
	last  uint64
}

// TestHubRandomized runs a long seeded sequence of registers, unregisters with
// random reasons, joins, leaves, relays, heartbeats, stale messages, fake time
// and sweeps, with drained conns and tiny never-drained ones, and checks the
// hub against the model after every step. Rerun a failure with -hub.seed.
func TestHubRandomized(t *testing.T) {
	seed := *hubPropSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -run TestHubRandomized -hub.seed=%d)", seed, seed)
	synctest.Test(t, func(t *testing.T) {
		p := &hubProp{t: t, r: rand.New(rand.NewPCG(seed, seed>>32|1)), h: startTestHub(t, propConfig),
			m: &propModel{cfg: propConfig, live: map[string]*propConn{}, games: map[uuid.UUID]map[*propConn]bool{}, count: map[string]int{}}}
		for step := range *hubPropSteps {
			p.m.step = step
			p.randomStep()
			p.check()
			if t.Failed() {
				t.Fatalf("seed %d, step %d (%s): hub and model disagree", seed, step, p.action)
			}
		}

		// Shutdown stops every conn still live with going-away.
		stopTestHub(p.h)
		for _, pc := range p.conns {
			want := pc.reason
			if !pc.ended {
				want = reasonShutdown
			}
			checkConnStopped(t, pc.c, want)
		}
		t.Logf("%d conns, %v", len(p.conns), p.m.count)
		for _, what := range []string{"ended expired expired", "ended disconnected slow_consumer", "warned",
			"too_many_games", "game_full", "not_in_game", "error dropped", "relayed", "refused", "stale command",
			"split sweep"} {
			if *hubPropSteps >= 5000 && p.m.count[what] == 0 {
				t.Errorf("%d steps never produced %q: the generator needs tuning", *hubPropSteps, what)
			}
		}
	})
}

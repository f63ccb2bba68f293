package main

// FuzzHub reads arbitrary bytes as a sequence of hub operations (the
// contract's client commands, the backend's game settings, kicks and queries,
// sweeps at an advancing fake time) and checks the hub against the model in
// fuzz_hub_model_test.go after every one.

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

// fzHubGames are the games FuzzHub plays in: more than a session may join.
var fzHubGames = []uuid.UUID{
	uuid.MustParse("6f9619ff-8b86-d011-b42d-00c04fd430c8"),
	uuid.MustParse("0e4b1c7a-3f1d-4c55-9a57-4f3f4a9e1b01"),
	uuid.MustParse("9b8e2a44-7d0c-4e6b-8f4a-1c2d3e4f5a6b"),
	uuid.MustParse("11111111-2222-4333-8444-555555555555"),
}

// fzHubEnds are the reasons a conn's own handler may end it with.
var fzHubEnds = []closeReason{reasonDisconnected, reasonTimeout, reasonTooBig, reasonBinary, reasonFlood}

// fzHubAdvance are the steps of fake time between sweeps: around the warning
// (at 240 s of idleness by default) and the expiry (at 300 s).
var fzHubAdvance = []time.Duration{0, time.Second, 59 * time.Second, 60 * time.Second, 61 * time.Second,
	120 * time.Second, 179 * time.Second, 239 * time.Second, 240 * time.Second, 241 * time.Second,
	299 * time.Second, 300 * time.Second, 301 * time.Second, 600 * time.Second}

// Limits that keep one input cheap. Only the first fzHubMaxBytes bytes of an
// input are read: the fuzzer minimises every new input by trying to remove
// each run of bytes, which costs the square of the bytes that matter, and a
// long input stalled fuzzing for most of a minute.
const (
	fzHubMaxBytes = 160
	fzHubMaxConns = 12
	fzHubDrained  = 256 // queue of a drained conn: never fills within one step
)

// fzHubRun drives a hub by calling its step function directly, as its own
// goroutine would, so the test reads the hub's state between steps safely.
type fzHubRun struct {
	t       *testing.T
	h       *hub
	m       *fzHubModel
	ops     []byte
	refused []*conn // conns the hub refused for a taken sid
	step    int
	action  string
}

// next returns the next input byte, 0 once the input is used up.
func (r *fzHubRun) next() byte {
	if len(r.ops) == 0 {
		return 0
	}
	b := r.ops[0]
	r.ops = r.ops[1:]
	return b
}

// pick returns one of the accepted conns (live or not), nil when there are none.
func (r *fzHubRun) pick() *fzConn {
	b := r.next()
	if len(r.m.conns) == 0 {
		return nil
	}
	return r.m.conns[int(b)%len(r.m.conns)]
}

// handle applies one message on the test goroutine, as the hub's run loop does.
func (r *fzHubRun) handle(msg hubMsg) {
	if !r.h.handle(msg) {
		r.t.Fatalf("step %d (%s): hub stopped on a %T", r.step, r.action, msg)
	}
}

// fzHubConfig reads the hub's configuration from the first input byte:
// 1 to 3 games a session, expiry on (300 s) or off, a 60 s warning or none,
// 2 or 3 seats a game, sweeps of 1 or 2 sessions a step.
func fzHubConfig(b byte) hubConfig {
	cfg := hubConfig{maxGames: 1 + int(b%3), sessionTimeout: 300 * time.Second, expiryWarning: 60 * time.Second,
		maxSeats: 2 + int(b>>6&1), sweepStep: 1 + int(b>>7)}
	if b&0x08 != 0 {
		cfg.expiryWarning = 0
	}
	// Two states with lists of their own, one shorter and one longer than
	// SESSION_TIMEOUT; seatless settings kept for 15 minutes, two at most.
	cfg.stateTimeouts = map[string]time.Duration{"lobby": 450 * time.Second, "in_progress": 120 * time.Second}
	cfg.settingsTTL, cfg.settingsMax = 900*time.Second, 2
	if b&0x30 == 0x30 {
		cfg.sessionTimeout, cfg.expiryWarning = 0, 0
	}
	return cfg
}

// stepOnce reads one operation from the input and applies it to the hub and the model.
func (r *fzHubRun) stepOnce() {
	m := r.m
	switch op := r.next() % 13; op {
	case 0, 1:
		r.register()
	case 2:
		r.registerTaken()
	case 3:
		r.unregister()
	case 4, 5, 6, 7:
		r.command(op)
	case 8:
		d := fzHubAdvance[int(r.next())%len(fzHubAdvance)]
		time.Sleep(d) // inside the synctest bubble: fake time, returns at once
		now := time.Now()
		r.action = fmt.Sprintf("sweep after %s", d)
		r.handle(sweepMsg{now: now})
		r.finishSweep()
		m.sweep(now)
	case 9:
		r.action = "unregister a sid never registered"
		r.handle(unregisterMsg{sid: "never-registered", reason: reasonDisconnected})
	case 10:
		r.put()
	case 11:
		r.kick()
	case 12:
		r.query()
	}
}

// finishSweep runs the sweep the hub has begun to its end, as the hub's loop
// would when its inbox is empty, checking that the steps each look at their
// share of the work: a sweep over n sessions and m seatless settings takes at
// most (n+m)/step + 1.
func (r *fzHubRun) finishSweep() {
	work := len(r.m.conns) + r.h.idx.settings.seatless
	for steps := 1; r.h.sweeping; steps++ {
		r.h.sweepSome()
		r.h.dropSlow()
		if steps > work/r.h.cfg.sweepStep+1 {
			r.t.Fatalf("step %d (%s): sweep still going after %d steps", r.step, r.action, steps)
		}
	}
}

// register adds a conn: anonymous or one of three users, drained or tiny.
func (r *fzHubRun) register() {
	b := r.next()
	if len(r.m.conns) >= fzHubMaxConns {
		r.action = "register skipped: enough conns"
		return
	}
	var user *int64
	if u := int64(b % 4); u != 0 {
		user = &u
	}
	fc := &fzConn{games: map[uuid.UUID]bool{}, tiny: b&0x10 != 0, live: true}
	capacity := fzHubDrained
	if fc.tiny {
		capacity = 1 + int(b>>5)%2
	}
	fc.c = &conn{sid: fmt.Sprintf("fz%02d", len(r.m.conns)), userID: user, out: newSendQueue(capacity, testQueueBytes), quit: make(chan struct{})}
	r.action = fmt.Sprintf("register %s (user %v, queue %d)", fc.c.sid, b%4, capacity)
	reply := make(chan bool, 1)
	r.handle(registerMsg{c: fc.c, reply: reply})
	if !<-reply {
		r.t.Fatalf("step %d (%s): refused", r.step, r.action)
	}
	fc.last, fc.timeout = time.Now(), r.m.cfg.sessionTimeout
	r.m.touches++
	fc.touched = r.m.touches
	r.m.conns = append(r.m.conns, fc)
}

// registerTaken offers a second conn under a live session's sid.
func (r *fzHubRun) registerTaken() {
	fc := r.pick()
	if fc == nil || !fc.live {
		r.action = "register taken skipped: no live conn picked"
		return
	}
	c := &conn{sid: fc.c.sid, out: newSendQueue(1, testQueueBytes), quit: make(chan struct{})}
	r.action = "register a second conn as " + c.sid
	reply := make(chan bool, 1)
	r.handle(registerMsg{c: c, reply: reply})
	if <-reply {
		r.t.Fatalf("step %d (%s): accepted", r.step, r.action)
	}
	r.refused = append(r.refused, c)
}

// unregister ends a conn as its handler would: stop (sometimes already done
// before the hub hears of it), then unregister with the same reason. For a
// conn the hub already ended it is the stale unregister every handler sends.
func (r *fzHubRun) unregister() {
	fc := r.pick()
	b := r.next()
	if fc == nil {
		r.action = "unregister skipped: no conns"
		return
	}
	reason := fzHubEnds[int(b)%len(fzHubEnds)]
	if !fc.live {
		reason = fc.c.reason
	}
	r.action = fmt.Sprintf("unregister %s (%s %q, live %v)", fc.c.sid, reason.presence, reason.word, fc.live)
	if b&0x80 != 0 {
		fc.c.stop(reason)
	}
	r.handle(unregisterMsg{c: fc.c, sid: fc.c.sid, reason: reason})
	r.m.end(fc, reason)
	r.m.dropSlow()
}

// command sends one client command from a conn (a stale one when the conn has
// ended): op 4 join, 5 leave, 6 a decision or a roll, 7 a heartbeat.
func (r *fzHubRun) command(op byte) {
	fc := r.pick()
	b := r.next()
	if fc == nil {
		r.action = "command skipped: no conns"
		return
	}
	cmd := command{game: fzHubGames[int(b)%len(fzHubGames)]}
	if b&0x80 != 0 {
		cmd.id = "i" + strconv.Itoa(r.step)
	}
	msg := &commandMsg{c: fc.c, sid: fc.c.sid}
	switch op {
	case 4:
		cmd.kind = cmdJoin
		msg.others = encodePresence(cmd.game, fc.c.sid, fc.c.userID, "joined", "")
	case 5:
		cmd.kind = cmdLeave
		msg.self = encode("game_left", cmd.id, gameRef{GameID: cmd.game.String()})
		msg.others = encodePresence(cmd.game, fc.c.sid, fc.c.userID, "left", presenceLeft)
	case 6:
		cmd.kind = []cmdKind{cmdDefensive, cmdOffensive, cmdRoll}[int(b>>2)%3]
		var results []int
		if cmd.kind == cmdRoll {
			cmd.dice, results = []int{100}, []int{r.step}
		} else {
			cmd.decision = json.RawMessage(`{"step":` + strconv.Itoa(r.step) + `}`)
		}
		msg.others = encodeEvent(cmd, fc.c.sid, fc.c.userID, results)
	default:
		cmd = command{kind: cmdHeartbeat, id: cmd.id}
		msg.self = encodeHeartbeatAck(cmd.id, time.Now())
	}
	msg.cmd = cmd
	r.action = fmt.Sprintf("%s: %s about %s (live %v)", fc.c.sid, fzKindName(cmd.kind), cmd.game, fc.live)
	r.handle(msg)
	r.m.command(fc, msg, time.Now())
}

// fzStates, fzTimeouts and fzPolicies are what a PUT may set; "" and 0
// leave the field out. "custom" is no GAME_STATE_TIMEOUTS entry, 450 s is
// lobby's own timeout, 90 s and 200 s no state's.
var (
	fzStates   = []string{"", "lobby", "in_progress", "custom"}
	fzTimeouts = []time.Duration{0, 90 * time.Second, 450 * time.Second, 200 * time.Second}
	fzPolicies = []string{"", seatMulti, seatSingle}
)

// put sends the backend's PUT for a game, its body decoded by the API's own
// decodeSettings: the refusals the decoder makes never reach the hub.
func (r *fzHubRun) put() {
	game := fzHubGames[int(r.next())%len(fzHubGames)]
	b := r.next()
	body := map[string]any{}
	if st := fzStates[b&3]; st != "" {
		body["state"] = st
	}
	if d := fzTimeouts[b>>2&3]; d != 0 {
		body["idle_timeout_ms"] = d.Milliseconds()
	}
	if p := fzPolicies[int(b>>4)%3]; p != "" {
		body["seat_policy"] = p
	}
	raw, _ := json.Marshal(body)
	r.action = fmt.Sprintf("PUT %s %s", game, raw)
	patch, aerr := decodeSettings(raw, r.m.cfg.stateTimeouts, r.m.cfg.expiryWarning)
	_, withTimeout := body["idle_timeout_ms"]
	switch {
	case len(body) == 0:
		if aerr == nil || aerr.code != apiEmptySettings {
			r.t.Fatalf("step %d (%s): refused with %+v, want %s", r.step, r.action, aerr, apiEmptySettings)
		}
		return
	case body["state"] == "custom" && !withTimeout:
		if aerr == nil || aerr.code != apiUnknownState {
			r.t.Fatalf("step %d (%s): refused with %+v, want %s", r.step, r.action, aerr, apiUnknownState)
		}
		return
	case aerr != nil:
		r.t.Fatalf("step %d (%s): refused: %+v", r.step, r.action, aerr)
	}
	reply := make(chan gameReply, 1)
	r.handle(gameUpdateMsg{game: game, patch: patch, reply: reply})
	rep := <-reply
	now := time.Now()
	seats := len(r.m.games[game])
	if took := r.m.put(game, patch, now); rep.full == took || took && (rep.sessions != seats || !reflect.DeepEqual(rep.view, r.m.view(game, now))) {
		r.t.Errorf("step %d (%s): hub answered %+v, model took it %v with %d seats, view %+v", r.step, r.action, rep, took, seats, r.m.view(game, now))
	}
}

// kick sends the backend's kick of a user (anonymous sessions have none, so
// user 0 names nobody) or of a sid (possibly one that has ended).
func (r *fzHubRun) kick() {
	game := fzHubGames[int(r.next())%len(fzHubGames)]
	b := r.next()
	m := kickMsg{game: game, reply: make(chan int, 1)}
	if b&1 != 0 || len(r.m.conns) == 0 {
		u := int64(b >> 1 % 4)
		m.userID = &u
	} else {
		m.sid = r.m.conns[int(b>>1)%len(r.m.conns)].c.sid
	}
	r.action = fmt.Sprintf("kick from %s user %v sid %q", game, m.userID, m.sid)
	r.handle(m)
	if got, want := <-m.reply, r.m.kick(game, m.userID, m.sid); got != want {
		r.t.Errorf("step %d (%s): removed %d, model %d", r.step, r.action, got, want)
	}
}

// query asks for a game's settings and members as GET does.
func (r *fzHubRun) query() {
	game := fzHubGames[int(r.next())%len(fzHubGames)]
	r.action = fmt.Sprintf("GET %s", game)
	reply := make(chan gameReply, 1)
	r.handle(gameQueryMsg{game: game, reply: reply})
	rep := <-reply
	now := time.Now()
	want := gameReply{found: r.m.settingsOf(game, now) != nil || len(r.m.games[game]) > 0}
	if want.found {
		want.view, want.sessions, want.members = r.m.view(game, now), len(r.m.games[game]), []apiMember{}
		for fc := range r.m.games[game] {
			want.members = append(want.members, apiMember{SID: fc.c.sid, UserID: fc.c.userID, Status: statusConnected,
				IdleMS: now.Sub(fc.last).Milliseconds()})
		}
		slices.SortFunc(want.members, func(a, b apiMember) int { return strings.Compare(a.SID, b.SID) })
	}
	if !reflect.DeepEqual(rep, want) {
		r.t.Errorf("step %d (%s): hub answered %+v, model %+v", r.step, r.action, rep, want)
	}
}

// fzKindName is the wire name of a command kind, for failure messages.
func fzKindName(k cmdKind) string {
	for name, kind := range fzWireTypes {
		if kind == k {
			return name
		}
	}
	return "kind " + strconv.Itoa(int(k))
}

// fzStopped reports whether c's quit is closed.
func fzStopped(c *conn) bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// fzQuietTB is t with Helper a no-op: runtime.Callers in Helper cost FuzzHub a
// third of its time, and a failure message names its step anyway.
type fzQuietTB struct{ testing.TB }

// Helper does nothing.
func (fzQuietTB) Helper() {}

// check compares the hub with the model after a step.
func (r *fzHubRun) check() {
	t, h, m := r.t, r.h, r.m
	if len(h.slow) != 0 {
		t.Errorf("%d sessions still marked slow after the step", len(h.slow))
	}
	checkIndex(fzQuietTB{t}, h.idx)
	reply := make(chan stats, 1)
	r.handle(statsRequest{reply: reply})
	st := <-reply
	users, live := map[int64]bool{}, 0
	for _, fc := range m.conns {
		if fc.live {
			live++
			if fc.c.userID != nil {
				users[*fc.c.userID] = true
			}
		}
	}
	per := map[string]int{}
	for g, set := range m.games {
		per[g.String()] = len(set)
	}
	if st.TotalSessions != live || st.UniqueUsers != len(users) || st.ActiveGames != len(per) || !maps.Equal(seatsPerGame(st), per) {
		t.Errorf("stats %+v; model: %d sessions, %d users, games %v", st, live, len(users), per)
	}
	for g, n := range seatsPerGame(st) {
		if n <= 0 {
			t.Errorf("game %s listed with %d sessions", g, n)
		}
	}
	for _, fc := range m.conns {
		r.checkConn(fc)
	}
	for _, c := range r.refused {
		if fzStopped(c) || c.out.len() != 0 || h.idx.sessions[c.sid] != nil && h.idx.sessions[c.sid].conn == c {
			t.Errorf("refused conn %s was stopped, sent frames or holds a session", c.sid)
		}
	}
}

// checkConn compares one conn with the model: stopped and why, its session
// and what the hub records in it, and the frames it got during the step.
func (r *fzHubRun) checkConn(fc *fzConn) {
	t := r.t
	sid := fc.c.sid
	s := r.h.idx.sessions[sid]
	switch {
	case fzStopped(fc.c) && s != nil:
		t.Errorf("conn %s was stopped (%+v) but its session is still in the hub", sid, fc.c.reason)
	case fzStopped(fc.c) == fc.live:
		t.Errorf("conn %s: stopped %v (%+v), model says live %v", sid, fzStopped(fc.c), fc.c.reason, fc.live)
	case !fc.live && fc.c.reason != fc.reason:
		t.Errorf("conn %s stopped with %+v, model says %+v", sid, fc.c.reason, fc.reason)
	case fc.live && (s == nil || s.conn != fc.c):
		t.Errorf("conn %s is live but the hub holds no session for it", sid)
	case fc.live && (!s.lastActivity.Equal(fc.last) || s.warned != fc.warned):
		t.Errorf("session %s: last activity %v warned %v, model %v %v", sid, s.lastActivity, s.warned, fc.last, fc.warned)
	case fc.live && len(s.games) != len(fc.games):
		t.Errorf("session %s in %d games, model %v", sid, len(s.games), fc.games)
	case fc.live && (s.timeout != fc.timeout || !s.expiresAt.Equal(fc.expiresAt) || (s.heapAt != 0) != fc.offList):
		t.Errorf("session %s: timeout %s expires at %v off the lists %v, model %s %v %v",
			sid, s.timeout, s.expiresAt, s.heapAt != 0, fc.timeout, fc.expiresAt, fc.offList)
	}
	if fc.live {
		for g := range fc.games {
			if _, in := s.games[g]; !in {
				t.Errorf("session %s is not in game %s, model says it is", sid, g)
			}
		}
	}
	fresh := fc.endedNow
	fc.endedNow = false
	if fc.tiny {
		switch {
		case fresh:
			fc.frozen = fc.c.out.len()
		case !fc.live && fc.c.out.len() != fc.frozen:
			t.Errorf("conn %s got frames after it was stopped", sid)
		case fc.live && fc.c.out.len() != fc.queued:
			t.Errorf("tiny conn %s holds %d frames, model %d", sid, fc.c.out.len(), fc.queued)
		}
		return
	}
	var got []string
	for fc.c.out.len() > 0 {
		got = append(got, fzCanon(fc.c.out.next()))
	}
	want := fc.want
	fc.want = nil
	if fresh {
		// Which frames a conn got in the step that ended it depends on the
		// order the hub walked its sets; only later silence is checked.
		return
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("conn %s got frames:\n  %s\nmodel wants:\n  %s", sid, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// shutdown stops the hub and checks every live conn was told going-away and
// the hub forgot every session.
func (r *fzHubRun) shutdown() {
	t := r.t
	if r.h.handle(shutdownMsg{}) {
		t.Fatalf("hub goes on after shutdownMsg")
	}
	if len(r.h.idx.sessions) != 0 || len(r.h.idx.byGame) != 0 || len(r.h.idx.byUser) != 0 {
		t.Errorf("hub holds %d sessions after shutdown", len(r.h.idx.sessions))
	}
	for _, fc := range r.m.conns {
		want := fc.reason
		if fc.live {
			want = reasonShutdown
		}
		if !fzStopped(fc.c) || fc.c.reason != want {
			t.Errorf("after shutdown conn %s stopped %v with %+v, want %+v", fc.c.sid, fzStopped(fc.c), fc.c.reason, want)
		}
	}
}

// fzHubSeeds are op sequences worth starting from (see stepOnce for the
// encoding): joins, relays, leaves, expiry and warning, slow consumers.
var fzHubSeeds = [][]byte{
	{0x00},
	// two drained conns join a game, relay, leave, heartbeat
	{0x02, 0, 0x01, 0, 0x02, 4, 0, 0x80, 4, 1, 0, 6, 0, 0x84, 6, 1, 0x08, 5, 0, 0x80, 7, 1, 0x80},
	// a tiny conn in a game with a chatty drained one: slow consumer
	{0x02, 0, 0x01, 0, 0x12, 4, 0, 0, 4, 1, 0, 6, 0, 0, 6, 0, 0, 6, 0, 0, 6, 0, 0},
	// expiry with warning: both warned at 241 s, one heartbeats, the other expires at 302 s
	{0x02, 0, 0x01, 0, 0x02, 4, 0, 0, 4, 1, 0, 8, 9, 7, 0, 0, 8, 4, 8, 3},
	// too many games, not in game, stale command after unregister
	{0x00, 0, 0x01, 4, 0, 0, 4, 0, 1, 5, 0, 2, 6, 0, 3, 3, 0, 0x81, 6, 0, 0, 7, 0, 0, 3, 0, 0},
	// duplicate sid, unknown unregister, sweeps with expiry off
	{0x30, 0, 0x01, 2, 0, 9, 8, 13, 8, 13, 4, 0, 0},
	// cascade: three tiny conns in one game, one drained sender
	{0x01, 0, 0x00, 0, 0x10, 0, 0x30, 0, 0x11, 4, 0, 0, 4, 1, 0, 4, 2, 0, 4, 3, 0, 6, 0, 0, 6, 0, 0, 3, 0, 0},
	// single_seat: a second session of user 1 supersedes the first; a query
	{0x02, 0, 1, 0, 1, 10, 0, 0x20, 4, 0, 0, 4, 1, 0, 12, 0},
	// in_progress (120 s): warned at 61 s, expired at 121 s; a kick of user 2
	{0x02, 0, 1, 0, 2, 10, 0, 2, 4, 0, 0, 4, 1, 0, 8, 4, 8, 3, 11, 0, 5},
	// settings before any seat, the third refused, all forgotten after 15 minutes
	{0x02, 10, 1, 1, 10, 2, 7, 10, 3, 12, 12, 1, 8, 13, 8, 13, 12, 1},
	// warned under SESSION_TIMEOUT, then lobby (450 s) withdraws it; warned again, expired
	{0x02, 0, 1, 4, 0, 0, 8, 9, 10, 0, 1, 8, 7, 8, 3},
}

// FuzzHub reads its input as a hub configuration and a sequence of
// operations (register, register a taken sid, unregister with a reason, join,
// leave, relay, heartbeat, sweep at an advancing fake time, unregister of an
// unknown sid), from drained conns and tiny never-drained ones, and applies them
// to a real hub through its step function. After every step it checks
// checkIndex on the hub's index, the stats against a model, that no stopped
// conn keeps a session and no game is listed empty, and every conn's frames.
//
// The steps run inside a synctest bubble only for its clock: the hub stamps
// activity with time.Now(), so sweeps at an advancing fake time need the
// bubble's fake time to agree with it.
func FuzzHub(f *testing.F) {
	for _, s := range fzHubSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		synctest.Test(t, func(t *testing.T) { fzHubPlay(t, ops) })
	})
}

// fzHubPlay runs one FuzzHub input; it must run inside a synctest bubble.
func fzHubPlay(t *testing.T, ops []byte) {
	r := &fzHubRun{t: t, ops: ops[:min(len(ops), fzHubMaxBytes)]}
	cfg := fzHubConfig(r.next())
	r.h = newHub(cfg, 1)
	r.m = &fzHubModel{cfg: cfg, games: map[uuid.UUID]map[*fzConn]bool{}, settings: map[uuid.UUID]*fzSettings{}}
	for r.step = 0; len(r.ops) > 0; r.step++ {
		r.stepOnce()
		r.check()
		if t.Failed() {
			t.Fatalf("step %d (%s): hub and model disagree", r.step, r.action)
		}
	}
	r.shutdown()
}

package main

import (
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The hub in cluster mode (contract v2 §12). The hub still owns every local
// session and seat, decides everything about them, and never waits: a game
// event is handed to the bridge to be sequenced in Redis, and delivered here
// when it comes back through this node's mailbox, in the game's one order,
// to every local member; the hub that emitted it then completes what waited
// on its offset (the sender's own copy, a join's reply, the webhook). While
// Redis is unreachable each node sequences its own games locally, in an
// epoch of its own, so its players go on playing.

// clusterState is the hub's cluster side; the hub has none on one node.
type clusterState struct {
	// set at construction
	b    *bridge
	node string

	// owned by the hub goroutine
	up       bool                                  // events go through Redis
	remote   map[uuid.UUID]map[string]remoteMember // other nodes' members of the games this node holds
	tickets  map[uint64]func(m mailMsg)            // what waits on an event this node emitted
	ticket   uint64                                // the last ticket given
	gates    map[*session]map[uuid.UUID]uint64     // games whose frames a session must not get yet, up to a floor (gated)
	resumes  map[string]*pendingResume             // by the fresh sid of the conn that resumes
	unsent   map[uint64]struct{}                   // tickets of events delivered here unsequenced (unsent)
	fails    map[uint64]func(why string)           // what undoes an emitted event Redis refused (refusedMsg)
	leaving  time.Time                             // set by a hand-over: the hub exits by then (handedOver)
	untold   []untoldAway                          // adopted seats whose away waits for Redis to be up
	released map[string]struct{}                   // sids released before this node held them (release)
	// what ended while Redis was away, for Redis to hear once it is back
	downLeft  []downSeat
	downEnded []recordOp
}

// downSeat is a seat that ended while Redis was away.
type downSeat struct {
	game uuid.UUID
	sid  string
	user *int64
	note presenceNote
}

// downMax bounds what an outage remembers to tell Redis afterwards.
const downMax = 100000

// untoldAway is an adopted session's away in one game, not yet told.
type untoldAway struct {
	game uuid.UUID
	s    *session
}

// pendingResume is a resume waiting for Redis: for the session's record, or
// for its back events' offsets.
type pendingResume struct {
	m      resumeMsg
	timer  *time.Timer
	finish func() // set once the session is taken up and waits for its back events
	again  bool   // claimed a second time
}

// resumeTimeoutMsg fails a resume that Redis did not answer in time.
type resumeTimeoutMsg struct{ ref string }

// claimTimeout bounds how long a resume waits for another node to release
// the session before it claims again, and claimRetry the second claim: the
// contract answers every resume within 1 s.
const (
	claimTimeout = 500 * time.Millisecond
	claimRetry   = 400 * time.Millisecond
)

// newClusterState returns the hub's cluster side for bridge b.
func newClusterState(b *bridge) *clusterState {
	// Down until the bridge says Redis is up (its first heartbeat, once the
	// mailbox is subscribed): what comes before is served here, and
	// registered with Redis at that first report (a resync).
	return &clusterState{b: b, node: b.cfg.node,
		remote: make(map[uuid.UUID]map[string]remoteMember), tickets: make(map[uint64]func(mailMsg)),
		gates: make(map[*session]map[uuid.UUID]uint64), resumes: make(map[string]*pendingResume),
		unsent: make(map[uint64]struct{}), fails: make(map[uint64]func(string)), released: make(map[string]struct{})}
}

// clustered reports whether events go through Redis now. Runs on the hub goroutine.
func (h *hub) clustered() bool { return h.cl != nil && h.cl.up }

// emit hands one event of game to the bridge. subject is the session it is
// about or from (nil for none), who does not get it; done, if not nil, runs
// when it comes back sequenced. Runs on the hub goroutine.
func (h *hub) emit(game uuid.UUID, subject *session, shared []byte, kind string, note presenceNote, by string,
	snapshot bool, done func(mailMsg)) {
	script := kind
	if kind == "settings" {
		script = "event" // a game_updated: an event like any, which the other nodes apply
	}
	op := emitOp{game: game.String(), kind: script, frame: shared, snapshot: snapshot, last: h.lastOffset(game),
		head: header{origin: h.cl.node, kind: kind, game: game.String(), reason: note.reason, by: by}}
	if subject != nil {
		op.sid, op.user = subject.sid, subject.userID
		op.head.sid, op.head.user = subject.sid, userField(subject.userID)
	}
	// Every event has a ticket: one handed back unsent may still have been
	// sequenced (a timeout cannot tell), and its copy from the mailbox must
	// not reach the players here a second time.
	h.cl.ticket++
	op.head.ticket = h.cl.ticket
	if done != nil {
		h.cl.tickets[op.head.ticket] = done
	}
	if !h.cl.b.push(op) {
		h.cfg.metrics.bridgeFull()
		h.unsent(unsentMsg{op: op}) // the players here are served even so
	}
}

// presenceKind is the emit kind of a presence status.
func presenceKind(status string) string {
	if status == statusConnected {
		return "joined"
	}
	return status
}

// clusterPresence emits a presence event about s; the webhook hears it with
// its offset, here only: one node emits each event. Runs on the hub goroutine.
func (h *hub) clusterPresence(game uuid.UUID, s *session, note presenceNote, shared []byte, by string, then func(mailMsg)) {
	hook := h.cfg.webhook
	sid, user := s.sid, s.userID
	done := then
	if hook != nil {
		done = func(m mailMsg) {
			hook.push(presenceEvent{game: game, epoch: m.epoch, offset: m.offset, sid: sid, userID: user,
				status: note.status, reason: note.reason, at: time.Now()})
			if then != nil {
				then(m)
			}
		}
	}
	// A join asks for the member list with its own copy: the joiner's reply.
	h.emit(game, s, shared, presenceKind(note.status), note, by, note.status == "joined", done)
}

// mail handles one event from this node's mailbox: the mirror of the game's
// history, the other nodes' members, a seat another node ended, delivery to
// the local members, and whatever this node waited on. Runs on the hub goroutine.
func (h *hub) mail(m mailMsg) {
	game, err := uuid.Parse(m.head.game)
	if err != nil {
		return
	}
	mine := m.head.origin == h.cl.node
	if _, dup := h.cl.unsent[m.head.ticket]; mine && dup {
		delete(h.cl.unsent, m.head.ticket) // delivered here already, when the bridge handed it back
		return
	}
	if log := h.idx.logs[game]; log != nil {
		log.mirror(m.epoch, m.offset, m.frame)
	}
	subject := h.idx.sessions[m.head.sid]
	local := subject != nil && h.idx.inGame(subject, game)
	switch {
	case m.head.kind == "settings" && !mine:
		h.remoteSettings(game, m.frame)
	case m.head.kind == "repair" || m.head.kind == "event" || m.head.kind == "settings":
	case local && !mine && m.head.kind == "left":
		// Another node ended this seat: a kick, or a supersede by a
		// session of the same user there.
		h.deliver(subject, encode("game_left", "", gameLeftData{GameID: game.String(), Reason: m.head.reason, BySID: m.head.by}))
		h.idx.leave(subject, game)
		h.retimeSession(subject, false)
		h.putRecord(subject, false)
	case !local && h.idx.logs[game] != nil:
		h.remoteMember(game, m)
	}
	if mine && m.settings != "" {
		var v gameView
		if json.Unmarshal([]byte(m.settings), &v) == nil {
			h.applySettings(game, v)
		}
	}
	if mine && m.members != nil {
		set := make(map[string]remoteMember, len(m.members))
		for _, rm := range m.members {
			if rm.node != h.cl.node {
				set[rm.sid] = rm
			}
		}
		h.cl.remote[game] = set
	}
	for s := range h.idx.members(game) {
		if s.sid != m.head.sid && !h.gated(s, game, m.offset) {
			h.deliver(s, m.frame)
		}
	}
	if mine && m.head.ticket != 0 {
		delete(h.cl.fails, m.head.ticket)
		if done := h.cl.tickets[m.head.ticket]; done != nil {
			delete(h.cl.tickets, m.head.ticket)
			done(m)
		}
	}
	h.forgetIfUnheld(game)
}

// remoteMember applies a presence event about another node's member to the
// view of game. Runs on the hub goroutine.
func (h *hub) remoteMember(game uuid.UUID, m mailMsg) {
	set := h.cl.remote[game]
	if set == nil {
		set = make(map[string]remoteMember)
		h.cl.remote[game] = set
	}
	rm := parseMember(m.head.sid, m.head.origin+"|"+statusConnected+"|"+m.head.user)
	switch m.head.kind {
	case "joined", "back":
		set[rm.sid] = rm
	case "away":
		rm.status = statusAway
		set[rm.sid] = rm
	case "left":
		delete(set, rm.sid)
	}
}

// forgetIfUnheld drops what this node knows of game once it holds no seat
// in it: the mailbox brings its events no more. Runs on the hub goroutine.
func (h *hub) forgetIfUnheld(game uuid.UUID) {
	if h.cl != nil && h.idx.logs[game] == nil {
		delete(h.cl.remote, game)
		h.cl.b.unfollow(game.String())
	}
}

// gated reports whether s must not get game's event at offset: it waits
// for its own join or resume to be sequenced (floor ^0), or was caught up
// past it (a resume replayed what the mailbox still brings: floor is where
// the replay ended). Runs on the hub goroutine.
func (h *hub) gated(s *session, game uuid.UUID, offset uint64) bool {
	if h.cl == nil {
		return false
	}
	g, ok := h.cl.gates[s]
	if !ok {
		return false
	}
	floor, in := g[game]
	switch {
	case !in:
		return false
	case floor == ^uint64(0) || offset <= floor:
		return true
	}
	h.ungate(s, game) // past what it was caught up on: live from here
	return false
}

// joining reports whether s's join or resume into game waits to be
// sequenced. Runs on the hub goroutine.
func (h *hub) joining(s *session, game uuid.UUID) bool {
	if h.cl == nil {
		return false
	}
	floor, in := h.cl.gates[s][game]
	return in && floor == ^uint64(0)
}

// gate holds game's frames back from s until ungate. Runs on the hub goroutine.
func (h *hub) gate(s *session, game uuid.UUID) { h.gateAt(s, game, ^uint64(0)) }

// gateAt holds back from s game's events up to floor. Runs on the hub goroutine.
func (h *hub) gateAt(s *session, game uuid.UUID, floor uint64) {
	g := h.cl.gates[s]
	if g == nil {
		g = make(map[uuid.UUID]uint64, 1)
		h.cl.gates[s] = g
	}
	g[game] = floor
}

// ungate lets game's frames reach s again. Runs on the hub goroutine.
func (h *hub) ungate(s *session, game uuid.UUID) {
	if g := h.cl.gates[s]; g != nil {
		delete(g, game)
		if len(g) == 0 {
			delete(h.cl.gates, s)
		}
	}
}

// lastOffset is the last offset this node delivered in game (0 for none).
// Runs on the hub goroutine.
func (h *hub) lastOffset(game uuid.UUID) uint64 {
	if log := h.idx.logs[game]; log != nil {
		return log.last
	}
	return 0
}

// refused handles an event Redis did not sequence: what waited on it is
// undone, or given up. Runs on the hub goroutine.
func (h *hub) refused(m refusedMsg) {
	t := m.op.head.ticket
	delete(h.cl.tickets, t)
	if fail := h.cl.fails[t]; fail != nil {
		delete(h.cl.fails, t)
		fail(m.why)
	}
}

// unsent delivers an event the bridge could not sequence to this node's own
// members, sequenced by its local log: what serves the players here while
// Redis is away. Runs on the hub goroutine.
func (h *hub) unsent(u unsentMsg) {
	game, err := uuid.Parse(u.op.game)
	if err != nil {
		return
	}
	log := h.idx.logs[game]
	if log == nil {
		h.refused(refusedMsg{op: u.op, why: "gone"})
		return
	}
	if u.nogame && !u.op.again && h.clustered() {
		// Redis lost the game (restarted empty, flushed): this node's seats
		// are registered again, then the event is sent again behind them,
		// so every node that registers its own hears it (from the stream).
		h.resyncGame(game)
		u.op.again = true
		if h.cl.b.push(u.op) {
			return
		}
	}
	framed := log.sequence(u.op.frame)
	h.mail(mailMsg{epoch: log.epoch, offset: log.last, head: u.op.head, frame: framed, members: h.snapshotOf(game, u.op.snapshot)})
	if !u.nogame { // Redis refused a game it lacks: no copy of this one will come
		if len(h.cl.unsent) >= 1<<16 {
			clear(h.cl.unsent) // bounded: a copy that comes this late is the least of an outage's harms
		}
		h.cl.unsent[u.op.head.ticket] = struct{}{}
	}
}

// snapshotOf returns, when want, the remote members this node knows of game,
// as a join's snapshot would list them. Runs on the hub goroutine.
func (h *hub) snapshotOf(game uuid.UUID, want bool) []remoteMember {
	if !want {
		return nil
	}
	out := []remoteMember{}
	for _, rm := range h.cl.remote[game] {
		out = append(out, rm)
	}
	return out
}

// engine applies what the bridge knows of Redis. Runs on the hub goroutine.
func (h *hub) engine(m engineMsg) {
	switch {
	case m.fenced:
		// Declared dead: another node holds these sessions now. Every conn
		// is closed, resumable, and nothing of them is told (it would be a
		// ghost's word); the sessions are forgotten here.
		for _, s := range h.idx.sessions {
			h.stopWindow(s)
			h.stopToken(s)
			if s.conn != nil {
				s.conn.stop(reasonHandOver.withRetry(randDuration(h.cfg.retrySpread)))
			}
		}
		h.idx = h.newIndex()
		h.slow = nil
		h.sweeping = false
		h.cl.remote = make(map[uuid.UUID]map[string]remoteMember)
		h.cl.tickets = make(map[uint64]func(mailMsg))
		h.cl.gates = make(map[*session]map[uuid.UUID]uint64)
		h.cl.unsent = make(map[uint64]struct{})
		h.cl.fails = make(map[uint64]func(string))
	case !m.up:
		h.cl.up = false
		for _, log := range h.idx.logs {
			log.epoch = newEpoch() // offsets go on here alone: a history of their own
		}
	default:
		h.cl.up = true
		for _, u := range h.cl.untold {
			if s := u.s; h.idx.sessions[s.sid] == s && s.conn == nil && h.idx.inGame(s, u.game) {
				h.presence(u.game, s, presenceNote{statusAway, s.awayReason}, encodeAway(u.game, s.sid, s.userID, s.awayReason, h.cfg.resumeWindow))
			}
		}
		h.cl.untold = nil
		for _, op := range h.cl.downEnded {
			if h.idx.sessions[op.sid] == nil {
				h.cl.b.push(op)
			}
		}
		for _, d := range h.cl.downLeft {
			if s := h.idx.sessions[d.sid]; s == nil || !h.idx.inGame(s, d.game) {
				h.presenceLate(d, encodePresence(d.game, d.sid, d.user, "left", d.note.reason))
			}
		}
		h.cl.downEnded, h.cl.downLeft = nil, nil
		if m.resync {
			for _, s := range h.idx.sessions {
				h.putRecord(s, true)
			}
			for game := range h.idx.byGame {
				h.resyncGame(game)
			}
		}
	}
}

// resyncGame registers this node's seats in game with Redis again. Runs on the hub goroutine.
func (h *hub) resyncGame(game uuid.UUID) {
	var seats []remoteMember
	for s := range h.idx.members(game) {
		seats = append(seats, remoteMember{sid: s.sid, status: s.status(), user: s.userID})
	}
	op := resyncOp{game: game.String(), seats: seats}
	if log := h.idx.logs[game]; log != nil {
		op.last = log.last
	}
	h.cl.b.push(op)
}

// putRecord writes s's record to Redis; fresh for a session Redis has not
// seen. Runs on the hub goroutine.
func (h *hub) putRecord(s *session, fresh bool) {
	if h.cl == nil {
		return
	}
	h.cl.b.push(recordOp{sid: s.sid, token: hex.EncodeToString(s.token[:]), rec: h.record(s), fresh: fresh})
}

// endRecord deletes s's record: the session ended. Runs on the hub goroutine.
func (h *hub) endRecord(s *session) {
	if h.cl == nil {
		return
	}
	op := recordOp{sid: s.sid, token: hex.EncodeToString(s.token[:])}
	if !h.cl.up {
		if len(h.cl.downEnded) < downMax {
			h.cl.downEnded = append(h.cl.downEnded, op) // deleted once Redis is back (engine)
		}
		return
	}
	h.cl.b.push(op)
}

// leftWhileDown remembers a seat that ended while Redis was away: once it
// is back, the game's list in Redis loses it, and the other nodes hear it.
// Runs on the hub goroutine.
func (h *hub) leftWhileDown(game uuid.UUID, s *session, note presenceNote) {
	if len(h.cl.downLeft) < downMax {
		h.cl.downLeft = append(h.cl.downLeft, downSeat{game: game, sid: s.sid, user: s.userID, note: note})
	}
}

// presenceLate tells Redis, and through it the other nodes, of a seat that
// ended while Redis was away. The webhook heard it then; it is not told
// again. Runs on the hub goroutine.
func (h *hub) presenceLate(d downSeat, shared []byte) {
	h.emit(d.game, &session{sid: d.sid, userID: d.user}, shared, "left", d.note, "", false, nil)
}

// record encodes what Redis keeps of s. Runs on the hub goroutine.
func (h *hub) record(s *session) []byte {
	r := sessionRecord{SID: s.sid, User: s.userID, Token: hex.EncodeToString(s.token[:]), Away: s.conn == nil,
		Reason: s.awayReason, Games: make([]string, 0, len(s.games))}
	if r.Away {
		r.Since = s.awaySince.UnixMilli()
	}
	for g := range s.games {
		r.Games = append(r.Games, g.String())
	}
	slices.Sort(r.Games)
	if s.actions != nil {
		for _, a := range s.actions.order {
			r.Actions = append(r.Actions, actionRec{ID: a.id, Digest: a.digest[:], At: a.at.UnixMilli(),
				Reply: a.reply, Offset: a.offset, Results: a.results, Pending: a.pending})
		}
	}
	b, _ := json.Marshal(r)
	return b
}

// members lists game's members for s in cluster mode: s first, then the
// local and the remote ones by sid. Runs on the hub goroutine.
func (h *hub) clusterMembers(game uuid.UUID, s *session, list []member) []member {
	for _, rm := range h.cl.remote[game] {
		if rm.sid != s.sid {
			list = append(list, member{SID: rm.sid, UserID: rm.user, Status: rm.status})
		}
	}
	slices.SortFunc(list[1:], func(a, b member) int { return strings.Compare(a.SID, b.SID) })
	return list
}

// remoteRivals returns the other nodes' sessions of s's user seated in a
// single_seat game. Runs on the hub goroutine.
func (h *hub) remoteRivals(s *session, game uuid.UUID) []remoteMember {
	if h.cl == nil || s.userID == nil {
		return nil
	}
	if g := h.idx.settings.byGame[game]; g == nil || !g.single {
		return nil
	}
	var out []remoteMember
	for _, rm := range h.cl.remote[game] {
		if rm.user != nil && *rm.user == *s.userID {
			out = append(out, rm)
		}
	}
	slices.SortFunc(out, func(a, b remoteMember) int { return strings.Compare(a.sid, b.sid) })
	return out
}

// endRemoteSeat ends another node's seat in game for reason: its node hears
// the left event, tells its session game_left, and lets the seat go.
// Runs on the hub goroutine.
func (h *hub) endRemoteSeat(game uuid.UUID, rm remoteMember, reason, by string) {
	ghost := &session{sid: rm.sid, userID: rm.user}
	h.presenceBy(game, ghost, presenceNote{"left", reason}, encodePresence(game, rm.sid, rm.user, "left", reason), by)
	delete(h.cl.remote[game], rm.sid)
}

// seatsIn returns the seats game has across the cluster, as far as this
// node knows: its own and the other nodes' it has heard of. Runs on the hub goroutine.
func (h *hub) seatsIn(game uuid.UUID) int {
	n := h.idx.seatsIn(game)
	if h.cl != nil {
		n += len(h.cl.remote[game])
	}
	return n
}

// clusterJoin tells game a join of s, newly seated, and answers it once the
// join is sequenced: game_joined names the join's own offset and the members
// Redis listed with it. Until then s gets none of the game's frames.
// Runs on the hub goroutine.
func (h *hub) clusterJoin(s *session, m commandMsg) {
	game := m.cmd.game
	h.cfg.metrics.joined(h.seatsIn(game))
	h.retimeSession(s, true)
	h.putRecord(s, false)
	h.gate(s, game)
	if h.idx.seatsIn(game) == 1 {
		h.cl.b.unfollow(game.String()) // the mailbox starts this game afresh at this join
	}
	now := time.Now()
	h.cl.fails[h.cl.ticket+1] = func(why string) { // the ticket the join's emit takes
		if h.idx.sessions[s.sid] != s || !h.idx.inGame(s, game) {
			return
		}
		h.ungate(s, game)
		h.idx.leave(s, game)
		h.retimeSession(s, false)
		h.putRecord(s, false)
		h.forgetIfUnheld(game)
		if why == "full" {
			h.refuse(s, encodeError(&protoError{code: codeGameFull, id: m.cmd.id,
				message: "game " + game.String() + " has all its " + strconv.Itoa(h.cfg.maxSeats) + " seats taken"}))
		}
	}
	h.presenceThen(game, s, m.note, m.others, "", func(e mailMsg) {
		if h.idx.sessions[s.sid] != s || !h.idx.inGame(s, game) {
			return
		}
		h.ungate(s, game)
		// The first seat of a game on this node learns the game's settings
		// and members only now: a single_seat rival on another node is
		// superseded now (after the join, where one node has it before).
		for _, rm := range h.remoteRivals(s, game) {
			h.endRemoteSeat(game, rm, presenceSuperseded, s.sid)
		}
		reply := encode("game_joined", m.cmd.id, gameJoinedData{GameID: game.String(), Epoch: e.epoch,
			Offset: e.offset, Members: h.members(game, s), gameView: h.view(game)})
		h.deliver(s, reply)
		if m.cmd.id != "" {
			h.remember(s, m, reply, 0, nil, now)
			h.putRecord(s, false)
		}
	})
}

// clusterAction sends a game action of s to its game; the sender's copy,
// with its id, goes out when the action comes back sequenced, and is
// remembered then with its offset. Runs on the hub goroutine.
//
// An action with an id is remembered at once, pending: a retry meanwhile
// runs nothing, and if the session moves to another node before the action
// comes back, its record says so, and the stream, which keeps the action's
// id beside its event, gives the other node its offset (resolvePending).
func (h *hub) clusterAction(s *session, m commandMsg, exactlyOnce bool, now time.Time) {
	var a *action
	if exactlyOnce {
		h.remember(s, m, nil, 0, m.results, now)
		if s.actions != nil {
			if a = s.actions.byID[m.cmd.id]; a != nil {
				a.pending = true
			}
		}
		h.putRecord(s, false)
	}
	h.emitAction(m.cmd.game, s, m.others, m.cmd.id, exactlyOnce, func(e mailMsg) {
		if a != nil {
			a.offset, a.pending = e.offset, false
		}
		if h.idx.sessions[s.sid] != s {
			return // moved to another node meanwhile: its record there has the action
		}
		// The record keeps the action pending: a node it moves to reads
		// the offset from the stream (resolvePending), so one write per
		// action is enough (the record is rewritten whole).
		h.deliver(s, withID(e.frame, m.cmd.id))
	})
}

// emitAction emits a game action of s, its id kept beside it in the stream
// when withID. Runs on the hub goroutine.
func (h *hub) emitAction(game uuid.UUID, s *session, shared []byte, id string, withID bool, done func(mailMsg)) {
	h.cl.ticket++
	op := emitOp{game: game.String(), kind: "event", frame: shared, sid: s.sid, user: s.userID, last: h.lastOffset(game),
		head: header{origin: h.cl.node, kind: "event", game: game.String(), sid: s.sid, user: userField(s.userID), ticket: h.cl.ticket}}
	if withID {
		op.action = s.sid + "/" + id
	}
	h.cl.tickets[op.head.ticket] = done
	if !h.cl.b.push(op) {
		h.cfg.metrics.bridgeFull()
		h.unsent(unsentMsg{op: op})
	}
}

// resolvePending gives s's pending actions the offsets the fetched
// histories name for them. One the histories no longer hold keeps offset 0:
// its retry is answered dup with offset 0. Runs on the hub goroutine.
func (h *hub) resolvePending(s *session, games map[string]*fetchedGame) {
	if s.actions == nil {
		return
	}
	for _, a := range s.actions.order {
		if !a.pending {
			continue
		}
		for _, fg := range games {
			if off, ok := fg.actions[s.sid+"/"+a.id]; ok {
				a.offset = off
			}
		}
		a.pending = false
	}
}

// handOverWait bounds how long a hand-over waits for its away events to
// come back from Redis (what the webhook needs), within SHUTDOWN_TIMEOUT.
const handOverWait = time.Second

// handOverDue wakes the hub when a hand-over has waited long enough.
type handOverDue struct{}

// handedOver reports whether the hub, handing over, is done: every event it
// emitted has come back, or it waited handOverWait. Runs on the hub goroutine.
func (h *hub) handedOver() bool {
	if h.cl == nil || h.cl.leaving.IsZero() {
		return false
	}
	return len(h.cl.tickets) == 0 || !time.Now().Before(h.cl.leaving)
}

// handOver is a shutdown in a cluster: every session goes away (its games
// hear it, sequenced in Redis) and its record says so, then every conn is
// closed resumable, each with its own retry delay, and the node forgets
// them. Its key is deleted once the bridge has run all of it (main), so
// another node adopts the sessions at once, and a client that resumes
// elsewhere first takes its record straight from Redis. Runs on the hub goroutine.
func (h *hub) handOver() {
	now := time.Now()
	h.cl.leaving = now.Add(handOverWait)
	time.AfterFunc(handOverWait, func() { h.send(handOverDue{}) })
	for _, s := range h.idx.sessions {
		h.stopWindow(s)
		h.stopToken(s)
		if s.conn == nil {
			h.putRecord(s, false)
			continue
		}
		c := s.conn
		h.idx.setAway(s)
		s.awaySince, s.awayReason = now, presenceDisconnected
		for g := range s.games {
			// The webhook hears these only if the node lives to see them
			// sequenced; the node that adopts the sessions tells it nothing
			// more until they are back or left.
			h.presence(g, s, presenceNote{statusAway, s.awayReason}, encodeAway(g, s.sid, s.userID, s.awayReason, h.cfg.resumeWindow))
		}
		h.putRecord(s, false)
		c.stop(reasonHandOver.withRetry(randDuration(h.cfg.retrySpread)))
	}
	h.idx = h.newIndex()
	h.slow = nil
	h.sweeping = false
}

// clusterCountsRequest asks for the counts a heartbeat carries and the
// users this node holds, for an exact unique_users across nodes.
type clusterCountsRequest struct {
	reply chan clusterCounts
}

// clusterCounts answers a clusterCountsRequest.
type clusterCounts struct {
	counts hubCounts
	users  []int64
}

// askClusterCounts asks h for its counts and users; ok is false once it has stopped.
func (h *hub) askClusterCounts() (hubCounts, []int64, bool) {
	reply := make(chan clusterCounts, 1)
	c, ok := ask(h, clusterCountsRequest{reply: reply}, reply)
	return c.counts, c.users, ok
}

// clusterCounts answers m. Runs on the hub goroutine: a copy of the user
// ids, once per heartbeat (NODE_TTL/3).
func (h *hub) clusterCounts(m clusterCountsRequest) {
	users := make([]int64, 0, len(h.idx.byUser))
	for u := range h.idx.byUser {
		users = append(users, u)
	}
	m.reply <- clusterCounts{counts: h.counts(), users: users}
}

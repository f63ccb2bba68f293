package main

// FuzzHub's model: what the hub should hold and send, written from the
// contract rather than from the hub's code (a list in registration order
// instead of idle lists, sorted when a sweep walks it).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// fzConn is the model's record of one conn the hub accepted.
type fzConn struct {
	c    *conn
	tiny bool // queue of one or two frames, never drained: a slow consumer waiting to happen

	// while the model holds its session
	live      bool
	games     map[uuid.UUID]bool
	last      time.Time
	touched   int // when it was last active, in the model's count of touches: the idle order within one instant
	warned    bool
	expiresAt time.Time     // what its warning announced
	timeout   time.Duration // the largest of its games' timeouts
	offList   bool          // its timeout changed without activity of its own, or has no list
	queued    int           // frames in a tiny conn's queue
	want      []string      // canonical frames a drained conn should get this step

	// once the model has ended it
	reason   closeReason
	endedNow bool // ended during the current step
	frozen   int  // a tiny conn's queue length once ended
}

// fzSettings is what the backend set for a game, and since when it has had
// no seat (zero while it has one).
type fzSettings struct {
	gameSettings
	seatless bool
	since    time.Time
	seq      int // order of becoming seatless, for evictions within one instant
}

// fzHubModel is what the hub should hold; it mirrors the contract, not the
// hub's code: a list in registration order instead of an idle list, sorted
// by activity when a sweep walks it in steps.
type fzHubModel struct {
	cfg      hubConfig
	touches  int       // activity so far, to order sessions active at the same instant
	conns    []*fzConn // every conn the hub accepted, in order
	games    map[uuid.UUID]map[*fzConn]bool
	settings map[uuid.UUID]*fzSettings
	seq      int
	slow     []*fzConn
}

// settingsOf returns game's live settings at now, nil when it has none (never
// set, or seatless for longer than the store keeps them).
func (m *fzHubModel) settingsOf(game uuid.UUID, now time.Time) *fzSettings {
	g := m.settings[game]
	if g != nil && g.seatless && !now.Before(g.since.Add(m.cfg.settingsTTL)) {
		delete(m.settings, game)
		return nil
	}
	return g
}

// seatlessLive counts the games whose settings are kept without a seat.
func (m *fzHubModel) seatlessLive(now time.Time) int {
	n := 0
	for g := range maps.Clone(m.settings) {
		if s := m.settingsOf(g, now); s != nil && s.seatless {
			n++
		}
	}
	return n
}

// view is what members see of game's settings at now.
func (m *fzHubModel) view(game uuid.UUID, now time.Time) gameView {
	if g := m.settingsOf(game, now); g != nil {
		return viewOf(&g.gameSettings)
	}
	return viewOf(nil)
}

// listed reports whether the hub keeps an idle list for timeout t.
func (m *fzHubModel) listed(t time.Duration) bool {
	return t == m.cfg.sessionTimeout || slices.Contains(slices.Collect(maps.Values(m.cfg.stateTimeouts)), t)
}

// timeoutOf is fc's idle timeout and the game that sets it (contract v2 §8):
// the largest of its games' own (SESSION_TIMEOUT for a game without one, and
// for no game), named by the lowest id among games whose own it is.
func (m *fzHubModel) timeoutOf(fc *fzConn) (time.Duration, *uuid.UUID) {
	own := func(g uuid.UUID) (time.Duration, bool) {
		if s := m.settings[g]; s != nil && s.timeout > 0 {
			return s.timeout, true
		}
		return m.cfg.sessionTimeout, false
	}
	if len(fc.games) == 0 {
		return m.cfg.sessionTimeout, nil
	}
	var t time.Duration
	for g := range fc.games {
		d, _ := own(g)
		t = max(t, d)
	}
	var by *uuid.UUID
	for g := range fc.games {
		if d, timed := own(g); timed && d == t && (by == nil || bytes.Compare(g[:], by[:]) < 0) {
			id := g
			by = &id
		}
	}
	return t, by
}

// retime gives fc the timeout of its games; active says fc acted in this step.
func (m *fzHubModel) retime(fc *fzConn, active bool) {
	t, _ := m.timeoutOf(fc)
	if t == fc.timeout {
		return
	}
	fc.timeout = t
	if fc.warned && fc.last.Add(t).After(fc.expiresAt) {
		fc.warned, fc.expiresAt = false, time.Time{}
	}
	fc.offList = !active || !m.listed(t)
}

// deliver queues frame for fc as the hub should, noting an overflow.
func (m *fzHubModel) deliver(fc *fzConn, frame []byte) {
	switch {
	case !fc.tiny:
		fc.want = append(fc.want, fzCanon(frame))
	case fc.queued < fc.c.out.limit:
		fc.queued++
	default:
		m.slow = append(m.slow, fc)
	}
}

// refuse queues an error reply for fc as the hub should: a tiny conn takes
// it only while its queue is at most half full, and is never made slow by it.
func (m *fzHubModel) refuse(fc *fzConn, frame []byte) {
	switch {
	case !fc.tiny:
		fc.want = append(fc.want, fzCanon(frame))
	case fc.queued < fc.c.out.limit/2:
		fc.queued++
	}
}

// broadcast delivers frame to every member of game but from (nil: every member).
func (m *fzHubModel) broadcast(game uuid.UUID, from *fzConn, frame []byte) {
	for fc := range m.games[game] {
		if fc != from {
			m.deliver(fc, frame)
		}
	}
}

// leaveGame takes fc out of game; a game that empties keeps its settings,
// seatless from now, and the oldest seatless ones beyond the bound go.
func (m *fzHubModel) leaveGame(fc *fzConn, game uuid.UUID) {
	delete(fc.games, game)
	delete(m.games[game], fc)
	if len(m.games[game]) > 0 {
		return
	}
	delete(m.games, game)
	now := time.Now()
	if g := m.settings[game]; g != nil {
		m.seq++
		g.seatless, g.since, g.seq = true, now, m.seq
	}
	for m.seatlessLive(now) > m.cfg.settingsMax {
		var oldest *fzSettings
		for _, g := range m.settings {
			if g.seatless && (oldest == nil || g.seq < oldest.seq) {
				oldest = g
			}
		}
		delete(m.settings, oldest.game)
	}
}

// joinGame seats fc in game; the game's settings, if any are still kept, stop aging.
func (m *fzHubModel) joinGame(fc *fzConn, game uuid.UUID, now time.Time) {
	fc.games[game] = true
	if m.games[game] == nil {
		m.games[game] = map[*fzConn]bool{}
		if g := m.settingsOf(game, now); g != nil {
			g.seatless = false
		}
	}
	m.games[game][fc] = true
}

// end removes fc, tells its games why and marks it stopped; a no-op for an ended conn.
func (m *fzHubModel) end(fc *fzConn, reason closeReason) {
	if !fc.live {
		return
	}
	fc.live, fc.reason, fc.endedNow = false, reason, true
	games := maps.Clone(fc.games)
	for g := range games {
		m.leaveGame(fc, g)
	}
	for g := range games {
		m.broadcast(g, fc, encodePresence(g, fc.c.sid, fc.c.userID, "left", reason.presence))
	}
	fc.games = nil
}

// dropSlow ends every conn that overflowed, until none is left.
func (m *fzHubModel) dropSlow() {
	for len(m.slow) > 0 {
		fc := m.slow[0]
		m.slow = m.slow[1:]
		m.end(fc, reasonSlow)
	}
}

// unseat ends fc's seat in game for reason, as a kick or a supersede does.
func (m *fzHubModel) unseat(fc *fzConn, game uuid.UUID, reason, by string) {
	m.leaveGame(fc, game)
	m.deliver(fc, encode("game_left", "", gameLeftData{GameID: game.String(), Reason: reason, BySID: by}))
	m.broadcast(game, fc, encodePresence(game, fc.c.sid, fc.c.userID, "left", reason))
	m.retime(fc, false)
}

// rivals lists the other live conns of fc's user in game when it is single_seat, by sid.
func (m *fzHubModel) rivals(fc *fzConn, game uuid.UUID, now time.Time) []*fzConn {
	g := m.settingsOf(game, now)
	if fc.c.userID == nil || g == nil || !g.single {
		return nil
	}
	var out []*fzConn
	for o := range m.games[game] {
		if o != fc && o.c.userID != nil && *o.c.userID == *fc.c.userID {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b *fzConn) int { return strings.Compare(a.c.sid, b.c.sid) })
	return out
}

// command applies msg from fc at now.
func (m *fzHubModel) command(fc *fzConn, msg *commandMsg, now time.Time) {
	if !fc.live {
		return // a reader that has not noticed its session ended: ignored
	}
	fc.last, fc.warned, fc.expiresAt = now, false, time.Time{}
	fc.offList = !m.listed(fc.timeout)
	m.touches++
	fc.touched = m.touches
	cmd := msg.cmd
	in := fc.games[cmd.game]
	rivals := m.rivals(fc, cmd.game, now)
	switch {
	case cmd.kind == cmdHeartbeat:
		m.deliver(fc, msg.self)
	case cmd.kind == cmdJoin && !in && len(fc.games) >= m.cfg.maxGames:
		m.refuse(fc, encodeError(&protoError{code: codeTooManyGames, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin && !in && len(m.games[cmd.game])-len(rivals) >= m.cfg.maxSeats:
		m.refuse(fc, encodeError(&protoError{code: codeGameFull, id: cmd.id, message: "x"}))
	case cmd.kind == cmdJoin:
		for _, o := range rivals {
			m.unseat(o, cmd.game, presenceSuperseded, fc.c.sid)
		}
		var others []member
		for o := range m.games[cmd.game] {
			if o != fc {
				others = append(others, member{SID: o.c.sid, UserID: o.c.userID, Status: statusConnected})
			}
		}
		slices.SortFunc(others, func(a, b member) int { return strings.Compare(a.SID, b.SID) })
		members := append([]member{{SID: fc.c.sid, UserID: fc.c.userID, Status: statusConnected}}, others...)
		if !in {
			m.joinGame(fc, cmd.game, now)
		}
		m.deliver(fc, encode("game_joined", cmd.id, gameJoinedData{GameID: cmd.game.String(),
			gameView: m.view(cmd.game, now), Members: members}))
		if !in {
			m.broadcast(cmd.game, fc, msg.others)
			m.retime(fc, true)
		}
	case !in:
		m.refuse(fc, encodeError(&protoError{code: codeNotInGame, id: cmd.id, message: "x"}))
	case cmd.kind == cmdLeave:
		m.leaveGame(fc, cmd.game)
		m.deliver(fc, msg.self)
		m.broadcast(cmd.game, fc, msg.others)
		m.retime(fc, true)
	default:
		m.deliver(fc, withID(msg.others, cmd.id))
		m.broadcast(cmd.game, fc, msg.others)
	}
	m.dropSlow()
}

// put applies a validated PUT at now and reports whether it was taken (false:
// the seatless places are all taken by live settings).
func (m *fzHubModel) put(game uuid.UUID, p settingsPatch, now time.Time) bool {
	g := m.settingsOf(game, now)
	seated := len(m.games[game]) > 0
	if g == nil {
		if !seated && m.seatlessLive(now) >= m.cfg.settingsMax {
			return false
		}
		g = &fzSettings{gameSettings: gameSettings{game: game}}
		m.settings[game] = g
	}
	if !seated {
		m.seq++
		g.seatless, g.since, g.seq = true, now, m.seq
	}
	if p.state != nil {
		g.state = *p.state
	}
	if p.timeout != nil {
		g.timeout = *p.timeout
	}
	if p.single != nil {
		g.single = *p.single
	}
	m.broadcast(game, nil, encode("game_updated", "", gameUpdatedData{GameID: game.String(), gameView: viewOf(&g.gameSettings)}))
	for fc := range m.games[game] {
		m.retime(fc, false)
	}
	m.dropSlow()
	return true
}

// kick ends the seats of game that sid or user names, and returns how many.
func (m *fzHubModel) kick(game uuid.UUID, user *int64, sid string) int {
	var victims []*fzConn
	for fc := range m.games[game] {
		if fc.c.sid == sid || user != nil && fc.c.userID != nil && *fc.c.userID == *user {
			victims = append(victims, fc)
		}
	}
	slices.SortFunc(victims, func(a, b *fzConn) int { return strings.Compare(a.c.sid, b.c.sid) })
	for _, fc := range victims {
		m.unseat(fc, game, presenceKicked, "")
	}
	m.dropSlow()
	return len(victims)
}

// due is when a sweep first has something to do for fc.
func (m *fzHubModel) due(fc *fzConn) time.Time {
	switch {
	case fc.warned:
		return fc.expiresAt
	case m.cfg.expiryWarning > 0:
		return fc.last.Add(fc.timeout - m.cfg.expiryWarning)
	default:
		return fc.last.Add(fc.timeout)
	}
}

// sweep warns and expires as of now: each timeout's sessions, shortest
// timeout first, in order of activity, until the first that needs nothing;
// then those off the lists, soonest due first, while they are due; in steps
// of cfg.sweepStep looks with the slow consumers dropped after each step. A
// warning announces at least EXPIRY_WARNING; an expiry comes no sooner than
// it announced.
func (m *fzHubModel) sweep(now time.Time) {
	if m.cfg.sessionTimeout <= 0 {
		return
	}
	looked := 0
	look := func(fc *fzConn) bool {
		if looked == m.cfg.sweepStep { // the hub ends a step here and drops its slow consumers
			m.dropSlow()
			looked = 0
		}
		if !fc.live {
			return true // dropped as slow meanwhile: out of the idle list, never looked at
		}
		looked++
		end := fc.last.Add(fc.timeout)
		switch warning := m.cfg.expiryWarning; {
		case fc.warned:
			if !now.Before(fc.expiresAt) {
				m.end(fc, reasonExpired)
			}
		case warning > 0 && !now.Before(end.Add(-warning)):
			fc.warned, fc.expiresAt = true, laterOf(end, now.Add(warning))
			_, by := m.timeoutOf(fc)
			m.deliver(fc, encodeExpiring(now, fc.expiresAt, by))
		case warning == 0 && !now.Before(end):
			m.end(fc, reasonExpired)
		default:
			return false
		}
		return true
	}
	timeouts := append([]time.Duration{m.cfg.sessionTimeout}, slices.Collect(maps.Values(m.cfg.stateTimeouts))...)
	slices.Sort(timeouts)
	for _, t := range slices.Compact(timeouts) {
		var list []*fzConn
		for _, fc := range m.conns {
			if fc.live && !fc.offList && fc.timeout == t {
				list = append(list, fc)
			}
		}
		slices.SortFunc(list, func(a, b *fzConn) int { return a.touched - b.touched })
		for _, fc := range list {
			if !look(fc) {
				break
			}
		}
	}
	var late []*fzConn
	for _, fc := range m.conns {
		if fc.live && fc.offList && !m.due(fc).After(now) {
			late = append(late, fc)
		}
	}
	slices.SortFunc(late, func(a, b *fzConn) int {
		if c := m.due(a).Compare(m.due(b)); c != 0 {
			return c
		}
		return strings.Compare(a.c.sid, b.c.sid)
	})
	for _, fc := range late {
		look(fc)
	}
	m.dropSlow()
}

// fzCanon reduces a server frame to what the model predicts. The model builds
// every frame with the same encoders as the hub, so frames compare byte for
// byte; only an error's message is the hub's prose, kept as present or not.
func fzCanon(b []byte) string {
	if !bytes.HasPrefix(b, []byte(`{"type":"error"`)) {
		// The model does not sequence: offsets and epochs are the hub's.
		b = fzOffset.ReplaceAll(b, nil)
		return string(fzEpoch.ReplaceAll(b, []byte(`"epoch":"",`)))
	}
	var f struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
		Data struct {
			Code    string `json:"code"`
			Message any    `json:"message"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Sprintf("not JSON: %q", b)
	}
	msg, _ := f.Data.Message.(string)
	f.Data.Message = msg != ""
	out, _ := json.Marshal(f)
	return string(out)
}

// fzOffset and fzEpoch find what the hub adds to a frame that the model does
// not predict: an event's offset (first in its data) and game_joined's epoch
// and offset (the model writes "" and 0).
var (
	fzOffset = regexp.MustCompile(`"offset":[0-9]+,?`)
	fzEpoch  = regexp.MustCompile(`"epoch":"[^"]*",`)
)

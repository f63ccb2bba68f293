package main

import (
	"bytes"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The hub's side of the game backend's API (contract v2 §8): game settings,
// kicks, supersedes, and the idle timeout each session takes from its games.
// The HTTP handlers (api.go) validate and then ask the hub with the messages
// below; the hub answers on reply, a buffered channel, so it never waits.

// gameUpdateMsg applies a PUT's validated settings to game.
type gameUpdateMsg struct {
	game    uuid.UUID
	patch   settingsPatch
	reply   chan gameReply
	fetched bool // cluster mode: the settings Redis holds are applied here already
}

// gameQueryMsg asks for game's settings and members.
type gameQueryMsg struct {
	game  uuid.UUID
	reply chan gameReply
}

// kickMsg ends the seats in game of one user (userID) or of one session (sid).
type kickMsg struct {
	game   uuid.UUID
	userID *int64
	sid    string
	reply  chan int // the seats removed
}

// gameReply is the hub's answer to a gameUpdateMsg or a gameQueryMsg.
type gameReply struct {
	found    bool // the game has seats or settings
	full     bool // an update refused: the seatless settings are all taken
	view     gameView
	sessions int
	members  []apiMember // queries only
}

// ask sends m to h and waits for its answer on reply; ok is false once the
// hub has stopped, so no handler waits on a hub that will never answer.
func ask[T any](h *hub, m hubMsg, reply chan T) (v T, ok bool) {
	if !h.send(m) {
		return v, false
	}
	select {
	case v = <-reply:
		return v, true
	case <-h.done:
		return v, false
	}
}

// view is what members and the backend are told of game's settings.
func viewOf(g *gameSettings) gameView {
	v := gameView{SeatPolicy: g.policy()}
	if g == nil {
		return v
	}
	if g.state != "" {
		st := g.state
		v.State = &st
	}
	if g.timeout > 0 {
		ms := g.timeout.Milliseconds()
		v.IdleTimeoutMS = &ms
	}
	return v
}

// view returns the settings of game, which has a seat. Runs on the hub goroutine.
func (h *hub) view(game uuid.UUID) gameView {
	return viewOf(h.idx.settings.byGame[game])
}

// updateGame applies m: the settings change, every member hears game_updated
// (queued before the reply, so before the backend's 200), and every member
// whose idle timeout changes is given it. Runs on the hub goroutine.
func (h *hub) updateGame(m gameUpdateMsg) {
	if h.clusterUpdate(m) {
		return
	}
	seats := h.idx.seatsIn(m.game)
	g, ok := h.idx.settings.put(m.game, m.patch, seats > 0, time.Now())
	if !ok {
		m.reply <- gameReply{full: true}
		return
	}
	v := viewOf(g)
	if h.clustered() {
		// Sequenced whether or not this node holds the game: its members
		// may all sit elsewhere (Redis refuses it for a game with none).
		h.clusterSettingsPut(m.game, v)
		h.emit(m.game, nil, encode("game_updated", "", gameUpdatedData{GameID: m.game.String(), gameView: v}),
			"settings", presenceNote{}, "", false, nil)
		seats = h.seatsIn(m.game)
	} else {
		h.event(m.game, nil, encode("game_updated", "", gameUpdatedData{GameID: m.game.String(), gameView: v}))
	}
	for s := range h.idx.members(m.game) {
		h.retimeSession(s, false)
	}
	m.reply <- gameReply{found: true, view: v, sessions: seats}
}

// queryGame answers m with game's settings and members, sorted by sid.
// Runs on the hub goroutine.
func (h *hub) queryGame(m gameQueryMsg) {
	if h.clusterQuery(m) {
		return
	}
	now := time.Now()
	g := h.idx.settings.get(m.game, now)
	set := h.idx.members(m.game)
	if g == nil && len(set) == 0 {
		m.reply <- gameReply{}
		return
	}
	members := make([]apiMember, 0, len(set))
	for s := range set {
		members = append(members, apiMember{SID: s.sid, UserID: s.userID, Status: s.status(),
			IdleMS: now.Sub(s.lastActivity).Milliseconds()})
	}
	members = h.apiMembers(m.game, members)
	slices.SortFunc(members, func(a, b apiMember) int { return strings.Compare(a.SID, b.SID) })
	m.reply <- gameReply{found: true, view: viewOf(g), sessions: len(members), members: members}
}

// kick ends the seats m names; their sessions stay connected. Runs on the hub goroutine.
func (h *hub) kick(m kickMsg) {
	if h.clusterKick(m) {
		return
	}
	var victims []*session
	for s := range h.idx.members(m.game) {
		if m.sid != "" && s.sid == m.sid || m.userID != nil && s.userID != nil && *s.userID == *m.userID {
			victims = append(victims, s)
		}
	}
	slices.SortFunc(victims, func(a, b *session) int { return strings.Compare(a.sid, b.sid) })
	removed := len(victims)
	if h.clustered() {
		var remote []remoteMember
		for _, rm := range h.cl.remote[m.game] {
			if m.sid != "" && rm.sid == m.sid || m.userID != nil && rm.user != nil && *rm.user == *m.userID {
				remote = append(remote, rm)
			}
		}
		slices.SortFunc(remote, func(a, b remoteMember) int { return strings.Compare(a.sid, b.sid) })
		for _, rm := range remote {
			h.endRemoteSeat(m.game, rm, presenceKicked, "")
		}
		removed += len(remote)
	}
	for _, v := range victims {
		h.unseat(v, m.game, presenceKicked, "")
	}
	m.reply <- removed
}

// rivals returns the other sessions of s's user seated in game when its seat
// policy is single_seat: the seats a join or resume of s into game ends.
// Anonymous sessions have no rivals. Runs on the hub goroutine.
func (h *hub) rivals(s *session, game uuid.UUID) []*session {
	if s.userID == nil {
		return nil
	}
	if g := h.idx.settings.byGame[game]; g == nil || !g.single {
		return nil
	}
	var out []*session
	for o := range h.idx.byUser[*s.userID] {
		if o != s && h.idx.inGame(o, game) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b *session) int { return strings.Compare(a.sid, b.sid) })
	return out
}

// supersede ends the seats of rivals in game in favour of by. Runs on the hub goroutine.
func (h *hub) supersede(rivals []*session, game uuid.UUID, by *session) {
	for _, o := range rivals {
		h.unseat(o, game, presenceSuperseded, by.sid)
	}
	if h.clustered() {
		for _, rm := range h.remoteRivals(by, game) {
			h.endRemoteSeat(game, rm, presenceSuperseded, by.sid)
		}
	}
}

// supersedeAll ends, in every single_seat game s holds, the seats of s's
// user's other sessions: what a resume into those games does. Runs on the hub goroutine.
func (h *hub) supersedeAll(s *session) {
	games := make([]uuid.UUID, 0, len(s.games))
	for g := range s.games {
		games = append(games, g)
	}
	slices.SortFunc(games, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, g := range games {
		h.supersede(h.rivals(s, g), g, s)
	}
}

// unseat ends s's seat in game for reason (kicked, superseded by bySID): s
// is told game_left with the reason, the others hear left, and s takes the
// idle timeout of the games it still holds. Runs on the hub goroutine.
func (h *hub) unseat(s *session, game uuid.UUID, reason, bySID string) {
	h.deliver(s, encode("game_left", "", gameLeftData{GameID: game.String(), Reason: reason, BySID: bySID}))
	// Told before the seat goes, as every leave is, so that a game's last
	// seat ending is an event with an offset the webhook reports.
	h.presenceBy(game, s, presenceNote{"left", reason}, encodePresence(game, s.sid, s.userID, "left", reason), bySID)
	h.idx.leave(s, game)
	h.retimeSession(s, false)
	h.putRecord(s, false)
	h.forgetIfUnheld(game)
}

// retimeSession gives s the idle timeout its games set now; active says s
// was active in this hub step. Runs on the hub goroutine.
func (h *hub) retimeSession(s *session, active bool) {
	t, _ := h.timeoutOf(s)
	h.idx.retime(s, t, active)
}

// timeoutOf returns s's idle timeout, the largest of its games' (a game the
// backend gave no timeout counts as SESSION_TIMEOUT; in no game it is
// SESSION_TIMEOUT), and the game that sets it: of those whose own timeout it
// is, the lowest id; nil when none is (SESSION_TIMEOUT's). Runs on the hub goroutine.
func (h *hub) timeoutOf(s *session) (time.Duration, *uuid.UUID) {
	if len(s.games) == 0 {
		return h.cfg.sessionTimeout, nil
	}
	var t time.Duration
	var by *uuid.UUID
	for game := range s.games {
		own, timed := h.cfg.sessionTimeout, false
		if g := h.idx.settings.byGame[game]; g != nil && g.timeout > 0 {
			own, timed = g.timeout, true
		}
		switch {
		case own > t:
			t, by = own, nil
			fallthrough
		case own == t && timed && (by == nil || bytes.Compare(game[:], by[:]) < 0):
			if timed {
				id := game
				by = &id
			}
		}
	}
	return t, by
}

// timeoutGame returns the game that sets s's idle timeout, nil for none.
// Runs on the hub goroutine.
func (h *hub) timeoutGame(s *session) *uuid.UUID {
	_, by := h.timeoutOf(s)
	return by
}

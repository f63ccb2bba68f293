package main

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// A client's commands in the hub: heartbeat, join, leave and the game actions,
// each answered, or refused, and a join, leave or action fanned out to the
// game's other members as one sequenced event. Frames are queued without
// waiting; one that does not fit marks its session slow, to be dropped once
// the fan-out is over (hubdrop.go).

// command applies one client command. Runs on the hub goroutine.
func (h *hub) command(m commandMsg) {
	s := h.idx.sessions[m.sid]
	if s == nil || s.conn != m.c {
		return // the session ended, or another conn took it up; this reader has not noticed yet
	}
	now := time.Now()
	h.idx.touch(s, now)
	cmd := m.cmd
	exactlyOnce := cmd.id != "" && cmd.kind != cmdHeartbeat
	if exactlyOnce && h.retried(s, m, now) {
		return
	}
	var reply []byte // what the sender got for an action that ran
	var offset uint64
	switch cmd.kind {
	case cmdHeartbeat:
		h.deliver(s, m.self)
	case cmdJoin:
		reply = h.join(s, m)
	case cmdLeave:
		if !h.idx.inGame(s, cmd.game) {
			h.refuse(s, notInGame(cmd))
			return
		}
		reply = m.self
		h.deliver(s, reply)
		// Told before the seat goes, so that a game's last member leaving is
		// an event with an offset like any other (the webhook reports it).
		h.presence(cmd.game, s, m.note, m.others)
		h.idx.leave(s, cmd.game)
		h.retimeSession(s, true)
		h.putRecord(s, false)
		h.forgetIfUnheld(cmd.game)
	default: // the game actions: decisions and dice
		if !h.idx.inGame(s, cmd.game) {
			h.refuse(s, notInGame(cmd))
			return
		}
		if h.clustered() {
			h.clusterAction(s, m, exactlyOnce, now)
			return
		}
		framed := h.event(cmd.game, s, m.others)
		offset = h.idx.logs[cmd.game].last
		reply = withID(framed, cmd.id)
		h.deliver(s, reply)
	}
	if exactlyOnce && reply != nil {
		h.remember(s, m, reply, offset, m.results, now)
	}
}

// join puts s in a game, answers with the member list and tells the others.
// It returns the reply, or nil when the join was refused. Runs on the hub goroutine.
func (h *hub) join(s *session, m commandMsg) []byte {
	game := m.cmd.game
	rivals := h.rivals(s, game)
	if !h.idx.inGame(s, game) {
		if len(s.games) >= h.cfg.maxGames {
			h.refuse(s, encodeError(&protoError{code: codeTooManyGames, id: m.cmd.id,
				message: "a session may be in at most " + strconv.Itoa(h.cfg.maxGames) + " games"}))
			return nil
		}
		if h.seatsIn(game)-len(rivals)-len(h.remoteRivals(s, game)) >= h.cfg.maxSeats { // a superseded seat makes room
			h.refuse(s, encodeError(&protoError{code: codeGameFull, id: m.cmd.id,
				message: "game " + game.String() + " has all its " + strconv.Itoa(h.cfg.maxSeats) + " seats taken"}))
			return nil
		}
	}
	h.supersede(rivals, game, s)
	if h.clustered() && h.idx.join(s, game) {
		h.clusterJoin(s, m)
		return nil
	}
	if h.idx.join(s, game) {
		h.cfg.metrics.joined(h.idx.seatsIn(game))
		h.presence(game, s, m.note, m.others)
		h.retimeSession(s, true)
	}
	if h.joining(s, game) {
		return nil // its first join is still being sequenced: that reply is on its way
	}
	log := h.idx.logs[game]
	reply := encode("game_joined", m.cmd.id, gameJoinedData{GameID: game.String(), Epoch: log.epoch,
		Offset: log.last, Members: h.members(game, s), gameView: h.view(game)})
	h.deliver(s, reply)
	return reply
}

// members lists game's members for s: s first, the others by sid, so that a
// repeated join gets the very same reply. Runs on the hub goroutine.
func (h *hub) members(game uuid.UUID, s *session) []member {
	set := h.idx.members(game)
	list := make([]member, 0, len(set))
	list = append(list, member{SID: s.sid, UserID: s.userID, Status: statusConnected})
	for other := range set {
		if other != s {
			list = append(list, member{SID: other.sid, UserID: other.userID, Status: other.status()})
		}
	}
	if h.cl != nil {
		return h.clusterMembers(game, s, list)
	}
	slices.SortFunc(list[1:], func(a, b member) int { return strings.Compare(a.SID, b.SID) })
	return list
}

// event sequences, keeps and delivers one game event: shared, the event
// encoded without an offset, gets the game's next offset, goes into its
// history and to every member but except, and is returned so the caller can
// make except's own copy. A game nobody sits in any more has no events (nil).
// Runs on the hub goroutine.
func (h *hub) event(game uuid.UUID, except *session, shared []byte) []byte {
	if h.clustered() {
		h.emit(game, except, shared, "event", presenceNote{}, "", false, nil)
		return nil
	}
	log := h.idx.logs[game]
	if log == nil {
		return nil
	}
	framed := log.sequence(shared)
	for s := range h.idx.members(game) {
		if s != except {
			h.deliver(s, framed)
		}
	}
	return framed
}

// notInGame is the error for a command about a game the session is not in.
func notInGame(cmd command) []byte {
	return encodeError(&protoError{code: codeNotInGame, id: cmd.id, message: "not in game " + cmd.game.String()})
}

// refuse queues an error reply to s's own refused message, or drops it when
// s's queue is half full: a client's refused messages never make it slow.
func (h *hub) refuse(s *session, frame []byte) {
	if s.conn != nil {
		s.conn.out.offer(frame)
	}
}

// deliver queues frame for s without waiting. A frame that does not fit marks
// s as a slow consumer, to be dropped after the current fan-out. A frame for
// an away session alone is dropped; its games' events wait in their histories.
func (h *hub) deliver(s *session, frame []byte) {
	if s.conn != nil && !s.conn.out.push(frame) {
		h.slow = append(h.slow, s)
	}
}

package main

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

// An action sent with an id runs once: a client that retries it after a
// reconnect (it cannot know whether the first try ran) gets the reply it got
// the first time, marked dup, and nobody else hears anything. The memory
// belongs to the session, so it survives a resume; only sessions that send
// ids have one.

// actionDigest identifies what an action asks for, its type and data, so
// that an id reused for something else can be told from a retry.
func actionDigest(cmd command) [16]byte {
	h := sha256.New()
	var head [1 + 16]byte
	head[0] = byte(cmd.kind)
	copy(head[1:], cmd.game[:])
	h.Write(head[:])
	h.Write(cmd.decision)
	for _, d := range cmd.dice {
		h.Write(binary.AppendVarint(nil, int64(d)))
	}
	var sum [16]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// action is one executed action a session remembers: enough to give its
// sender the same reply again, and no more. A game event's reply is as large
// as the client's message (a megabyte), so for those only its offset and its
// dice are kept, and the reply is rebuilt from the retry, which carries the
// same data; join and leave keep their small replies whole.
type action struct {
	id      string
	digest  [16]byte
	at      time.Time
	reply   []byte // join_game, leave_game: the frame the sender got
	offset  uint64 // a game event: the offset it was given
	results []int  // roll_dice: what was rolled
	pending bool   // cluster mode: sequencing in Redis, offset not known yet
}

// actionMemory is a session's remembered actions, oldest first, at most max
// of them and none older than ttl. Hub-owned data.
type actionMemory struct {
	byID  map[string]*action
	order []*action
}

// find returns the action remembered under id, forgetting first those that
// have outlived ttl; nil when there is none.
func (m *actionMemory) find(id string, now time.Time, ttl time.Duration) *action {
	if m == nil {
		return nil
	}
	m.expire(now, ttl)
	return m.byID[id]
}

// remember records an executed action, forgetting the oldest beyond max.
func (m *actionMemory) remember(a *action, max int) {
	if m.byID == nil {
		m.byID = make(map[string]*action, 1)
	}
	m.byID[a.id] = a
	m.order = append(m.order, a)
	for len(m.order) > max {
		m.forgetOldest()
	}
}

// expire forgets the actions older than ttl.
func (m *actionMemory) expire(now time.Time, ttl time.Duration) {
	for len(m.order) > 0 && now.Sub(m.order[0].at) >= ttl {
		m.forgetOldest()
	}
}

// forgetOldest drops the oldest action.
func (m *actionMemory) forgetOldest() {
	a := m.order[0]
	m.order[0] = nil
	m.order = m.order[1:]
	if m.byID[a.id] == a {
		delete(m.byID, a.id)
	}
}

// empty reports whether nothing is remembered, so the session can let go of it.
func (m *actionMemory) empty() bool { return m == nil || len(m.order) == 0 }

// retried answers a command whose id s has already used, and reports whether
// it did: the same action again gets the remembered reply, marked dup, and
// runs no more; another action under the same id is refused. Runs on the hub
// goroutine.
func (h *hub) retried(s *session, m commandMsg, now time.Time) bool {
	a := s.actions.find(m.cmd.id, now, h.cfg.actionTTL)
	if s.actions.empty() {
		s.actions = nil // released as soon as it has nothing left to remember
	}
	switch {
	case a == nil:
		return false
	case a.digest == m.digest && a.pending:
		// Its first run is still being sequenced (cluster mode): the reply
		// to it is on its way, and this retry runs nothing.
		h.cfg.metrics.duplicate()
	case a.digest == m.digest && a.reply != nil:
		h.cfg.metrics.duplicate()
		h.deliver(s, withDup(a.reply))
	case a.digest == m.digest:
		h.cfg.metrics.duplicate()
		event := encodeEvent(m.cmd, s.sid, s.userID, a.results)
		h.deliver(s, withDup(withID(withOffset(event, a.offset), m.cmd.id)))
	default:
		h.refuse(s, encodeError(&protoError{code: codeIDReused, id: m.cmd.id,
			message: "this id named another action of this session; use a new id for a new action"}))
	}
	return true
}

// remember records that the action m ran: its reply, or for a game event
// the offset it was given and the dice rolled. Runs on the hub goroutine.
func (h *hub) remember(s *session, m commandMsg, reply []byte, offset uint64, results []int, now time.Time) {
	if h.cfg.actionMax <= 0 {
		return
	}
	if s.actions == nil {
		s.actions = &actionMemory{}
	}
	a := &action{id: m.cmd.id, digest: m.digest, at: now}
	switch m.cmd.kind {
	case cmdJoin, cmdLeave:
		a.reply = reply
	default:
		a.offset, a.results = offset, results
	}
	s.actions.remember(a, h.cfg.actionMax)
}

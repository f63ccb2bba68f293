package main

import (
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// Sessions that move between nodes. In cluster mode every resume claims its
// session from Redis, even one this node holds: the claim moves the record
// and the seats here in one script, and the mailbox reader then reads each
// game as Redis holds it, so the catch-up is the cluster's history whichever
// node the client was on. A session released to another node is forgotten
// here without a word to its games; one adopted from a dead node is away.

// clusterResume starts the resume m of conn fresh in cluster mode: the claim
// goes to Redis, and the answer (claimed) or its timeout finishes it.
// Runs on the hub goroutine.
func (h *hub) clusterResume(m resumeMsg, fresh *session) {
	tok := hashToken(m.req.token)
	if h.idx.byToken[tok] == fresh {
		h.cfg.metrics.resumed(resumeUnknown)
		h.refuse(fresh, encodeError(&protoError{code: codeResumeFailed, id: m.id, reason: resumeUnknown,
			message: "no session holds that token: it ended, its window passed, or it never existed"}))
		m.reply <- m.sid
		return
	}
	ref := fresh.sid
	p := &pendingResume{m: m}
	p.timer = time.AfterFunc(claimTimeout, func() { h.send(resumeTimeoutMsg{ref: ref}) })
	h.cl.resumes[ref] = p
	if !h.cl.b.push(claimOp{token: hex.EncodeToString(tok[:]), ref: ref, user: fresh.userID}) {
		h.cfg.metrics.bridgeFull()
		h.claimed(claimedMsg{ref: ref})
	}
}

// claimed finishes a claim: the session's record, now this node's, becomes
// a local session (away until the conn takes it), and the resume that asked
// for it goes on, or fails. Runs on the hub goroutine.
func (h *hub) claimed(m claimedMsg) {
	var s *session
	takeover := false
	if m.rec != nil {
		takeover = !m.rec.Away
		if s = h.idx.sessions[m.rec.SID]; s == nil {
			s = h.materialize(*m.rec, m.games)
		} else {
			takeover = s.conn != nil
			h.refreshGames(s, m.games)
		}
	}
	p := h.cl.resumes[m.ref]
	if p == nil {
		return // too late: the session stays here, away, and its window runs
	}
	delete(h.cl.resumes, m.ref)
	p.timer.Stop()
	fresh := h.idx.sessions[m.ref]
	fail := func(reason, message string) {
		h.cfg.metrics.resumed(reason)
		if fresh != nil && fresh.conn == p.m.c {
			h.refuse(fresh, encodeError(&protoError{code: codeResumeFailed, id: p.m.id, reason: reason, message: message}))
		}
		p.m.reply <- p.m.sid
	}
	switch {
	case fresh == nil || fresh.conn != p.m.c:
		p.m.reply <- p.m.sid // the conn is ending already
	case m.mismatch:
		fail(resumeUserMismatch, "the session belongs to another user than this connection's token")
	case s == nil:
		fail(resumeUnknown, "no session holds that token: it ended, its window passed, or it never existed")
	case !sameUser(s.userID, fresh.userID):
		fail(resumeUserMismatch, "the session belongs to another user than this connection's token")
	default:
		h.takeUp(p.m, fresh, s, takeover)
	}
}

// resumeTimedOut fails a resume that Redis did not answer in time. Runs on the hub goroutine.
func (h *hub) resumeTimedOut(m resumeTimeoutMsg) {
	p := h.cl.resumes[m.ref]
	if p == nil {
		return
	}
	if p.finish != nil {
		p.finish() // the session is taken up: answer with what is known
		return
	}
	if !p.again {
		// Asked a holder that has not answered: it may have died just as
		// it was asked (its mailbox still listed). A second claim finds
		// that out, within the contract's second.
		p.again = true
		tok := hashToken(p.m.req.token)
		if fresh := h.idx.sessions[m.ref]; fresh != nil && h.cl.b.push(claimOp{token: hex.EncodeToString(tok[:]), ref: m.ref, user: fresh.userID}) {
			ref := m.ref
			p.timer = time.AfterFunc(claimRetry, func() { h.send(resumeTimeoutMsg{ref: ref}) })
			return
		}
	}
	delete(h.cl.resumes, m.ref)
	h.cfg.metrics.resumed(resumeUnknown)
	if fresh := h.idx.sessions[m.ref]; fresh != nil && fresh.conn == p.m.c {
		h.refuse(fresh, encodeError(&protoError{code: codeResumeFailed, id: p.m.id, reason: resumeUnknown,
			message: "the session could not be found in time"}))
	}
	p.m.reply <- p.m.sid
}

// takeUp gives session s to m's conn: as resume does on one node, except
// that the back events are sequenced in Redis, and the resumed reply, whose
// offsets include them, waits for them; meanwhile s is gated, and what it
// would have got is in the mirrors it is caught up from. Runs on the hub goroutine.
func (h *hub) takeUp(m resumeMsg, fresh, s *session, takeover bool) {
	h.idx.remove(fresh.sid)
	h.endRecord(fresh)
	var away time.Duration
	if s.conn == nil {
		h.stopWindow(s)
		away = time.Since(s.awaySince)
		h.idx.setBack(s, m.c)
		if takeover {
			h.cfg.metrics.resumed(resumeTakeover)
		} else {
			h.cfg.metrics.resumed(resumeResumed)
			h.cfg.metrics.away(away, true)
		}
	} else {
		s.conn.stop(reasonTakenOver)
		s.conn = m.c
		h.cfg.metrics.resumed(resumeTakeover)
		takeover = true
	}
	own := make(map[uuid.UUID]uint64, len(s.games)) // each game's back event, which s is not sent
	ref := fresh.sid
	finished := false
	finish := func() {
		if finished {
			return
		}
		finished = true
		if p := h.cl.resumes[ref]; p != nil {
			p.timer.Stop()
			delete(h.cl.resumes, ref)
		}
		delete(h.cl.gates, s)
		if h.idx.sessions[s.sid] != s || s.conn != m.c {
			m.reply <- m.sid
			return
		}
		games, replay := h.clusterCatchUp(s, m.req.games, own)
		if !takeover {
			for i := range games {
				games[i].Offset = h.idx.logs[games[i].game].last
			}
		}
		out := s.conn.out
		out.force(encode("resumed", m.id, resumedData{SID: s.sid, UserID: s.userID, AwayMS: away.Milliseconds(), Games: games}))
		for _, frame := range replay {
			out.force(frame)
		}
		// What the mailbox still brings of what the client was just sent
		// (it was read from Redis first) does not reach it a second time.
		for g := range s.games {
			h.gateAt(s, g, h.idx.logs[g].last)
		}
		h.repeatWarning(s)
		h.moveToken(fresh, s)
		if s.conn != nil {
			h.supersedeAll(s)
		}
		h.putRecord(s, false)
		m.reply <- s.sid
	}
	if takeover || len(s.games) == 0 {
		finish()
		return
	}
	// The resumed reply waits for the back events' offsets, within a
	// deadline: one refused or lost must not leave the conn unanswered.
	p := &pendingResume{m: m, finish: finish}
	p.timer = time.AfterFunc(claimTimeout, func() { h.send(resumeTimeoutMsg{ref: ref}) })
	h.cl.resumes[ref] = p
	left := len(s.games)
	countDown := func() {
		if left--; left == 0 {
			finish()
		}
	}
	for g := range s.games {
		h.gate(s, g)
		game := g
		h.cl.fails[h.cl.ticket+1] = func(string) { countDown() } // the ticket the back's emit takes
		h.presenceThen(game, s, presenceNote{"back", ""}, encodeBack(game, s.sid, s.userID, away), "", func(e mailMsg) {
			own[game] = e.offset
			countDown()
		})
	}
}

// clusterCatchUp is catchUp with each game's own back event (own) left out
// of its replay: s is not sent its own presence. Runs on the hub goroutine.
func (h *hub) clusterCatchUp(s *session, positions map[uuid.UUID]gamePosition, own map[uuid.UUID]uint64) ([]resumedGame, [][]byte) {
	games := make([]resumedGame, 0, len(s.games))
	var replay [][]byte
	for g := range s.games {
		log := h.idx.logs[g]
		rg := resumedGame{game: g, GameID: g.String(), gameView: h.view(g), Epoch: log.epoch, Offset: log.last, Members: h.members(g, s)}
		if pos, ok := positions[g]; ok && pos.epoch == log.epoch {
			if missed, ok := log.since(pos.offset); ok {
				rg.Recovered = true
				for _, f := range missed {
					if back, mine := own[g]; !mine || offsetOf(f) != back {
						replay = append(replay, f)
					}
				}
			}
		}
		games = append(games, rg)
	}
	return games, replay
}

// materialize makes a record a local session, away, with the seats Redis
// still holds for it (games). Runs on the hub goroutine.
func (h *hub) materialize(r sessionRecord, games map[string]*fetchedGame) *session {
	s := h.adopt(r, false)
	h.refreshGames(s, games)
	for g := range s.games {
		if games[g.String()] == nil {
			h.idx.leave(s, g) // the game ended meanwhile
		}
	}
	h.retimeSession(s, false)
	return s
}

// refreshGames makes the mirrors of s's games what Redis holds, with the
// other nodes' members. Runs on the hub goroutine.
func (h *hub) refreshGames(s *session, games map[string]*fetchedGame) {
	h.resolvePending(s, games)
	for id, fg := range games {
		g, err := uuid.Parse(id)
		if err != nil || !h.idx.inGame(s, g) {
			continue
		}
		h.idx.logs[g].seed(fg.epoch, fg.last, fg.frames)
		if fg.settings != "" {
			var v gameView
			if json.Unmarshal([]byte(fg.settings), &v) == nil {
				h.applySettings(g, v)
			}
		}
		set := make(map[string]remoteMember, len(fg.members))
		for _, rm := range fg.members {
			if local := h.idx.sessions[rm.sid]; local == nil || !h.idx.inGame(local, g) {
				set[rm.sid] = rm
			}
		}
		h.cl.remote[g] = set
	}
}

// adoptAll makes a dead node's sessions this node's: away, in their games,
// for what is left of their windows; the connected ones are told away
// (timeout) to their games now. Runs on the hub goroutine.
func (h *hub) adoptAll(m adoptMsg) {
	for _, r := range m.records {
		if _, gone := h.cl.released[r.SID]; gone || h.idx.sessions[r.SID] != nil {
			continue
		}
		h.adopt(r, !r.Away)
	}
	clear(h.cl.released)
}

// adopt builds an away session from r. tell says it was connected on a
// node that died: its games hear it went away (timeout). Runs on the hub goroutine.
func (h *hub) adopt(r sessionRecord, tell bool) *session {
	now := time.Now()
	s := &session{sid: r.SID, userID: r.User, connectedAt: now}
	if tok, err := hex.DecodeString(r.Token); err == nil && len(tok) == len(s.token) {
		copy(s.token[:], tok)
	}
	h.idx.add(s, now)
	h.idx.setAway(s)
	s.awaySince, s.awayReason = now, presenceTimeout
	if r.Away {
		s.awaySince, s.awayReason = time.UnixMilli(r.Since), r.Reason
	}
	for _, a := range r.Actions {
		if s.actions == nil {
			s.actions = &actionMemory{}
		}
		act := &action{id: a.ID, at: time.UnixMilli(a.At), reply: a.Reply, offset: a.Offset, results: a.Results, pending: a.Pending}
		copy(act.digest[:], a.Digest)
		s.actions.remember(act, h.cfg.actionMax)
	}
	for _, id := range r.Games {
		if g, err := uuid.Parse(id); err == nil && len(s.games) < h.cfg.maxGames {
			h.idx.join(s, g)
			if tell && h.idx.seatsIn(g) == 1 {
				h.cl.b.unfollow(g.String()) // the mailbox starts this game afresh here
			}
			switch {
			case tell && h.clustered():
				h.presence(g, s, presenceNote{statusAway, s.awayReason}, encodeAway(g, s.sid, s.userID, s.awayReason, h.cfg.resumeWindow))
			case tell:
				h.cl.untold = append(h.cl.untold, untoldAway{game: g, s: s}) // told once Redis is up (engine)
			}
		}
	}
	h.retimeSession(s, false)
	s.gen++
	sid, gen := s.sid, s.gen
	left := h.cfg.resumeWindow - now.Sub(s.awaySince)
	s.window = time.AfterFunc(max(left, 0), func() { h.send(windowMsg{sid: sid, gen: gen}) })
	h.putRecord(s, false)
	return s
}

// release hands session sid to the node that claimed it: its conn, if any,
// is taken over, and the session is forgotten here without a word to its
// games, where it stays seated, held by the claimant. Runs on the hub goroutine.
func (h *hub) release(m releaseMsg) {
	s := h.idx.sessions[m.sid]
	if s == nil {
		// Not here (yet): a reap may have made it this node's in Redis
		// before its adoption reached the hub. The record Redis holds is
		// the session then; if there is none, the claimant hears it is gone.
		h.cl.b.push(moveOp{sid: m.sid, to: m.to, ref: m.ref, stored: true})
		if len(h.cl.released) < downMax {
			h.cl.released[m.sid] = struct{}{} // an adoption of it, still on its way, must not bring it back
		}
		return
	}
	rec := h.record(s)
	if s.conn != nil {
		s.conn.stop(reasonTakenOver)
	}
	h.stopWindow(s)
	h.stopToken(s)
	delete(h.cl.gates, s)
	games := make([]uuid.UUID, 0, len(s.games))
	for g := range s.games {
		games = append(games, g)
	}
	h.idx.remove(s.sid)
	for _, g := range games {
		if set := h.cl.remote[g]; set != nil {
			set[s.sid] = remoteMember{sid: s.sid, node: m.to, status: s.status(), user: s.userID}
		}
		h.forgetIfUnheld(g)
	}
	h.cl.b.push(moveOp{sid: m.sid, to: m.to, ref: m.ref, rec: rec})
}

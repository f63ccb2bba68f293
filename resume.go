package main

import (
	"crypto/sha256"
	"time"

	"github.com/google/uuid"
)

// A session outlives a lost connection: it is away, keeping its seats, for
// RESUME_WINDOW, and a new connection that presents its resume token takes it
// up again, with what it missed of each game. The token is a secret the
// server never keeps: sessions are found by its SHA-256.

// hashToken returns what the hub keeps of a resume token.
func hashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// resumeMsg asks the hub to give conn c, serving its own fresh session sid,
// the session req's token names. The hub answers on reply with the sid c
// serves from then on: the resumed one, or sid again when the resume failed
// (the failure itself is sent to the client as an error frame).
type resumeMsg struct {
	c     *conn
	sid   string
	id    string
	req   *resumeRequest
	reply chan string
}

// windowMsg says the resume window of session sid, away for the gen-th time,
// is over. A resume or an expiry that came first makes it a no-op.
type windowMsg struct {
	sid string
	gen uint64
}

// status is how s shows in a member list.
func (s *session) status() string {
	if s.conn == nil {
		return statusAway
	}
	return statusConnected
}

// goAway detaches s from its conn, which ends for r, keeps its seats, tells
// its games, and starts its window. Runs on the hub goroutine.
func (h *hub) goAway(s *session, r closeReason) {
	s.conn.stop(r)
	h.stopToken(s) // a token governs a connection; a resume brings its own
	h.idx.setAway(s)
	s.awaySince, s.awayReason = time.Now(), r.away
	s.gen++
	sid, gen := s.sid, s.gen
	s.window = time.AfterFunc(h.cfg.resumeWindow, func() { h.send(windowMsg{sid: sid, gen: gen}) })
	for g := range s.games {
		h.presence(g, s, presenceNote{statusAway, s.awayReason}, encodeAway(g, s.sid, s.userID, s.awayReason, h.cfg.resumeWindow))
	}
	h.putRecord(s, false)
}

// stopWindow stops s's window timer, if it is away. Runs on the hub goroutine.
func (h *hub) stopWindow(s *session) {
	if s.window != nil {
		s.window.Stop()
		s.window = nil
	}
}

// windowOver ends an away session whose window has passed: its games hear
// it left, for the reason it went away. Runs on the hub goroutine.
func (h *hub) windowOver(m windowMsg) {
	s := h.idx.sessions[m.sid]
	if s == nil || s.conn != nil || s.gen != m.gen {
		return // resumed, expired or ended meanwhile
	}
	s.window = nil
	h.drop(s, s.awayReason, closeReason{})
}

// resume gives m's conn the session its token names, or tells the client why
// not. On success the conn's own fresh session goes silently (it was in no
// game), an old conn still serving the session is told it was taken over,
// the others in an away session's games hear it is back, and the conn is
// sent resumed and then, in the same step, what it missed of each game it can
// be caught up on. Runs on the hub goroutine.
func (h *hub) resume(m resumeMsg) {
	fresh := h.idx.sessions[m.sid]
	if fresh == nil || fresh.conn != m.c {
		m.reply <- m.sid // the conn is ending already
		return
	}
	fail := func(reason, message string) {
		h.cfg.metrics.resumed(reason)
		h.refuse(fresh, encodeError(&protoError{code: codeResumeFailed, id: m.id, reason: reason, message: message}))
		m.reply <- m.sid
	}
	if h.cfg.resumeWindow <= 0 {
		fail(resumeDisabled, "this server keeps no session past its connection (RESUME_WINDOW=0)")
		return
	}
	if h.clustered() {
		h.clusterResume(m, fresh)
		return
	}
	s := h.idx.byToken[hashToken(m.req.token)]
	switch {
	case s == nil || s == fresh:
		fail(resumeUnknown, "no session holds that token: it ended, its window passed, or it never existed")
		return
	case !sameUser(s.userID, fresh.userID):
		fail(resumeUserMismatch, "the session belongs to another user than this connection's token")
		return
	}
	h.idx.remove(fresh.sid)
	wasAway := s.conn == nil
	var away time.Duration
	if wasAway {
		h.stopWindow(s)
		away = time.Since(s.awaySince)
		h.idx.setBack(s, m.c)
		h.cfg.metrics.resumed(resumeResumed)
		h.cfg.metrics.away(away, true)
	} else {
		s.conn.stop(reasonTakenOver) // a half-open socket or a duplicated tab: the others hear nothing
		s.conn = m.c
		h.cfg.metrics.resumed(resumeTakeover)
	}
	games, replay := h.catchUp(s, m.req.games)
	if wasAway {
		for g := range s.games {
			h.presence(g, s, presenceNote{"back", ""}, encodeBack(g, s.sid, s.userID, away))
		}
		for i := range games { // the client's position includes its own back event
			games[i].Offset = h.idx.logs[games[i].game].last
		}
	}
	out := s.conn.out
	out.force(encode("resumed", m.id, resumedData{SID: s.sid, UserID: s.userID, AwayMS: away.Milliseconds(), Games: games}))
	for _, frame := range replay {
		out.force(frame) // bounded by the histories, and never counted against the queue
	}
	h.repeatWarning(s)
	h.moveToken(fresh, s)
	if s.conn != nil { // a token already past its grace sends the session away again at once
		h.supersedeAll(s) // live frames, after what the client was sent as caught up
	}
	m.reply <- s.sid
}

// repeatWarning sends s's pending expiry warning to its new conn. The
// warning went to no conn (the session was away) or to the one a takeover
// ends: this conn hears it now, and still gets at least EXPIRY_WARNING
// (resume is not activity, so the expiry stands). Runs on the hub goroutine.
func (h *hub) repeatWarning(s *session) {
	if !s.warned {
		return
	}
	now := time.Now()
	at := laterOf(s.expiresAt, now.Add(h.cfg.expiryWarning))
	h.idx.warn(s, at)
	h.deliver(s, encodeExpiring(now, at, h.timeoutGame(s)))
}

// catchUp works out, for every game s holds, where it stands and whether the
// client's position in it can be caught up on, and returns the games for the
// resumed reply and the events to replay after it. Runs on the hub goroutine.
func (h *hub) catchUp(s *session, positions map[uuid.UUID]gamePosition) ([]resumedGame, [][]byte) {
	games := make([]resumedGame, 0, len(s.games))
	var replay [][]byte
	for g := range s.games {
		log := h.idx.logs[g]
		rg := resumedGame{game: g, GameID: g.String(), gameView: h.view(g), Epoch: log.epoch, Offset: log.last, Members: h.members(g, s)}
		if pos, ok := positions[g]; ok && pos.epoch == log.epoch {
			if missed, ok := log.since(pos.offset); ok {
				rg.Recovered = true
				replay = append(replay, missed...)
			}
		}
		games = append(games, rg)
	}
	return games, replay
}

// sameUser reports whether two sessions belong to one user: the same id, or
// both anonymous.
func sameUser(a, b *int64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

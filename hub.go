package main

import (
	"math/rand/v2"
	"time"
)

// hubMsg is anything the hub accepts on its inbox. Every change to sessions and
// games, and every question about them, is one of the types below.
type hubMsg any

// registerMsg adds a connection's session. The hub answers on reply: false
// means the session was refused (the hub is stopping, or the sid is taken).
type registerMsg struct {
	c     *conn
	reply chan bool
}

// unregisterMsg says the conn c, serving session sid, has ended for reason.
// For a session the hub already removed, or that another conn has taken up
// since, it is a no-op.
type unregisterMsg struct {
	c      *conn
	sid    string
	reason closeReason
}

// commandMsg carries one valid client command from conn c, serving session
// sid. The reader has already encoded whatever frames can be known without
// the hub's state, so the hub does little JSON work on the hot path: self is
// the sender's reply where it does not depend on the hub, others the event
// every other member of the command's game gets (before its offset).
type commandMsg struct {
	c       *conn
	sid     string
	cmd     command
	self    []byte
	others  []byte
	note    presenceNote // what others says, when it is a presence (join and leave)
	digest  [16]byte     // of an action sent with an id
	results []int        // roll_dice: the dice the reader rolled
}

// sweepMsg asks the hub to warn and expire idle sessions as of now.
type sweepMsg struct {
	now time.Time
}

// statsRequest asks for a snapshot of the hub's counts for /health/connections.
// have is the version of the seat counts the caller holds already: when the
// hub's are the same, it sends no new copy of them.
type statsRequest struct {
	have  uint64
	reply chan stats
}

// noSeats, as a statsRequest's have, asks for the counts without the seat
// counts: no copy-on-write snapshot, so nothing for the hub to copy later.
const noSeats = ^uint64(0)

// shutdownMsg asks the hub to stop every connection with going-away and exit.
type shutdownMsg struct{}

// stats is a snapshot of the hub's counts at one instant. seats is shared
// with the hub copy-on-write, so the caller may read it but never write it.
type stats struct {
	TotalSessions int
	Connected     int
	Away          int
	UniqueUsers   int
	ActiveGames   int
	version       uint64        // of the seat counts
	seats         *seatSnapshot // nil when the caller has this version already
}

// hubConfig is the part of the configuration the hub decides with.
type hubConfig struct {
	sessionTimeout time.Duration // 0 turns expiry off
	expiryWarning  time.Duration // 0 turns the warning off
	maxGames       int           // games one session may be in
	maxSeats       int           // seats one game holds
	sweepStep      int           // sessions one sweep step looks at; 0 means defaultSweepStep
	retrySpread    time.Duration // at shutdown, each conn's retry_after is drawn from [0, this)
	resumeWindow   time.Duration // how long a lost session stays away; 0: it ends at once, as in protocol 1
	historyFrames  int           // events each game keeps; 0 means the contract's default
	historyBytes   int           // bytes of events each game keeps; 0 means the contract's default
	actionTTL      time.Duration // how long an executed action's id is remembered
	actionMax      int           // action ids remembered per session
	tokenWarning   time.Duration // token_expiring goes out this long before a token's exp
	tokenGrace     time.Duration // a conn still on an expired token is closed this long after its exp
	webhook        *webhook      // hears every presence event; nil without WEBHOOK_URL
	// the idle timeout of each game state the backend may set (GAME_STATE_TIMEOUTS)
	stateTimeouts map[string]time.Duration
	settingsTTL   time.Duration // seatless settings are kept this long; 0 means the contract's hour
	settingsMax   int           // seatless settings kept at most; 0 means the contract's 100 000
	metrics       *metrics      // counts what the hub does; nil counts nothing
	bridge        *bridge       // cluster mode's Redis side; nil on one node
}

// hubBatch bounds how many queued messages the hub handles per wake-up, so a
// busy inbox is drained without a scheduler round trip per message.
const hubBatch = 256

// defaultSweepStep bounds the sessions one step of a sweep looks at. Expiring 10,000
// idle sessions at once held the hub for 160 ms; in steps of this size, with
// a batch of the inbox between two steps, no heartbeat waits for a whole sweep.
const defaultSweepStep = 128

// hub is the one goroutine that owns every session, user and game map.
type hub struct {
	// set at construction
	cfg   hubConfig
	inbox chan hubMsg
	done  chan struct{} // closed when run returns

	// owned by the hub goroutine
	cl        *clusterState // nil on one node
	idx       *index
	slow      []*session // sessions whose queue overflowed during the current message
	sweeping  bool       // a sweep has steps left
	sweepAt   time.Time  // the time the current sweep judges idleness by
	sweepList int        // which idle list the sweep walks; past the lists, the heap, then the settings
}

// newHub returns a hub ready to run.
func newHub(cfg hubConfig, inboxSize int) *hub {
	if cfg.sweepStep <= 0 {
		cfg.sweepStep = defaultSweepStep
	}
	h := &hub{
		cfg:   cfg,
		inbox: make(chan hubMsg, inboxSize),
		done:  make(chan struct{}),
	}
	h.idx = h.newIndex()
	if cfg.bridge != nil {
		h.cl = newClusterState(cfg.bridge)
	}
	return h
}

// newIndex returns an empty index whose games keep the configured history.
func (h *hub) newIndex() *index {
	x := newIndex()
	if h.cfg.historyFrames > 0 {
		x.historyFrames = h.cfg.historyFrames
	}
	if h.cfg.historyBytes > 0 {
		x.historyBytes = h.cfg.historyBytes
	}
	listed := make([]time.Duration, 0, len(h.cfg.stateTimeouts))
	for _, t := range h.cfg.stateTimeouts {
		listed = append(listed, t)
	}
	x.setTimeouts(h.cfg.sessionTimeout, h.cfg.expiryWarning, listed)
	x.settings = newSettingsStore(h.cfg.settingsTTL, h.cfg.settingsMax)
	return x
}

// send hands m to the hub, or reports false once the hub has stopped.
func (h *hub) send(m hubMsg) bool {
	// Checked alone first: once the hub is gone its buffered inbox would still
	// take messages, and a two-way select picks at random.
	select {
	case <-h.done:
		return false
	default:
	}
	select {
	case h.inbox <- m:
		return true
	case <-h.done:
		return false
	}
}

// register adds c's session and reports whether the hub took it.
func (h *hub) register(c *conn) bool {
	reply := make(chan bool, 1)
	if !h.send(registerMsg{c: c, reply: reply}) {
		return false
	}
	select {
	case ok := <-reply:
		return ok
	case <-h.done:
		return false
	}
}

// stats asks the hub for a snapshot; ok is false once the hub has stopped.
// have is the version of the seat counts the caller holds (0 for none).
func (h *hub) stats(have uint64) (s stats, ok bool) {
	reply := make(chan stats, 1)
	if !h.send(statsRequest{have: have, reply: reply}) {
		return stats{}, false
	}
	select {
	case s = <-reply:
		return s, true
	case <-h.done:
		return stats{}, false
	}
}

// run is the hub goroutine. It returns after a shutdownMsg. Each turn handles
// up to hubBatch messages, then one step of a sweep in progress, so neither a
// busy inbox nor a large sweep holds off the other.
func (h *hub) run() {
	defer close(h.done)
	for {
		// A turn is timed from the message that wakes the hub, not from the
		// wait for it: the step histogram is how long the hub is busy.
		var start time.Time
		if !h.sweeping {
			m := <-h.inbox
			start = time.Now()
			if !h.handle(m) {
				return
			}
		} else {
			start = time.Now()
		}
	drain:
		for range hubBatch {
			select {
			case m := <-h.inbox:
				if !h.handle(m) {
					return
				}
			default:
				break drain
			}
		}
		if h.sweeping {
			h.sweepSome()
			h.dropSlow()
		}
		h.cfg.metrics.hubTurn(time.Since(start))
	}
}

// handle applies one message and reports whether the hub goes on. Runs on the hub goroutine.
func (h *hub) handle(m hubMsg) bool {
	switch m := m.(type) {
	case *commandMsg:
		h.command(*m)
	case registerMsg:
		s, now := newSession(m.c), time.Now()
		ok := h.idx.add(s, now)
		m.reply <- ok
		if ok {
			h.armToken(s, now)
			h.putRecord(s, true)
		}
	case unregisterMsg:
		if s := h.idx.sessions[m.sid]; s != nil && s.conn == m.c {
			h.lost(s, m.reason)
		}
	case resumeMsg:
		h.resume(m)
	case windowMsg:
		h.windowOver(m)
	case tokenMsg:
		h.tokenDue(m)
	case refreshMsg:
		h.refresh(m)
	case sweepMsg:
		// A sweep still in progress starts over, judged by the newer time.
		if h.cfg.sessionTimeout > 0 {
			h.sweepAt, h.sweeping, h.sweepList, h.idx.cursor = m.now, true, 0, h.idx.lists[0].oldest
		}
	case statsRequest:
		m.reply <- h.snapshot(m.have)
	case countsRequest:
		m.reply <- h.counts()
	case gameUpdateMsg:
		h.updateGame(m)
	case gameQueryMsg:
		h.queryGame(m)
	case kickMsg:
		h.kick(m)
	case gameDetailsRequest:
		h.gameDetails(m)
	case mailMsg:
		h.mail(m)
	case claimedMsg:
		h.claimed(m)
	case releaseMsg:
		h.release(m)
	case adoptMsg:
		h.adoptAll(m)
	case engineMsg:
		h.engine(m)
	case unsentMsg:
		h.unsent(m)
	case resumeTimeoutMsg:
		h.resumeTimedOut(m)
	case clusterCountsRequest:
		h.clusterCounts(m)
	case kickLookupMsg:
		h.kickLookedUp(m)
	case updateLookupMsg:
		h.updateLookedUp(m)
	case refusedMsg:
		h.refused(m)
	case shutdownMsg:
		if h.cl == nil {
			h.shutdown()
			return false
		}
		// Even with Redis away: another node adopts the sessions once it
		// answers. The hub stays a moment for its hand-over's events to
		// come back sequenced, so the webhook hears them with their offsets.
		h.handOver()
	case handOverDue:
	}
	h.dropSlow()
	return !h.handedOver()
}

// newSession builds the hub's record for a freshly accepted conn.
func newSession(c *conn) *session {
	return &session{sid: c.sid, userID: c.userID, connectedAt: c.connectedAt, remote: c.remote, token: c.token, conn: c,
		tok: newTokenClock(c.tokenExp)}
}

// snapshot returns the counts health reports: a cheap copy-on-write view of
// the seat counts, or none when the caller's version is current. Runs on the
// hub goroutine.
func (h *hub) snapshot(have uint64) stats {
	st := stats{
		TotalSessions: len(h.idx.sessions),
		Connected:     len(h.idx.sessions) - h.idx.away,
		Away:          h.idx.away,
		UniqueUsers:   len(h.idx.byUser),
		ActiveGames:   len(h.idx.byGame),
		version:       h.idx.version,
	}
	if have != h.idx.version && have != noSeats {
		st.seats = h.idx.seats.snapshot()
	}
	return st
}

// shutdown stops every conn with going-away and forgets every session: the
// unregisters that follow find nothing. Runs on the hub goroutine.
func (h *hub) shutdown() {
	h.shutdownPresence()
	h.cfg.metrics.sessionEnded(reasonShutdown.word, len(h.idx.sessions))
	for _, s := range h.idx.sessions {
		h.stopWindow(s)
		h.stopToken(s)
		if s.conn != nil {
			// Each its own delay, so that the clients do not all come back at once.
			s.conn.stop(reasonShutdown.withRetry(randDuration(h.cfg.retrySpread)))
		} else {
			h.cfg.metrics.away(time.Since(s.awaySince), false) // its window ends here
		}
	}
	h.idx = h.newIndex()
	h.slow = nil
	h.sweeping = false
	h.idx.cursor = nil
}

// randDuration returns a duration drawn uniformly from [0, d); 0 when d is not positive.
func randDuration(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

package main

import (
	"time"

	"github.com/google/uuid"
)

// session is the hub's record of one client's session. It outlives its
// connection: while it is away it has no conn, and a resume gives it another.
// Every field is owned by the hub goroutine; the conn holds no pointer back to it.
type session struct {
	// set at construction
	sid         string
	userID      *int64 // nil for an anonymous session
	connectedAt time.Time
	remote      string
	token       [32]byte // SHA-256 of its resume token: the token itself is never kept

	// owned by the hub goroutine
	conn         *conn // nil while the session is away
	lastActivity time.Time
	warned       bool          // session_expiring sent in the current idle period
	expiresAt    time.Time     // what that warning announced: the session expires at the first sweep from then on
	timeout      time.Duration // its idle timeout: the largest of its games' (idle.go)
	games        map[uuid.UUID]struct{}

	// while away: since when, why, and the window's timer. gen tells the
	// timer's message from an earlier window's, which may arrive late.
	awaySince  time.Time
	awayReason string
	window     *time.Timer
	gen        uint64

	actions *actionMemory // nil until the session sends an action with an id
	tok     *tokenClock   // nil unless connected on a token with an exp

	// idle-list links: the sessions of one timeout in order of last activity,
	// oldest first, so a sweep touches only the sessions it warns or expires;
	// or, while off the lists, its place in the index's heap (1-based, 0 when
	// it is on a list).
	older, newer *session
	heapAt       int
}

// index holds every session and the two lookups built on them. Its invariants,
// checked by checkIndex in the tests after every step:
//   - every session in byUser and byGame is in sessions, and vice versa for its user and games;
//   - no empty user set and no empty game set survives;
//   - every session is on exactly one idle list, the one of its timeout, or
//     in the heap; each list is ordered by lastActivity;
//   - seats counts exactly the members of each game in byGame;
//   - settings holds every game's settings (gamesettings.go).
//
// It is hub-owned data: only the hub goroutine calls its methods.
type index struct {
	sessions map[string]*session
	byUser   map[int64]map[*session]struct{}
	byGame   map[uuid.UUID]map[*session]struct{}
	byToken  map[[32]byte]*session
	logs     map[uuid.UUID]*gameLog // every game in byGame has one, and no other
	seats    *seatCounts            // byGame's sizes, in a form health can copy cheaply
	away     int                    // sessions with no conn
	// historyHeld is the bytes every game's history holds, summed as the
	// rings change, so that the metrics never walk the games for it.
	historyHeld int

	// set at construction: the history each game keeps
	historyFrames, historyBytes int

	// version changes whenever a count health reports may have changed, so
	// health can tell that what it rendered last is still true.
	version uint64

	settings *settingsStore

	// the idle lists, by timeout (idle.go); base is the one of a session in no game
	lists       []*idleList
	byTimeout   map[time.Duration]*idleList
	base        *idleList
	baseTimeout time.Duration
	late        lateHeap

	// cursor is the session a sweep in progress looks at next in the list it
	// walks, nil when it walks none. Whatever takes a session out of its list
	// (removal, activity, a new timeout) moves the cursor on to the next newer
	// one, so a sweep split into steps never skips a session nor looks at one
	// twice.
	cursor *session
}

// newIndex returns an empty index.
func newIndex() *index {
	x := &index{
		sessions: make(map[string]*session),
		byUser:   make(map[int64]map[*session]struct{}),
		byGame:   make(map[uuid.UUID]map[*session]struct{}),
		byToken:  make(map[[32]byte]*session),
		logs:     make(map[uuid.UUID]*gameLog),
		seats:    newSeatCounts(),
		settings: newSettingsStore(0, 0),

		historyFrames: 256, historyBytes: 256 << 10, // the contract's defaults; the hub sets its own
		version: 1, // a caller that holds nothing holds version 0
	}
	x.setTimeouts(0, 0, nil) // one list; the hub gives its own
	return x
}

// add records a new session as active now. It reports false, changing nothing,
// when the sid is already taken.
func (x *index) add(s *session, now time.Time) bool {
	if _, dup := x.sessions[s.sid]; dup {
		return false
	}
	s.lastActivity = now
	s.games = nil
	s.timeout = x.baseTimeout
	x.sessions[s.sid] = s
	if s.token != ([32]byte{}) {
		x.byToken[s.token] = s
	}
	x.version++
	if s.userID != nil {
		set := x.byUser[*s.userID]
		if set == nil {
			set = make(map[*session]struct{}, 1)
			x.byUser[*s.userID] = set
		}
		set[s] = struct{}{}
	}
	x.place(s)
	return true
}

// remove forgets a session everywhere and returns the games it was in, so the
// caller can tell their members. Removing an unknown session is a no-op.
func (x *index) remove(sid string) (*session, []uuid.UUID) {
	s, ok := x.sessions[sid]
	if !ok {
		return nil, nil
	}
	delete(x.sessions, sid)
	if x.byToken[s.token] == s {
		delete(x.byToken, s.token)
	}
	if s.conn == nil {
		x.away--
	}
	x.version++
	if s.userID != nil {
		set := x.byUser[*s.userID]
		delete(set, s)
		if len(set) == 0 {
			delete(x.byUser, *s.userID)
		}
	}
	games := make([]uuid.UUID, 0, len(s.games))
	for g := range s.games {
		games = append(games, g)
		x.dropMember(g, s)
	}
	s.games = nil
	x.detach(s)
	return s, games
}

// join puts s in game and reports whether it was newly added.
func (x *index) join(s *session, game uuid.UUID) bool {
	if _, in := s.games[game]; in {
		return false
	}
	if s.games == nil {
		s.games = make(map[uuid.UUID]struct{}, 1)
	}
	s.games[game] = struct{}{}
	set := x.byGame[game]
	if set == nil {
		set = make(map[*session]struct{}, 4)
		x.byGame[game] = set
		log := newGameLog(x.historyFrames, x.historyBytes) // a new game: a new epoch
		log.held = &x.historyHeld
		x.logs[game] = log
		x.settings.seated(game, time.Now())
	}
	set[s] = struct{}{}
	x.seats.add(game, 1)
	x.version++
	return true
}

// leave takes s out of game and reports whether it was there.
func (x *index) leave(s *session, game uuid.UUID) bool {
	if _, in := s.games[game]; !in {
		return false
	}
	delete(s.games, game)
	if len(s.games) == 0 {
		s.games = nil
	}
	x.dropMember(game, s)
	return true
}

// dropMember removes s from game's member set, dropping the set when it empties.
func (x *index) dropMember(game uuid.UUID, s *session) {
	set := x.byGame[game]
	delete(set, s)
	if len(set) == 0 {
		delete(x.byGame, game)
		x.historyHeld -= x.logs[game].bytes
		delete(x.logs, game) // its history dies with its last seat
		x.settings.emptied(game, time.Now())
	}
	x.seats.add(game, -1)
	x.version++
}

// inGame reports whether s is a member of game.
func (x *index) inGame(s *session, game uuid.UUID) bool {
	_, in := s.games[game]
	return in
}

// setAway records that s lost its conn; setBack that it has one again.
func (x *index) setAway(s *session) { s.conn = nil; x.away++; x.version++ }

// setBack gives an away session the conn c.
func (x *index) setBack(s *session, c *conn) { s.conn = c; x.away--; x.version++ }

// seatsIn returns how many seats game has.
func (x *index) seatsIn(game uuid.UUID) int {
	return len(x.byGame[game])
}

// members returns game's member set; nil when nobody is in it.
func (x *index) members(game uuid.UUID) map[*session]struct{} {
	return x.byGame[game]
}

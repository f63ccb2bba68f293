package main

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The game backend sets, per game, a state, an idle timeout and a seat
// policy (contract v2 §8). Settings may come before the game's first seat, so
// they live beside the index's games rather than in them: kept for as long as
// the game has a seat, and for settingsTTL after it has none. Seatless
// settings are the one thing a caller can make the server hold without a
// connection, so their number is bounded.

// Bounds of the settings store and of an idle timeout (contract v2 §8).
const (
	defaultSettingsTTL = time.Hour // seatless settings are kept this long
	defaultSettingsMax = 100_000   // at most this many seatless games' settings
	maxIdleTimeout     = 24 * time.Hour
	minServiceToken    = 32 // characters of SERVICE_TOKEN, when set
)

// Seat policies.
const (
	seatMulti  = "multi_seat"
	seatSingle = "single_seat"
)

// stateName is what a state's name may be, in GAME_STATE_TIMEOUTS and in a PUT.
var stateName = regexp.MustCompile(`^[a-z_]{1,32}$`)

// parseStateTimeouts reads GAME_STATE_TIMEOUTS: comma-separated name=duration
// entries, each longer than EXPIRY_WARNING (or the warning could never come
// before the expiry) and at most 24 h. Empty means no state has a timeout of
// its own: the backend must then give idle_timeout_ms with every state.
func parseStateTimeouts(spec string, warning time.Duration) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	if strings.TrimSpace(spec) == "" {
		return out, nil
	}
	for _, entry := range strings.Split(spec, ",") {
		name, value, ok := strings.Cut(strings.TrimSpace(entry), "=")
		if !ok || !stateName.MatchString(name) {
			return nil, fmt.Errorf("GAME_STATE_TIMEOUTS entry %q is not name=duration with a name of 1 to 32 of a-z and _", entry)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("GAME_STATE_TIMEOUTS names state %q twice", name)
		}
		d, err := time.ParseDuration(value)
		switch {
		case err != nil:
			return nil, fmt.Errorf("GAME_STATE_TIMEOUTS entry %q: %q is not a duration", entry, value)
		case d <= warning:
			return nil, fmt.Errorf("GAME_STATE_TIMEOUTS entry %q must be longer than EXPIRY_WARNING (%s)", entry, warning)
		case d > maxIdleTimeout:
			return nil, fmt.Errorf("GAME_STATE_TIMEOUTS entry %q must be at most 24h", entry)
		}
		out[name] = d
	}
	return out, nil
}

// gameSettings is what the backend set for one game. The zero value is a game
// the backend never set: no state, no timeout of its own, multi_seat.
type gameSettings struct {
	game    uuid.UUID
	state   string        // "" for none
	timeout time.Duration // 0 for none: the game counts as SESSION_TIMEOUT
	single  bool          // seat_policy single_seat

	// while the game has no seat: since when, and its place in the store's
	// seatless list (oldest first), which a sweep and the bound walk
	seatless   bool
	since      time.Time
	prev, next *gameSettings
}

// policy is the seat policy's wire name.
func (g *gameSettings) policy() string {
	if g != nil && g.single {
		return seatSingle
	}
	return seatMulti
}

// settingsPatch is a validated PUT: the fields it sets, nil for those it leaves.
type settingsPatch struct {
	state   *string
	timeout *time.Duration
	single  *bool
}

// settingsStore holds every game's settings. Its invariants, checked by
// checkSettings in the tests: every seatless entry is in the seatless list,
// oldest first, and no more than max of them; an entry with seats is not in
// it. Hub-owned data: only the hub goroutine calls its methods.
type settingsStore struct {
	// set at construction
	ttl time.Duration
	max int

	byGame     map[uuid.UUID]*gameSettings
	head, tail *gameSettings // seatless entries, oldest first
	seatless   int
}

// newSettingsStore returns an empty store keeping seatless settings for ttl,
// at most max of them (0 for either: the contract's bound).
func newSettingsStore(ttl time.Duration, max int) *settingsStore {
	max = hubConfig{settingsMax: max}.seatlessMax()
	if ttl <= 0 {
		ttl = defaultSettingsTTL
	}
	return &settingsStore{ttl: ttl, max: max, byGame: map[uuid.UUID]*gameSettings{}}
}

// get returns game's settings, nil when it has none: never set, or seatless
// for longer than ttl (forgotten now, whether or not a sweep got to it).
func (st *settingsStore) get(game uuid.UUID, now time.Time) *gameSettings {
	g := st.byGame[game]
	if g != nil && g.seatless && !now.Before(g.since.Add(st.ttl)) {
		st.forget(g)
		return nil
	}
	return g
}

// put applies p to game's settings and returns them. A game that has no
// settings yet and no seat takes a seatless place: when max are taken by
// live ones, put changes nothing and reports false, so the caller can say so
// (evicting another game's settings to make room would break the hour promised
// to it). A PUT to a seatless game renews its hour.
func (st *settingsStore) put(game uuid.UUID, p settingsPatch, seated bool, now time.Time) (*gameSettings, bool) {
	g := st.get(game, now)
	if g == nil {
		if !seated {
			for st.expireOne(now) {
			}
			if st.seatless >= st.max {
				return nil, false
			}
		}
		g = &gameSettings{game: game}
		st.byGame[game] = g
		if !seated {
			st.link(g, now)
		}
	} else if g.seatless {
		st.unlink(g)
		st.link(g, now)
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
	return g, true
}

// seated says game has its first seat: its settings stop aging.
func (st *settingsStore) seated(game uuid.UUID, now time.Time) {
	if g := st.get(game, now); g != nil && g.seatless {
		st.unlink(g)
	}
}

// emptied says game lost its last seat: its settings are kept for ttl from
// now. Nobody asked for this entry, so when the seatless places are all taken
// it is not refused: the oldest seatless entry, the one with the least of its
// hour left, makes room.
func (st *settingsStore) emptied(game uuid.UUID, now time.Time) {
	g := st.byGame[game]
	if g == nil || g.seatless {
		return
	}
	st.link(g, now)
	for st.seatless > st.max {
		st.forget(st.head)
	}
}

// expireOne forgets the oldest seatless entry if its time is up, and reports
// whether it did: one bounded step of a sweep.
func (st *settingsStore) expireOne(now time.Time) bool {
	if st.head == nil || now.Before(st.head.since.Add(st.ttl)) {
		return false
	}
	st.forget(st.head)
	return true
}

// forget drops g from the store.
func (st *settingsStore) forget(g *gameSettings) {
	if g.seatless {
		st.unlink(g)
	}
	delete(st.byGame, g.game)
}

// link appends g, seatless from now, at the young end of the seatless list.
func (st *settingsStore) link(g *gameSettings, now time.Time) {
	g.seatless, g.since = true, now
	g.prev, g.next = st.tail, nil
	if st.tail != nil {
		st.tail.next = g
	} else {
		st.head = g
	}
	st.tail = g
	st.seatless++
}

// unlink takes g out of the seatless list.
func (st *settingsStore) unlink(g *gameSettings) {
	if g.prev != nil {
		g.prev.next = g.next
	} else {
		st.head = g.next
	}
	if g.next != nil {
		g.next.prev = g.prev
	} else {
		st.tail = g.prev
	}
	g.prev, g.next, g.seatless = nil, nil, false
	st.seatless--
}

// seatlessMax is how many seatless games' settings the hub keeps.
func (c hubConfig) seatlessMax() int {
	if c.settingsMax > 0 {
		return c.settingsMax
	}
	return defaultSettingsMax
}

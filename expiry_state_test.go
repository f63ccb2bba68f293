package main

// Idle timeout by game state end to end (contract v2 §8), with a real
// janitor and short GAME_STATE_TIMEOUTS: a lobby member outlives
// SESSION_TIMEOUT, an in-progress member expires at its shorter timeout after
// its warning, and a session in two games follows the longer.

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

// rsExpiring is session_expiring as a client reads it.
type rsExpiring struct {
	ExpiresInMS int64   `json:"expires_in_ms"`
	ExpiresAt   string  `json:"expires_at"`
	GameID      *string `json:"game_id"`
}

// expiring reads the next frame, checks it is session_expiring naming game
// ("" for null), and returns it with the instant it announces.
func (c *rsClient) expiring(game string) (rsFrame, rsExpiring, time.Time) {
	c.t.Helper()
	f := c.next(waitFor)
	var e rsExpiring
	if f.Type != "session_expiring" {
		c.t.Fatalf("got %s, want session_expiring", f.raw)
	}
	e2eWire(c.t, f.frame, &e, "expires_in_ms", "expires_at", "game_id")
	if got := ""; e.GameID != nil && *e.GameID != game || e.GameID == nil && game != "" {
		if e.GameID != nil {
			got = *e.GameID
		}
		c.t.Fatalf("session_expiring names game %q, want %q", got, game)
	}
	at, err := time.Parse(time.RFC3339, e.ExpiresAt)
	if err != nil {
		c.t.Fatalf("expires_at %q is not RFC 3339: %v", e.ExpiresAt, err)
	}
	return f, e, at
}

func TestExpiryByGameState(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for real expiries, about 3 s")
	}
	const (
		sessionTimeout = 1500 * time.Millisecond
		warning        = 300 * time.Millisecond
		lobby          = 3 * time.Second
		inProgress     = 700 * time.Millisecond
	)
	cfg := apiConfig(t)
	cfg.SessionTimeout, cfg.ExpiryWarning, cfg.ExpiryCheckInterval = sessionTimeout, warning, 20*time.Millisecond
	cfg.stateTimeouts = map[string]time.Duration{"lobby": lobby, "in_progress": inProgress}
	s := startServer(t, cfg)
	state := func(game, st string) {
		if r := api(t, s, "PUT", "/api/games/"+game, `{"state":"`+st+`"}`); r.status != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", st, r.status, r.body)
		}
	}
	// Each its own games, so that nobody hears the others' ends.
	l1, l2, i1, i2 := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	state(l1, "lobby")
	state(l2, "lobby")
	state(i1, "in_progress")
	state(i2, "in_progress")
	lob, ip, both := rsJWTDial(t, s, "1"), rsJWTDial(t, s, "2"), rsJWTDial(t, s, "3")
	start := time.Now() // every last activity is after this
	lob.join(l1, "j")
	ip.join(i1, "j")
	both.join(i2, "j1")
	both.join(l2, "j2")

	// in_progress: warned no sooner than its timeout less the warning, for an
	// expiry at least the warning ahead, and expired then, well before
	// SESSION_TIMEOUT would have.
	f, e, at := ip.expiring(i1)
	if f.at.Before(start.Add(inProgress-warning)) || e.ExpiresInMS < warning.Milliseconds() {
		t.Errorf("in_progress member warned %s after its join for %d ms, want from %s on and at least %s ahead",
			f.at.Sub(start), e.ExpiresInMS, inProgress-warning, warning)
	}
	if d := at.Sub(f.at) - time.Duration(e.ExpiresInMS)*time.Millisecond; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("expires_at %s is %s off expires_in_ms %d", e.ExpiresAt, d, e.ExpiresInMS)
	}
	ip.expectGoodbye(waitFor, 4000, "expired", false)
	if ended := time.Now(); ended.Before(at) || ended.After(start.Add(sessionTimeout)) {
		t.Errorf("in_progress member expired %s after its join (announced %s), want from the announced time on, before %s",
			ended.Sub(start), at.Sub(start), sessionTimeout)
	}

	// lobby, and a session in a lobby and an in-progress game: both outlive
	// SESSION_TIMEOUT idle and are warned for the lobby game.
	for _, c := range []struct {
		who  *rsClient
		game string
	}{{lob, l1}, {both, l2}} {
		f, e, at := c.who.expiring(c.game)
		if f.at.Before(start.Add(lobby - warning)) {
			t.Errorf("lobby member warned %s after its join, want from %s on", f.at.Sub(start), lobby-warning)
		}
		if at.Before(start.Add(lobby)) || e.ExpiresInMS < warning.Milliseconds() {
			t.Errorf("lobby member told it expires %s after its join, in %d ms", at.Sub(start), e.ExpiresInMS)
		}
		c.who.expectGoodbye(waitFor, 4000, "expired", false)
		if ended := time.Now(); ended.Before(at) {
			t.Errorf("lobby member expired before the announced %s", e.ExpiresAt)
		}
	}
}

func TestExpiryWarningNamesNoGameForSessionTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a real expiry")
	}
	cfg := apiConfig(t)
	cfg.SessionTimeout, cfg.ExpiryWarning, cfg.ExpiryCheckInterval = 400*time.Millisecond, 200*time.Millisecond, 20*time.Millisecond
	cfg.stateTimeouts = map[string]time.Duration{"final": 300 * time.Millisecond}
	s := startServer(t, cfg)
	game := uuid.NewString()
	api(t, s, "PUT", "/api/games/"+game, `{"state":"final"}`)
	unset := uuid.NewString()
	c := rsJWTDial(t, s, "1")
	c.join(game, "j1")
	c.join(unset, "j2") // a game the backend never set counts as SESSION_TIMEOUT, the larger
	_, e, _ := c.expiring("")
	if b, _ := json.Marshal(e); e.GameID != nil {
		t.Fatalf("session_expiring %s, want game_id null", b)
	}
	c.expectGoodbye(waitFor, 4000, "expired", false)
}

package main

// Kicks and seat policies end to end (contract v2 §8): the seats a kick or a
// supersede ends, what each session and the others are told, and that the
// sessions themselves stay connected.

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

// rsGameLeft is game_left as a client reads it.
type rsGameLeft struct {
	GameID string `json:"game_id"`
	Reason string `json:"reason"`
	BySID  string `json:"by_sid"`
}

// gameLeft reads the next frame and checks it is game_left of game for
// reason (by bySID), with no id: the client did not ask for it.
func (c *rsClient) gameLeft(game, reason, bySID string) {
	c.t.Helper()
	f := c.expect("game_left")
	var l rsGameLeft
	keys := []string{"game_id", "reason"}
	if bySID != "" {
		keys = append(keys, "by_sid")
	}
	e2eWire(c.t, f.frame, &l, keys...)
	if f.ID != "" || l.GameID != game || l.Reason != reason || l.BySID != bySID {
		c.t.Fatalf("got %s, want game_left of %s reason %s by %q", f.raw, game, reason, bySID)
	}
	delete(c.games, game)
}

// kick posts a kick and returns how many seats it removed.
func kick(t *testing.T, s *testServer, game, body string) int {
	t.Helper()
	r := api(t, s, "POST", "/api/games/"+game+"/kick", body)
	var k struct {
		Removed *int `json:"removed"`
	}
	r.decode(t, &k)
	if r.status != http.StatusOK || k.Removed == nil {
		t.Fatalf("kick %s: %d %s", body, r.status, r.body)
	}
	return *k.Removed
}

func TestAPIKick(t *testing.T) {
	s := startServer(t, apiConfig(t))
	game := uuid.NewString()
	a, b, c := rsJWTDial(t, s, "1"), rsJWTDial(t, s, "1"), rsJWTDial(t, s, "2")
	rsJoinAll(t, game, a, b, c)

	// By user: each of its seats.
	if n := kick(t, s, game, `{"user_id":1}`); n != 2 {
		t.Fatalf("removed %d, want 2", n)
	}
	first, second := a, b
	if b.session.SID < a.session.SID { // kicked in sid order
		first, second = b, a
	}
	first.gameLeft(game, presenceKicked, "")
	second.presence(game, first.session.SID, "left", presenceKicked)
	second.gameLeft(game, presenceKicked, "")
	c.presence(game, first.session.SID, "left", presenceKicked)
	c.presence(game, second.session.SID, "left", presenceKicked)
	a.alive() // the sessions stay connected
	b.alive()
	// By sid.
	a.join(game, "again")
	c.presence(game, a.session.SID, "joined", "")
	if n := kick(t, s, game, `{"sid":"`+c.session.SID+`"}`); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	c.gameLeft(game, presenceKicked, "")
	a.presence(game, c.session.SID, "left", presenceKicked)
	c.alive()
	// Nobody to kick.
	for _, body := range []string{`{"sid":"` + c.session.SID + `"}`, `{"user_id":99}`} {
		if n := kick(t, s, game, body); n != 0 {
			t.Fatalf("kick %s removed %d, want 0", body, n)
		}
	}
	if n := kick(t, s, uuid.NewString(), `{"user_id":1}`); n != 0 {
		t.Fatalf("kick in an unknown game removed %d", n)
	}
	a.alive()
	rsEnd(t, s, a, b, c)
}

func TestAPIKickAnAwaySession(t *testing.T) {
	cfg := apiConfig(t)
	cfg.ResumeWindow, cfg.ActionIDTTL = 3*time.Second, 3*time.Second
	s := startServer(t, cfg)
	game := uuid.NewString()
	a, b := rsJWTDial(t, s, "1"), rsJWTDial(t, s, "2")
	epoch, _ := rsJoinAll(t, game, a, b)
	a.drop()
	b.presence(game, a.session.SID, "away", "disconnected")
	if n := kick(t, s, game, `{"sid":"`+a.session.SID+`"}`); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	b.presence(game, a.session.SID, "left", presenceKicked)
	// Its game_left was dropped with it away; the resume no longer lists the game.
	again := rsJWTDial(t, s, "1")
	if r := again.resume("r", a.session.ResumeToken, map[string]rsPos{game: {Epoch: epoch, Offset: 1}}, a); len(r.Games) != 0 {
		t.Fatalf("resumed into %+v after a kick", r.Games)
	}
	b.alive() // and b hears no back: a is no member any more
	rsEnd(t, s, again, b)
}

func TestAPISeatPolicy(t *testing.T) {
	s := startServer(t, apiConfig(t))
	game := uuid.NewString()
	watcher := rsJWTDial(t, s, "9")
	a, b := rsJWTDial(t, s, "1"), rsJWTDial(t, s, "1")
	rsJoinAll(t, game, watcher, a, b) // multi_seat: one user, two seats

	// A change to single_seat leaves the seats there are.
	api(t, s, "PUT", "/api/games/"+game, `{"seat_policy":"single_seat"}`)
	for _, c := range []*rsClient{watcher, a, b} {
		c.expect("game_updated")
	}
	var g apiSettingsBody
	api(t, s, "GET", "/api/games/"+game, "").decode(t, &g)
	if len(g.Members) != 3 {
		t.Fatalf("members %+v, want all three", g.Members)
	}
	// The next join of the user ends its other seats.
	c := rsJWTDial(t, s, "1")
	j := c.join(game, "j")
	if len(j.Members) != 2 || j.Members[1].SID != watcher.session.SID {
		t.Fatalf("the joiner sees %+v, want itself and the watcher", j.Members)
	}
	first, second := a, b
	if b.session.SID < a.session.SID {
		first, second = b, a
	}
	first.gameLeft(game, presenceSuperseded, c.session.SID)
	second.presence(game, first.session.SID, "left", presenceSuperseded)
	second.gameLeft(game, presenceSuperseded, c.session.SID)
	watcher.presence(game, first.session.SID, "left", presenceSuperseded)
	watcher.presence(game, second.session.SID, "left", presenceSuperseded)
	watcher.presence(game, c.session.SID, "joined", "") // then joined
	a.alive()
	b.alive()
	// Anonymous sessions are never superseded.
	x, y := rsJWTDial(t, s, ""), rsJWTDial(t, s, "")
	x.join(game, "x")
	y.join(game, "y")
	watcher.presence(game, x.session.SID, "joined", "")
	watcher.presence(game, y.session.SID, "joined", "")
	x.presence(game, y.session.SID, "joined", "")
	watcher.alive()
}

func TestAPISupersedeOnResume(t *testing.T) {
	cfg := apiConfig(t)
	cfg.ResumeWindow, cfg.ActionIDTTL = 3*time.Second, 3*time.Second
	s := startServer(t, cfg)
	game := uuid.NewString()
	watcher, a, b := rsJWTDial(t, s, "9"), rsJWTDial(t, s, "1"), rsJWTDial(t, s, "1")
	epoch, _ := rsJoinAll(t, game, watcher, a, b)
	a.drop()
	watcher.presence(game, a.session.SID, "away", "disconnected")
	b.presence(game, a.session.SID, "away", "disconnected")
	api(t, s, "PUT", "/api/games/"+game, `{"seat_policy":"single_seat"}`)
	watcher.expect("game_updated")
	b.expect("game_updated")

	// a comes back: resuming into the game ends b's seat there, after the
	// resumed reply and what a missed.
	again := rsJWTDial(t, s, "1")
	r := again.resume("r", a.session.ResumeToken, map[string]rsPos{game: {Epoch: epoch, Offset: 3}}, a)
	if len(r.Games) != 1 || !r.Games[0].Recovered {
		t.Fatalf("resumed %+v, want the game recovered", r.Games)
	}
	again.presence(game, a.session.SID, "away", "disconnected") // what it missed: its own away,
	again.expect("game_updated")                                // the update,
	again.presence(game, b.session.SID, "left", presenceSuperseded)
	b.presence(game, a.session.SID, "back", "")
	b.gameLeft(game, presenceSuperseded, a.session.SID)
	watcher.presence(game, a.session.SID, "back", "")
	watcher.presence(game, b.session.SID, "left", presenceSuperseded)
	b.alive()
	rsEnd(t, s, watcher, again, b)
}

package main

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/google/uuid"
)

// Client commands in the hub under test (hubcommands.go): joins, leaves,
// refusals, and the order in which a game's events reach its members.

func TestHubJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", nil, 8)
		c := fakeHubConn("sid-c", hubUser(2), 8)
		hubRegister(t, h, a, b, c)

		hubTell(t, h, joinCmd(a, hubGame, "j1"))
		checkHubJoined(t, expectQueued(t, a, "game_joined")[0], "j1", hubGame, a)

		hubTell(t, h, joinCmd(b, hubGame, ""))
		checkHubJoined(t, expectQueued(t, b, "game_joined")[0], "", hubGame, b, a)
		checkHubPresence(t, expectQueued(t, a, "presence")[0], hubGame, b, "joined", "")

		hubTell(t, h, joinCmd(c, hubGame, "j3"))
		checkHubJoined(t, expectQueued(t, c, "game_joined")[0], "j3", hubGame, c, a, b)
		checkHubPresence(t, expectQueued(t, a, "presence")[0], hubGame, c, "joined", "")
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, c, "joined", "")

		checkHubStats(t, h, 3, 2, map[uuid.UUID]int{hubGame: 3})
		checkHubInvariants(t, h)
	})
}

func TestHubJoinIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", hubUser(2), 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, "j"))
		takeQueued(t, a)
		first := b.out.next()

		hubTell(t, h, joinCmd(b, hubGame, "j"))
		again := b.out.next()
		if string(again) != string(first) {
			t.Errorf("second join replied %s, want the same reply as the first: %s", again, first)
		}
		expectQueued(t, b)
		expectQueued(t, a) // no second presence
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 2})
		if n := len(h.idx.sessions["sid-b"].games); n != 1 {
			t.Errorf("b is in %d games after joining one twice", n)
		}

		// With more members the others may come in another order (the
		// contract does not fix it), but the reply says the same thing.
		c := fakeHubConn("sid-c", nil, 8)
		hubRegister(t, h, c)
		hubTell(t, h, joinCmd(c, hubGame, "c"))
		takeQueued(t, a)
		takeQueued(t, b)
		checkHubJoined(t, expectQueued(t, c, "game_joined")[0], "c", hubGame, c, a, b)
		for range 10 {
			hubTell(t, h, joinCmd(c, hubGame, "c"))
			checkHubJoined(t, expectQueued(t, c, "game_joined")[0], "c", hubGame, c, a, b)
		}
		expectQueued(t, a)
		expectQueued(t, b)
		checkHubStats(t, h, 3, 2, map[uuid.UUID]int{hubGame: 3})
		checkHubInvariants(t, h)
	})
}

func TestHubTooManyGames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubDefaults
		cfg.maxGames = 2
		h := startTestHub(t, cfg)
		a := fakeHubConn("sid-a", hubUser(1), 16)
		b := fakeHubConn("sid-b", hubUser(2), 16)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(b, hubGame3, ""), joinCmd(a, hubGame, ""), joinCmd(a, hubGame2, ""))
		expectQueued(t, a, "game_joined", "game_joined")
		takeQueued(t, b)

		hubTell(t, h, joinCmd(a, hubGame3, "third"))
		checkHubError(t, expectQueued(t, a, "error")[0], codeTooManyGames, "third")
		expectQueued(t, b) // b hears of no join
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame2: 1, hubGame3: 1})

		// At the limit, joining a game already joined is still the idempotent reply.
		hubTell(t, h, joinCmd(a, hubGame, "again"))
		checkHubJoined(t, expectQueued(t, a, "game_joined")[0], "again", hubGame, a)

		// Leaving one makes room for another.
		hubTell(t, h, leaveCmd(a, hubGame2, ""), joinCmd(a, hubGame3, "now"))
		fs := expectQueued(t, a, "game_left", "game_joined")
		checkHubJoined(t, fs[1], "now", hubGame3, a, b)
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame3, a, "joined", "")
		checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame3: 2})
		checkHubInvariants(t, h)
	})
}

func TestHubLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startTestHub(t, hubDefaults)
		a := fakeHubConn("sid-a", hubUser(1), 8)
		b := fakeHubConn("sid-b", nil, 8)
		hubRegister(t, h, a, b)
		hubTell(t, h, joinCmd(a, hubGame, ""), joinCmd(b, hubGame, ""))
		takeQueued(t, a)
		takeQueued(t, b)

		hubTell(t, h, leaveCmd(a, hubGame, "bye"))
		f := expectQueued(t, a, "game_left")[0]
		var ref gameRef
		if err := json.Unmarshal(f.Data, &ref); err != nil || f.ID != "bye" || ref.GameID != hubGame.String() {
			t.Errorf("game_left %s id=%q, want game %s id bye", f.Data, f.ID, hubGame)
		}
		checkHubPresence(t, expectQueued(t, b, "presence")[0], hubGame, a, "left", presenceLeft)
		checkHubStats(t, h, 2, 1, map[uuid.UUID]int{hubGame: 1})

		// a no longer hears the game.
		hubTell(t, h, actionCmd(b, cmdRoll, hubGame, "", 1))
		expectQueued(t, a)
		expectQueued(t, b, "dice_rolled")

		// The last one out: the game is neither counted nor listed.
		hubTell(t, h, leaveCmd(b, hubGame, ""))
		expectQueued(t, b, "game_left")
		expectQueued(t, a)
		checkHubStats(t, h, 2, 1, nil)
		checkHubInvariants(t, h)
	})
}

func TestHubNotInGame(t *testing.T) {
	kinds := []struct {
		name string
		kind cmdKind
	}{
		{"leave_game", cmdLeave},
		{"submit_defensive_decision", cmdDefensive},
		{"submit_offensive_decision", cmdOffensive},
		{"roll_dice", cmdRoll},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startTestHub(t, hubDefaults)
				a := fakeHubConn("sid-a", hubUser(1), 8)
				b := fakeHubConn("sid-b", hubUser(2), 8)
				hubRegister(t, h, a, b)
				hubTell(t, h, joinCmd(a, hubGame2, ""), joinCmd(b, hubGame, ""))
				takeQueued(t, a)
				takeQueued(t, b)
				cmd := func(game uuid.UUID, id string) *commandMsg {
					if k.kind == cmdLeave {
						return leaveCmd(a, game, id)
					}
					return actionCmd(a, k.kind, game, id, 7)
				}

				// A game somebody else is in, then a game nobody is in.
				hubTell(t, h, cmd(hubGame, "x1"), cmd(hubGame3, ""))
				fs := expectQueued(t, a, "error", "error")
				checkHubError(t, fs[0], codeNotInGame, "x1")
				checkHubError(t, fs[1], codeNotInGame, "")
				expectQueued(t, b)
				checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1, hubGame2: 1})

				// A game a has just left.
				hubTell(t, h, leaveCmd(a, hubGame2, ""), cmd(hubGame2, "x2"))
				checkHubError(t, expectQueued(t, a, "game_left", "error")[1], codeNotInGame, "x2")
				checkHubStats(t, h, 2, 2, map[uuid.UUID]int{hubGame: 1})
				checkHubInvariants(t, h)
			})
		})
	}
}

// TestHubRelayOrder has two members send concurrently and checks that every
// member receives each sender's frames for the game in the order sent.
func TestHubRelayOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perSender = 300
		h := startTestHub(t, hubDefaults)
		senders := []*conn{fakeHubConn("sid-a", hubUser(1), 2*perSender+8), fakeHubConn("sid-b", hubUser(2), 2*perSender+8)}
		c := fakeHubConn("sid-c", nil, 2*perSender+8)
		d := fakeHubConn("sid-d", hubUser(3), 8) // in another game: hears nothing
		hubRegister(t, h, senders[0], senders[1], c, d)
		hubTell(t, h, joinCmd(senders[0], hubGame, ""), joinCmd(senders[1], hubGame, ""),
			joinCmd(c, hubGame, ""), joinCmd(d, hubGame2, ""))
		for _, x := range []*conn{senders[0], senders[1], c, d} {
			takeQueued(t, x)
		}

		kinds := []cmdKind{cmdDefensive, cmdOffensive, cmdRoll}
		sent := make([][]*commandMsg, len(senders))
		for i, s := range senders {
			for n := range perSender {
				sent[i] = append(sent[i], actionCmd(s, kinds[n%len(kinds)], hubGame, fmt.Sprint("m", n), n))
			}
		}
		var wg sync.WaitGroup
		for i := range senders {
			wg.Go(func() {
				for _, m := range sent[i] {
					h.send(m)
				}
			})
		}
		wg.Wait()
		synctest.Wait()

		got := map[*conn][]frame{c: takeQueued(t, c), d: takeQueued(t, d)}
		for _, s := range senders {
			got[s] = takeQueued(t, s)
		}
		if len(got[d]) != 0 {
			t.Errorf("a conn in another game got %d frames", len(got[d]))
		}
		for _, recv := range append([]*conn{c}, senders...) {
			for i, s := range senders {
				var want []string
				for _, m := range sent[i] {
					if recv == s {
						want = append(want, string(withID(m.others, m.cmd.id)))
					} else {
						want = append(want, string(m.others))
					}
				}
				checkHubRelayed(t, recv, s, got[recv], want)
			}
		}
		checkHubInvariants(t, h)
	})
}

// checkHubRelayed checks that the frames recv got from sender are exactly
// want, in order, each with an offset the game's sequence gave it: later
// frames carry larger offsets.
func checkHubRelayed(t *testing.T, recv, sender *conn, frames []frame, want []string) {
	t.Helper()
	var from []map[string]any
	for _, f := range frames {
		var d map[string]any
		if err := json.Unmarshal(f.Data, &d); err == nil && d["sid"] == sender.sid {
			from = append(from, map[string]any{"type": f.Type, "id": f.ID, "data": d})
		}
	}
	if len(from) != len(want) {
		t.Fatalf("%s got %d frames from %s, want %d", recv.sid, len(from), sender.sid, len(want))
	}
	last := -1.0
	for i := range want {
		var w struct {
			Type string         `json:"type"`
			ID   string         `json:"id"`
			Data map[string]any `json:"data"`
		}
		_ = json.Unmarshal([]byte(want[i]), &w)
		got := from[i]["data"].(map[string]any)
		offset, _ := got["offset"].(float64)
		if offset <= last {
			t.Fatalf("%s's frame %d from %s has offset %v after %v", recv.sid, i, sender.sid, got["offset"], last)
		}
		last = offset
		delete(got, "offset")
		if from[i]["type"] != w.Type || from[i]["id"] != w.ID || !reflect.DeepEqual(got, w.Data) {
			t.Fatalf("%s's frame %d from %s is %v, want %s (less its offset)", recv.sid, i, sender.sid, from[i], want[i])
		}
	}
}

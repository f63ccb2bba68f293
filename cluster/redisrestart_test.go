package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"dugout/internal/redistest"
	"dugout/internal/servertest"
)

// Redis restarted empty under a live game (kill and start again at once, on
// the same port): every node re-registers what it holds.
func TestClusterRedisRestartedEmpty(t *testing.T) {
	r, nodes := startCluster(t, 2, nil)
	liveGameSurvives(t, r, nodes, gameID(121), 1, func() { r.Restart(t) })
}

// Redis emptied in place (FLUSHALL: no connection drops, so nothing tells
// the nodes but their next heartbeat, which finds the node unknown).
func TestClusterRedisFlushed(t *testing.T) {
	r, nodes := startCluster(t, 2, nil)
	liveGameSurvives(t, r, nodes, gameID(122), 1, func() {
		if got := r.Do(t, "FLUSHALL"); got != "+OK" {
			t.Fatalf("FLUSHALL: %s", got)
		}
	})
}

// Redis killed, down long enough for every node to know it ("engine":
// "down"), then started again empty on the same port, five times over:
// each time go-redis reconnects and resubscribes each node's mailbox, and
// the nodes register again and carry the game's events to each other.
func TestClusterRedisDownThenBack(t *testing.T) {
	r, nodes := startCluster(t, 2, nil)
	liveGameSurvives(t, r, nodes, gameID(123), 5, func() {
		r.Kill()
		for _, n := range nodes {
			eventually(t, nodeTTL+slack, "engine down on "+n.Addr, func() bool { return healthOf(t, n, "")["engine"] == "down" })
		}
		r.Restart(t)
	})
}

// liveGameSurvives plays game across the two nodes, runs lose (which leaves
// Redis empty) cycles times, and checks after each that the cluster comes back whole: every node
// registers again what it holds (its heartbeat finds it "new"), so the
// cluster's health counts every session and seat again within a few
// NODE_TTLs; the game goes on, each member receiving the other's rolls
// through Redis, one offset per event for both; and the sessions' records
// are back too, so a session resumes on the other node.
//
// What offsets do: Redis lost the game's epoch and offset, so the game is
// registered again in a new epoch; its offsets do not start over, they go
// on after the last one the nodes delivered (the members are not told of
// the new epoch while connected, and a client drops an event at an offset it
// has processed). A client that resumes learns the new epoch from resumed
// (recovered:false, the epoch it named being gone).
func liveGameSurvives(t *testing.T, r *redistest.Server, nodes []*servertest.Proc, game string, cycles int, lose func()) {
	t.Helper()
	enginesUp(t, nodes...)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	b.join(game)
	a.presence(b.sid, "joined")
	a.roll(game, "before")
	before := a.expect("dice_rolled", nil).offset()
	b.expect("dice_rolled", nil)

	prev := epoch.(string)
	for cycle := range cycles {
		lose()
		lost := time.Now()
		for _, n := range nodes {
			var h map[string]any
			deadline := time.Now().Add(3*nodeTTL + slack)
			for {
				h = healthOf(t, n, "")
				per, _ := h["sessions_per_game"].(map[string]any)
				list, _ := h["nodes"].([]any)
				if h["engine"] == "up" && h["total_sessions"] == 2.0 && h["connected_sessions"] == 2.0 && per[game] == 2.0 && len(list) == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("every session and seat counted again, seen from %s: not within %s; its health: %v", n.Addr, 3*nodeTTL+slack, h)
				}
				time.Sleep(20 * time.Millisecond) // polling a condition, not waiting for one to settle
			}
		}
		t.Logf("cycle %d: registered again %s after Redis lost everything", cycle, time.Since(lost).Round(time.Millisecond))
		got := r.Do(t, "HGET", "dugout:g:"+game+":meta", "epoch")
		if got == "(nil)" || got == "$"+prev {
			t.Fatalf("the game's epoch in Redis after the loss: %s, want a new one (was %s)", got, prev)
		}
		prev = strings.TrimPrefix(got, "$")

		// The game goes on: each member's rolls reach the other, through Redis,
		// at one offset for both.
		for i, x := range []struct{ from, to *client }{{a, b}, {b, a}, {a, b}, {b, a}} {
			id := fmt.Sprintf("after-%d-%d", cycle, i)
			x.from.roll(game, id)
			mine := x.from.expect("dice_rolled", func(f *frame) bool { return f.ID == id })
			theirs := x.to.expect("dice_rolled", func(f *frame) bool { return f.field("sid") == x.from.sid })
			if mine.offset() != theirs.offset() || mine.offset() != before+1 {
				t.Fatalf("roll %s: offset %d at the sender, %d at the other, want both %d (right after the last one before)",
					id, mine.offset(), theirs.offset(), before+1)
			}
			before++
		}
	}

	// The records are back: a drops and resumes on n2. Its epoch is gone,
	// so the game is not recovered, and the reply names the new epoch.
	a.ws.CloseNow()
	b.presence(a.sid, "away")
	_, res := resumeAt(t, nodes[1].Addr, a, game, epoch, 1)
	g := resumedEntry(res, game)
	if res.field("sid") != a.sid || g == nil || g["recovered"] != false || g["epoch"] == epoch {
		t.Fatalf("resume after the loss: %s, want a's session with the game in a new epoch, not recovered", res.raw)
	}
	b.presence(a.sid, "back")
}

// Nothing sent in the moment after Redis lost everything is lost with it
// (contract v2 §12: while Redis is up, every event any member received is
// in its game's history): an action and a join sent right after a
// FLUSHALL, before the nodes' heartbeats have found it out, are answered,
// and reach the other node's member. (The joiner's reply lists the members
// registered again so far: the other node's come back with its next
// heartbeat, NODE_TTL/3 at most; PROTOCOL.md says so.)
func TestClusterRedisFlushedLosesNothing(t *testing.T) {
	r, nodes := startCluster(t, 2, nil)
	enginesUp(t, nodes...)
	game := gameID(124)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")
	c := dial(t, nodes[0].Addr)

	if got := r.Do(t, "FLUSHALL"); got != "+OK" {
		t.Fatalf("FLUSHALL: %s", got)
	}
	a.roll(game, "right-after")
	c.send("join_game", "j-right-after", map[string]any{"game_id": game})
	if _, f := framesUntilOrEnd(a, nodeTTL+slack, func(f *frame) bool { return f.ID == "right-after" }); f == nil {
		t.Errorf("a's roll sent right after the FLUSHALL was never answered")
	}
	if _, f := framesUntilOrEnd(c, nodeTTL+slack, func(f *frame) bool { return f.Type == "game_joined" }); f == nil {
		t.Errorf("c's join sent right after the FLUSHALL was never answered")
	} else if members, _ := f.field("members").([]any); len(members) < 2 {
		t.Errorf("c's game_joined lists %d members, want at least a and c: %s", len(members), f.raw)
	}
	// a's roll and c's join come from two connections: either may be
	// sequenced first.
	var roll, join bool
	got, _ := framesUntilOrEnd(b, 3*nodeTTL+slack, func(f *frame) bool {
		roll = roll || f.Type == "dice_rolled" && f.field("sid") == a.sid
		join = join || f.Type == "presence" && f.field("sid") == c.sid && f.field("status") == "joined"
		return roll && join
	})
	if !roll || !join {
		t.Errorf("b, on the other node, heard a's roll: %v, c's join: %v; want both. b's frames:\n%s", roll, join, rawFrames(got))
	}
}

package cluster

import (
	"testing"
)

// A session resumed on another node than the one it was on: the others hear
// it away and back, and the client is sent, in order, every event it missed
// while away, then live events; its remembered action ids came with it.
func TestClusterResumeOnAnotherNode(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	game := gameID(2)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	b.join(game)
	a.presence(b.sid, "joined")
	a.roll(game, "roll-1")
	first := a.expect("dice_rolled", nil)
	b.expect("dice_rolled", nil)

	// a drops without a close frame and comes back on node 2.
	a.ws.CloseNow()
	b.presence(a.sid, "away")
	for range 3 {
		b.roll(game, "")
		b.expect("dice_rolled", nil)
	}
	a2 := dial(t, nodes[1].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token,
		"games": map[string]any{game: map[string]any{"epoch": epoch, "offset": first.offset()}}})
	r := a2.expect("resumed", nil)
	if r.field("sid") != a.sid {
		t.Fatalf("resumed %v, want %s: %s", r.field("sid"), a.sid, r.raw)
	}
	games, _ := r.field("games").([]any)
	if len(games) != 1 || games[0].(map[string]any)["recovered"] != true {
		t.Fatalf("resumed games %s, want the game recovered", r.raw)
	}
	// Replayed: its own away (first+1), then b's three rolls; its own back is
	// not sent, but the resumed position includes it.
	a2.expect("presence", func(f *frame) bool { return f.offset() == first.offset()+1 && f.field("status") == "away" })
	for i := range 3 {
		if f := a2.expect("dice_rolled", nil); f.offset() != first.offset()+2+uint64(i) {
			t.Fatalf("replayed roll %d at offset %d, want %d", i, f.offset(), first.offset()+2+uint64(i))
		}
	}
	back := b.presence(a.sid, "back")
	if got := uint64(games[0].(map[string]any)["offset"].(float64)); got != back.offset() {
		t.Fatalf("resumed at offset %d, want its own back's %d", got, back.offset())
	}
	// Live events after the resume reach the resumed client.
	b.roll(game, "")
	live := a2.expect("dice_rolled", nil)
	if live.offset() != back.offset()+1 {
		t.Fatalf("live event at %d, want %d (right after the back at %d)", live.offset(), back.offset()+1, back.offset())
	}
	// The action id came along: a retry of roll-1 is answered dup, with the same dice.
	a2.roll(game, "roll-1")
	dup := a2.expect("dice_rolled", nil)
	if !dup.Dup || dup.offset() != first.offset() {
		t.Fatalf("retried roll: %s, want dup at offset %d", dup.raw, first.offset())
	}
}

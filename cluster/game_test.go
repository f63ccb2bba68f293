package cluster

import (
	"testing"
)

// Two nodes, one game: each member sees the other's join and actions, with
// one offset sequence, gap-free, the same on both nodes; the join's reply
// lists the member on the other node.
func TestClusterGameAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	game := gameID(1)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	ja := a.join(game)
	jb := b.join(game)
	if ja.field("epoch") != jb.field("epoch") {
		t.Fatalf("two epochs for one game: %v and %v", ja.field("epoch"), jb.field("epoch"))
	}
	if ja.offset() != 1 || jb.offset() != 2 {
		t.Fatalf("join offsets %d and %d, want 1 and 2", ja.offset(), jb.offset())
	}
	members, _ := jb.field("members").([]any)
	if len(members) != 2 {
		t.Fatalf("b's game_joined lists %d members, want 2 (a is on the other node): %s", len(members), jb.raw)
	}
	p := a.presence(b.sid, "joined")
	if p.offset() != 2 {
		t.Fatalf("a heard b's join at offset %d, want 2", p.offset())
	}
	want := uint64(3)
	for i := range 20 {
		sender, other := a, b
		if i%2 == 1 {
			sender, other = b, a
		}
		sender.roll(game, "")
		mine := sender.expect("dice_rolled", nil)
		theirs := other.expect("dice_rolled", nil)
		if mine.offset() != want || theirs.offset() != want {
			t.Fatalf("roll %d: offsets %d (sender) and %d (other), want %d", i, mine.offset(), theirs.offset(), want)
		}
		want++
	}
}

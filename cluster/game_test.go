package cluster

import (
	"fmt"
	"strings"
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

// Three nodes, a member on each, all sending at once: every member receives
// every event once, in one order (the same offsets for the same events on
// every node, gap-free), and each sender's events in the order it sent them.
func TestClusterRelayOrderAcrossThreeNodes(t *testing.T) {
	_, nodes := startCluster(t, 3, map[string]string{"RATE_LIMIT": "1000", "RATE_BURST": "1000"})
	game := gameID(10)
	var cs []*client
	for _, n := range nodes {
		c := dial(t, n.Addr)
		c.join(game)
		cs = append(cs, c)
	}
	for _, c := range cs[:2] {
		c.presence(cs[2].sid, "joined")
	}
	const each = 100
	for i := range each {
		for k, c := range cs {
			c.send("submit_defensive_decision", "", map[string]any{"game_id": game, "decision": map[string]any{"n": i, "from": k}})
		}
	}
	var first []string // the order the first member saw, as "from/n"
	for k, c := range cs {
		next := map[float64]float64{} // sender -> next n expected
		var order []string
		var last uint64
		for len(order) < each*len(cs) {
			f := c.expect("defensive_decision", nil)
			d, _ := f.field("decision").(map[string]any)
			from, n := d["from"].(float64), d["n"].(float64)
			if n != next[from] {
				t.Fatalf("member %d got sender %v's #%v after #%v", k, from, n, next[from]-1)
			}
			next[from]++
			if last != 0 && f.offset() != last+1 {
				t.Fatalf("member %d: offset %d after %d", k, f.offset(), last)
			}
			last = f.offset()
			order = append(order, fmt.Sprintf("%v/%v@%d", from, n, f.offset()))
		}
		if first == nil {
			first = order
		} else if strings.Join(order, ",") != strings.Join(first, ",") {
			t.Fatalf("member %d saw another order than member 0", k)
		}
	}
}

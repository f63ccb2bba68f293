package cluster

import (
	"testing"
	"time"
)

// SIGTERM on one node of a cluster hands its sessions over: its clients get
// a goodbye that says resumable, with their own retry delay, and resume on
// another node with nothing missed; the others hear them away, then back.
func TestClusterShutdownHandsOver(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"SHUTDOWN_RETRY_SPREAD": "200ms"})
	game := gameID(5)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	b.join(game)
	b.roll(game, "")
	b.expect("dice_rolled", nil)
	seen := a.expect("dice_rolled", nil)

	if err := nodes[0].Stop(10 * time.Second); err != nil {
		t.Fatalf("n1 did not stop cleanly: %v", err)
	}
	bye := a.expect("goodbye", nil)
	if bye.field("code") != 1001.0 || bye.field("resumable") != true || bye.field("retry_after_ms") == nil {
		t.Fatalf("goodbye %s, want 1001, resumable, with a retry delay", bye.raw)
	}
	b.presence(a.sid, "away")
	b.roll(game, "") // while a is between nodes
	missed := b.expect("dice_rolled", nil)

	a2 := dial(t, nodes[1].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token,
		"games": map[string]any{game: map[string]any{"epoch": epoch, "offset": seen.offset()}}})
	r := a2.expect("resumed", nil)
	if games, _ := r.field("games").([]any); len(games) != 1 || games[0].(map[string]any)["recovered"] != true {
		t.Fatalf("resume after the hand-over: %s", r.raw)
	}
	if f := a2.expect("dice_rolled", nil); f.offset() != missed.offset() {
		t.Fatalf("replayed roll at %d, want the one missed at %d", f.offset(), missed.offset())
	}
	b.presence(a.sid, "back")
}

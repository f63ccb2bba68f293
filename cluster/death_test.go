package cluster

import (
	"syscall"
	"testing"
	"time"
)

// A node killed with SIGKILL: within NODE_TTL another node makes its
// connected sessions away (timeout) to the others, and, past the resume
// window, left (timeout); a session resumed elsewhere in the window is back.
func TestClusterNodeKilled(t *testing.T) {
	_, nodes := startCluster(t, 3, nil)
	game := gameID(4)
	a := dial(t, nodes[0].Addr) // dies with n1, and never comes back
	r := dial(t, nodes[0].Addr) // dies with n1, resumes on n3
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	r.join(game)
	b.join(game)
	b.roll(game, "")
	last := b.expect("dice_rolled", nil)

	killed := time.Now()
	if err := nodes[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	away := map[any]bool{}
	for len(away) < 2 { // in either order
		f := b.expectWithin(nodeTTL+slack, "presence", func(f *frame) bool {
			return (f.field("sid") == a.sid || f.field("sid") == r.sid) && f.field("status") == "away"
		})
		if f.field("reason") != "timeout" {
			t.Fatalf("away: %s, want reason timeout", f.raw)
		}
		away[f.field("sid")] = true
	}
	t.Logf("both away %s after the kill (NODE_TTL %s)", time.Since(killed).Round(time.Millisecond), nodeTTL)

	r2 := dial(t, nodes[2].Addr)
	r2.send("resume", "r1", map[string]any{"resume_token": r.token,
		"games": map[string]any{game: map[string]any{"epoch": epoch, "offset": last.offset()}}})
	res := r2.expect("resumed", nil)
	if games, _ := res.field("games").([]any); len(games) != 1 || games[0].(map[string]any)["recovered"] != true {
		t.Fatalf("resume after the kill: %s", res.raw)
	}
	b.presence(r.sid, "back")

	left := b.expectWithin(resumeWindow+slack, "presence", func(f *frame) bool { return f.field("sid") == a.sid && f.field("status") == "left" })
	if left.field("reason") != "timeout" {
		t.Fatalf("left for the dead node's session: %s, want reason timeout", left.raw)
	}
	eventually(t, 3*nodeTTL, "the dead node gone from health", func() bool {
		h := healthOf(t, nodes[1], "")
		list, _ := h["nodes"].([]any)
		return len(list) == 2 && h["total_sessions"] == 2.0
	})
}

// A client of a killed node that resumes at once, long before NODE_TTL
// lets anyone reap the node, still gets its session: nobody reads the dead
// node's mailbox any more, and the claim takes the record straight away
// (found by the failover bench: 0 of 1,000 such clients resumed before).
func TestClusterResumeRightAfterAKill(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"NODE_TTL": "30s"})
	game := gameID(11)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	b.join(game)
	b.roll(game, "")
	last := a.expect("dice_rolled", nil)
	if err := nodes[0].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a2 := dial(t, nodes[1].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token,
		"games": map[string]any{game: map[string]any{"epoch": epoch, "offset": last.offset()}}})
	r := a2.expectWithin(2*time.Second, "resumed", nil)
	if games, _ := r.field("games").([]any); r.field("sid") != a.sid || len(games) != 1 || games[0].(map[string]any)["recovered"] != true {
		t.Fatalf("resume right after the kill: %s", r.raw)
	}
}

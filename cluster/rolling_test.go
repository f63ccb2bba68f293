package cluster

import (
	"testing"
	"time"
)

// A node stopped with SIGTERM and replaced at once by a process with the
// same NODE_ID (a service manager's restart) must not make the sessions it
// handed over unresumable: the predecessor's client resumes on the other
// node. NODE_TTL is as in production (15 s, the default), so the other
// node's reaper, which runs every NODE_TTL/3, almost never claims the
// stopped node's sessions before the replacement registers.
func TestClusterReplacementKeepsHandedOverSessions(t *testing.T) {
	env := map[string]string{"NODE_TTL": "15s"}
	r, nodes := startCluster(t, 2, env)
	enginesUp(t, nodes...)
	game := gameID(133)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	epoch := a.join(game).field("epoch")
	b.join(game)
	seen := a.presence(b.sid, "joined").offset()

	if err := nodes[0].Stop(10 * time.Second); err != nil {
		t.Fatalf("n1 did not stop cleanly: %v", err)
	}
	if bye := a.expect("goodbye", nil); bye.field("resumable") != true {
		t.Fatalf("goodbye %s, want resumable", bye.raw)
	}
	b.presence(a.sid, "away")
	startNode(t, r.URL(), "n1", env)
	_, res := resumeAt(t, nodes[1].Addr, a, game, epoch, seen)
	if g := resumedEntry(res, game); res.field("sid") != a.sid || g == nil || g["recovered"] != true {
		t.Fatalf("resume on n2 after n1 was replaced: %s", res.raw)
	}
	b.presence(a.sid, "back")
}

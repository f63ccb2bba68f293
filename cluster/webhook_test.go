package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// webhookSecret signs the nodes' webhook POSTs in these tests.
var webhookSecret = strings.Repeat("w", 32)

// Every presence change in a cluster reaches the backend's webhook once, not
// once per node: the node that emits an event is the one that posts it, with
// the offset Redis gave it.
func TestClusterWebhookOncePerEvent(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{} // "game/offset/sid/status" -> posts
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var batch struct {
			Events []struct {
				GameID string `json:"game_id"`
				SID    string `json:"sid"`
				Status string `json:"status"`
				Offset uint64 `json:"offset"`
			} `json:"events"`
		}
		if json.Unmarshal(body, &batch) == nil {
			mu.Lock()
			for _, e := range batch.Events {
				seen[fmt.Sprintf("%s/%d/%s/%s", e.GameID, e.Offset, e.SID, e.Status)]++
			}
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	_, nodes := startCluster(t, 2, map[string]string{"WEBHOOK_URL": recv.URL, "WEBHOOK_SECRET": webhookSecret})
	game := gameID(9)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")
	b.send("leave_game", "", map[string]any{"game_id": game})
	a.presence(b.sid, "left")
	want := []string{
		fmt.Sprintf("%s/1/%s/joined", game, a.sid),
		fmt.Sprintf("%s/2/%s/joined", game, b.sid),
		fmt.Sprintf("%s/3/%s/left", game, b.sid),
	}
	eventually(t, 5*time.Second, "every presence event posted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range want {
			if seen[k] == 0 {
				return false
			}
		}
		return true
	})
	// A node posts its events in order: once each node has posted a later
	// one, a copy of an earlier event from either would have come before it.
	b.join(game)
	a.presence(b.sid, "joined")
	a.send("leave_game", "", map[string]any{"game_id": game})
	a.expect("game_left", nil)
	b.presence(a.sid, "left")
	want = append(want, fmt.Sprintf("%s/4/%s/joined", game, b.sid), fmt.Sprintf("%s/5/%s/left", game, a.sid))
	eventually(t, 5*time.Second, "the later events posted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[want[3]] > 0 && seen[want[4]] > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for k, n := range seen {
		if n != 1 {
			t.Errorf("event %s posted %d times", k, n)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("posted %v, want exactly %v", seen, want)
	}
}

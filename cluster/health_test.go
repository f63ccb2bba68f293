package cluster

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"dugout/internal/servertest"
)

// scrape returns p's /metrics.
func scrape(t *testing.T, p *servertest.Proc) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := newRequest(ctx, p.URL("/metrics"))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Health in a cluster: totals over every node, unique_users exact (one user
// with sessions on two nodes counts once), the node list, and ?scope=node
// for the node's own view.
func TestClusterHealth(t *testing.T) {
	_, nodes := startCluster(t, 2, map[string]string{"JWT_SECRET": jwtSecret})
	game := gameID(3)
	a := dialAs(t, nodes[0].Addr, 7)
	b := dialAs(t, nodes[1].Addr, 7)
	c := dialAs(t, nodes[1].Addr, 8)
	for _, x := range []*client{a, b, c} {
		x.join(game)
	}
	eventually(t, 3*nodeTTL, "cluster totals", func() bool {
		h := healthOf(t, nodes[0], "")
		nodesList, _ := h["nodes"].([]any)
		per, _ := h["sessions_per_game"].(map[string]any)
		return h["total_sessions"] == 3.0 && h["unique_users"] == 2.0 && len(nodesList) == 2 && per[game] == 3.0 &&
			h["engine"] == "up" && h["scope"] == "cluster"
	})
	if m := scrape(t, nodes[0]); !strings.Contains(m, "\ndugout_cluster_engine_up 1\n") || !strings.Contains(m, "\ndugout_cluster_bridge_queue ") {
		t.Fatalf("/metrics lacks the cluster's gauges:\n%s", m)
	}
	local := healthOf(t, nodes[1], "node")
	if local["total_sessions"] != 2.0 || local["scope"] != "node" || local["node_id"] != "n2" {
		t.Fatalf("?scope=node on n2: %v", local)
	}
}

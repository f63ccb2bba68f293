package cluster

import (
	"testing"
)

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
	local := healthOf(t, nodes[1], "node")
	if local["total_sessions"] != 2.0 || local["scope"] != "node" || local["node_id"] != "n2" {
		t.Fatalf("?scope=node on n2: %v", local)
	}
}

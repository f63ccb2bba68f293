package main

import (
	"context"
	"encoding/json"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// /health/connections in cluster mode (contract v2 §12): the cluster's
// totals, read from Redis by the bridge (each node's counts as of its last
// heartbeat, this node's as of now), the node list, and `?scope=node` for
// this node's own view. With Redis unreachable the answer is the local view
// with "engine":"down".

// clusterHealth is the cluster's view as health reports it.
type clusterHealth struct {
	Status        string           `json:"status"`
	Engine        string           `json:"engine"`
	Scope         string           `json:"scope"`
	TotalSessions int              `json:"total_sessions"`
	Connected     int              `json:"connected_sessions"`
	Away          int              `json:"away_sessions"`
	Draining      bool             `json:"draining"`
	UniqueUsers   int              `json:"unique_users"`
	ActiveGames   int              `json:"active_games"`
	Hidden        bool             `json:"game_ids_hidden"`
	PerGame       map[string]int64 `json:"sessions_per_game"`
	Nodes         []nodeHealth     `json:"nodes"`
	NodeID        string           `json:"node_id"`
	Goroutines    int              `json:"goroutines"`
}

// nodeHealth is one live node in the list.
type nodeHealth struct {
	NodeID        string `json:"node_id"`
	TotalSessions int    `json:"total_sessions"`
	LastSeenMS    int64  `json:"last_seen_ms"`
}

// serveClusterConnections answers /health/connections in cluster mode; it
// reports false when the local view (the single-node answer, with the
// cluster's fields) should answer instead.
func (s *server) serveClusterConnections(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Query().Get("scope") == "node" || !s.bridge.up.Load() {
		return false
	}
	local, users, ok := s.hub.askClusterCounts()
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	hidden := s.gameIDsHidden(r)
	v, err := s.bridge.clusterView(ctx, local, users, !hidden)
	if err != nil {
		return false
	}
	v.Draining, v.Hidden, v.Goroutines = s.draining.Load(), hidden, runtime.NumGoroutine()
	w.Header().Set("Vary", "Authorization")
	writeJSON(w, http.StatusOK, v)
	return true
}

// clusterView reads the cluster's totals: every live node's counts (this
// node's from local, as of now), the union of their users, and the seats of
// every game when withGames.
func (b *bridge) clusterView(ctx context.Context, local hubCounts, users []int64, withGames bool) (clusterHealth, error) {
	v := clusterHealth{Status: "healthy", Engine: "up", Scope: "cluster", NodeID: b.cfg.node, PerGame: map[string]int64{}}
	seen, err := b.aux.ZRangeWithScores(ctx, nodesKey, 0, -1).Result()
	if err != nil {
		return v, err
	}
	now := time.Now().UnixMilli()
	distinct := make(map[string]struct{}, len(users))
	for _, u := range users {
		distinct[strconv.FormatInt(u, 10)] = struct{}{}
	}
	for _, z := range seen {
		id, _ := z.Member.(string)
		n := nodeHealth{NodeID: id, LastSeenMS: now - int64(z.Score)}
		if id == b.cfg.node {
			n.TotalSessions, n.LastSeenMS = local.connected+local.away, 0
			v.Connected += local.connected
			v.Away += local.away
		} else {
			val, err := b.aux.Get(ctx, nodeKey(id)).Result()
			if err != nil {
				continue // not alive: its key expired, a reaper will claim it
			}
			f := strings.Split(val, "|") // incarnation|total|connected|away
			if len(f) == 4 {
				n.TotalSessions, _ = strconv.Atoi(f[1])
				c, _ := strconv.Atoi(f[2])
				a, _ := strconv.Atoi(f[3])
				v.Connected += c
				v.Away += a
			}
			others, _ := b.aux.SMembers(ctx, nodeUsers(id)).Result()
			for _, u := range others {
				distinct[u] = struct{}{}
			}
		}
		v.Nodes = append(v.Nodes, n)
	}
	slices.SortFunc(v.Nodes, func(a, b nodeHealth) int { return strings.Compare(a.NodeID, b.NodeID) })
	v.TotalSessions = v.Connected + v.Away
	v.UniqueUsers = len(distinct)
	seats, err := b.aux.HGetAll(ctx, seatsKey).Result()
	if err != nil {
		return v, err
	}
	v.ActiveGames = len(seats)
	if withGames {
		for g, n := range seats {
			v.PerGame[g], _ = strconv.ParseInt(n, 10, 64)
		}
	}
	return v, nil
}

// engineFields are what the local view adds in cluster mode: which node
// answers, its scope, and whether Redis answers.
func (s *server) engineFields() []byte {
	engine := "down"
	if s.bridge.up.Load() {
		engine = "up"
	}
	b, _ := json.Marshal(s.bridge.cfg.node)
	return []byte(`,"engine":"` + engine + `","scope":"node","node_id":` + string(b))
}

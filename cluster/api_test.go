package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"dugout/internal/servertest"
)

// serviceToken is the backend's token in these tests.
var serviceToken = strings.Repeat("s", 32)

// api calls the backend API of p and decodes the JSON answer.
func api(t *testing.T, p *servertest.Proc, method, path, body string) (int, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, method, p.URL(path), bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+serviceToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// The backend may call any node: settings put on a node that holds no seat
// of the game reach the members on another node, a later partial PUT
// elsewhere keeps what the first set, a GET anywhere lists every member, and
// a single_seat game supersedes a user's seat on another node.
func TestClusterSettingsAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 3, map[string]string{"SERVICE_TOKEN": serviceToken, "JWT_SECRET": jwtSecret})
	game := gameID(8)
	if code, body := api(t, nodes[1], "PUT", "/api/games/"+game, `{"idle_timeout_ms":600000,"seat_policy":"single_seat"}`); code != 200 {
		t.Fatalf("PUT before any seat: %d %v", code, body)
	}
	a := dialAs(t, nodes[0].Addr, 5)
	j := a.join(game)
	if j.field("idle_timeout_ms") != 600000.0 || j.field("seat_policy") != "single_seat" {
		t.Fatalf("game_joined on n1 does not carry the settings put on n2: %s", j.raw)
	}
	if code, body := api(t, nodes[2], "PUT", "/api/games/"+game, `{"idle_timeout_ms":700000}`); code != 200 || body["seat_policy"] != "single_seat" {
		t.Fatalf("partial PUT on n3: %d %v, want the seat policy kept", code, body)
	}
	u := a.expect("game_updated", nil)
	if u.field("idle_timeout_ms") != 700000.0 || u.field("seat_policy") != "single_seat" {
		t.Fatalf("game_updated %s", u.raw)
	}
	other := dialAs(t, nodes[0].Addr, 6)
	other.join(game)
	code, body := api(t, nodes[2], "GET", "/api/games/"+game, "")
	if members, _ := body["members"].([]any); code != 200 || len(members) != 2 {
		t.Fatalf("GET on a node without seats: %d %v", code, body)
	}
	// User 5 again, on n2: its seat on n1 is superseded.
	a2 := dialAs(t, nodes[1].Addr, 5)
	a2.join(game)
	if f := a.expect("game_left", nil); f.field("reason") != "superseded" || f.field("by_sid") != a2.sid {
		t.Fatalf("seat on n1 heard %s, want superseded by %s", f.raw, a2.sid)
	}
	if f := other.presence(a.sid, "left"); f.field("reason") != "superseded" {
		t.Fatalf("the other member heard %s", f.raw)
	}
}

package cluster

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A resume on another node of a session still connected takes it over: the
// old connection gets goodbye taken_over and 4001, the others hear nothing,
// and the new one serves the session from then on.
func TestClusterTakeoverAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 2, nil)
	game := gameID(6)
	a := dial(t, nodes[0].Addr)
	b := dial(t, nodes[1].Addr)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")

	a2 := dial(t, nodes[1].Addr)
	a2.send("resume", "r1", map[string]any{"resume_token": a.token})
	r := a2.expect("resumed", nil)
	if r.field("sid") != a.sid {
		t.Fatalf("resumed %s", r.raw)
	}
	bye := a.expect("goodbye", nil)
	if bye.field("code") != 4001.0 || bye.field("reason") != "taken_over" {
		t.Fatalf("old connection's goodbye %s, want 4001 taken_over", bye.raw)
	}
	// The others hear nothing of it: b's next frame is a2's roll.
	a2.roll(game, "")
	a2.expect("dice_rolled", nil)
	if f := b.expect("dice_rolled", nil); f.field("sid") != a.sid {
		t.Fatalf("b heard %s", f.raw)
	}
	select {
	case f := <-b.frames:
		t.Fatalf("b heard more: %s", f.raw)
	default:
	}
}

// A kick through the API of one node ends the seat a session holds on
// another: it gets game_left kicked there, the others hear left kicked.
func TestClusterKickAcrossNodes(t *testing.T) {
	token := strings.Repeat("s", 32)
	_, nodes := startCluster(t, 2, map[string]string{"SERVICE_TOKEN": token, "JWT_SECRET": jwtSecret})
	game := gameID(7)
	a := dialAs(t, nodes[0].Addr, 1)
	b := dialAs(t, nodes[1].Addr, 2)
	a.join(game)
	b.join(game)
	a.presence(b.sid, "joined")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, nodes[0].URL("/api/games/"+game+"/kick"), bytes.NewBufferString(`{"user_id":2}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(body.String(), `"removed":1`) {
		t.Fatalf("kick: %d %s", resp.StatusCode, body.String())
	}
	if f := b.expect("game_left", nil); f.field("reason") != "kicked" {
		t.Fatalf("kicked session heard %s", f.raw)
	}
	if f := a.presence(b.sid, "left"); f.field("reason") != "kicked" {
		t.Fatalf("the other member heard %s", f.raw)
	}
}

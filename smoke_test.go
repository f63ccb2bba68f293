package main

import "testing"

func TestSmokeTwoClientsOneGame(t *testing.T) {
	s := startServer(t, testConfig(t))
	a := dial(t, s.url, nil)
	b := dial(t, s.url, nil)
	game := "6F9619FF-8B86-D011-B42D-00C04FD430C8"
	a.send(`{"type":"join_game","id":"j1","data":{"game_id":"` + game + `"}}`)
	f := a.expect("game_joined")
	t.Logf("%s %s", f.ID, f.Data)
	b.send(`{"type":"join_game","data":{"game_id":"` + game + `"}}`)
	t.Logf("%s", b.expect("game_joined").Data)
	t.Logf("%s", a.expect("presence").Data)
	a.send(`{"type":"roll_dice","id":"r","data":{"game_id":"` + game + `"}}`)
	t.Logf("%s %s", a.expect("dice_rolled").ID, b.expect("dice_rolled").Data)
	a.send(`{"type":"heartbeat"}`)
	t.Logf("%s", a.expect("heartbeat_ack").Data)
	a.send(`nope`)
	a.expectError("invalid_json", "")
	t.Logf("%+v", s.health(t))
	a.ws.CloseNow()
	t.Logf("%s", b.expect("presence").Data)
	eventually(t, "health one", func() bool { return s.health(t).TotalSessions == 1 })
}

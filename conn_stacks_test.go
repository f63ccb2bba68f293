package main

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// An idle connection's memory is mostly its two goroutines' stacks, which
// grow by doubling and are kept: these tests hold the reader to the 4 KiB it
// needs to wait, through ping rounds and through the messages clients send
// most. The race detector's instrumentation makes frames larger, so they are
// checked only without it (.ci/run runs them so).

// stackInuse is the runtime's stack memory, read without a collection first,
// which would shrink what was grown.
func stackInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.StackInuse
}

// TestPingRoundsKeepStacks checks that idle connections' stacks are no bigger
// after ping rounds than right after connecting. An idle reader waits inside
// the library's Read, and each pong is handled right there: a reader whose
// frames are a few hundred bytes deeper (as 32ca4ed made them) has its stack
// doubled by the first pong, 4 KiB more for every idle connection.
func TestPingRoundsKeepStacks(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes stack frames")
	}
	const conns = 200
	cfg := testConfig(t)
	cfg.PingInterval, cfg.PingTimeout = time.Second, 5*time.Second
	s := startServer(t, cfg)
	pongs := make(chan struct{}, 3*conns)
	for range conns {
		dialPongClient(t, s.ts.Listener.Addr().String(), pongs, nil)
	}
	before := stackInuse()
	if len(pongs) > 0 {
		t.Fatalf("%d pongs before the stacks were measured: connecting took longer than PING_INTERVAL", len(pongs))
	}
	for range 2 * conns {
		<-pongs
	}
	if grown := (int64(stackInuse()) - int64(before)) / conns; grown > 512 {
		t.Errorf("stacks grew %d B per connection over two ping rounds, want none", grown)
	}
}

// TestMessagesKeepStacks checks that serving the messages a player sends
// leaves connections' stacks as a ping round left them. The reader serves
// the usual ones on the stack it waits on, and the rest aside; a heartbeat
// encoded by json.Marshal, or a resume decoded by it on the reader (before
// f1e1cfb and e9cf30a), doubled every reader that had sent one to 8 KiB for
// good: a collection does not shrink a stack whose waiting reader uses a
// quarter of it.
func TestMessagesKeepStacks(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes stack frames")
	}
	const conns = 200
	cfg := testConfig(t)
	cfg.PingInterval, cfg.PingTimeout = 500*time.Millisecond, 5*time.Second
	s := startServer(t, cfg)
	pongs := make(chan struct{}, 3*conns)
	texts := make(chan struct{}, 8*conns)
	clients := make([]*pongClient, conns)
	for i := range clients {
		clients[i] = dialPongClient(t, s.ts.Listener.Addr().String(), pongs, texts)
	}
	for range conns { // a round first: the stacks a waiting conn settles at
		<-pongs
	}
	before := stackInuse()
	// Each conn in a game of its own, so that every message has one answer,
	// to its sender (the refused ones an error).
	messages := []string{
		// A resume first, as the contract wants, refused: no such session.
		`{"type":"resume","id":"s","data":{"resume_token":"AAAAAAAAAAAAAAAAAAAAAAAAAA","games":{}}}`,
		`{"type":"heartbeat","id":"h"}`,
		`{"type":"join_game","id":"j","data":{"game_id":"GAME"}}`,
		`{"type":"submit_defensive_decision","id":"d","data":{"game_id":"GAME","decision":{"shift":"in"}}}`,
		`{"type":"roll_dice","id":"r","data":{"game_id":"GAME","dice":[6,20]}}`,
		`{"type":"leave_game","id":"l","data":{"game_id":"GAME"}}`,
		`{"type":"refresh_token","id":"t","data":{"token":"not.a.jwt"}}`,
		`{"type":"no_such_type","id":"n"}`,
	}
	for _, c := range clients {
		game := uuid.NewString()
		for _, m := range messages {
			c.send(t, strings.ReplaceAll(m, "GAME", game))
		}
	}
	deadline := time.After(waitFor)
	for n := range len(messages) * conns {
		select {
		case <-texts:
		case <-deadline:
			t.Fatalf("%d answers of %d", n, len(messages)*conns)
		}
	}
	if grown := (int64(stackInuse()) - int64(before)) / conns; grown > 512 {
		t.Errorf("stacks grew %d B per connection serving %d messages each, want none", grown, len(messages))
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"dugout/internal/redistest"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// startBlockingBridge is startTestBridge whose hub blocks on the first
// message block matches, until release is closed: a mailbox reader that is
// a few milliseconds behind Redis, held long enough to see what it does.
func startBlockingBridge(t *testing.T, srv *redistest.Server, node string, block func(hubMsg) bool, release chan struct{}) *testBridge {
	t.Helper()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg := bridgeConfig{opts: opts, node: node, ttl: 3 * time.Second, historyFrames: 256, historyBytes: 1 << 20}
	tap := newHubTap()
	blocked := false
	toHub := func(m hubMsg) bool {
		ok := tap.toHub(m)
		if !blocked && block(m) {
			blocked = true
			<-release
		}
		return ok
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	b := newBridge(cfg, log, toHub, func() (hubCounts, []int64, bool) { return hubCounts{}, nil, true })
	tb := &testBridge{bridge: b, tap: tap}
	b.start()
	t.Cleanup(tb.halt)
	return tb
}

// Regression (review finding 3): fetch (run for every resume, on the mailbox reader) moves the
// game's feed position to the stream's end. An event sequenced after the
// Cmoved message was published but before fetch read the stream is then in
// the mailbox behind Cmoved with an offset below the new position, and is
// dropped as "seen": the other local members never get it, and if it was
// this node's own event its ticket (the sender's reply) never completes.
func TestBridgeFetchDropsNothingBehindMoved(t *testing.T) {
	srv := redistest.Start(t)
	game := uuid.NewString()
	release := make(chan struct{})
	a := startTestBridge(t, srv, "b1", 3*time.Second)
	// b2's reader stalls on the first event of b1's after the joins (ticket 1).
	b := startBlockingBridge(t, srv, "b2", func(m hubMsg) bool {
		mm, ok := m.(mailMsg)
		return ok && mm.head.origin == "b1" && mm.head.ticket == 1
	}, release)
	a.awaitReady(t, srv)
	b.awaitReady(t, srv)
	a.join(t, game, "b1-s")
	b.join(t, game, "b2-m") // b2's local member M

	from := len(a.tap.all())
	a.push(eventOp("b1", game, "b1-s", 1)) // b2's reader blocks on this one
	b.tap.awaitMsg(t, 0, bridgeSlack, "b2 reader holds event 1", func(m hubMsg) bool {
		mm, ok := m.(mailMsg)
		return ok && mm.head.ticket == 1
	})
	// A session in the game resumes on b2: the claim's Cmoved reaches b2's mailbox...
	rec, _ := json.Marshal(sessionRecord{SID: "b1-s", Games: []string{game}})
	srv.Do(t, "PUBLISH", mailbox("b2"), "Cmoved\x1fb1-s\x1fref\n"+string(rec))
	// ...and right behind it, an event sequenced meanwhile (b1's, and one of b2's own: ticket 3).
	a.push(eventOp("b1", game, "b1-s", 2))
	b.push(eventOp("b2", game, "b2-m", 3))
	a.tap.await(t, bridgeSlack, "b1 sees events 1-3 sequenced", func(ms []hubMsg) bool { return len(mailsOf(ms[from:], game)) >= 3 })
	close(release)
	b.tap.awaitMsg(t, 0, bridgeSlack, "b2 hands its hub the claim", func(m hubMsg) bool { _, ok := m.(claimedMsg); return ok })
	time.Sleep(500 * time.Millisecond) // give the mailbox time to bring the events behind it
	var got []string
	for _, m := range mailsOf(b.tap.all(), game) {
		got = append(got, fmt.Sprintf("%s#%d@%d", m.head.kind, m.head.ticket, m.offset))
	}
	t.Logf("b2's hub got: %s", strings.Join(got, " "))
	if !strings.Contains(strings.Join(got, " "), "event#2@") {
		t.Errorf("b1's event 2 (sequenced after Cmoved) never reached b2's hub: b2's member M misses it")
	}
	if !strings.Contains(strings.Join(got, " "), "event#3@") {
		t.Errorf("b2's own event (ticket 3) never came back: its sender's reply never goes out")
	}
}

// Regression (review finding 4): an away (or back) emitted for a seat that another node has
// just ended (a kick or a supersede, a "left" sequenced first) puts the
// seat back in the game's member list, counts it again in seats and nodes,
// and nothing will ever remove it: the holder has dropped the seat locally.
func TestBridgeAwayOfAKickedSeatIsRefused(t *testing.T) {
	srv := redistest.Start(t)
	game := uuid.NewString()
	a := startTestBridge(t, srv, "b1", 3*time.Second)
	b := startTestBridge(t, srv, "b2", 3*time.Second)
	a.awaitReady(t, srv)
	b.awaitReady(t, srv)
	a.join(t, game, "b1-s")
	b.join(t, game, "b2-s")
	kick := emitOp{game: game, kind: "left", sid: "b1-s", frame: []byte(`{"type":"presence","data":{"status":"left","reason":"kicked"}}`),
		head: header{origin: "b2", kind: "left", game: game, sid: "b1-s", reason: "kicked"}}
	b.push(kick)
	b.tap.awaitMsg(t, 0, bridgeSlack, "kick sequenced", isMail(game, "left", "b1-s"))
	// b1's hub lost s's conn before it processed the kick's mail: it emits away.
	away := emitOp{game: game, kind: "away", sid: "b1-s", frame: []byte(`{"type":"presence","data":{"status":"away"}}`),
		head: header{origin: "b1", kind: "away", game: game, sid: "b1-s"}}
	a.push(away)
	a.tap.awaitMsg(t, 0, bridgeSlack, "away refused: the seat is gone", func(m hubMsg) bool {
		r, ok := m.(refusedMsg)
		return ok && r.op.sid == "b1-s" && r.why == "gone"
	})
	mem := srv.Do(t, "HGET", gameKeys(game)[2], "b1-s")
	seats := srv.Do(t, "HGET", seatsKey, game)
	nodes := srv.Do(t, "HGET", gameKeys(game)[3], "b1")
	t.Logf("after kick+away: mem[b1-s]=%s seats=%s nodes[b1]=%s", mem, seats, nodes)
	if mem != "(nil)" {
		t.Errorf("the kicked seat is a member again (%s); seats=%s", mem, seats)
	}
}

// Regression (review finding 5): a repaired event carries no header: this node's own event lost
// from the mailbox (while its subscription was down) comes back as kind
// "repair" without origin or ticket, so the hub never completes it (the
// sender's reply, a join's game_joined and ungating, a resume's finish).
func TestBridgeRepairKeepsTheTicket(t *testing.T) {
	r := startGapRig(t)
	r.cut(t)
	if !r.victim.push(eventOp("b2", r.game, "b2-s", 42)) { // the victim's own event, ticket 42
		t.Fatal("push refused")
	}
	r.sender.tap.awaitMsg(t, 0, bridgeSlack, "b1 sees b2's event", func(m hubMsg) bool {
		mm, ok := m.(mailMsg)
		return ok && mm.head.ticket == 42
	})
	r.heal(t)
	from := len(r.victim.tap.all())
	r.send(t, 7)
	r.victim.tap.awaitMsg(t, from, bridgeSlack, "b2 gets event 7 live", func(m hubMsg) bool {
		mm, ok := m.(mailMsg)
		return ok && mm.head.ticket == 7
	})
	for _, m := range mailsOf(r.victim.tap.all(), r.game) {
		t.Log(describeMsg(m))
		if m.head.ticket == 42 && m.head.origin == "b2" {
			return
		}
	}
	t.Errorf("b2's own event came back without its origin and ticket: the hub's ticket 42 never completes")
}

package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"dugout/internal/redistest"

	"github.com/google/uuid"
)

// Tests of the bridge's reaping (contract v2 §12): a node that stops
// heartbeating is declared dead by exactly one of the others, which adopts
// its sessions and leaves a tombstone that fences the dead incarnation.

// hexToken is a resume token's hash, as a record names it.
func hexToken() string {
	h := sha256.Sum256([]byte(rand.Text()))
	return hex.EncodeToString(h[:])
}

// adoptions returns the adoptMsgs among ms.
func adoptions(ms []hubMsg) []adoptMsg {
	var out []adoptMsg
	for _, m := range ms {
		if a, ok := m.(adoptMsg); ok {
			out = append(out, a)
		}
	}
	return out
}

// writeRecords has tb write n session records, as its hub does for fresh
// sessions, and waits until Redis holds them all.
func writeRecords(t *testing.T, srv *redistest.Server, tb *testBridge, n int) map[string]sessionRecord {
	t.Helper()
	game := uuid.NewString()
	want := map[string]sessionRecord{}
	for i := range n {
		user := int64(100 + i)
		rec := sessionRecord{SID: fmt.Sprintf("%s-s%d", tb.cfg.node, i), User: &user, Token: hexToken(), Games: []string{game}}
		js, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if !tb.push(recordOp{sid: rec.SID, token: rec.Token, rec: js, fresh: true}) {
			t.Fatal("push of a record refused")
		}
		want[rec.SID] = rec
	}
	redisEventually(t, bridgeSlack, tb.cfg.node+"'s records in Redis", func() bool {
		return srv.Do(t, "HLEN", nodeSessions(tb.cfg.node)) == fmt.Sprintf(":%d", n)
	})
	return want
}

// checkAdopted checks that winner adopted dead's records want, once, and
// that Redis agrees: the records and their owners are the winner's, and the
// tombstone names the incarnation that died.
func checkAdopted(t *testing.T, srv *redistest.Server, winner, dead *testBridge, want map[string]sessionRecord) {
	t.Helper()
	a := adoptions(winner.tap.all())
	if len(a) != 1 {
		t.Fatalf("%s adopted %d times, want once: %+v", winner.cfg.node, len(a), a)
	}
	if len(a[0].records) != len(want) {
		t.Fatalf("%s adopted %d records, want %d: %+v", winner.cfg.node, len(a[0].records), len(want), a[0].records)
	}
	for _, r := range a[0].records {
		w, ok := want[r.SID]
		if !ok || r.Token != w.Token || r.User == nil || *r.User != *w.User || len(r.Games) != 1 || r.Games[0] != w.Games[0] {
			t.Errorf("adopted record %+v, want %+v", r, w)
		}
		if got := srv.Do(t, "GET", ownerKey(r.SID)); got != "$"+winner.cfg.node {
			t.Errorf("owner of %s: %s, want %s", r.SID, got, winner.cfg.node)
		}
		if got := srv.Do(t, "HEXISTS", nodeSessions(winner.cfg.node), r.SID); got != ":1" {
			t.Errorf("%s's sessions hold %s: %s", winner.cfg.node, r.SID, got)
		}
	}
	node := dead.cfg.node
	if got := srv.Do(t, "GET", deadKey(node)); got != "$"+dead.incarnationNow() {
		t.Errorf("tombstone of %s: %s, want its incarnation %s", node, got, dead.incarnationNow())
	}
	if got := srv.Do(t, "EXISTS", nodeSessions(node)); got != ":0" {
		t.Errorf("%s's sessions still in Redis: EXISTS %s", node, got)
	}
	if got := srv.Do(t, "ZSCORE", nodesKey, node); got != "(nil)" {
		t.Errorf("%s still in the nodes set: %s", node, got)
	}
}

// TestBridgeOneReaperAdoptsADeadNode: of two live bridges that both see a
// third's liveness key expire, exactly one is handed its session records,
// within the TTL and a heartbeat; the other gets nothing, and the tombstone
// names the incarnation that died.
func TestBridgeOneReaperAdoptsADeadNode(t *testing.T) {
	const ttl = 600 * time.Millisecond
	srv := redistest.Start(t)
	reapers := []*testBridge{startTestBridge(t, srv, "b1", ttl), startTestBridge(t, srv, "b2", ttl)}
	dead := startTestBridge(t, srv, "b3", ttl)
	for _, tb := range []*testBridge{reapers[0], reapers[1], dead} {
		tb.tap.awaitMsg(t, 0, ttl/3+bridgeSlack, tb.cfg.node+" reports Redis up", isUp)
	}
	want := writeRecords(t, srv, dead, 3)

	// Stopping the bridge stops its heartbeat without deregistering: its
	// key expires after ttl, as a node that died would leave it.
	stoppedAt := time.Now()
	dead.halt()
	within := ttl + ttl/3 + bridgeSlack
	redisEventually(t, within, "one reaper adopts b3's sessions", func() bool {
		return len(adoptions(reapers[0].tap.all()))+len(adoptions(reapers[1].tap.all())) > 0
	})
	t.Logf("adopted %v after b3 stopped (ttl %v)", time.Since(stoppedAt).Round(time.Millisecond), ttl)
	winner, loser := reapers[0], reapers[1]
	if len(adoptions(loser.tap.all())) > 0 {
		winner, loser = loser, winner
	}

	// The loser has had a full heartbeat and reap after the win once its
	// heartbeat's score has moved twice since.
	score := func() string { return srv.Do(t, "ZSCORE", nodesKey, loser.cfg.node) }
	for range 2 {
		was := score()
		redisEventually(t, ttl+bridgeSlack, loser.cfg.node+" beats again", func() bool { return score() != was })
	}
	if a := adoptions(loser.tap.all()); len(a) != 0 {
		t.Fatalf("%s adopted too: %+v", loser.cfg.node, a)
	}
	checkAdopted(t, srv, winner, dead, want)
}

// TestBridgeConcurrentReapsAdoptOnce: reapers that run at the same moment
// for one dead node (their heartbeats in step) adopt its sessions once in
// all: the reap script lets only its first run have them.
func TestBridgeConcurrentReapsAdoptOnce(t *testing.T) {
	const deadTTL = 600 * time.Millisecond
	srv := redistest.Start(t)
	// The reapers' own heartbeats reap at their start and then not for 10 s:
	// the test runs their reaps itself, all at once.
	reapers := []*testBridge{startTestBridge(t, srv, "b1", 30*time.Second), startTestBridge(t, srv, "b2", 30*time.Second)}
	dead := startTestBridge(t, srv, "b3", deadTTL)
	for _, tb := range []*testBridge{reapers[0], reapers[1], dead} {
		tb.tap.awaitMsg(t, 0, bridgeSlack, tb.cfg.node+" reports Redis up", isUp)
	}
	want := writeRecords(t, srv, dead, 3)
	dead.halt()
	redisEventually(t, deadTTL+bridgeSlack, "b3's liveness key expires", func() bool {
		return srv.Do(t, "EXISTS", nodeKey("b3")) == ":0"
	})

	const perReaper = 4
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for _, tb := range reapers {
		for range perReaper {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-begin
				tb.reap()
			}()
		}
	}
	close(begin)
	wg.Wait()

	winners := 0
	var winner *testBridge
	for _, tb := range reapers {
		if n := len(adoptions(tb.tap.all())); n > 0 {
			winners += n
			winner = tb
		}
	}
	if winners != 1 {
		t.Fatalf("%d adoptions of b3 by %d concurrent reaps, want exactly 1", winners, perReaper*len(reapers))
	}
	checkAdopted(t, srv, winner, dead, want)
}

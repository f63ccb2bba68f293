package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"dugout/internal/redistest"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Tests of the Redis bridge (contract v2 §12) against a real redis-server and
// no hub: each bridge's toHub is a tap that keeps, in order, everything the
// bridge hands its hub, so a test reads what a hub would have heard.

// bridgeSlack is what a test allows, on top of the time a step is specified
// to take (a heartbeat interval, a TTL), for a busy two-core machine under -race.
const bridgeSlack = 2 * time.Second

// hubTap records what a bridge sends its hub. The bridge's goroutines append;
// the test goroutine reads prefixes of the record, which appends never change.
type hubTap struct {
	mu   sync.Mutex
	msgs []hubMsg
	poke chan struct{} // one pending wake-up for a waiting test
}

func newHubTap() *hubTap { return &hubTap{poke: make(chan struct{}, 1)} }

// toHub is the bridge's toHub: it accepts everything, as a hub with room does.
func (p *hubTap) toHub(m hubMsg) bool {
	p.mu.Lock()
	p.msgs = append(p.msgs, m)
	p.mu.Unlock()
	select {
	case p.poke <- struct{}{}:
	default:
	}
	return true
}

// all returns what the bridge has sent so far. The slice is capped at its
// length, so later appends cannot reach it.
func (p *hubTap) all() []hubMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.msgs[:len(p.msgs):len(p.msgs)]
}

// await waits until cond holds of what the bridge has sent, and returns that.
// cond is called with a growing record, so it may keep its own place in it.
func (p *hubTap) await(t *testing.T, within time.Duration, what string, cond func([]hubMsg) bool) []hubMsg {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		ms := p.all()
		if cond(ms) {
			return ms
		}
		select {
		case <-p.poke:
		case <-deadline.C:
			ms = p.all()
			if cond(ms) {
				return ms
			}
			t.Fatalf("%s: not within %v; the bridge sent %d messages, the last ones:\n%s", what, within, len(ms), describeTail(ms, 12))
		}
	}
}

// awaitMsg waits for the first message at index from or later that match
// accepts, and returns its index.
func (p *hubTap) awaitMsg(t *testing.T, from int, within time.Duration, what string, match func(hubMsg) bool) int {
	t.Helper()
	at := -1
	next := from
	p.await(t, within, what, func(ms []hubMsg) bool {
		for ; next < len(ms); next++ {
			if match(ms[next]) {
				at = next
				return true
			}
		}
		return false
	})
	return at
}

// describeTail formats the last n messages of ms, one a line.
func describeTail(ms []hubMsg, n int) string {
	var sb strings.Builder
	for i := max(0, len(ms)-n); i < len(ms); i++ {
		fmt.Fprintf(&sb, "  #%d %s\n", i, describeMsg(ms[i]))
	}
	return sb.String()
}

// describeMsg is one line about a message, frames as text.
func describeMsg(m hubMsg) string {
	switch m := m.(type) {
	case mailMsg:
		return fmt.Sprintf("mail epoch=%.8s offset=%d kind=%s origin=%s sid=%s ticket=%d members=%d frame=%s",
			m.epoch, m.offset, m.head.kind, m.head.origin, m.head.sid, m.head.ticket, len(m.members), m.frame)
	case unsentMsg:
		return fmt.Sprintf("unsent nogame=%v kind=%s sid=%s ticket=%d", m.nogame, m.op.kind, m.op.sid, m.op.head.ticket)
	default:
		return fmt.Sprintf("%T %+v", m, m)
	}
}

// testBridge is a started bridge and its tap.
type testBridge struct {
	*bridge
	tap      *hubTap
	stopOnce sync.Once
}

// halt stops the bridge once, whether the test or its cleanup asks first.
func (tb *testBridge) halt() { tb.stopOnce.Do(tb.bridge.stop) }

// startTestBridge starts a bridge of node on srv with its own tap; tweak may
// change its config first. It is stopped when the test ends.
func startTestBridge(t *testing.T, srv *redistest.Server, node string, ttl time.Duration, tweak ...func(*bridgeConfig)) *testBridge {
	t.Helper()
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatalf("redis URL %q: %v", srv.URL(), err)
	}
	cfg := bridgeConfig{opts: opts, node: node, ttl: ttl, historyFrames: 256, historyBytes: 1 << 20}
	for _, f := range tweak {
		f(&cfg)
	}
	tap := newHubTap()
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	b := newBridge(cfg, log, tap.toHub, func() (hubCounts, []int64, bool) { return hubCounts{}, nil, true })
	tb := &testBridge{bridge: b, tap: tap}
	b.start()
	t.Cleanup(tb.halt)
	return tb
}

// isUp matches the engine reports of Redis found.
func isUp(m hubMsg) bool { e, ok := m.(engineMsg); return ok && e.up }

// isDown matches the engine reports of Redis lost.
func isDown(m hubMsg) bool { e, ok := m.(engineMsg); return ok && !e.up && !e.fenced }

// awaitReady waits for the bridge's first heartbeat to report Redis up and
// for its mailbox to be subscribed, so that what it emits comes back.
func (tb *testBridge) awaitReady(t *testing.T, srv *redistest.Server) {
	t.Helper()
	tb.tap.awaitMsg(t, 0, tb.cfg.ttl/3+bridgeSlack, tb.cfg.node+" reports Redis up", isUp)
	awaitSubscribed(t, srv, tb.cfg.node, true)
}

// awaitSubscribed waits until node's mailbox has a subscriber (want) or none.
// It publishes a control message no bridge acts on: PUBLISH answers how many
// subscribers got it, as Redis itself counts them.
func awaitSubscribed(t *testing.T, srv *redistest.Server, node string, want bool) {
	t.Helper()
	reply := ":0"
	if want {
		reply = ":1"
	}
	redisEventually(t, bridgeSlack+time.Second, fmt.Sprintf("mailbox of %s subscribed=%v", node, want), func() bool {
		return srv.Do(t, "PUBLISH", mailbox(node), "Cprobe") == reply
	})
}

// redisEventually polls cond (the state of Redis, say) until it holds, failing the
// test when within passes first.
func redisEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		<-tick.C
	}
}

// joinOp is the emit a hub makes when session sid of node joins game: the
// join asks for the member list with its own copy.
func joinOp(node, game, sid string) emitOp {
	frame := fmt.Sprintf(`{"type":"presence","data":{"game_id":%q,"sid":%q,"status":"connected"}}`, game, sid)
	return emitOp{game: game, kind: "joined", sid: sid, frame: []byte(frame), snapshot: true,
		head: header{origin: node, kind: "joined", game: game, sid: sid}}
}

// eventOp is the emit of session sid's seq-th game event, carrying seq in
// its data and as its ticket.
func eventOp(node, game, sid string, seq int) emitOp {
	frame := fmt.Sprintf(`{"type":"dice_rolled","data":{"game_id":%q,"from":%q,"seq":%d}}`, game, sid, seq)
	return emitOp{game: game, kind: "event", sid: sid, frame: []byte(frame),
		head: header{origin: node, kind: "event", game: game, sid: sid, ticket: uint64(seq)}}
}

// isMail returns a matcher of game's mailbox messages of kind about sid.
func isMail(game, kind, sid string) func(hubMsg) bool {
	return func(m hubMsg) bool {
		mm, ok := m.(mailMsg)
		return ok && mm.head.game == game && mm.head.kind == kind && mm.head.sid == sid
	}
}

// join pushes sid's join of game on tb and waits for the bridge to bring it
// back from its own mailbox, sequenced; it returns that message.
func (tb *testBridge) join(t *testing.T, game, sid string) mailMsg {
	t.Helper()
	from := len(tb.tap.all())
	if !tb.push(joinOp(tb.cfg.node, game, sid)) {
		t.Fatalf("%s: push of a join refused", tb.cfg.node)
	}
	at := tb.tap.awaitMsg(t, from, bridgeSlack, tb.cfg.node+" gets its own join of "+sid+" back", isMail(game, "joined", sid))
	return tb.tap.all()[at].(mailMsg)
}

// mailsOf returns game's mailbox messages among ms, in the order sent.
func mailsOf(ms []hubMsg, game string) []mailMsg {
	var out []mailMsg
	for _, m := range ms {
		if mm, ok := m.(mailMsg); ok && mm.head.game == game {
			out = append(out, mm)
		}
	}
	return out
}

// eventData is what eventOp puts in a frame, with the offset Redis adds.
type eventData struct {
	From   string `json:"from"`
	Seq    int    `json:"seq"`
	Offset uint64 `json:"offset"`
}

// decodeEvent reads an event frame's data.
func decodeEvent(t *testing.T, frame []byte) eventData {
	t.Helper()
	var f struct {
		Data eventData `json:"data"`
	}
	if err := json.Unmarshal(frame, &f); err != nil {
		t.Fatalf("event frame %s: %v", frame, err)
	}
	return f.Data
}

// TestBridgeTwoNodesSeeOneOrder: two bridges in one game each push 10,000
// events at once. Each bridge hands its hub every event of both, once each,
// in one order that is the same on both, with offsets rising by one, and each
// sender's events in the order it pushed them.
func TestBridgeTwoNodesSeeOneOrder(t *testing.T) {
	const perNode = 10000
	srv := redistest.Start(t)
	nodes := []*testBridge{startTestBridge(t, srv, "b1", 3*time.Second), startTestBridge(t, srv, "b2", 3*time.Second)}
	for _, tb := range nodes {
		tb.awaitReady(t, srv)
	}
	game := uuid.NewString()
	first := nodes[0].join(t, game, "b1-s")
	second := nodes[1].join(t, game, "b2-s")
	nodes[0].tap.awaitMsg(t, 0, bridgeSlack, "b1 hears b2's join", isMail(game, "joined", "b2-s"))
	if first.offset != 1 || second.offset != 2 {
		t.Fatalf("the joins have offsets %d and %d, want 1 and 2", first.offset, second.offset)
	}

	refused := make(chan string, len(nodes))
	var wg sync.WaitGroup
	for _, tb := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= perNode; i++ {
				if !tb.push(eventOp(tb.cfg.node, game, tb.cfg.node+"-s", i)) {
					refused <- fmt.Sprintf("%s: push of event %d refused", tb.cfg.node, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(refused)
	for r := range refused {
		t.Fatal(r)
	}

	var got [2][]mailMsg
	for i, tb := range nodes {
		seen, n := 0, 0
		ms := tb.tap.await(t, time.Minute, tb.cfg.node+" gets all events", func(ms []hubMsg) bool {
			for ; seen < len(ms); seen++ {
				if mm, ok := ms[seen].(mailMsg); ok && mm.head.game == game && mm.head.kind != "joined" {
					n++
				}
			}
			return n >= len(nodes)*perNode
		})
		for _, m := range ms {
			if u, ok := m.(unsentMsg); ok {
				t.Fatalf("%s: an event came back unsent: %s", tb.cfg.node, describeMsg(u))
			}
		}
		for _, m := range mailsOf(ms, game) {
			if m.head.kind != "joined" {
				got[i] = append(got[i], m)
			}
		}
	}

	for i, tb := range nodes {
		evs := got[i]
		if len(evs) != len(nodes)*perNode {
			t.Fatalf("%s: %d events, want %d", tb.cfg.node, len(evs), len(nodes)*perNode)
		}
		next := map[string]int{"b1-s": 1, "b2-s": 1}
		for j, m := range evs {
			d := decodeEvent(t, m.frame)
			switch {
			case m.head.kind != "event":
				t.Fatalf("%s: event #%d has kind %q (a repair?), want event: %s", tb.cfg.node, j, m.head.kind, describeMsg(m))
			case m.offset != uint64(3+j):
				t.Fatalf("%s: event #%d has offset %d, want %d (gap-free after the joins)", tb.cfg.node, j, m.offset, 3+j)
			case d.Offset != m.offset:
				t.Fatalf("%s: frame offset %d, mailbox offset %d", tb.cfg.node, d.Offset, m.offset)
			case m.epoch != first.epoch:
				t.Fatalf("%s: event #%d in epoch %s, the game's is %s", tb.cfg.node, j, m.epoch, first.epoch)
			case m.head.sid != d.From || d.Seq != next[d.From] || m.head.ticket != uint64(d.Seq):
				t.Fatalf("%s: event #%d is %s's seq %d (sid %s, ticket %d); want %s's seq %d next",
					tb.cfg.node, j, d.From, d.Seq, m.head.sid, m.head.ticket, d.From, next[d.From])
			}
			next[d.From]++
			if o := got[1-i][j]; o.offset != m.offset || !bytes.Equal(o.frame, m.frame) || o.head.sid != m.head.sid {
				t.Fatalf("event #%d: b1 got %s, b2 got %s", j, describeMsg(got[0][j]), describeMsg(got[1][j]))
			}
		}
	}
}

// TestBridgeFlushallIsNoticedAndResynced: Redis emptied under a running
// bridge (FLUSHALL) is not an outage but a loss: the next heartbeat finds the
// node unknown, registers it again, and tells the hub to resync what it holds.
func TestBridgeFlushallIsNoticedAndResynced(t *testing.T) {
	const ttl = 900 * time.Millisecond
	srv := redistest.Start(t)
	tb := startTestBridge(t, srv, "b1", ttl)
	tb.awaitReady(t, srv)
	// A heartbeat after the first, that finds the node known, tells the hub nothing.
	was := srv.Do(t, "ZSCORE", nodesKey, "b1")
	redisEventually(t, ttl+bridgeSlack, "a second heartbeat", func() bool { return srv.Do(t, "ZSCORE", nodesKey, "b1") != was })
	from := len(tb.tap.all())

	if got := srv.Do(t, "FLUSHALL"); got != "+OK" {
		t.Fatalf("FLUSHALL: %s", got)
	}
	at := tb.tap.awaitMsg(t, from, ttl/3+bridgeSlack, "an engine report after FLUSHALL", func(m hubMsg) bool {
		_, ok := m.(engineMsg)
		return ok
	})
	if got := tb.tap.all()[at].(engineMsg); got != (engineMsg{up: true, resync: true}) {
		t.Fatalf("after FLUSHALL the bridge reported %+v, want {up:true resync:true}", got)
	}
	if got := srv.Do(t, "EXISTS", nodeKey("b1")); got != ":1" {
		t.Errorf("b1's liveness key after the resync heartbeat: EXISTS %s", got)
	}
	if got := srv.Do(t, "ZSCORE", nodesKey, "b1"); got == "(nil)" {
		t.Errorf("b1 is not in the nodes set after the resync heartbeat")
	}
}

// TestBridgeResubscribesAfterRedisRestarts: Redis killed and started again
// empty on the same port. While it is away each bridge reports the engine
// down; once it is back, up with a resync, its mailbox subscribed again, and
// events sequenced afterwards reach the other bridge.
func TestBridgeResubscribesAfterRedisRestarts(t *testing.T) {
	const ttl = 900 * time.Millisecond
	srv := redistest.Start(t)
	nodes := []*testBridge{startTestBridge(t, srv, "b1", ttl), startTestBridge(t, srv, "b2", ttl)}
	for _, tb := range nodes {
		tb.awaitReady(t, srv)
	}
	game := uuid.NewString()
	before := nodes[0].join(t, game, "b1-s")
	nodes[1].join(t, game, "b2-s")

	srv.Kill()
	downAt := make([]int, len(nodes))
	for i, tb := range nodes {
		downAt[i] = tb.tap.awaitMsg(t, 0, ttl/3+bridgeSlack, tb.cfg.node+" reports the engine down", isDown)
	}
	srv.Restart(t)
	for i, tb := range nodes {
		at := tb.tap.awaitMsg(t, downAt[i], ttl/3+bridgeSlack, tb.cfg.node+" reports the engine up again", isUp)
		if got := tb.tap.all()[at].(engineMsg); !got.resync {
			t.Errorf("%s: Redis came back empty, and the bridge reported %+v, without resync", tb.cfg.node, got)
		}
		awaitSubscribed(t, srv, tb.cfg.node, true)
	}

	// Redis lost the game: the hubs join their members again.
	after := nodes[0].join(t, game, "b1-s")
	nodes[1].join(t, game, "b2-s")
	if after.epoch == before.epoch {
		t.Errorf("the game kept its epoch %s across an empty restart", after.epoch)
	}
	from := len(nodes[1].tap.all())
	if !nodes[0].push(eventOp("b1", game, "b1-s", 1)) {
		t.Fatal("push refused")
	}
	at := nodes[1].tap.awaitMsg(t, from, bridgeSlack, "b2 gets b1's event after the restart", isMail(game, "event", "b1-s"))
	if m := nodes[1].tap.all()[at].(mailMsg); m.epoch != after.epoch || m.offset != 3 {
		t.Errorf("b2 got %s, want epoch %.8s offset 3", describeMsg(m), after.epoch)
	}
}

// subscribeGate is a redis.Options.Dialer whose connections refuse to write
// a SUBSCRIBE while it is shut: a bridge's mailbox subscription cannot come
// back, while its heartbeat and its publisher go on working.
type subscribeGate struct{ shut atomic.Bool }

// dial is the Dialer.
func (g *subscribeGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, gate: g}, nil
}

// gatedConn is a connection of a subscribeGate.
type gatedConn struct {
	net.Conn
	gate *subscribeGate
}

// SyscallConn lets go-redis check an idle connection for a peer that has
// gone, as it does a plain TCP connection.
func (c *gatedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// Write refuses a SUBSCRIBE command while the gate is shut.
func (c *gatedConn) Write(p []byte) (int, error) {
	if c.gate.shut.Load() && bytes.Contains(p, []byte("\r\nsubscribe\r\n")) {
		return 0, errors.New("subscribeGate: SUBSCRIBE refused")
	}
	return c.Conn.Write(p)
}

// gapRig is two bridges in one game, the victim's mailbox subscription
// under the test's control: sender b1 and victim b2, one member each.
type gapRig struct {
	srv            *redistest.Server
	gate           *subscribeGate
	sender, victim *testBridge
	game           string
}

// startGapRig starts the rig; tweak changes both bridges' config.
func startGapRig(t *testing.T, tweak ...func(*bridgeConfig)) *gapRig {
	t.Helper()
	r := &gapRig{srv: redistest.Start(t), gate: &subscribeGate{}, game: uuid.NewString()}
	r.sender = startTestBridge(t, r.srv, "b1", 3*time.Second, tweak...)
	r.victim = startTestBridge(t, r.srv, "b2", 3*time.Second, append(tweak, func(c *bridgeConfig) { c.opts.Dialer = r.gate.dial })...)
	r.sender.awaitReady(t, r.srv)
	r.victim.awaitReady(t, r.srv)
	r.sender.join(t, r.game, "b1-s")
	r.victim.join(t, r.game, "b2-s")
	return r
}

// send has the sender emit events of seqs and waits until they are
// sequenced (the sender's own mailbox brings them back); it returns them.
func (r *gapRig) send(t *testing.T, seqs ...int) []mailMsg {
	t.Helper()
	from := len(r.sender.tap.all())
	for _, seq := range seqs {
		if !r.sender.push(eventOp("b1", r.game, "b1-s", seq)) {
			t.Fatal("push refused")
		}
	}
	ms := r.sender.tap.await(t, bridgeSlack, fmt.Sprintf("b1 gets events %v back", seqs), func(ms []hubMsg) bool {
		return len(mailsOf(ms[from:], r.game)) >= len(seqs)
	})
	return mailsOf(ms[from:], r.game)
}

// cut ends both mailbox subscriptions; only the sender's comes back.
func (r *gapRig) cut(t *testing.T) {
	t.Helper()
	r.gate.shut.Store(true)
	if got := r.srv.Do(t, "CLIENT", "KILL", "TYPE", "pubsub"); got != ":2" {
		t.Fatalf("CLIENT KILL TYPE pubsub: %s, want :2", got)
	}
	awaitSubscribed(t, r.srv, "b1", true)
	awaitSubscribed(t, r.srv, "b2", false)
}

// heal lets the victim's subscription come back and waits for it.
func (r *gapRig) heal(t *testing.T) {
	t.Helper()
	r.gate.shut.Store(false)
	awaitSubscribed(t, r.srv, "b2", true)
}

// TestBridgeRepairsAMailboxGapFromTheStream: events published while a
// bridge's mailbox subscription was down are lost to the mailbox; the
// bridge's next live event of the game fetches them from the game's stream
// and hands them to the hub first, in order, once each.
func TestBridgeRepairsAMailboxGapFromTheStream(t *testing.T) {
	r := startGapRig(t)
	from := len(r.victim.tap.all())
	r.send(t, 1)
	r.victim.tap.awaitMsg(t, from, bridgeSlack, "b2 gets event 1 live", isMail(r.game, "event", "b1-s"))

	r.cut(t)
	lost := r.send(t, 2, 3, 4, 5, 6)
	r.heal(t)
	r.send(t, 7)
	live := func(m hubMsg) bool { mm, ok := m.(mailMsg); return ok && mm.head.game == r.game && mm.head.ticket == 7 }
	r.victim.tap.awaitMsg(t, from, bridgeSlack, "b2 gets event 7 live", live)
	got := mailsOf(r.victim.tap.all()[from:], r.game)
	// What b2 holds from event 1 on: 1 live, 2-6 repaired, then 7 live, nothing twice.
	if len(got) != 7 {
		for _, m := range got {
			t.Log(describeMsg(m))
		}
		t.Fatalf("b2 got %d messages of the game from event 1 on, want 7 (1 live, 2-6 repaired, 7 live)", len(got))
	}
	for i, m := range got {
		want := uint64(3 + i)
		if m.offset != want || decodeEvent(t, m.frame).Seq != i+1 {
			t.Fatalf("b2's message #%d is %s, want offset %d (event %d)", i, describeMsg(m), want, i+1)
		}
		if i >= 1 && i <= 5 {
			// A repair is the message the mailbox missed, header and all (the
			// stream keeps the header), so the hub cannot tell it apart.
			if m.head != lost[i-1].head || !bytes.Equal(m.frame, lost[i-1].frame) || m.epoch != lost[i-1].epoch {
				t.Fatalf("b2's message #%d is %s, want the repair of %s", i, describeMsg(m), describeMsg(lost[i-1]))
			}
		}
	}
	if got[6].head.kind != "event" {
		t.Errorf("event 7 came as %q, want the live event", got[6].head.kind)
	}
	if n := r.victim.gaps.Load(); n != 0 {
		t.Errorf("b2 counted %d events lost for good; the stream held them all", n)
	}
}

// TestBridgeCountsWhatTheStreamNoLongerHolds: a gap longer than the
// history is repaired with what the stream still holds, in order, and the
// rest is counted as lost for good (gaps), not delivered as something else.
func TestBridgeCountsWhatTheStreamNoLongerHolds(t *testing.T) {
	const frames = 4
	r := startGapRig(t, func(c *bridgeConfig) { c.historyFrames = frames })
	r.cut(t)
	r.send(t, 1, 2, 3, 4, 5, 6) // offsets 3-8
	r.heal(t)
	from := len(r.victim.tap.all())
	r.send(t, 7) // offset 9: the stream holds 6-9
	live := func(m hubMsg) bool { mm, ok := m.(mailMsg); return ok && mm.head.game == r.game && mm.head.ticket == 7 }
	r.victim.tap.awaitMsg(t, from, bridgeSlack, "b2 gets event 7 live", live)
	got := mailsOf(r.victim.tap.all()[from:], r.game)
	var offs []uint64
	for _, m := range got {
		offs = append(offs, m.offset)
	}
	if fmt.Sprint(offs) != "[6 7 8 9]" || got[0].head.ticket != 4 || got[3].head.ticket != 7 {
		for _, m := range got {
			t.Log(describeMsg(m))
		}
		t.Fatalf("b2 got offsets %v, want the stream's 6-8 repaired, then 9 live", offs)
	}
	if n := r.victim.gaps.Load(); n != 3 {
		t.Errorf("b2 counted %d events lost for good, want 3 (offsets 3-5)", n)
	}
}

// TestBridgeFullQueueRefusesWithoutWaiting: with the publisher stuck on a
// frozen Redis, push fills the queue and then refuses at once, counting each
// refusal, so a hub that pushes never waits.
func TestBridgeFullQueueRefusesWithoutWaiting(t *testing.T) {
	const queue = 4
	srv := redistest.Start(t)
	tb := startTestBridge(t, srv, "b1", 30*time.Second, func(c *bridgeConfig) { c.queue = queue })
	tb.awaitReady(t, srv)
	game := uuid.NewString()
	tb.join(t, game, "b1-s")

	srv.Stop()
	t.Cleanup(srv.Cont) // before the bridge's stop, which waits for the publisher
	start := time.Now()
	accepted := 0
	for tb.push(eventOp("b1", game, "b1-s", accepted+1)) {
		accepted++
		if accepted > queue+1 {
			t.Fatalf("push accepted %d operations with a stuck publisher and a queue of %d", accepted, queue)
		}
	}
	const refusals = 10
	for i := 1; i < refusals; i++ {
		if tb.push(eventOp("b1", game, "b1-s", 100+i)) {
			t.Fatalf("push accepted an operation after refusing one, with the publisher stuck")
		}
	}
	// A push that waited would have waited for the publisher's timeout (seconds).
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("%d pushes took %v", accepted+refusals, took)
	}
	if accepted < queue {
		t.Errorf("push accepted %d operations, want the queue's %d at least", accepted, queue)
	}
	if n := tb.full.Load(); n != refusals {
		t.Errorf("full counts %d refusals, want %d", n, refusals)
	}
}

// Tests of bugs found in the bridge (issue 12): each fails until its bug is
// fixed. They are kept out of the commit until then.

// TestBridgeEventAfterFlushallIsNotDropped: an event the hub emits after
// Redis lost everything, before the next heartbeat registers the node again,
// is not silently dropped: it comes back sequenced, or unsent so that the hub
// serves its own players (and completes what waits on its ticket).
func TestBridgeEventAfterFlushallIsNotDropped(t *testing.T) {
	const ttl = 30 * time.Second // the next heartbeat is 10 s away
	srv := redistest.Start(t)
	tb := startTestBridge(t, srv, "b1", ttl)
	tb.awaitReady(t, srv)
	game := uuid.NewString()
	tb.join(t, game, "b1-s")

	if got := srv.Do(t, "FLUSHALL"); got != "+OK" {
		t.Fatalf("FLUSHALL: %s", got)
	}
	from := len(tb.tap.all())
	if !tb.push(eventOp("b1", game, "b1-s", 7)) {
		t.Fatal("push refused")
	}
	tb.tap.awaitMsg(t, from, bridgeSlack, "event 7 back to the hub, sequenced or unsent", func(m hubMsg) bool {
		switch m := m.(type) {
		case mailMsg:
			return m.head.ticket == 7
		case unsentMsg:
			return m.op.head.ticket == 7
		}
		return false
	})
}

// TestBridgeRepairsAGapBeforeItsOwnJoin: a node that already follows a game
// and lost some of its events (its subscription was down) seats a second
// member there. The mailbox brings the join back first; the events the node
// missed before it are repaired from the stream, in order, before the join.
func TestBridgeRepairsAGapBeforeItsOwnJoin(t *testing.T) {
	r := startGapRig(t)
	r.cut(t)
	lost := r.send(t, 1, 2, 3) // offsets 3-5
	r.heal(t)
	from := len(r.victim.tap.all())
	r.victim.join(t, r.game, "b2-t") // offset 6
	got := mailsOf(r.victim.tap.all()[from:], r.game)
	var offs []uint64
	for _, m := range got {
		offs = append(offs, m.offset)
	}
	if fmt.Sprint(offs) != "[3 4 5 6]" {
		for _, m := range got {
			t.Log(describeMsg(m))
		}
		t.Fatalf("b2 got offsets %v, want 3-5 repaired (b2-s is seated there), then its join at 6; gaps counted %d",
			offs, r.victim.gaps.Load())
	}
	for i, m := range got[:3] {
		if m.head != lost[i].head || !bytes.Equal(m.frame, lost[i].frame) {
			t.Errorf("b2's message #%d is %s, want the repair of %s", i, describeMsg(m), describeMsg(lost[i]))
		}
	}
}

// TestBridgeMissesNothingSequencedAfterItReportsUp: whatever the hub emits
// once the bridge has told it Redis is back comes through the mailbox, even
// when the mailbox subscription comes back later than the heartbeat does
// (here SUBSCRIBE keeps failing for a while after Redis restarted empty,
// while every other command works). The test plays the hub: on the report
// of Redis up it registers its seat again (resyncOp) and emits an event.
func TestBridgeMissesNothingSequencedAfterItReportsUp(t *testing.T) {
	const ttl = 900 * time.Millisecond
	srv := redistest.Start(t)
	gate := &subscribeGate{}
	tb := startTestBridge(t, srv, "b1", ttl, func(c *bridgeConfig) { c.opts.Dialer = gate.dial })
	tb.awaitReady(t, srv)
	game := uuid.NewString()
	tb.join(t, game, "b1-s")

	gate.shut.Store(true)
	srv.Kill()
	down := tb.tap.awaitMsg(t, 0, ttl/3+bridgeSlack, "b1 reports the engine down", isDown)
	srv.Restart(t)
	// Two heartbeats after the restart: the bridge has said what it would say.
	score := func() string { return srv.Do(t, "ZSCORE", nodesKey, "b1") }
	redisEventually(t, ttl/3+bridgeSlack, "b1 registered again", func() bool { return score() != "(nil)" })
	was := score()
	redisEventually(t, ttl/3+bridgeSlack, "b1 beats again", func() bool { return score() != was })

	hub := func() { // what the hub does on engineMsg{up, resync}
		if !tb.push(resyncOp{game: game, seats: []remoteMember{{sid: "b1-s", status: statusConnected}}, last: 1}) ||
			!tb.push(eventOp("b1", game, "b1-s", 1)) {
			t.Fatal("push refused")
		}
	}
	resynced := false
	if slicesIndex(tb.tap.all()[down:], isUp) >= 0 {
		if srv.Do(t, "PUBLISH", mailbox("b1"), "Cprobe") != ":0" {
			t.Fatal("the gate did not keep b1's mailbox unsubscribed")
		}
		t.Logf("b1 reported Redis up with no mailbox subscriber")
		hub()
		redisEventually(t, bridgeSlack, "event 1 sequenced", func() bool { return srv.Do(t, "HGET", gameKeys(game)[0], "seq") == "$2" })
		resynced = true
	}

	gate.shut.Store(false)
	awaitSubscribed(t, srv, "b1", true)
	tb.tap.awaitMsg(t, down, ttl/3+bridgeSlack, "b1 reports Redis up", isUp)
	if !resynced {
		hub()
	}
	if !tb.push(eventOp("b1", game, "b1-s", 2)) {
		t.Fatal("push refused")
	}
	second := func(m hubMsg) bool { mm, ok := m.(mailMsg); return ok && mm.head.game == game && mm.head.ticket == 2 }
	tb.tap.awaitMsg(t, down, bridgeSlack, "b1 gets event 2 back", second)
	first := func(m hubMsg) bool { mm, ok := m.(mailMsg); return ok && mm.head.game == game && mm.offset == 2 }
	if slicesIndex(tb.tap.all()[down:], first) < 0 {
		t.Fatalf("event 1 (offset 2), sequenced after the bridge reported Redis up, never reached the hub; gaps counted %d:\n%s",
			tb.gaps.Load(), describeTail(tb.tap.all(), 6))
	}
}

// slicesIndex is the index of the first message match accepts, or -1.
func slicesIndex(ms []hubMsg, match func(hubMsg) bool) int {
	for i, m := range ms {
		if match(m) {
			return i
		}
	}
	return -1
}

// TestBridgeUnsentEventComesBackWithItsTicket: an event the bridge hands
// back unsent (the hub then delivers it to its own players, in a local
// epoch) may still have been sequenced: here Redis freezes with the script
// on its way, the publisher times out, and Redis, thawed, runs the script it
// had already received. A timeout cannot tell, so the copy the mailbox then
// brings carries the event's ticket, by which the hub drops it
// (hubcluster.go, mail) instead of delivering it twice.
func TestBridgeUnsentEventComesBackWithItsTicket(t *testing.T) {
	srv := redistest.Start(t)
	tb := startTestBridge(t, srv, "b1", 30*time.Second)
	tb.awaitReady(t, srv)
	game := uuid.NewString()
	tb.join(t, game, "b1-s")

	srv.Stop()
	t.Cleanup(srv.Cont)
	from := len(tb.tap.all())
	if !tb.push(eventOp("b1", game, "b1-s", 1)) {
		t.Fatal("push refused")
	}
	tb.tap.awaitMsg(t, from, 10*time.Second, "event 1 handed back unsent", func(m hubMsg) bool {
		u, ok := m.(unsentMsg)
		return ok && u.op.head.ticket == 1
	})
	srv.Cont()
	tb.tap.awaitMsg(t, from, 10*time.Second, "event 1's sequenced copy, with its ticket", func(m hubMsg) bool {
		mm, ok := m.(mailMsg)
		return ok && mm.head.game == game && mm.head.ticket == 1 && mm.head.origin == "b1"
	})
}

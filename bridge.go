package main

import (
	"context"
	"crypto/rand"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// The bridge is this node's one owner of Redis connections (contract v2 §12).
// The hub never waits on Redis: it pushes operations into the bridge's queue
// without waiting (a full queue is counted, never waited on), and hears back
// through its inbox. Three goroutines:
//   - the publisher runs the hub's operations in the hub's order over one
//     connection (a pool of one and no retries: two tries of one script, or
//     two connections, could reorder a game's events);
//   - the mailbox reader reads this node's one channel and hands the hub
//     each game's events in offset order, once each, repairing a gap from
//     the game's stream (messages lost while go-redis reconnected);
//   - the heartbeat keeps this node alive, finds dead nodes and reaps them,
//     and tells the hub when Redis is lost, found empty, or back.

// bridgeOp is an operation the hub hands the publisher.
type bridgeOp any

// emitOp sequences one game event (emitScript).
type emitOp struct {
	game     string
	kind     string // event, joined, away, back, left
	sid      string
	user     *int64
	frame    []byte // the event without its offset
	head     header
	snapshot bool   // the origin wants the member list with its copy (a join)
	action   string // "<sid>/<id>" of an action sent with an id, or ""
	last     uint64 // the last offset the origin delivered in the game: a re-created game goes on after it
	again    bool   // sent a second time, after a resync registered the game's seats again
}

// recordOp writes (rec != nil) or deletes a session's record, which lets
// any node resume it and a reaper adopt it.
type recordOp struct {
	sid   string
	token string // the hex hash of its resume token
	rec   []byte // nil: the session ended
	fresh bool   // a new session: its token and owner are written
}

// claimOp asks for the session a resume token names, for the conn whose
// fresh session is ref (claimScript).
type claimOp struct {
	token string
	ref   string
	user  *int64 // the claiming conn's user: only the same user may take the session
}

// moveOp hands session sid, released by this node, to node to, which asked
// for it for its conn's fresh session ref.
type moveOp struct {
	sid, to, ref string
	rec          []byte // nil: the session is gone, unless stored
	stored       bool   // take the record Redis holds: the hub has stopped
}

// resyncOp registers again, after Redis came back, what this node holds of
// one game: its seats, by sid, with their status.
type resyncOp struct {
	game  string
	seats []remoteMember
	last  uint64 // the last offset this node delivered in the game
}

// engineMsg tells the hub what the bridge knows of Redis.
type engineMsg struct {
	up     bool
	fenced bool // a reaper declared this node dead: close every conn, resumable
	resync bool // Redis lost what this node registered: register it again
}

// unsentMsg hands back an event the publisher could not sequence, so the
// hub delivers it to its own players (the engine is down, or the game is
// no longer in Redis).
type unsentMsg struct {
	op     emitOp
	nogame bool
}

// refusedMsg tells the hub Redis sequenced none of op: why is "fenced",
// "gone" (the seat it is about was ended elsewhere first) or "full".
type refusedMsg struct {
	op  emitOp
	why string
}

// adoptMsg gives the hub a dead node's sessions, now this node's.
type adoptMsg struct {
	records []sessionRecord
}

// releaseMsg asks the hub for session sid, which node to's conn (fresh
// session ref) resumes.
type releaseMsg struct {
	sid, to, ref string
}

// claimedMsg answers a claimOp: the session (nil when no node holds it),
// with each of its games as Redis holds them.
type claimedMsg struct {
	ref      string
	rec      *sessionRecord
	games    map[string]*fetchedGame
	mismatch bool // the session is another user's: it stays where it is
}

// fetchedGame is a game as Redis holds it: its position, its history and its members.
type fetchedGame struct {
	epoch    string
	last     uint64
	frames   [][]byte // the history, oldest first, ending at last
	members  []remoteMember
	actions  map[string]uint64 // "<sid>/<id>" of the actions in the history -> their offsets
	settings string            // the game's settings in Redis (JSON), "" for none
}

// bridgeConfig is what the bridge needs of the configuration.
type bridgeConfig struct {
	opts          *redis.Options
	node          string
	ttl           time.Duration
	historyFrames int
	historyBytes  int
	maxSeats      int // MAX_GAME_SESSIONS, checked in Redis for the whole cluster
	queue         int // operations the publisher's queue holds
}

// bridge is one node's Redis side.
type bridge struct {
	// set at construction
	cfg         bridgeConfig
	incarnation atomic.Value // string: this process's run; a reaper fences this one, not a later start with the same NODE_ID
	log         zerolog.Logger
	pub         *redis.Client // the publisher's one connection
	aux         *redis.Client // reads, heartbeats, repairs
	ops         chan bridgeOp
	toHub       func(hubMsg) bool
	counts      func() (hubCounts, []int64, bool)
	ctx         context.Context
	cancel      context.CancelFunc
	wg          sync.WaitGroup

	up          atomic.Bool
	firstUp     chan struct{} // closed once the hub has heard Redis is up, the first time
	firstUpOnce sync.Once
	full        atomic.Uint64 // operations refused by a full queue
	gaps        atomic.Uint64 // events lost for good (not in the stream any more)
	refusal     atomic.Uint64 // events Redis refused to sequence (fenced, game gone)

	// each game's epoch and next offset: written by the mailbox reader, and
	// by the hub when it stops following a game (held for map steps only)
	feedMu sync.Mutex
	feed   map[string]*feedPos
}

// feedPos is where the mailbox reader stands in one game.
type feedPos struct {
	epoch string
	next  uint64
}

// newBridge returns a bridge that will talk to Redis once started.
func newBridge(cfg bridgeConfig, log zerolog.Logger, toHub func(hubMsg) bool, counts func() (hubCounts, []int64, bool)) *bridge {
	pubOpts := *cfg.opts
	pubOpts.PoolSize, pubOpts.MinIdleConns, pubOpts.MaxRetries = 1, 1, -1
	pubOpts.ContextTimeoutEnabled = true // each operation's own deadline, not only go-redis's read timeout
	auxOpts := *cfg.opts
	auxOpts.PoolSize, auxOpts.ContextTimeoutEnabled = 4, true
	if cfg.queue <= 0 {
		cfg.queue = 65536
	}
	if cfg.maxSeats <= 0 {
		cfg.maxSeats = 1 << 30 // no bound but the hub's own
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &bridge{cfg: cfg, log: log.With().Str("node", cfg.node).Logger(),
		pub: redis.NewClient(&pubOpts), aux: redis.NewClient(&auxOpts), ops: make(chan bridgeOp, cfg.queue),
		toHub: toHub, counts: counts, ctx: ctx, cancel: cancel, feed: make(map[string]*feedPos), firstUp: make(chan struct{})}
	b.incarnation.Store(rand.Text()[:12])
	return b
}

// incarnationNow is this node's current incarnation.
func (b *bridge) incarnationNow() string { return b.incarnation.Load().(string) }

// push queues op for the publisher without waiting; false when the queue is full.
func (b *bridge) push(op bridgeOp) bool {
	select {
	case b.ops <- op:
		return true
	default:
		b.full.Add(1)
		return false
	}
}

// start registers the node and starts the goroutines. It waits for the
// mailbox subscription so that nothing sequenced for this node afterwards
// can be missed, but not for Redis itself: a node started while Redis is
// down serves its own players and joins the cluster when Redis answers.
func (b *bridge) start() {
	b.leftovers()
	ps := b.aux.Subscribe(b.ctx)
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(4096), redis.WithChannelHealthCheckInterval(time.Second))
	b.wg.Add(3)
	go b.publishLoop()
	go b.mailLoop(ps, ch)
	go b.heartbeatLoop()
	if err := ps.Subscribe(b.ctx, mailbox(b.cfg.node)); err != nil {
		b.log.Warn().Err(err).Msg("redis mailbox subscription failed; retrying in the background")
	}
	// A node that served its first players alone would split their games
	// in two: it waits, within NODE_TTL, for the hub to hear Redis is up.
	select {
	case <-b.firstUp:
	case <-time.After(b.cfg.ttl):
		b.log.Warn().Dur("waited", b.cfg.ttl).Msg("redis not up at start: serving this node's own players until it answers")
	}
}

// leftoverScript takes the sessions an earlier run of this NODE_ID left in
// Redis (a rolling restart hands its sessions over, then starts again under
// the same name before any other node saw it gone). KEYS: the node's sessions.
var leftoverScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
local taken = {}
for i = 1, #all, 2 do
  if redis.call('GET', 'dugout:s:' .. all[i]) == ARGV[1] then -- still this node's, not moved on
    taken[#taken + 1] = all[i]
    taken[#taken + 1] = all[i + 1]
  end
end
return taken
`)

// leftovers adopts what an earlier run of this node left: nobody else
// will, since the node's key is alive again. Called before anything of
// this run can be registered.
func (b *bridge) leftovers() {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	res, err := leftoverScript.Run(ctx, b.aux, []string{nodeSessions(b.cfg.node)}, b.cfg.node).StringSlice()
	if err != nil || len(res) == 0 {
		return // Redis away at start: the sessions wait for this node's next start, or their owner key's claims
	}
	var recs []sessionRecord
	for i := 0; i+1 < len(res); i += 2 {
		if r, err := parseRecord([]byte(res[i+1])); err == nil {
			recs = append(recs, r)
		}
	}
	b.log.Info().Int("sessions", len(recs)).Msg("adopted the sessions an earlier run of this node left")
	b.toHub(adoptMsg{records: recs}) // at once, so a resume's release finds them; their games hear of them once Redis is up
}

// stop ends the goroutines and closes the connections. Called once the hub has stopped.
func (b *bridge) stop() {
	b.cancel()
	b.wg.Wait()
	b.pub.Close()
	b.aux.Close()
}

// deregister deletes this node's liveness key, so that the others reap its
// sessions now rather than after NODE_TTL: what a SIGTERM in a cluster does.
// It returns once the publisher has run everything queued before it.
func (b *bridge) deregister(timeout time.Duration) {
	done := make(chan struct{})
	if !b.push(deregisterOp{done: done}) {
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// deregisterOp is the publisher's last operation at a shutdown.
type deregisterOp struct{ done chan struct{} }

// publishLoop runs the hub's operations in order.
func (b *bridge) publishLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case op := <-b.ops:
			b.run(op)
		}
	}
}

// run applies one operation. An emit that cannot reach Redis goes back to
// the hub, which delivers it to its own players.
func (b *bridge) run(op bridgeOp) {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	switch op := op.(type) {
	case emitOp:
		if !b.up.Load() {
			b.toHub(unsentMsg{op: op})
			return
		}
		keys := append(gameKeys(op.game), seatsKey)
		snap := "0"
		if op.snapshot {
			snap = "1"
		}
		res, err := emitScript.Run(ctx, b.pub, keys, b.cfg.node, op.kind, op.sid, userField(op.user), op.frame,
			newEpoch(), b.cfg.historyFrames, b.cfg.historyBytes, op.head.encode(), snap,
			keyPrefix+"dead:", keyPrefix+"mbox:", op.game, op.action, b.incarnationNow(), op.last, b.cfg.maxSeats).StringSlice()
		var refused redis.Error
		switch {
		case errors.As(err, &refused):
			// Redis answered, with an error: a bug of ours, not an outage.
			b.refusal.Add(1)
			b.log.Error().Err(err).Str("game_id", op.game).Msg("redis refused a game event")
			b.toHub(unsentMsg{op: op})
		case err != nil:
			b.lost(err)
			b.toHub(unsentMsg{op: op})
		case len(res) == 1 && res[0] == "nogame":
			b.refusal.Add(1)
			b.toHub(unsentMsg{op: op, nogame: true})
		case len(res) == 1 && res[0] == "fenced":
			b.refusal.Add(1) // the heartbeat tells the hub, which closes everything
			b.toHub(refusedMsg{op: op, why: "fenced"})
		case len(res) == 1:
			b.toHub(refusedMsg{op: op, why: res[0]}) // gone, full
		}
	case recordOp:
		b.record(ctx, op)
	case claimOp:
		b.claim(ctx, op)
	case moveOp:
		b.move(ctx, op)
	case resyncOp:
		b.resync(ctx, op)
	case settingsOp:
		b.storeSettings(ctx, op)
	case lookupOp:
		b.lookup(ctx, op)
	case deregisterOp:
		if err := b.pub.Del(ctx, nodeKey(b.cfg.node)).Err(); err != nil {
			b.log.Warn().Err(err).Msg("could not deregister the node; the others reap it after NODE_TTL")
		}
		close(op.done)
	}
}

// failed handles an operation's error: Redis answering with an error is a
// bug of ours, logged; anything else is Redis unreachable (lost).
func (b *bridge) failed(err error, what string) {
	var refused redis.Error
	if errors.As(err, &refused) {
		b.log.Error().Err(err).Msg("redis refused " + what)
		return
	}
	b.lost(err)
}

// lost marks Redis unreachable and tells the hub, once.
func (b *bridge) lost(err error) {
	if b.up.Swap(false) {
		b.log.Warn().Err(err).Msg("redis unreachable: serving this node's own players until it answers")
		b.toHub(engineMsg{up: false})
	}
}

// record writes or deletes a session's record, its owner and token.
func (b *bridge) record(ctx context.Context, op recordOp) {
	if !b.up.Load() {
		return // registered again at the resync
	}
	put := "0"
	if op.fresh {
		put = "2"
	} else if op.rec != nil {
		put = "1"
	}
	err := recordScript.Run(ctx, b.pub, []string{nodeSessions(b.cfg.node), ownerKey(op.sid), tokenKey(op.token), deadKey(b.cfg.node)},
		b.cfg.node, op.sid, put, op.rec, b.incarnationNow()).Err()
	if err != nil {
		b.failed(err, "a session record")
	}
}

// recordScript writes (ARGV[3] 1, or 2 for a fresh session, which also
// takes its owner and token keys) or deletes (0) a session's record. KEYS:
// the node's sessions, the session's owner key, its token key, the node's
// tombstone. ARGV: the node, the sid, the mode, the record, the
// incarnation. A node declared dead writes nothing, and a node writes only
// the sessions it owns: a record of one that moved on, written late, would
// be a ghost a reaper hands out.
var recordScript = redis.NewScript(`
if redis.call('GET', KEYS[4]) == ARGV[5] then return 'fenced' end
local owner = redis.call('GET', KEYS[2])
if ARGV[3] == '2' then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[2])
  owner = ARGV[1]
end
if owner ~= ARGV[1] then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 'moved'
end
if ARGV[3] == '0' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
  if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
end
return 'ok'
`)

// mailLoop reads this node's mailbox and hands the hub what it says, in order.
func (b *bridge) mailLoop(ps *redis.PubSub, ch <-chan any) {
	defer b.wg.Done()
	defer ps.Close()
	for {
		select {
		case <-b.ctx.Done():
			return
		case v, ok := <-ch:
			if !ok {
				return
			}
			switch v := v.(type) {
			case *redis.Subscription:
				// A (re)subscription: whatever was published while the
				// connection was down is in the streams; each game's next
				// event repairs its gap (repair). The heartbeat reports
				// Redis up only once the mailbox is subscribed, so nothing
				// sequenced after that report is published to nobody.
				if v.Kind == "subscribe" {
					b.log.Debug().Msg("redis mailbox subscribed")
				}
			case *redis.Message:
				b.mail(v.Payload)
			}
		}
	}
}

// mail handles one mailbox message.
func (b *bridge) mail(raw string) {
	if strings.HasPrefix(raw, "C") {
		b.control(raw[1:])
		return
	}
	m, err := parseMail(raw)
	if err != nil {
		b.log.Error().Err(err).Msg("unreadable mailbox message")
		return
	}
	b.feedMu.Lock()
	pos := b.feed[m.head.game]
	switch {
	case pos == nil:
		// A game this node starts following: its first event here (its
		// own join, the hub having unfollowed it first) says where.
		pos = &feedPos{epoch: m.epoch, next: m.offset}
		b.feed[m.head.game] = pos
	case pos.epoch != m.epoch:
		// A new history of a game this node follows: all of it is news
		// to the members here, from its first event on.
		pos.epoch, pos.next = m.epoch, 1
	}
	b.feedMu.Unlock()
	switch {
	case m.offset < pos.next:
		return // seen already: a repair fetched it
	case m.offset > pos.next:
		b.repair(m.head.game, pos, m.offset)
	}
	pos.next = m.offset + 1
	b.toHub(m)
}

// repair hands the hub the events of game from pos.next up to before upTo,
// read from the game's stream: mailbox messages lost while the subscription
// was down. What the stream no longer holds is counted and logged.
func (b *bridge) repair(game string, pos *feedPos, upTo uint64) {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	entries, err := b.aux.XRange(ctx, gameKeys(game)[1], strconv.FormatUint(pos.next, 10)+"-1", strconv.FormatUint(upTo-1, 10)+"-1").Result()
	want := pos.next
	// A new epoch's offsets start after the last a resync brought (not at
	// 1): what comes before its first event is not lost, it never was.
	fresh := pos.next == 1
	if err == nil {
		for _, e := range entries {
			off, _ := strconv.ParseUint(strings.TrimSuffix(e.ID, "-1"), 10, 64)
			frame, _ := e.Values["f"].(string)
			if off < want {
				continue
			}
			if fresh {
				want, fresh = off, false
			}
			if off > want {
				b.gaps.Add(off - want)
			}
			head := header{game: game, kind: "repair"}
			if h, ok := e.Values["h"].(string); ok {
				if parsed, ok := parseHeader(h); ok {
					head = parsed
				}
			}
			b.toHub(mailMsg{epoch: pos.epoch, offset: off, head: head, frame: []byte(frame)})
			want = off + 1
		}
	}
	if want < upTo && !fresh {
		b.gaps.Add(upTo - want)
		b.log.Warn().Str("game_id", game).Uint64("from", want).Uint64("to", upTo-1).Msg("game events lost to this node: not in the stream any more")
	}
}

// unfollow forgets where the mailbox stands in game, which this node no
// longer holds: its next event here, if it holds it again, starts afresh.
// Called by the hub; holds the lock for a map step.
func (b *bridge) unfollow(game string) {
	b.feedMu.Lock()
	delete(b.feed, game)
	b.feedMu.Unlock()
}

// newEpoch names a new unbroken history of a game.
func newEpoch() string { return rand.Text() }

// heartbeatLoop keeps the node alive every NODE_TTL/3, and reaps the nodes
// that are not.
func (b *bridge) heartbeatLoop() {
	defer b.wg.Done()
	registered := false
	for {
		registered = b.beat(registered)
		wait := b.cfg.ttl / 3
		if b.up.Load() {
			b.reap()
		} else {
			// Down: try again soon (Redis back, or the mailbox resubscribed)
			// rather than a third of NODE_TTL later.
			wait = min(wait, 100*time.Millisecond)
		}
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// beat runs one heartbeat and reports whether the node is registered.
func (b *bridge) beat(registered bool) bool {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ttl/3)
	defer cancel()
	value := "0|0|0"
	c, users, ok := b.counts()
	if ok {
		value = strconv.Itoa(c.connected+c.away) + "|" + strconv.Itoa(c.connected) + "|" + strconv.Itoa(c.away)
	}
	now := time.Now().UnixMilli()
	res, err := heartbeatScript.Run(ctx, b.aux, []string{nodeKey(b.cfg.node), nodesKey, deadKey(b.cfg.node), incKey},
		b.incarnationNow(), value, now, b.cfg.ttl.Milliseconds(), b.cfg.node).Text()
	switch {
	case err != nil:
		if !errors.Is(err, context.Canceled) {
			b.lost(err)
		}
		return registered
	case res == "fenced":
		b.log.Error().Msg("this node was declared dead by another: closing every connection, resumable")
		b.up.Store(false)
		b.toHub(engineMsg{fenced: true})
		// Start again as a new incarnation, holding nothing.
		b.incarnation.Store(rand.Text()[:12])
		return false
	}
	// The node's users, for an exact unique_users across nodes (a user with
	// sessions on two nodes counts once): rewritten whole at every beat.
	p := b.aux.TxPipeline()
	p.Del(ctx, nodeUsers(b.cfg.node))
	if len(users) > 0 {
		ids := make([]any, len(users))
		for i, u := range users {
			ids[i] = u
		}
		p.SAdd(ctx, nodeUsers(b.cfg.node), ids...)
	}
	p.PExpire(ctx, nodeUsers(b.cfg.node), 2*b.cfg.ttl)
	p.Exec(ctx)
	// Up only once Redis itself lists the mailbox's subscriber (go-redis
	// says nothing when the subscription's connection drops, and
	// resubscribes on its own): nothing sequenced after this node reports
	// up is then published to nobody.
	if n, err := b.aux.PubSubNumSub(ctx, mailbox(b.cfg.node)).Result(); err != nil || n[mailbox(b.cfg.node)] == 0 {
		return true
	}
	wasUp := b.up.Swap(true)
	if !wasUp || res == "new" && registered {
		b.toHub(engineMsg{up: true, resync: registered || res == "new"})
	}
	b.firstUpOnce.Do(func() { close(b.firstUp) })

	return true
}

// reap finds the nodes whose liveness key is gone and claims their
// sessions. Of several nodes trying, one wins (reapScript).
func (b *bridge) reap() {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.ttl/3)
	defer cancel()
	nodes, err := b.aux.ZRange(ctx, nodesKey, 0, -1).Result()
	if err != nil {
		return
	}
	for _, n := range nodes {
		if n == b.cfg.node {
			continue
		}
		alive, err := b.aux.Exists(ctx, nodeKey(n)).Result()
		if err != nil || alive == 1 {
			continue
		}
		res, err := reapScript.Run(ctx, b.aux, []string{nodeKey(n), nodesKey, deadKey(n), nodeSessions(n), nodeSessions(b.cfg.node), incKey},
			n, b.cfg.node, (100 * b.cfg.ttl).Milliseconds()).StringSlice()
		if err != nil || len(res) == 0 {
			continue
		}
		var recs []sessionRecord
		for i := 0; i+1 < len(res); i += 2 {
			if r, err := parseRecord([]byte(res[i+1])); err == nil {
				recs = append(recs, r)
			}
		}
		b.log.Warn().Str("dead_node", n).Int("sessions", len(recs)).Msg("reaped a dead node's sessions")
		b.toHub(adoptMsg{records: recs})
	}
}

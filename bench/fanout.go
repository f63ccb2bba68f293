package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

var fanoutFigures = []figure{
	{"clients", "clients (games × members)", ""},
	{"sent_per_s", "decisions sent/s", ""},
	{"delivered_per_s", "delivered frames/s (to the other members)", "higher"},
	{"lat_p50_ms", "latency p50 (ms)", "lower"},
	{"lat_p90_ms", "latency p90 (ms)", "lower"},
	{"lat_p99_ms", "latency p99 (ms)", "lower"},
	{"lat_max_ms", "latency max (ms)", "lower"},
	{"lat_samples", "latency samples", ""},
	{"cpu_s", "server CPU-seconds in window (nodes summed, Redis apart)", "lower"},
	{"cpu_pct", "server CPU in window (% of a core, nodes summed)", "lower"},
	{"cpu_s_per_100k", "server CPU-s per 100,000 deliveries (nodes summed)", "lower"},
	{"tool_cpu_pct", "tool CPU busy in window (%)", ""},
	{"other_cpu_pct", "other processes' CPU in window (% of a core)", ""},
	{"rss_end_mib", "server RSS at end of window (MiB, nodes summed)", "lower"},
	{"losses", "lost frames (after drain)", "lower"},
	{"out_of_order", "out-of-order frames", "lower"},
	{"offset_gaps", "game events whose offset is not the previous + 1 (v2 §2)", "lower"},
	{"error_frames", "error frames received", "lower"},
	{"dropped_conns", "connections dropped by the server", "lower"},
	{"send_errors", "send errors", "lower"},
}

// clusterFanoutFigures are the rows a fan-out with clusters adds: Redis, the
// whole server side, and each node.
func clusterFanoutFigures(nodes int) []figure {
	f := []figure{
		{"nodes", "nodes (dugout processes; 1 for the single node)", ""},
		{"all_cpu_s_per_100k", "all server-side CPU-s per 100,000 deliveries (nodes + Redis)", "lower"},
	}
	f = append(f, clusterRedisFigures...)
	for k := 1; k <= nodes; k++ {
		n := "n" + strconv.Itoa(k)
		f = append(f,
			figure{n + "_delivered_per_s", "node " + n + ": delivered frames/s to its members", ""},
			figure{n + "_cpu_pct", "node " + n + ": CPU in window (% of a core)", "lower"},
			figure{n + "_cpu_s_per_100k", "node " + n + ": CPU-s per 100,000 of its deliveries", "lower"})
	}
	return f
}

// fanClient is one game member: a reader goroutine checks and times every
// decision frame, a sender goroutine submits one decision per interval.
type fanClient struct {
	idx, game, m int
	node         int // the deployment's node it is connected to
	gid          string
	ws           *websocket.Conn
	joinOnce     sync.Once
	joined       chan struct{}
	sent         atomic.Int64 // decisions sent so far; seq runs 1..sent

	// owned by the reader until it returns
	last, count []int64 // per member of the game: last seq seen, frames seen
	ooo         int64
	lastOff     uint64  // the offset of the last game event (0: none yet, or a server without offsets)
	offGaps     int64   // game events whose offset was not lastOff + 1
	lat         []int64 // ns, frames from the others sent inside the window
	errFrames   int64
	errCodes    map[string]int
	dropped     bool // the read failed before the tool closed the connection
	dropErr     error
}

// fanShared is the state every client of one fanout run sees.
type fanShared struct {
	members          int
	winStart, winEnd atomic.Int64   // unix ns; 0 until the senders start
	received         atomic.Int64   // decision frames received, echoes included
	winDelivered     atomic.Int64   // frames from the others received inside the window
	nodeDelivered    []atomic.Int64 // the same, by the receiver's node
	winSent          atomic.Int64   // decisions sent inside the window
	closing          atomic.Bool    // the tool is closing the connections
	sendErrors       sampler
}

func (c *fanClient) readLoop(sh *fanShared) {
	var buf bytes.Buffer
	for {
		_, r, err := c.ws.Reader(context.Background())
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		now := time.Now().UnixNano()
		if err != nil {
			if !sh.closing.Load() {
				c.dropped, c.dropErr = true, err
			}
			return
		}
		b := buf.Bytes()
		var f frame
		d, ok := parseDecision(b)
		if ok {
			f.Type = "defensive_decision"
			f.Data.Offset = offsetOf(b)
		} else if json.Unmarshal(b, &f) != nil {
			c.errFrames++
			continue
		} else {
			d = f.Data.Decision
		}
		switch f.Type {
		case "defensive_decision", "presence":
			c.checkOffset(f.Data.Offset)
		}
		switch f.Type {
		case "defensive_decision":
			m := d.From - c.game*sh.members
			if m < 0 || m >= sh.members {
				c.errFrames++
				continue
			}
			if d.Seq <= c.last[m] {
				c.ooo++
			} else {
				c.last[m] = d.Seq
			}
			c.count[m]++
			sh.received.Add(1)
			if m != c.m {
				ws, we := sh.winStart.Load(), sh.winEnd.Load()
				if d.SentNS >= ws && d.SentNS < we {
					c.lat = append(c.lat, now-d.SentNS)
				}
				if now >= ws && now < we {
					sh.winDelivered.Add(1)
					sh.nodeDelivered[c.node].Add(1)
				}
			}
		case "game_joined":
			if f.Data.Offset > c.lastOff {
				c.lastOff = f.Data.Offset // the joiner has seen everything up to its own join
			}
			c.joinOnce.Do(func() { close(c.joined) })
		case "error":
			c.errFrames++
			c.errCodes[f.Data.Code]++
		}
	}
}

// checkOffset counts a game event whose offset does not follow the last one:
// every member gets every event of its game (its own with their ids), so a
// gap is a lost event and a step back a repeated or reordered one. The
// baseline sends no offsets.
func (c *fanClient) checkOffset(off uint64) {
	if off == 0 {
		return
	}
	if c.lastOff > 0 && off != c.lastOff+1 {
		c.offGaps++
	}
	c.lastOff = off
}

// offsetOf reads a game event's data.offset, which dugout writes first in
// data (contract v2 §2); 0 when there is none.
func offsetOf(b []byte) uint64 {
	i := bytes.Index(b, offsetKey)
	if i < 0 {
		return 0
	}
	n, ok := intAfter(b[i:], offsetKey)
	if !ok || n < 0 {
		return 0
	}
	return uint64(n)
}

var offsetKey = []byte(`"data":{"offset":`)

// decisionFields is the relayed decision the tool put in every submission.
type decisionFields = struct {
	Seq    int64 `json:"seq"`
	SentNS int64 `json:"sent_ns"`
	From   int   `json:"from"`
}

var (
	decisionType = []byte(`{"type":"defensive_decision"`)
	decisionKey  = []byte(`"decision":{`)
	seqKey       = []byte(`"seq":`)
	sentKey      = []byte(`"sent_ns":`)
	fromKey      = []byte(`"from":`)
)

// parseDecision reads a defensive_decision frame without encoding/json, which
// would cost the tool more CPU than the servers spend relaying the frame. Any
// frame it is unsure of is left to encoding/json (ok false).
func parseDecision(b []byte) (d decisionFields, ok bool) {
	if !bytes.HasPrefix(b, decisionType) {
		return d, false
	}
	i := bytes.Index(b, decisionKey)
	if i < 0 {
		return d, false
	}
	rest := b[i+len(decisionKey):]
	seq, ok1 := intAfter(rest, seqKey)
	sent, ok2 := intAfter(rest, sentKey)
	from, ok3 := intAfter(rest, fromKey)
	if !ok1 || !ok2 || !ok3 {
		return d, false
	}
	return decisionFields{Seq: seq, SentNS: sent, From: int(from)}, true
}

// intAfter parses the non-negative integer that follows key in b.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	var n int64
	j := 0
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		n = n*10 + int64(b[j]-'0')
	}
	return n, j > 0 && j < len(b) && (b[j] == ',' || b[j] == '}')
}

// decision builds a submit_defensive_decision frame without encoding/json;
// with withID it carries an id (an exactly-once action, remembered by the
// server), as a real client's does.
func (c *fanClient) decision(buf []byte, seq, sentNS int64, withID bool) []byte {
	buf = append(buf[:0], `{"type":"submit_defensive_decision",`...)
	if withID {
		buf = append(buf, `"id":"`...)
		buf = strconv.AppendInt(buf, seq, 10)
		buf = append(buf, `",`...)
	}
	buf = append(buf, `"data":{"game_id":"`...)
	buf = append(buf, c.gid...)
	buf = append(buf, `","decision":{"seq":`...)
	buf = strconv.AppendInt(buf, seq, 10)
	buf = append(buf, `,"sent_ns":`...)
	buf = strconv.AppendInt(buf, sentNS, 10)
	buf = append(buf, `,"from":`...)
	buf = strconv.AppendInt(buf, int64(c.idx), 10)
	return append(buf, "}}}"...)
}

// sendLoop submits one decision per interval from a random offset inside the
// first interval until stop.
func (c *fanClient) sendLoop(ctx context.Context, sh *fanShared, start, stop time.Time, interval time.Duration, withID bool) {
	if sleepCtx(ctx, time.Until(start.Add(rand.N(interval)))) != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var buf []byte
	for seq := int64(1); ; seq++ {
		now := time.Now()
		if !now.Before(stop) {
			return
		}
		ns := now.UnixNano()
		buf = c.decision(buf, seq, ns, withID)
		// No per-write context: a timer per write costs the tool more than
		// the server; a run that hits its deadline closes every connection,
		// which ends a blocked write.
		if err := c.ws.Write(context.Background(), websocket.MessageText, buf); err != nil {
			sh.sendErrors.add("member %d: %v", c.idx, err)
			return
		}
		c.sent.Store(seq)
		if ns >= sh.winStart.Load() {
			sh.winSent.Add(1)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func runFanout(ctx context.Context, o *options, dep *deployment, d *dialer) (*measurement, error) {
	m := newMeasurement()
	G, M := o.games, o.members
	n := G * M
	K := len(dep.nodes)
	toks, err := tokens(o.jwtSecret, n)
	if err != nil {
		return nil, err
	}
	sh := &fanShared{members: M, nodeDelivered: make([]atomic.Int64, K)}
	gids := make([]string, G)
	for g := range gids {
		gids[g] = uuid.NewString()
	}
	clients := make([]*fanClient, n)
	conns := make([]*websocket.Conn, n)
	var readers sync.WaitGroup
	defer func() {
		sh.closing.Store(true)
		closeAll(conns)
		readers.Wait()
	}()

	// Connect and join every member before anyone sends.
	var fails sampler
	parallelFor(ctx, n, o.parallel, func(i int) {
		tok, uid := tokenFor(toks, i)
		// Member m of game g is on node (g+m) mod K: every game spans
		// min(K, M) nodes, and every node holds as many members as the next.
		node := (i/M + i%M) % K
		ws, err := d.dial(ctx, "ws://"+dep.nodes[node].addr+"/ws", tok)
		if err != nil {
			fails.add("dial: %v", err)
			return
		}
		if err := readSession(ctx, ws, uid); err != nil {
			fails.add("%v", err)
			_ = ws.CloseNow()
			return
		}
		c := &fanClient{idx: i, game: i / M, m: i % M, node: node, gid: gids[i/M], ws: ws, joined: make(chan struct{}),
			last: make([]int64, M), count: make([]int64, M), errCodes: map[string]int{}}
		clients[i], conns[i] = c, ws
		readers.Add(1)
		go func() { defer readers.Done(); c.readLoop(sh) }()
		if err := write(ctx, ws, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+c.gid+`"}}`)); err != nil {
			fails.add("join: %v", err)
		}
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// From here on conns is only read. A run that hits its deadline closes
	// every connection, which ends any read or write still blocked.
	stopAtDeadline := context.AfterFunc(ctx, func() { sh.closing.Store(true); closeAll(conns) })
	defer stopAtDeadline()
	m.notes = append(m.notes, fails.report("members failed to connect or join")...)
	if fails.count() > 0 {
		m.set("clients", float64(n-fails.count()))
		return m, nil // a half-built set of games would make every other figure wrong
	}
	joinWait := time.NewTimer(30 * time.Second)
	defer joinWait.Stop()
	for _, c := range clients {
		select {
		case <-c.joined:
		case <-joinWait.C:
			m.notef("not every member got game_joined within 30 s")
			return m, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	m.set("clients", float64(n))

	// The senders start together (each at a random offset in its first
	// interval); the window opens after the warm-up and closes with the senders.
	start := time.Now().Add(100 * time.Millisecond)
	winStart := start.Add(o.warmup)
	winEnd := winStart.Add(o.duration)
	sh.winStart.Store(winStart.UnixNano())
	sh.winEnd.Store(winEnd.UnixNano())
	var senders sync.WaitGroup
	for _, c := range clients {
		senders.Add(1)
		go func() { defer senders.Done(); c.sendLoop(ctx, sh, start, winEnd, o.interval, !o.noIDs) }()
	}
	if err := sleepCtx(ctx, time.Until(winStart)); err != nil {
		return nil, err
	}
	i0 := dep.info()
	s0 := dep.snap()
	if err := sleepCtx(ctx, time.Until(winEnd)); err != nil {
		return nil, err
	}
	s1 := dep.snap()
	i1 := dep.info()
	win := s1.t.Sub(s0.t).Seconds()
	nodeCPU, cpu := dep.nodesCPU(s0, s1)
	var rssEnd int64
	for _, p := range dep.nodes {
		r, _ := rss(p.pid)
		rssEnd += r
	}
	delivered := sh.winDelivered.Load()
	senders.Wait()

	// Drain: wait until every member has every frame, or the drain period ends.
	var expected int64
	for _, c := range clients {
		expected += c.sent.Load() * int64(M)
	}
	drainEnd := time.Now().Add(o.drain)
	for sh.received.Load() < expected && time.Now().Before(drainEnd) {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	sh.closing.Store(true)
	closeAll(conns)
	readers.Wait()

	var losses, extra, ooo, offGaps, errFrames, dropped int64
	var lat []int64
	codes := map[string]int{}
	var drops sampler
	for _, c := range clients {
		base := c.game * M
		for k := range M {
			diff := clients[base+k].sent.Load() - c.count[k]
			if diff > 0 {
				losses += diff
			} else {
				extra -= diff
			}
		}
		ooo += c.ooo
		offGaps += c.offGaps
		errFrames += c.errFrames
		for k, v := range c.errCodes {
			codes[k] += v
		}
		if c.dropped {
			dropped++
			drops.add("member %d: %v", c.idx, c.dropErr)
		}
		lat = append(lat, c.lat...)
	}
	slices.Sort(lat)
	m.set("sent_per_s", float64(sh.winSent.Load())/win)
	m.set("delivered_per_s", float64(delivered)/win)
	m.set("lat_samples", float64(len(lat)))
	if len(lat) > 0 {
		m.set("lat_p50_ms", ms(quantile(lat, 0.50)))
		m.set("lat_p90_ms", ms(quantile(lat, 0.90)))
		m.set("lat_p99_ms", ms(quantile(lat, 0.99)))
		m.set("lat_max_ms", ms(lat[len(lat)-1]))
	}
	m.set("cpu_s", cpu)
	m.set("cpu_pct", cpu/win*100)
	if delivered > 0 {
		m.set("cpu_s_per_100k", cpu/float64(delivered)*1e5)
	}
	if o.hasCluster() {
		m.set("nodes", float64(K))
		all := cpu + dep.redisCPU(s0, s1)
		if delivered > 0 {
			m.set("all_cpu_s_per_100k", all/float64(delivered)*1e5)
		}
		dep.redisFigures(m, s0, s1, i0, i1, float64(delivered), float64(sh.winSent.Load()))
		for k := range K {
			key := "n" + strconv.Itoa(k+1)
			nd := sh.nodeDelivered[k].Load()
			m.set(key+"_delivered_per_s", float64(nd)/win)
			m.set(key+"_cpu_pct", nodeCPU[k]/win*100)
			if nd > 0 {
				m.set(key+"_cpu_s_per_100k", nodeCPU[k]/float64(nd)*1e5)
			}
		}
	}
	m.set("tool_cpu_pct", (s1.tool-s0.tool)/win*100)
	m.set("other_cpu_pct", otherPct(s0, s1))
	m.set("rss_end_mib", mib(rssEnd))
	m.set("losses", float64(losses))
	m.set("out_of_order", float64(ooo))
	m.set("offset_gaps", float64(offGaps))
	m.set("error_frames", float64(errFrames))
	m.set("dropped_conns", float64(dropped))
	m.set("send_errors", float64(sh.sendErrors.count()))
	if extra > 0 {
		m.notef("%d frames more than were sent (duplicates)", extra)
	}
	if len(codes) > 0 {
		m.notef("error codes received: %v", codes)
	}
	if losses > 0 {
		m.notef("%d of %d frames never arrived after a %s drain", losses, expected, o.drain)
	}
	if offGaps > 0 {
		m.notef("%d game events arrived with an offset other than the previous one's + 1", offGaps)
	}
	m.notes = append(m.notes, drops.report("connections dropped by the server")...)
	m.notes = append(m.notes, sh.sendErrors.report("send errors")...)
	return m, nil
}

// quantile is the nearest-rank q-quantile of sorted.
func quantile(sorted []int64, q float64) int64 {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

package main

// The failover mode: a resume storm after a node dies (contract v2 §12). N
// sessions in games of -members spread over the -cluster nodes of one Redis
// play (a decision each every -interval); one node is SIGKILLed; its clients
// see their connections drop, reconnect with the browser client's jittered
// backoff to the surviving nodes, and resume with their games' positions.
// The figures: how long until every one is resumed, how many were recovered
// (caught up from the history), how many failed and why, and whether any
// member, victim or survivor, saw an offset out of sequence. See "Cluster
// mode" in bench/README.md.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// foShared is what every client of one failover run sees.
type foShared struct {
	o         *options
	dep       *deployment
	d         *dialer
	killed    int             // the index of the node the run kills
	survivors []int           // the other nodes' indexes
	killAt    atomic.Int64    // unix ns of the SIGKILL; 0 before
	victims   map[string]bool // sids of the killed node's sessions; read-only once the kill is near
	closing   atomic.Bool
	outcomes  atomic.Int64 // victims whose resume has ended, either way

	// what the survivors saw of the victims (ns since the kill; first and last)
	awaySeen, backSeen, leftSeen atomic.Int64
	awayFirst, awayLast          atomic.Int64
	awayReasons                  reasons
	lossFirst, lossLast          atomic.Int64 // victims' read errors, ns since the kill
	dropped                      sampler      // survivors' connections the server closed
	gaps                         sampler      // offset gaps after the kill, victims' and survivors'
	fastFails                    sampler      // resume_failed answers faster than the claim's timeout
	gapMu                        sync.Mutex
	gapList                      []gapRec // every gap after the kill, for foAccount to match with the resumes

	sendErrors sampler      // writes that failed on a connection not killed
	sent       atomic.Int64 // decisions written
	errFrames  atomic.Int64
	errCodes   reasons
}

// gapRec is one offset gap a member saw after the kill.
type gapRec struct {
	gid      string
	node     int
	at       int64 // ns since the kill
	from, to uint64
}

// since is the time from the kill to now, in ns (0 before the kill).
func (sh *foShared) since() int64 {
	k := sh.killAt.Load()
	if k == 0 {
		return 0
	}
	return time.Now().UnixNano() - k
}

// minMax folds v into an atomic first (smallest, 0 = none) and last.
func minMax(first, last *atomic.Int64, v int64) {
	for {
		f := first.Load()
		if (f != 0 && f <= v) || first.CompareAndSwap(f, v) {
			break
		}
	}
	for {
		l := last.Load()
		if l >= v || last.CompareAndSwap(l, v) {
			break
		}
	}
}

// runFailover runs the mode against a cluster deployment.
func runFailover(ctx context.Context, o *options, dep *deployment, d *dialer) (*measurement, error) {
	m := newMeasurement()
	K, M := len(dep.nodes), o.members
	n, G := o.n, o.games
	sh := &foShared{o: o, dep: dep, d: d, killed: o.failover.kill - 1}
	for k := range K {
		if k != sh.killed {
			sh.survivors = append(sh.survivors, k)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gids := make([]string, G)
	for g := range gids {
		gids[g] = uuid.NewString()
	}
	clients := make([]*foClient, n)
	var readers, senders sync.WaitGroup
	defer func() { closeFoClients(clients, sh, cancel, &readers); senders.Wait() }()

	// Connect: member m of game g on node (g+m) mod K, as the fan-out does.
	var fails sampler
	parallelFor(ctx, n, o.parallel, func(i int) {
		node := (i/M + i%M) % K
		c := &foClient{idx: i, gid: gids[i/M], node: node, victim: node == sh.killed}
		if err := c.connect(ctx, sh); err != nil {
			fails.add("client %d on n%d: %v", i, node+1, err)
			return
		}
		clients[i] = c
		ws := c.cur.Load().ws
		readers.Add(1)
		go func() { defer readers.Done(); c.run(cctx, sh, ws) }()
		senders.Add(1)
		go func() { defer senders.Done(); c.sendLoop(cctx, sh, o.interval) }()
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var live []*foClient
	for _, c := range clients {
		if c != nil {
			live = append(live, c)
		}
	}
	m.set("sessions", float64(len(live)))
	m.set("games", float64(G))
	m.set("connect_failures", float64(fails.count()))
	m.notes = append(m.notes, fails.report("sessions failed to connect or join")...)
	if len(live) == 0 {
		return m, errors.New("no session connected")
	}
	// The readers look at the victims' set only once the kill's time is
	// stored, which happens after this.
	victims := map[string]bool{}
	var vlist []*foClient
	for _, c := range live {
		if c.victim {
			victims[c.sid] = true
			vlist = append(vlist, c)
		}
	}
	sh.victims = victims
	m.set("victims", float64(len(vlist)))
	sent0 := sh.sent.Load()
	t0 := time.Now()
	if err := sleepCtx(ctx, max(o.settle, 2*time.Second)); err != nil {
		return nil, err
	}
	m.set("decisions_per_s", float64(sh.sent.Load()-sent0)/time.Since(t0).Seconds())
	survivor := dep.nodes[sh.survivors[0]]
	if h, err := getClusterHealth(ctx, survivor.addr); err != nil || h.Connected != len(live) {
		m.notef("before the kill a survivor's health shows %d connected (%v), want %d", h.Connected, err, len(live))
	}

	// The kill, and the storm it starts.
	s0 := dep.snap()
	sh.killAt.Store(time.Now().UnixNano())
	dep.nodes[sh.killed].crash()
	deadSeen := make(chan int64, 1)
	go func() { // when the survivors stop listing the dead node
		for cctx.Err() == nil {
			if h, err := getClusterHealth(cctx, survivor.addr); err == nil && len(h.Nodes) == K-1 {
				deadSeen <- sh.since()
				return
			}
			if sleepCtx(cctx, 20*time.Millisecond) != nil {
				return
			}
		}
	}()
	for sh.outcomes.Load() < int64(len(vlist)) && sh.since() < int64(o.failover.stormWait+5*time.Second) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	s1 := dep.snap()
	if err := sleepCtx(ctx, o.settle); err != nil { // the catch-ups and back presences arrive
		return nil, err
	}
	var dead int64 // ns after the kill; 0: never seen
	select {
	case dead = <-deadSeen:
		m.set("dead_seen_ms", float64(dead)/1e6)
	default:
		m.notef("a survivor's health still listed the killed node at the end")
	}
	if h, err := getClusterHealth(ctx, survivor.addr); err == nil {
		m.set("health_connected_after", float64(h.Connected))
		m.set("health_away_after", float64(h.Away))
		m.set("health_nodes_after", float64(len(h.Nodes)))
	}
	closeFoClients(clients, sh, cancel, &readers)
	senders.Wait()
	foAccount(m, sh, live, vlist, dep, s0, s1, dead)
	return m, nil
}

// connect opens the client's first connection: its session frame, its join
// and game_joined (its game's epoch and offset).
func (c *foClient) connect(ctx context.Context, sh *foShared) error {
	ws, err := sh.d.dial(ctx, "ws://"+sh.dep.nodes[c.node].addr+"/ws", "")
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	f, _, err := readFo(ctx, ws, 15*time.Second)
	if err != nil || f.Type != "session" || f.Data.ResumeToken == "" {
		_ = ws.CloseNow()
		return fmt.Errorf("session frame: type %q, token %t, %v", f.Type, f.Data.ResumeToken != "", err)
	}
	c.sid, c.token = f.Data.SID, f.Data.ResumeToken
	if err := write(ctx, ws, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+c.gid+`"}}`)); err != nil {
		_ = ws.CloseNow()
		return fmt.Errorf("join write: %w", err)
	}
	for {
		f, raw, err := readFo(ctx, ws, 15*time.Second)
		switch {
		case err != nil:
			_ = ws.CloseNow()
			return fmt.Errorf("join: %w", err)
		case f.Type == "error":
			_ = ws.CloseNow()
			return fmt.Errorf("join: %s", raw)
		case f.Type == "game_joined" && f.Data.GameID == c.gid:
			c.epoch, c.lastOff = f.Data.Epoch, f.Data.Offset
			c.cur.Store(&foConn{ws: ws, node: c.node})
			return nil
		case f.Data.Offset > 0:
			// Another member's event before the reply: in a cluster a
			// joiner gets none before its own join is sequenced.
			c.gapsBefore++
		}
	}
}

// foAccount sets the figures from every client, once every reader has returned.
func foAccount(m *measurement, sh *foShared, live, vlist []*foClient, dep *deployment, s0, s1 cpuSnap, dead int64) {
	var resumedAt, lat []int64
	var recovered, failedAttempts, attempts, replayed, missing, noBack, disorder, vGaps, sGaps, before, lateFails int64
	var failAt, failLat []int64
	why := map[string]int{}
	var samples []string
	for _, c := range live {
		before += c.gapsBefore
		if !c.victim {
			sGaps += c.gapsAfter
			continue
		}
		vGaps += c.gapsAfter
		attempts += int64(c.attempts)
		failedAttempts += int64(len(c.failAt))
		failAt = append(failAt, c.failAt...)
		failLat = append(failLat, c.failLat...)
		for i, at := range c.failAt {
			if dead > 0 && at-c.failLat[i] > dead {
				lateFails++ // sent once the survivors no longer listed the dead node
			}
		}
		switch {
		case c.resumed:
			resumedAt = append(resumedAt, c.resumedAt)
			lat = append(lat, c.resumeLat)
			if c.recovered {
				recovered++
				replayed += c.replayed
				disorder += c.replayDisorder
				switch r := c.replayMissing(); {
				case r > 0:
					missing += r
				case r < 0:
					noBack++ // every event up to resumed's offset: no back event of its own was left out
				}
			}
		default:
			reason := c.failReason
			if reason == "" {
				reason = "not resumed when the run ended"
			}
			why[reason]++
		}
		if (!c.resumed || len(c.failAt) > 0) && len(samples) < 8 {
			for _, s := range c.failSamples {
				samples = append(samples, fmt.Sprintf("client %d (%s): %s", c.idx, c.sid, s))
			}
		}
	}
	failed := len(vlist) - len(resumedAt)
	m.set("resumed", float64(len(resumedAt)))
	m.set("recovered", float64(recovered))
	m.set("failed", float64(failed))
	m.set("failed_unknown", float64(why["unknown"]))
	m.set("failed_other", float64(failed-why["unknown"]))
	m.set("failed_attempts", float64(failedAttempts))
	if len(vlist) > 0 {
		m.set("attempts_mean", float64(attempts)/float64(len(vlist)))
	}
	if len(failAt) > 0 {
		slices.Sort(failAt)
		m.set("failed_answer_first_ms", ms(failAt[0]))
		m.set("failed_answer_last_ms", ms(failAt[len(failAt)-1]))
		slices.Sort(failLat)
		m.set("failed_lat_min_ms", ms(failLat[0]))
		m.set("failed_lat_max_ms", ms(failLat[len(failLat)-1]))
		fast := 0
		for _, l := range failLat {
			if l < int64(700*time.Millisecond) {
				fast++
			}
		}
		m.set("failed_fast", float64(fast))
	}
	if len(resumedAt) > 0 {
		sort.Slice(resumedAt, func(a, b int) bool { return resumedAt[a] < resumedAt[b] })
		slices.Sort(lat)
		m.set("resumed_p50_ms", ms(quantile(resumedAt, 0.50)))
		m.set("resumed_p99_ms", ms(quantile(resumedAt, 0.99)))
		m.set("resumed_max_ms", ms(resumedAt[len(resumedAt)-1]))
		m.set("resume_lat_p50_ms", ms(quantile(lat, 0.50)))
		m.set("resume_lat_p99_ms", ms(quantile(lat, 0.99)))
	}
	m.set("replayed", float64(replayed))
	m.set("replay_missing", float64(missing))
	m.set("replay_disorder", float64(disorder))
	m.set("victim_offset_gaps", float64(vGaps))
	m.set("survivor_offset_gaps", float64(sGaps))
	m.set("offset_gaps_before", float64(before))
	m.set("loss_first_ms", ms(sh.lossFirst.Load()))
	m.set("loss_last_ms", ms(sh.lossLast.Load()))
	if sh.awaySeen.Load() > 0 {
		m.set("away_first_ms", ms(sh.awayFirst.Load()))
		m.set("away_last_ms", ms(sh.awayLast.Load()))
	}
	m.set("away_seen", float64(sh.awaySeen.Load()))
	m.set("back_seen", float64(sh.backSeen.Load()))
	m.set("left_seen", float64(sh.leftSeen.Load()))
	m.set("survivors_dropped", float64(sh.dropped.count()))
	m.set("error_frames", float64(sh.errFrames.Load()))
	span := s1.t.Sub(s0.t).Seconds()
	var survCPU float64
	for _, k := range sh.survivors {
		survCPU += s1.per[k] - s0.per[k]
	}
	redisCPU := dep.redisCPU(s0, s1)
	m.set("storm_nodes_cpu_pct", survCPU/span*100)
	m.set("storm_redis_cpu_pct", redisCPU/span*100)
	if len(resumedAt) > 0 {
		m.set("resume_cpu_ms", (survCPU+redisCPU)/float64(len(resumedAt))*1e3)
	}
	if failed > 0 {
		var parts []string
		for k, v := range why {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		slices.Sort(parts)
		m.notef("%d of %d victims not resumed: %s", failed, len(vlist), strings.Join(parts, ", "))
	}
	if failedAttempts > 0 || failed > 0 {
		for _, s := range samples {
			m.notef("  e.g. %s", s)
		}
	}
	m.set("resumed_without_back", float64(noBack))
	m.set("failed_after_dead_seen", float64(lateFails))
	if len(sh.awayReasons.n) > 0 {
		m.notef("away reasons heard by survivors: %v", sh.awayReasons.n)
	}
	if len(sh.errCodes.n) > 0 {
		m.notef("error codes: %v", sh.errCodes.n)
		for _, s := range sh.errCodes.samples {
			m.notef("  e.g. %s", s)
		}
	}
	m.notes = append(m.notes, sh.fastFails.report("resume_failed answers faster than the claim's 800 ms timeout")...)
	m.notes = append(m.notes, sh.gaps.report("offset gaps after the kill")...)
	if n := len(sh.gapList); n > 0 {
		// A gap beside a resume: a victim of the same game resumed on the
		// same node within 100 ms before the gap was seen.
		near := 0
		for _, g := range sh.gapList {
			for _, c := range vlist {
				if c.resumed && c.gid == g.gid && c.node == g.node && g.at >= c.resumedAt-int64(100*time.Millisecond) && g.at <= c.resumedAt+int64(100*time.Millisecond) {
					near++
					break
				}
			}
		}
		m.notef("%d of %d offset gaps were seen within 100 ms of a resume of a member of the same game on the same node", near, n)
	}
	m.notes = append(m.notes, sh.dropped.report("connections dropped other than the killed node's")...)
	m.notes = append(m.notes, sh.sendErrors.report("send errors on connections not killed")...)
}

package main

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// idleFigures are the rows of the idle table, in order.
var idleFigures = []figure{
	{"conns", "connections opened", ""},
	{"connect_failures", "connect failures", ""},
	{"connect_rate", "connect rate (conns/s)", "higher"},
	{"connect_cpu_us", "server CPU per connect (µs)", "lower"},
	{"connect_tool_cpu_pct", "tool CPU busy while connecting (%)", ""},
	{"connect_other_cpu_pct", "other processes' CPU while connecting (% of a core)", ""},
	{"rss_before_mib", "server RSS before connecting (MiB)", ""},
	{"rss_open_mib", "server RSS with N open (MiB)", ""},
	{"rss_per_conn_kib", "server RSS per connection (KiB)", "lower"},
	{"rss_settled_mib", "server RSS 2 s after last connect (MiB)", ""},
	{"rss_settled_per_conn_kib", "server RSS per connection, settled (KiB)", "lower"},
	{"goroutines_open", "server goroutines with N open (dugout's health)", ""},
	{"hold_s", "hold duration (s)", ""},
	{"hold_cpu_s", "server CPU-seconds during hold", "lower"},
	{"hold_cpu_pct", "server CPU during hold (% of a core)", "lower"},
	{"hold_other_cpu_pct", "other processes' CPU during hold (% of a core)", ""},
	{"hold_bytes_in_per_conn", "bytes received per conn during hold (pings)", ""},
	{"open_after_hold", "connections open after hold", "higher"},
	{"survived", "survived hold (heartbeat answered)", "higher"},
	{"ping_rounds", "ping rounds every connection has had by the end of the hold", ""},
	{"rss_after_hold_mib", "server RSS at end of hold (MiB)", ""},
	{"rss_held_per_conn_kib", "server RSS per connection at end of hold (KiB)", "lower"},
	{"rss_heartbeat_per_conn_kib", "server RSS per connection once each answered a heartbeat (KiB)", "lower"},
}

// idleClient is one held connection. Its reader answers pings (coder/websocket
// answers them while a Read is pending) and notices the heartbeat_ack.
type idleClient struct {
	ws      *websocket.Conn
	dead    atomic.Bool
	ackOnce sync.Once
	acked   chan struct{}
}

func (c *idleClient) readLoop() {
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.dead.Store(true)
			return
		}
		var f struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(b, &f) == nil && f.Type == "heartbeat_ack" {
			c.ackOnce.Do(func() { close(c.acked) })
		}
	}
}

func runIdle(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	n := o.n
	toks, err := tokens(o.jwtSecret, n)
	if err != nil {
		return nil, err
	}
	if err := sleepCtx(ctx, o.settle); err != nil { // the fresh server settles
		return nil, err
	}
	rss0, err := rss(p.pid)
	if err != nil {
		return nil, err
	}
	url := "ws://" + p.addr + "/ws"
	clients := make([]*idleClient, n)
	conns := make([]*websocket.Conn, n)
	defer func() { closeAll(conns) }()
	var fails sampler

	s0 := snap(p.pid)
	t0 := s0.t
	parallelFor(ctx, n, o.parallel, func(i int) {
		tok, uid := tokenFor(toks, i)
		ws, err := d.dial(ctx, url, tok)
		if err != nil {
			fails.add("dial: %v", err)
			return
		}
		if err := readSession(ctx, ws, uid); err != nil {
			fails.add("%v", err)
			_ = ws.CloseNow()
			return
		}
		c := &idleClient{ws: ws, acked: make(chan struct{})}
		clients[i], conns[i] = c, ws
		go c.readLoop()
	})
	connectDur := time.Since(t0)
	s1 := snap(p.pid)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rssOpen, _ := rss(p.pid)
	ok := n - fails.count()
	m.set("conns", float64(ok))
	m.set("connect_failures", float64(fails.count()))
	m.notes = append(m.notes, fails.report("connections failed")...)
	if ok == 0 {
		return m, nil
	}
	m.set("connect_rate", float64(ok)/connectDur.Seconds())
	m.set("connect_cpu_us", (s1.srv-s0.srv)/float64(ok)*1e6)
	m.set("connect_tool_cpu_pct", (s1.tool-s0.tool)/connectDur.Seconds()*100)
	m.set("connect_other_cpu_pct", otherPct(s0, s1))
	m.set("rss_before_mib", mib(rss0))
	m.set("rss_open_mib", mib(rssOpen))
	m.set("rss_per_conn_kib", float64(rssOpen-rss0)/float64(ok)/1024)

	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}
	rssSettled, _ := rss(p.pid)
	if p.name == "dugout" {
		if h, err := getHealth(ctx, p.addr); err == nil {
			m.set("goroutines_open", float64(h.Goroutines))
			if h.TotalSessions != ok {
				m.notef("dugout reports %d sessions with %d connections open", h.TotalSessions, ok)
			}
		}
	}
	m.set("rss_settled_mib", mib(rssSettled))
	m.set("rss_settled_per_conn_kib", float64(rssSettled-rss0)/float64(ok)/1024)

	openBefore := countOpen(clients)
	s2 := snap(p.pid)
	bytes0 := d.bytesIn.Load()
	t2 := s2.t
	if err := sleepCtx(ctx, o.hold); err != nil {
		return nil, err
	}
	holdDur := time.Since(t2)
	s3 := snap(p.pid)
	bytes1 := d.bytesIn.Load()
	open := countOpen(clients)
	rssHeld, _ := rss(p.pid)
	m.set("hold_s", holdDur.Seconds())
	m.set("hold_cpu_s", s3.srv-s2.srv)
	m.set("hold_cpu_pct", (s3.srv-s2.srv)/holdDur.Seconds()*100)
	m.set("hold_other_cpu_pct", otherPct(s2, s3))
	if openBefore > 0 {
		m.set("hold_bytes_in_per_conn", float64(bytes1-bytes0)/float64(openBefore))
	}
	m.set("open_after_hold", float64(open))
	// The last connection's first ping came PING_INTERVAL after it opened.
	m.set("ping_rounds", math.Floor((time.Since(t0)-connectDur).Seconds()/o.pingInterval.Seconds()))
	m.set("rss_after_hold_mib", mib(rssHeld))
	m.set("rss_held_per_conn_kib", float64(rssHeld-rss0)/float64(ok)/1024)

	// Open is not enough: every connection still open must answer a heartbeat.
	var hbFails sampler
	hb := []byte(`{"type":"heartbeat","id":"hb"}`)
	parallelFor(ctx, n, o.parallel, func(i int) {
		if c := clients[i]; c != nil && !c.dead.Load() {
			if err := write(ctx, c.ws, hb); err != nil {
				hbFails.add("heartbeat write: %v", err)
			}
		}
	})
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
wait:
	for _, c := range clients {
		if c == nil {
			continue
		}
		select {
		case <-c.acked:
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	survived := 0
	for _, c := range clients {
		if c == nil {
			continue
		}
		select {
		case <-c.acked:
			survived++
		default:
		}
	}
	m.set("survived", float64(survived))
	// What one message served leaves behind: a reader that grows its stack
	// to serve a heartbeat keeps it, and every real client sends some.
	if rssHB, err := rss(p.pid); err == nil && survived > 0 {
		m.set("rss_heartbeat_per_conn_kib", float64(rssHB-rss0)/float64(ok)/1024)
	}
	m.notes = append(m.notes, hbFails.report("heartbeats could not be sent")...)
	if survived < ok {
		m.notef("%d of %d connections did not survive the hold (%d closed during it)", ok-survived, ok, ok-open)
	}
	return m, nil
}

func countOpen(clients []*idleClient) int {
	n := 0
	for _, c := range clients {
		if c != nil && !c.dead.Load() {
			n++
		}
	}
	return n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// floodBytes is the size of every abusive message: MAX_MESSAGE_BYTES's
// default, the largest message dugout accepts.
const floodBytes = 1_000_000

// padded is head, then a run of 'x', then tail: size bytes in all.
func padded(head, tail string, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, head...)
	b = append(b, bytes.Repeat([]byte{'x'}, size-len(head)-len(tail))...)
	return append(b, tail...)
}

// referenceWindow is how long the bystander is timed before the abuse
// starts, so that every table has the server's calm figure beside it.
func referenceWindow(o *options) time.Duration { return min(2*time.Second, o.duration) }

var floodFigures = append(append(append([]figure{
	{"sent", "messages of 1,000,000 bytes sent in the window", ""},
	{"sent_mib_per_s", "flood rate (MiB/s)", ""},
	{"accepted", "heartbeats answered (heartbeat_ack)", ""},
	{"refused", "refused with rate_limited", ""},
	{"closed", "flooder closed by the server (1 yes, 0 no)", ""},
	{"closed_after_s", "time from the first message to the close (s)", "lower"},
	{"close_code", "close code (-1: no close frame)", ""},
}, cpuFigures("", "in the window")...),
	bystanderFigures("ref_", "before the flood")...),
	append(bystanderFigures("by_", "during the flood"), figure{"by_closed", "bystander sessions closed by the server", "lower"})...)

// runFlood: one client sends the largest valid message as fast as the socket
// takes it. Nearly all are refused by the rate limiter; what matters is what
// each refusal costs the server, and whether the bystander notices.
func runFlood(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	by, err := startBystander(ctx, d, wsURL(p))
	if err != nil {
		return nil, fmt.Errorf("bystander: %w", err)
	}
	defer by.close()
	refFrom := time.Now()
	if err := sleepCtx(ctx, referenceWindow(o)); err != nil {
		return nil, err
	}
	refTo := time.Now()

	ws, err := d.dial(ctx, wsURL(p), "")
	if err == nil {
		err = readSession(ctx, ws, -1)
	}
	if err != nil {
		return nil, fmt.Errorf("flooder: %w", err)
	}
	var acks, refused, otherErrs atomic.Int64
	w := watch(ws, false, func(b []byte) {
		switch frameType(b) {
		case "heartbeat_ack":
			acks.Add(1)
		case "error":
			if stringAfter(b, codeKey) == "rate_limited" {
				refused.Add(1)
			} else {
				otherErrs.Add(1)
			}
		}
	})
	defer w.stop()
	msg := padded(`{"type":"heartbeat","id":"f1","data":{"pad":"`, `"}}`, floodBytes)

	s0 := snap(p.pid)
	end := s0.t.Add(o.duration)
	// A write still blocked drain after the window is cut by the tool.
	wctx, cancel := context.WithDeadline(ctx, end.Add(o.drain))
	defer cancel()
	sent := 0
	var sendErr error
	for time.Now().Before(end) {
		if sendErr = ws.Write(wctx, websocket.MessageText, msg); sendErr != nil {
			break
		}
		sent++
	}
	s1 := snap(p.pid)
	toolCut := sendErr != nil && wctx.Err() != nil
	if !toolCut { // the server may close the flooder just after the window
		select {
		case <-w.done:
		case <-wctx.Done():
		}
	}
	by.stop(2 * time.Second)

	win := s1.t.Sub(s0.t).Seconds()
	m.set("sent", float64(sent))
	m.set("sent_mib_per_s", float64(sent)*floodBytes/(1<<20)/win)
	m.set("accepted", float64(acks.Load()))
	m.set("refused", float64(refused.Load()))
	cpuWindow(m, "", s0, s1)
	closed := w.ended() && !toolCut
	m.set("closed", b2f(closed))
	if closed {
		m.set("closed_after_s", w.endAt.Sub(s0.t).Seconds())
		m.set("close_code", float64(w.endCode))
		m.notef("flooder closed %.2f s after its first message: %v", w.endAt.Sub(s0.t).Seconds(), w.endErr)
	} else {
		m.notef("the server had not closed the flooder %s after the window", o.drain)
	}
	if toolCut {
		m.notef("a flood write was still blocked %s after the window; the tool cut it", o.drain)
	}
	if n := otherErrs.Load(); n > 0 {
		m.notef("flooder: %d error frames other than rate_limited", n)
	}
	by.window(refFrom, refTo).record(m, "ref_")
	by.window(s0.t, end).record(m, "by_")
	by.finish(m)
	return m, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var nonreaderFigures = append(append(append([]figure{
	{"clients", "clients (games × 4: one sender, three that stop reading)", ""},
	{"decisions_sent", "decisions of 1,000,000 bytes sent", ""},
	{"sent_per_s", "decisions sent/s (offered: games × 1000/interval)", ""},
	{"echoes", "echoes the senders received", ""},
	{"senders_closed", "senders closed by the server", ""},
	{"rss_before_mib", "server RSS before sending (MiB)", ""},
	{"rss_end_mib", "server RSS at the end of the window (MiB)", "lower"},
	{"rss_drain_mib", "server RSS at the end of the watch after it (MiB)", "lower"},
	{"cap_hit_s", "RSS passed -rss-cap after (s); senders stopped", ""},
	{"nonreaders_closed_window", "non-readers closed within the window", ""},
	{"nonreaders_closed", "non-readers closed by the end of the watch", ""},
	{"first_close_s", "first non-reader closed after (s)", "lower"},
	{"last_close_s", "last non-reader closed after (s)", "lower"},
}, cpuFigures("", "in the window")...),
	bystanderFigures("ref_", "before sending")...),
	append(bystanderFigures("by_", "during the window"), figure{"by_closed", "bystander sessions closed by the server", "lower"})...)

// gameHealth is the part of /health/connections that tells who is in which game.
type gameHealth struct {
	TotalSessions   int            `json:"total_sessions"`
	ActiveGames     int            `json:"active_games"`
	SessionsPerGame map[string]int `json:"sessions_per_game"`
}

func getGameHealth(ctx context.Context, addr string) (gameHealth, error) {
	var h gameHealth
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/health/connections", nil)
	if err != nil {
		return h, err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// nrGame is one game of the nonreaders scenario.
type nrGame struct {
	gid    string
	sender *watcher
	others []*websocket.Conn // joined, then never read again
}

// joinAndStop opens a session, joins gid, reads up to its game_joined and
// then never reads again.
func joinAndStop(ctx context.Context, d *dialer, url, gid string) (*websocket.Conn, error) {
	ws, err := d.dial(ctx, url, "")
	if err != nil {
		return nil, err
	}
	if err := readSession(ctx, ws, -1); err != nil {
		_ = ws.CloseNow()
		return nil, err
	}
	if err := write(ctx, ws, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+gid+`"}}`)); err != nil {
		_ = ws.CloseNow()
		return nil, err
	}
	for {
		f, err := readFrame(ctx, ws, 10*time.Second)
		if err != nil {
			_ = ws.CloseNow()
			return nil, fmt.Errorf("waiting for game_joined: %w", err)
		}
		if f.Type == "game_joined" {
			return ws, nil
		}
	}
}

// setUpGame opens a game's sender (watched: it reads everything, so it answers
// pings and takes its echoes) and its three non-readers.
func setUpGame(ctx context.Context, d *dialer, url string, echoes *atomic.Int64) (*nrGame, error) {
	g := &nrGame{gid: uuid.NewString()}
	ws, err := d.dial(ctx, url, "")
	if err == nil {
		err = readSession(ctx, ws, -1)
	}
	if err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	joined := make(chan struct{})
	var once sync.Once
	g.sender = watch(ws, false, func(b []byte) {
		switch frameType(b) {
		case "defensive_decision":
			echoes.Add(1)
		case "game_joined":
			once.Do(func() { close(joined) })
		}
	})
	if err := write(ctx, ws, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+g.gid+`"}}`)); err != nil {
		return g, fmt.Errorf("sender join: %w", err)
	}
	select {
	case <-joined:
	case <-time.After(10 * time.Second):
		return g, fmt.Errorf("sender: no game_joined in 10 s")
	}
	for range 3 {
		ws, err := joinAndStop(ctx, d, url, g.gid)
		if err != nil {
			return g, fmt.Errorf("non-reader: %w", err)
		}
		g.others = append(g.others, ws)
	}
	return g, nil
}

func (g *nrGame) close() {
	if g == nil {
		return
	}
	if g.sender != nil {
		g.sender.stop()
	}
	closeAll(g.others)
}

// rssGuard watches the server's RSS: past capB it closes stop (the senders
// end), past 1.5 capB it kills the server, so that a server without a memory
// bound cannot take a shared machine down with it.
func rssGuard(ctx context.Context, p *proc, capB int64, stop chan struct{}, hitAt *atomic.Int64) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		r, err := rss(p.pid)
		if err != nil {
			return
		}
		if r > capB && hitAt.CompareAndSwap(0, time.Now().UnixNano()) {
			close(stop)
		}
		if r > capB*3/2 {
			logf("server RSS %.0f MiB passed 1.5 × -rss-cap; killing it", mib(r))
			p.kill()
			return
		}
	}
}

// runNonReaders: in every game one member sends the largest decision at the
// rate limit, and the three others stopped reading after they joined. Each
// decision is a megabyte queued for three sockets that never drain.
func runNonReaders(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	url := wsURL(p)
	by, err := startBystander(ctx, d, url)
	if err != nil {
		return nil, fmt.Errorf("bystander: %w", err)
	}
	defer by.close()
	games := make([]*nrGame, o.games)
	var echoes atomic.Int64
	var fails sampler
	parallelFor(ctx, o.games, o.parallel, func(i int) {
		g, err := setUpGame(ctx, d, url, &echoes)
		games[i] = g
		if err != nil {
			fails.add("game %d: %v", i, err)
		}
	})
	defer func() {
		for _, g := range games {
			g.close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fails.count() > 0 {
		m.notes = append(m.notes, fails.report("games could not be set up")...)
		return m, nil
	}
	m.set("clients", float64(o.games*4))
	refFrom := time.Now()
	if err := sleepCtx(ctx, referenceWindow(o)); err != nil {
		return nil, err
	}
	refTo := time.Now()
	rss0, _ := rss(p.pid)

	stopSend := make(chan struct{})
	var capHit atomic.Int64
	guardCtx, stopGuard := context.WithCancel(ctx)
	defer stopGuard()
	go rssGuard(guardCtx, p, o.hostile.rssCapMiB<<20, stopSend, &capHit)

	s0 := snap(p.pid)
	end := s0.t.Add(o.duration)
	var sent atomic.Int64
	var sendErrs sampler
	var senders sync.WaitGroup
	for i, g := range games {
		// No id: with one, protocol 2 would run the same decision once and answer every repeat as a duplicate.
		msg := padded(`{"type":"submit_defensive_decision","data":{"game_id":"`+g.gid+`","decision":{"pad":"`, `"}}}`, floodBytes)
		senders.Add(1)
		go func() {
			defer senders.Done()
			sendEvery(ctx, g.sender.ws, msg, o.interval, end, stopSend, &sent, func(err error) { sendErrs.add("sender %d: %v", i, err) })
		}()
	}
	total := 3 * o.games
	closes := &closeTimeline{}
	if err := closes.poll(ctx, p, games, end, total); err != nil {
		return nil, err
	}
	s1 := snap(p.pid)
	rssEnd, _ := rss(p.pid)
	closedInWindow := closes.closed
	senders.Wait()
	if err := closes.poll(ctx, p, games, end.Add(o.drain), total); err != nil {
		return nil, err
	}
	rssDrain, _ := rss(p.pid)
	by.stop(2 * time.Second)

	win := s1.t.Sub(s0.t).Seconds()
	m.set("decisions_sent", float64(sent.Load()))
	m.set("sent_per_s", float64(sent.Load())/win)
	m.set("echoes", float64(echoes.Load()))
	sendersClosed := 0
	for _, g := range games {
		if g.sender.byServer() {
			sendersClosed++
		}
	}
	m.set("senders_closed", float64(sendersClosed))
	m.set("rss_before_mib", mib(rss0))
	m.set("rss_end_mib", mib(rssEnd))
	m.set("rss_drain_mib", mib(rssDrain))
	if at := capHit.Load(); at != 0 {
		m.set("cap_hit_s", time.Unix(0, at).Sub(s0.t).Seconds())
		m.notef("server RSS passed -rss-cap (%d MiB) %.1f s into the window; the senders stopped there",
			o.hostile.rssCapMiB, time.Unix(0, at).Sub(s0.t).Seconds())
	}
	m.set("nonreaders_closed_window", float64(closedInWindow))
	m.set("nonreaders_closed", float64(closes.closed))
	if !closes.first.IsZero() {
		m.set("first_close_s", closes.first.Sub(s0.t).Seconds())
		m.set("last_close_s", closes.last.Sub(s0.t).Seconds())
	}
	if closes.closed < total {
		m.notef("%d of %d non-readers were still in their games %s after the window", total-closes.closed, total, o.drain)
	}
	cpuWindow(m, "", s0, s1)
	by.window(refFrom, refTo).record(m, "ref_")
	by.window(s0.t, end).record(m, "by_")
	by.finish(m)
	m.notes = append(m.notes, sendErrs.report("sender writes failed")...)
	m.notes = append(m.notes, closes.errs.report("health polls failed")...)
	return m, nil
}

// sendEvery writes msg every interval until end or stop. A write that takes
// longer than the interval makes the next ones late, never more frequent.
func sendEvery(ctx context.Context, ws *websocket.Conn, msg []byte, interval time.Duration, end time.Time,
	stop <-chan struct{}, sent *atomic.Int64, fail func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for time.Now().Before(end) {
		if err := write(ctx, ws, msg); err != nil {
			fail(err)
			return
		}
		sent.Add(1)
		select {
		case <-t.C:
		case <-stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// closeTimeline follows, through /health/connections, how many non-readers
// the server has removed from their games. The tool cannot see it on the
// sockets: a non-reader does not read, and the server's FIN waits behind the
// megabytes its socket buffers still hold.
type closeTimeline struct {
	closed      int
	first, last time.Time
	errs        sampler
}

// poll asks for health every 500 ms until until, or until all total are gone.
func (c *closeTimeline) poll(ctx context.Context, p *proc, games []*nrGame, until time.Time, total int) error {
	for c.closed < total && time.Now().Before(until) {
		if h, err := getGameHealth(ctx, p.addr); err != nil {
			c.errs.add("%v", err)
		} else {
			now := time.Now()
			open := 0
			for _, g := range games {
				n := h.SessionsPerGame[g.gid]
				if !g.sender.ended() {
					n-- // the sender is still in the game
				}
				open += max(n, 0)
			}
			if closed := total - open; closed > c.closed {
				if c.first.IsZero() {
					c.first = now
				}
				c.closed, c.last = closed, now
			}
		}
		if err := sleepCtx(ctx, min(500*time.Millisecond, time.Until(until))); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// The scenarios that load the hub itself: a health snapshot of many games, a
// mass expiry, and one crowded game.

const (
	gamesPerSession = 16 // MAX_GAMES_PER_SESSION's default
	healthLoopers   = 4
)

var healthLoopFigures = append(append(append(append(append([]figure{
	{"games", "games (one seat each)", ""},
	{"sessions", "sessions holding them (16 games each)", ""},
	{"setup_s", "set-up: connect and join (s)", ""},
	{"active_games", "active_games in /health/connections after set-up", ""},
	{"body_bytes", "/health/connections body (bytes)", "lower"},
	{"health_calls", "health calls completed in the loop", "higher"},
	{"health_per_s", "health calls/s", "higher"},
	{"health_p50_ms", "health call latency p50 (ms)", "lower"},
	{"health_p99_ms", "health call latency p99 (ms)", "lower"},
	{"health_errors", "health calls failed", "lower"},
}, bystanderFigures("quiet_", "without the loop")...),
	bystanderFigures("loop_", "during the loop")...),
	cpuFigures("quiet_", "without the loop")...),
	cpuFigures("loop_", "during the loop")...),
	figure{"by_closed", "bystander sessions closed by the server", "lower"})

// runHealthLoop: many games of one seat, then the bystander is timed for a
// window with nothing else going on and for one while health is asked in a
// loop. Every snapshot walks every game, so it is the hub's cost that shows.
func runHealthLoop(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	g := o.games
	n := (g + gamesPerSession - 1) / gamesPerSession
	t0 := time.Now()
	sessions := make([]*watcher, n)
	defer func() {
		for _, w := range sessions {
			if w != nil {
				w.stop()
			}
		}
	}()
	var joined atomic.Int64
	var fails, refusals sampler
	parallelFor(ctx, n, o.parallel, func(i int) {
		ws, err := d.dial(ctx, wsURL(p), "")
		if err == nil {
			err = readSession(ctx, ws, -1)
		}
		if err != nil {
			fails.add("session %d: %v", i, err)
			return
		}
		sessions[i] = watch(ws, false, func(b []byte) {
			switch frameType(b) {
			case "game_joined":
				joined.Add(1)
			case "error":
				refusals.add("%s", b)
			}
		})
		for j := i * gamesPerSession; j < min(g, (i+1)*gamesPerSession); j++ {
			// No id: an id names one action (protocol 2), and these are many.
			if err := write(ctx, ws, []byte(`{"type":"join_game","data":{"game_id":"`+uuid.NewString()+`"}}`)); err != nil {
				fails.add("session %d join: %v", i, err)
				return
			}
		}
	})
	for joined.Load()+int64(refusals.count()) < int64(g) && time.Since(t0) < o.deadline/2 && fails.count() == 0 {
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	m.set("sessions", float64(n))
	m.set("setup_s", time.Since(t0).Seconds())
	m.notes = append(m.notes, fails.report("sessions failed to connect or join")...)
	m.notes = append(m.notes, refusals.report("joins refused")...)
	m.set("games", float64(joined.Load()))
	if h, err := getGameHealth(ctx, p.addr); err == nil {
		m.set("active_games", float64(h.ActiveGames))
	} else {
		m.notef("health after set-up: %v", err)
	}

	by, err := startBystander(ctx, d, wsURL(p))
	if err != nil {
		return nil, fmt.Errorf("bystander: %w", err)
	}
	defer by.close()
	if err := sleepCtx(ctx, 500*time.Millisecond); err != nil { // past the bystander's own start
		return nil, err
	}
	s0 := snap(p.pid)
	if err := sleepCtx(ctx, o.duration); err != nil {
		return nil, err
	}
	s1 := snap(p.pid)
	loop := healthLoop(ctx, p.addr, s1.t.Add(o.duration))
	s2 := snap(p.pid)
	by.stop(2 * time.Second)

	m.set("body_bytes", float64(loop.body))
	m.set("health_calls", float64(len(loop.lat)))
	m.set("health_per_s", float64(len(loop.lat))/s2.t.Sub(s1.t).Seconds())
	m.set("health_errors", float64(loop.errs.count()))
	if len(loop.lat) > 0 {
		m.set("health_p50_ms", ms(quantile(loop.lat, 0.50)))
		m.set("health_p99_ms", ms(quantile(loop.lat, 0.99)))
	}
	m.notes = append(m.notes, loop.errs.report("health calls failed")...)
	cpuWindow(m, "quiet_", s0, s1)
	cpuWindow(m, "loop_", s1, s2)
	by.window(s0.t, s1.t).record(m, "quiet_")
	by.window(s1.t, s2.t).record(m, "loop_")
	by.finish(m)
	return m, nil
}

// loopResult is what the health loop saw.
type loopResult struct {
	lat  []int64 // ns per completed call, sorted
	body int64   // bytes of the last body
	errs sampler
}

// healthLoop has healthLoopers goroutines GET /health/connections back to
// back, each on its own keep-alive connection, until end.
func healthLoop(ctx context.Context, addr string, end time.Time) *loopResult {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: healthLoopers, DisableCompression: true}}
	defer client.CloseIdleConnections()
	r := &loopResult{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range healthLoopers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				n, err := getBody(ctx, client, "http://"+addr+"/health/connections")
				took := time.Since(t0).Nanoseconds()
				if err != nil {
					r.errs.add("%v", err)
					continue
				}
				mu.Lock()
				r.lat, r.body = append(r.lat, took), n
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(r.lat)
	return r
}

// getBody GETs url and returns the size of a 200 answer's body.
func getBody(ctx context.Context, c *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return n, err
}

var expiryFigures = append(append([]figure{
	{"sessions", "idle sessions", ""},
	{"connect_s", "connect phase (s)", ""},
	{"closed_4000", "closed with 4000 (session expired)", ""},
	{"closed_other", "closed otherwise", "lower"},
	{"not_closed", "not closed by the end of the wait", "lower"},
	{"release_ms", "release: every session's last heartbeat, sent and answered (ms)", ""},
	{"first_close_s", "shortest time from a session's last message to its 4000 close (s)", ""},
	{"last_close_s", "longest time from a session's last message to its 4000 close (s)", ""},
	{"spread_ms", "first to last expiry close seen by clients (ms)", ""},
}, cpuFigures("", "from 1 s before the expiry to the last close")...),
	append(bystanderFigures("by_", "from 1 s before the first close to 2 s after"),
		figure{"by_closed", "bystander sessions closed by the server", "lower"})...)

// runExpiry: many idle sessions whose inactivity clocks all start together,
// so they all expire in the same janitor round, while the bystander (which
// never expires: it sends) is timed across that round.
func runExpiry(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	timeout := o.hostile.sessionTimeout
	by, err := startBystander(ctx, d, wsURL(p))
	if err != nil {
		return nil, fmt.Errorf("bystander: %w", err)
	}
	defer by.close()
	var released atomic.Int64          // acks of the release heartbeat (id "x")
	ackAt := make([]atomic.Int64, o.n) // unix ns of each session's release ack: its last message
	ka := newKeepAlive(timeout / 3)
	clients := make([]*watcher, o.n)
	defer func() {
		for _, w := range clients {
			if w != nil {
				w.stop()
			}
		}
	}()
	var fails sampler
	t0 := time.Now()
	parallelFor(ctx, o.n, o.parallel, func(i int) {
		ws, err := d.dial(ctx, wsURL(p), "")
		if err == nil {
			err = readSession(ctx, ws, -1)
		}
		if err != nil {
			fails.add("%v", err)
			return
		}
		clients[i] = watch(ws, false, func(b []byte) {
			if frameType(b) == "heartbeat_ack" && stringAfter(b, idKey) == "x" {
				ackAt[i].Store(time.Now().UnixNano())
				released.Add(1)
			}
		})
		ka.add(ws)
	})
	ka.stop()
	m.set("connect_s", time.Since(t0).Seconds())
	m.notes = append(m.notes, fails.report("sessions failed to connect")...)
	m.notes = append(m.notes, ka.errs.report("keep-alive heartbeats failed")...)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The release: every session's last message, all at once.
	var open []*watcher
	var idx []int // open[k] is clients[idx[k]]
	for i, w := range clients {
		if w != nil && !w.ended() {
			open, idx = append(open, w), append(idx, i)
		}
	}
	m.set("sessions", float64(len(open)))
	releaseStart := time.Now()
	parallelFor(ctx, len(open), o.parallel, func(i int) {
		if err := write(ctx, open[i].ws, []byte(`{"type":"heartbeat","id":"x"}`)); err != nil {
			fails.add("release heartbeat: %v", err)
		}
	})
	for wait := time.Now().Add(10 * time.Second); released.Load() < int64(len(open)) && time.Now().Before(wait); {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	release := time.Now()
	m.set("release_ms", float64(release.Sub(releaseStart).Microseconds())/1000)
	if got := released.Load(); got < int64(len(open)) {
		m.notef("only %d of %d release heartbeats were answered", got, len(open))
	}

	if err := sleepCtx(ctx, time.Until(release.Add(timeout-time.Second))); err != nil {
		return nil, err
	}
	s0 := snap(p.pid)
	limit := release.Add(timeout + time.Second + o.drain) // + EXPIRY_CHECK_INTERVAL + the wait
	for countEnded(open) < len(open) && time.Now().Before(limit) {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	s1 := snap(p.pid)
	if err := sleepCtx(ctx, 2*time.Second); err != nil { // the bystander window's tail
		return nil, err
	}
	by.stop(2 * time.Second)

	codes := map[websocket.StatusCode]int{}
	var ends []time.Time
	var after []time.Duration // from each expired session's last message to its close
	for k, w := range open {
		if w.ended() {
			codes[w.endCode]++
			if w.endCode == 4000 {
				ends = append(ends, w.endAt)
				if at := ackAt[idx[k]].Load(); at != 0 {
					after = append(after, w.endAt.Sub(time.Unix(0, at)))
				}
			}
		}
	}
	m.set("closed_4000", float64(codes[4000]))
	m.set("closed_other", float64(countEnded(open)-codes[4000]))
	m.set("not_closed", float64(len(open)-countEnded(open)))
	if len(codes) > 1 || (len(codes) == 1 && codes[4000] == 0) {
		m.notef("close codes seen (-1: no close frame): %v", codes)
	}
	cpuWindow(m, "", s0, s1)
	if len(ends) > 0 {
		sort.Slice(ends, func(i, j int) bool { return ends[i].Before(ends[j]) })
		first, last := ends[0], ends[len(ends)-1]
		m.set("spread_ms", float64(last.Sub(first).Microseconds())/1000)
		by.window(first.Add(-time.Second), first.Add(2*time.Second)).record(m, "by_")
	}
	if len(after) > 0 {
		slices.Sort(after)
		m.set("first_close_s", after[0].Seconds())
		m.set("last_close_s", after[len(after)-1].Seconds())
	}
	by.finish(m)
	return m, nil
}

func countEnded(ws []*watcher) int {
	n := 0
	for _, w := range ws {
		if w.ended() {
			n++
		}
	}
	return n
}

// keepAlive sends a heartbeat on every session added to it, every period,
// until stop: a connect phase longer than SESSION_TIMEOUT must not let the
// first sessions expire before the last one is open.
type keepAlive struct {
	mu    sync.Mutex
	conns []*websocket.Conn
	done  chan struct{}
	over  chan struct{}
	errs  sampler
}

func newKeepAlive(period time.Duration) *keepAlive {
	k := &keepAlive{done: make(chan struct{}), over: make(chan struct{})}
	go k.run(period)
	return k
}

func (k *keepAlive) add(ws *websocket.Conn) {
	k.mu.Lock()
	k.conns = append(k.conns, ws)
	k.mu.Unlock()
}

func (k *keepAlive) run(period time.Duration) {
	defer close(k.over)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-k.done:
			return
		}
		k.mu.Lock()
		conns := slices.Clone(k.conns)
		k.mu.Unlock()
		for _, ws := range conns {
			if err := write(context.Background(), ws, []byte(`{"type":"heartbeat","id":"k"}`)); err != nil {
				k.errs.add("%v", err)
			}
		}
	}
}

func (k *keepAlive) stop() {
	close(k.done)
	<-k.over
}

var joinFigures = append([]figure{
	{"members", "clients joining the one game", ""},
	{"joined", "got game_joined", ""},
	{"error_frames", "got an error frame instead", ""},
	{"err_game_full", "… of which game_full", ""},
	{"complete", "joined clients that heard of every other joined member", ""},
	{"incomplete", "joined clients that had not heard of every joined member", "lower"},
	{"dropped", "clients closed by the server", "lower"},
	{"presences", "joined presences received, all clients", ""},
	{"timed_out", "the wait hit its bound (1 yes)", "lower"},
	{"join_ms", "first join sent to the last answer or presence anyone received (ms)", "lower"},
}, cpuFigures("", "from the first join to the end")...)

// joinClient is one member of the crowded game.
type joinClient struct {
	w       *watcher
	replied atomic.Int32 // 1: game_joined, 2: error
	known   atomic.Int64 // members it has heard of: game_joined's list, then each joined presence
	lastAt  atomic.Int64 // unix ns of its last answer or presence
	pres    atomic.Int64
	code    string // the error code; written before replied is set to 2
}

func (c *joinClient) onFrame(b []byte) {
	now := time.Now().UnixNano()
	switch frameType(b) {
	case "game_joined":
		var f struct {
			Data struct {
				Members []json.RawMessage `json:"members"`
			} `json:"data"`
		}
		_ = json.Unmarshal(b, &f)
		c.known.Add(int64(len(f.Data.Members)))
		c.lastAt.Store(now)
		c.replied.Store(1)
	case "presence":
		if bytes.Contains(b, []byte(`"status":"joined"`)) {
			c.known.Add(1)
			c.pres.Add(1)
			c.lastAt.Store(now)
		}
	case "error":
		c.code = stringAfter(b, codeKey)
		c.lastAt.Store(now)
		c.replied.Store(2)
	}
}

// joinTally is the state of every member at one moment.
type joinTally struct {
	joined, errors, dropped, complete int
	unanswered                        int // open, and neither game_joined nor an error yet
	pending                           int // unanswered, or joined and open but not yet told of every joined member
	codes                             map[string]int
	last                              int64 // unix ns of the last answer or presence anyone received
}

// joinQuiet is how long nothing must arrive, once every client has its
// answer, for the join to count as over although some never heard of every
// member: one dropped before another joined is never announced to it.
const joinQuiet = time.Second

// over reports whether the join has finished at now.
func (t joinTally) over(now time.Time) bool {
	return t.pending == 0 || (t.unanswered == 0 && now.Sub(time.Unix(0, t.last)) >= joinQuiet)
}

func tallyJoins(cs []*joinClient) joinTally {
	t := joinTally{codes: map[string]int{}}
	for _, c := range cs {
		if c.replied.Load() == 1 {
			t.joined++
		}
		t.last = max(t.last, c.lastAt.Load())
	}
	for _, c := range cs {
		dropped := c.w.byServer()
		switch r := c.replied.Load(); {
		case r == 2:
			t.errors++
			t.codes[c.code]++
		case r == 1 && c.known.Load() >= int64(t.joined):
			t.complete++
		case dropped:
		case r == 0:
			t.unanswered++
			t.pending++
		default:
			t.pending++
		}
		if dropped {
			t.dropped++
		}
	}
	return t
}

// runJoin: every client sends join_game for the same game at the same moment.
// Each join tells every member already there, so the work grows with the
// square of the members unless a seat limit stops it.
func runJoin(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	gid := uuid.NewString()
	clients := make([]*joinClient, o.members)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.w.stop()
			}
		}
	}()
	var fails sampler
	parallelFor(ctx, o.members, o.parallel, func(i int) {
		ws, err := d.dial(ctx, wsURL(p), "")
		if err == nil {
			err = readSession(ctx, ws, -1)
		}
		if err != nil {
			fails.add("%v", err)
			return
		}
		c := &joinClient{}
		c.w = watch(ws, true, c.onFrame)
		clients[i] = c
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if fails.count() > 0 {
		m.notes = append(m.notes, fails.report("clients failed to connect")...)
		return m, nil
	}
	m.set("members", float64(o.members))

	start := make(chan struct{})
	var sendErrs sampler
	var writers sync.WaitGroup
	msg := []byte(`{"type":"join_game","id":"j","data":{"game_id":"` + gid + `"}}`)
	for _, c := range clients {
		writers.Add(1)
		go func() {
			defer writers.Done()
			<-start
			if err := write(ctx, c.w.ws, msg); err != nil {
				sendErrs.add("%v", err)
			}
		}()
	}
	s0 := snap(p.pid)
	close(start)
	writers.Wait()
	limit := s0.t.Add(o.drain)
	var t joinTally
	for {
		t = tallyJoins(clients)
		if now := time.Now(); t.over(now) || !now.Before(limit) {
			break
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
	s1 := snap(p.pid)
	var pres int64
	for _, c := range clients {
		pres += c.pres.Load()
	}
	m.set("joined", float64(t.joined))
	m.set("error_frames", float64(t.errors))
	m.set("err_game_full", float64(t.codes["game_full"]))
	m.set("complete", float64(t.complete))
	m.set("incomplete", float64(t.joined-t.complete))
	m.set("dropped", float64(t.dropped))
	m.set("presences", float64(pres))
	timedOut := !t.over(s1.t)
	m.set("timed_out", b2f(timedOut))
	switch {
	case timedOut:
		m.set("join_ms", float64(o.drain.Milliseconds()))
		m.notef("after %s, %d clients were still waiting for an answer or for members", o.drain, t.pending)
	case t.last > 0:
		m.set("join_ms", float64(time.Unix(0, t.last).Sub(s0.t).Microseconds())/1000)
	}
	if !timedOut && t.pending > 0 {
		m.notef("%d open clients never heard of every joined member (nothing arrived for %s)", t.pending, joinQuiet)
	}
	if len(t.codes) > 0 {
		m.notef("error codes: %v", t.codes)
	}
	var drops sampler
	for i, c := range clients {
		if c.w.byServer() {
			drops.add("client %d: code %d: %v", i, c.w.endCode, c.w.endErr)
		}
	}
	m.notes = append(m.notes, drops.report("clients closed by the server")...)
	m.notes = append(m.notes, sendErrs.report("joins could not be sent")...)
	cpuWindow(m, "", s0, s1)
	return m, nil
}

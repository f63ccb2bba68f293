package main

// The resume mode: a reconnect storm against contract v2's resume (§4 of
// protocol-v2.md). N sessions connect and join games of four, all drop at once
// without a close frame (so every one is away), then all reconnect and resume
// at once. It runs dugout only: the baseline has no resume. See "resume" in
// bench/README.md.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// resumeFigures are the rows of the resume table, in order.
var resumeFigures = []figure{
	{"sessions", "sessions connected and joined", ""},
	{"games", "games", ""},
	{"connect_failures", "connect or join failures", "lower"},
	{"connect_rate", "connect+join rate (sessions/s)", "higher"},
	{"rss_before_mib", "server RSS before connecting (MiB)", ""},
	{"rss_connected_mib", "server RSS with N connected (MiB)", ""},
	{"rss_per_connected_kib", "server RSS per connected session (KiB)", "lower"},
	{"goroutines_connected", "server goroutines with N connected", ""},
	{"drop_to_away_ms", "drop (CloseNow on all) until health shows N away (ms)", "lower"},
	{"rss_away_reached_mib", "server RSS the moment N are away (MiB)", ""},
	{"rss_away_mib", "server RSS with N away, settled (MiB)", ""},
	{"rss_per_away_kib", "server RSS per away session (KiB)", "lower"},
	{"goroutines_away", "server goroutines with N away", ""},
	{"rss_away_held_mib", "server RSS at the end of -away-hold (MiB)", ""},
	{"rss_away_held_min_mib", "server RSS, lowest during -away-hold (MiB)", ""},
	{"rss_per_away_held_kib", "server RSS per away session after -away-hold (KiB)", "lower"},
	{"resumes", "resumes that succeeded", "higher"},
	{"resume_failed", "resumes that failed (all reasons)", "lower"},
	{"failed_unknown", "  failed: resume_failed unknown", "lower"},
	{"failed_user_mismatch", "  failed: resume_failed user_mismatch", "lower"},
	{"failed_not_first", "  failed: resume_failed not_first", "lower"},
	{"failed_disabled", "  failed: resume_failed disabled", "lower"},
	{"failed_other", "  failed: other (dial, session, timeout, wrong reply; see notes)", "lower"},
	{"storm_s", "storm wall time, first dial to last resumed (s)", "lower"},
	{"resume_rate", "resumes per second over the storm", "higher"},
	{"resume_cpu_us", "server CPU per resume, handshake included (µs)", "lower"},
	{"storm_cpu_pct", "server CPU during the storm (% of a core)", ""},
	{"storm_tool_cpu_pct", "tool CPU during the storm (% of its core)", ""},
	{"storm_other_cpu_pct", "other processes' CPU during the storm (% of a core)", ""},
	{"lat_p50_ms", "dial → resumed, p50 (ms)", "lower"},
	{"lat_p99_ms", "dial → resumed, p99 (ms)", "lower"},
	{"lat_max_ms", "dial → resumed, max (ms)", "lower"},
	{"away_ms_max", "largest away_ms a resumed frame reported (ms)", ""},
	{"rss_resumed_mib", "server RSS after the resume, settled (MiB)", ""},
	{"goroutines_resumed", "server goroutines after the resume", ""},
	{"after_error_frames", "error frames received after joining (first and resumed connections)", "lower"},
	{"after_dropped", "resumed connections the server closed before the end", "lower"},
}

// resumeOptions are the flags only the resume mode has.
type resumeOptions struct {
	window   time.Duration // RESUME_WINDOW
	awayHold time.Duration // how long the sessions stay away after the settled reading
}

func (r *resumeOptions) register(fs *flag.FlagSet) {
	r.window = 60 * time.Second
	fs.Var(durValue{&r.window, time.Second}, "resume-window", "resume: RESUME_WINDOW of the server, long enough for the drop, the settle and the storm (bare number = s; default 60s, or -away-hold + 60s)")
	fs.Var(durValue{&r.awayHold, time.Second}, "away-hold", "resume: keep the sessions away this much longer before the storm, reading RSS every second (130s spans the Go runtime's 2-minute forced GC; bare number = s)")
}

// resolveResume checks the resume flags and fills in the mode's defaults for
// the shared flags the command line did not set.
func (o *options) resolveResume(fs *flag.FlagSet) error {
	if len(o.servers) != 1 || o.servers[0] != "dugout" {
		return fmt.Errorf("resume: runs dugout only (-server dugout): the baseline has no resume")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["resume-window"] && o.resume.awayHold > 0 {
		o.resume.window = o.resume.awayHold + 60*time.Second
	}
	if o.resume.awayHold < 0 || o.resume.window < o.resume.awayHold+o.settle+10*time.Second {
		return fmt.Errorf("resume: -resume-window must exceed -away-hold + -settle by at least 10s (the drop and the storm)")
	}
	if !set["n"] {
		o.n = 5000
	}
	if !set["games"] && o.n > 0 {
		o.games = (o.n + 3) / 4
	}
	return nil
}

// resumeEnv is dugout's environment: the usual comparison settings, a resume
// window that outlasts the storm, and an action-id TTL that covers it (the
// server requires ACTION_ID_TTL >= RESUME_WINDOW).
func (o *options) resumeEnv() map[string]string {
	return map[string]string{
		"LISTEN_ADDR":     "127.0.0.1:0",
		"PING_INTERVAL":   o.pingInterval.String(),
		"PING_TIMEOUT":    o.pingTimeout.String(),
		"RATE_LIMIT":      "1000",
		"RATE_BURST":      "1000",
		"LOG_LEVEL":       o.logLevel,
		"GOMAXPROCS":      strconv.Itoa(o.serverProcs),
		"SESSION_TIMEOUT": "0",
		"RESUME_WINDOW":   o.resume.window.String(),
		"ACTION_ID_TTL":   max(120*time.Second, o.resume.window).String(),
	}
}

func (o *options) resumeParams(p map[string]any) {
	p["n"], p["games"], p["resume_window"], p["settle"] = o.n, o.games, o.resume.window.String(), o.settle.String()
	p["away_hold"] = o.resume.awayHold.String()
}

func (o *options) resumeParamLine() string {
	return fmt.Sprintf("n=%d games=%d resume_window=%s away_hold=%s parallel=%d", o.n, o.games, o.resume.window,
		o.resume.awayHold, o.parallel)
}

// v2Frame is what the mode reads of a server frame.
type v2Frame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		SID         string `json:"sid"`
		ResumeToken string `json:"resume_token"`
		GameID      string `json:"game_id"`
		Code        string `json:"code"`
		Reason      string `json:"reason"`
		AwayMS      int64  `json:"away_ms"`
		Games       []struct {
			GameID  string            `json:"game_id"`
			Members []json.RawMessage `json:"members"`
		} `json:"games"`
	} `json:"data"`
}

func readV2(ctx context.Context, ws *websocket.Conn) (v2Frame, error) {
	var f v2Frame
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return f, err
	}
	if typ != websocket.MessageText {
		return f, errors.New("binary frame from server")
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("undecodable frame %q: %w", b, err)
	}
	return f, nil
}

// v2Health is the part of dugout's /health/connections the mode reads.
type v2Health struct {
	Total      int `json:"total_sessions"`
	Connected  int `json:"connected_sessions"`
	Away       int `json:"away_sessions"`
	Games      int `json:"active_games"`
	Goroutines int `json:"goroutines"`
}

func getV2Health(ctx context.Context, addr string) (v2Health, error) {
	var h v2Health
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

// waitHealth polls health every 10 ms until ok says so, or within passes.
func waitHealth(ctx context.Context, addr string, within time.Duration, ok func(v2Health) bool) (v2Health, bool, error) {
	end := time.Now().Add(within)
	for {
		h, err := getV2Health(ctx, addr)
		if err == nil && ok(h) {
			return h, true, nil
		}
		if !time.Now().Before(end) {
			return h, false, err
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return h, false, err
		}
	}
}

// resumeClient is one session: its token and game, and its current connection.
type resumeClient struct {
	sid, token, gid string
	ws              *websocket.Conn
	readerDone      chan struct{}
	closing         atomic.Bool
	dropped         atomic.Bool // the server closed the connection
	errFrames       atomic.Int64
}

// drain reads the connection until it ends (presences of the other members),
// counting error frames, so the server never sees a slow consumer.
func (c *resumeClient) drain(ws *websocket.Conn) {
	c.readerDone = make(chan struct{})
	go func() {
		defer close(c.readerDone)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				if !c.closing.Load() {
					c.dropped.Store(true)
				}
				return
			}
			if strings.Contains(string(b), `"type":"error"`) {
				c.errFrames.Add(1)
			}
		}
	}()
}

// stop drops the connection without a close frame and waits for its reader.
func (c *resumeClient) stop() {
	if c.ws == nil {
		return
	}
	c.closing.Store(true)
	_ = c.ws.CloseNow()
	<-c.readerDone
	c.ws = nil
}

// reasons counts failures by reason and keeps a few examples of the rest.
type reasons struct {
	mu      sync.Mutex
	n       map[string]int
	samples []string
}

func (r *reasons) add(reason, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[reason]++
	if len(r.samples) < 5 {
		r.samples = append(r.samples, reason+": "+fmt.Sprintf(format, args...))
	}
}

func runResume(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	n, G := o.n, o.games
	if p.name != "dugout" {
		return nil, errors.New("resume runs against dugout only")
	}
	if err := sleepCtx(ctx, o.settle); err != nil { // the fresh server settles
		return nil, err
	}
	rss0, err := rss(p.pid)
	if err != nil {
		return nil, err
	}
	m.set("rss_before_mib", mib(rss0))
	url := "ws://" + p.addr + "/ws"
	gids := make([]string, G)
	for g := range gids {
		gids[g] = uuid.NewString()
	}
	clients := make([]*resumeClient, n)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.stop()
			}
		}
	}()

	// Connect: session frame (with its token), join, game_joined.
	var fails sampler
	t0 := time.Now()
	parallelFor(ctx, n, o.parallel, func(i int) {
		ws, err := d.dial(ctx, url, "")
		if err != nil {
			fails.add("dial: %v", err)
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		f, err := readV2(rctx, ws)
		if err != nil || f.Type != "session" || f.Data.ResumeToken == "" {
			fails.add("session frame: type %q, token %t, %v", f.Type, f.Data.ResumeToken != "", err)
			_ = ws.CloseNow()
			return
		}
		c := &resumeClient{sid: f.Data.SID, token: f.Data.ResumeToken, gid: gids[i%G]}
		if err := write(ctx, ws, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+c.gid+`"}}`)); err != nil {
			fails.add("join write: %v", err)
			_ = ws.CloseNow()
			return
		}
		for {
			f, err := readV2(rctx, ws)
			if err != nil {
				fails.add("join: %v", err)
				_ = ws.CloseNow()
				return
			}
			if f.Type == "error" {
				fails.add("join: error %s", f.Data.Code)
				_ = ws.CloseNow()
				return
			}
			if f.Type == "game_joined" && f.Data.GameID == c.gid {
				break
			}
		}
		c.ws = ws
		c.drain(ws)
		clients[i] = c
	})
	connectDur := time.Since(t0)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var live []*resumeClient
	for _, c := range clients {
		if c != nil {
			live = append(live, c)
		}
	}
	N := len(live)
	m.set("sessions", float64(N))
	m.set("games", float64(G))
	m.set("connect_failures", float64(fails.count()))
	m.set("connect_rate", float64(N)/connectDur.Seconds())
	m.notes = append(m.notes, fails.report("sessions failed to connect or join")...)
	if N == 0 {
		return m, errors.New("no session connected")
	}
	h, ok, err := waitHealth(ctx, p.addr, 10*time.Second, func(h v2Health) bool { return h.Connected == N && h.Total == N })
	if !ok {
		m.notef("health never showed %d connected sessions (last: %+v, %v)", N, h, err)
	}
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}
	rssConn, _ := rss(p.pid)
	m.set("rss_connected_mib", mib(rssConn))
	m.set("rss_per_connected_kib", float64(rssConn-rss0)/float64(N)/1024)
	if h, err := getV2Health(ctx, p.addr); err == nil {
		m.set("goroutines_connected", float64(h.Goroutines))
	}

	// Drop: every connection at once, no close frame.
	tDrop := time.Now()
	var wg sync.WaitGroup
	for _, c := range live {
		c.closing.Store(true)
		_ = c.ws.CloseNow()
	}
	for _, c := range live {
		wg.Add(1)
		go func() { defer wg.Done(); <-c.readerDone; c.ws = nil }()
	}
	wg.Wait()
	awayWait := min(30*time.Second, o.resume.window/2)
	h, ok, err = waitHealth(ctx, p.addr, awayWait, func(h v2Health) bool { return h.Away == N })
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !ok {
		m.notef("health never showed %d away sessions within %s (last: %+v, %v)", N, awayWait, h, err)
	} else {
		m.set("drop_to_away_ms", float64(time.Since(tDrop).Milliseconds()))
	}
	rssAwayNow, _ := rss(p.pid)
	m.set("rss_away_reached_mib", mib(rssAwayNow))
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}
	rssAway, _ := rss(p.pid)
	m.set("rss_away_mib", mib(rssAway))
	m.set("rss_per_away_kib", float64(rssAway-rss0)/float64(N)/1024)
	if h, err := getV2Health(ctx, p.addr); err == nil {
		m.set("goroutines_away", float64(h.Goroutines))
	}
	if hold := o.resume.awayHold; hold > 0 {
		// Nothing allocates in an idle server, so the dead connections'
		// memory stays in the heap until a collection; the runtime forces
		// one every 2 minutes, and the scavenger then returns pages.
		end := time.Now().Add(hold)
		low := rssAway
		for time.Now().Before(end) {
			if err := sleepCtx(ctx, min(time.Second, time.Until(end))); err != nil {
				return nil, err
			}
			if r, err := rss(p.pid); err == nil {
				low = min(low, r)
			}
		}
		held, _ := rss(p.pid)
		m.set("rss_away_held_mib", mib(held))
		m.set("rss_away_held_min_mib", mib(low))
		m.set("rss_per_away_held_kib", float64(held-rss0)/float64(N)/1024)
		if h, err := getV2Health(ctx, p.addr); err != nil || h.Away != N {
			m.notef("at the end of the away hold health shows %+v (%v), want %d away", h, err, N)
		}
	}
	if left := o.resume.window - time.Since(tDrop); left < 10*time.Second {
		m.notef("only %s of the resume window left when the storm began: raise -resume-window", left.Round(time.Millisecond))
	}

	// The storm: every session reconnects and resumes, -parallel at a time.
	var why reasons
	lat := make([]int64, N)
	var awayMax atomic.Int64
	s0 := snap(p.pid)
	parallelFor(ctx, N, o.parallel, func(j int) {
		c := live[j]
		start := time.Now()
		ws, err := d.dial(ctx, url, "")
		if err != nil {
			why.add("dial", "%v", err)
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		fail := func(reason, format string, args ...any) {
			why.add(reason, format, args...)
			_ = ws.CloseNow()
		}
		if f, err := readV2(rctx, ws); err != nil || f.Type != "session" {
			fail("session", "type %q, %v", f.Type, err)
			return
		}
		if err := write(ctx, ws, []byte(`{"type":"resume","id":"r","data":{"resume_token":"`+c.token+`"}}`)); err != nil {
			fail("write", "%v", err)
			return
		}
		for {
			f, err := readV2(rctx, ws)
			switch {
			case err != nil:
				fail("read", "%v", err)
				return
			case f.Type == "error" && f.Data.Code == "resume_failed":
				fail(f.Data.Reason, "resume_failed %s", f.Data.Reason)
				return
			case f.Type == "error":
				fail("error_"+f.Data.Code, "error %s", f.Data.Code)
				return
			case f.Type != "resumed":
				continue
			}
			lat[j] = int64(time.Since(start))
			if f.Data.SID != c.sid {
				fail("wrong_sid", "resumed sid %s, want %s", f.Data.SID, c.sid)
				lat[j] = 0
				return
			}
			if len(f.Data.Games) != 1 || f.Data.Games[0].GameID != c.gid {
				fail("wrong_games", "resumed games %+v, want just %s", f.Data.Games, c.gid)
				lat[j] = 0
				return
			}
			for {
				old := awayMax.Load()
				if f.Data.AwayMS <= old || awayMax.CompareAndSwap(old, f.Data.AwayMS) {
					break
				}
			}
			break
		}
		c.closing.Store(false)
		c.ws = ws
		c.drain(ws)
	})
	s1 := snap(p.pid)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stormDur := s1.t.Sub(s0.t)
	var done []int64
	for _, l := range lat {
		if l > 0 {
			done = append(done, l)
		}
	}
	failed := N - len(done)
	m.set("resumes", float64(len(done)))
	m.set("resume_failed", float64(failed))
	known := []string{"unknown", "user_mismatch", "not_first", "disabled"}
	other := failed
	for _, k := range known {
		m.set("failed_"+k, float64(why.n[k]))
		other -= why.n[k]
	}
	m.set("failed_other", float64(other))
	if failed > 0 {
		var parts []string
		for k, v := range why.n {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		slices.Sort(parts)
		m.notef("%d resumes failed: %s", failed, strings.Join(parts, ", "))
		for _, s := range why.samples {
			m.notef("  e.g. %s", s)
		}
	}
	m.set("storm_s", stormDur.Seconds())
	m.set("storm_cpu_pct", (s1.srv-s0.srv)/stormDur.Seconds()*100)
	m.set("storm_tool_cpu_pct", (s1.tool-s0.tool)/stormDur.Seconds()*100)
	m.set("storm_other_cpu_pct", otherPct(s0, s1))
	if len(done) > 0 {
		m.set("resume_rate", float64(len(done))/stormDur.Seconds())
		m.set("resume_cpu_us", (s1.srv-s0.srv)/float64(len(done))*1e6)
		sort.Slice(done, func(a, b int) bool { return done[a] < done[b] })
		ms := func(ns int64) float64 { return float64(ns) / 1e6 }
		m.set("lat_p50_ms", ms(quantile(done, 0.50)))
		m.set("lat_p99_ms", ms(quantile(done, 0.99)))
		m.set("lat_max_ms", ms(done[len(done)-1]))
		m.set("away_ms_max", float64(awayMax.Load()))
	}

	// After: every resumed session connected again, nothing away.
	h, ok, err = waitHealth(ctx, p.addr, 10*time.Second, func(h v2Health) bool {
		return h.Connected == len(done) && h.Away == N-len(done)
	})
	if !ok {
		m.notef("after the storm health shows %+v, want %d connected and %d away (%v)", h, len(done), N-len(done), err)
	}
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}
	rssRes, _ := rss(p.pid)
	m.set("rss_resumed_mib", mib(rssRes))
	if h, err := getV2Health(ctx, p.addr); err == nil {
		m.set("goroutines_resumed", float64(h.Goroutines))
	}
	var errFrames, dropped int64
	for _, c := range live {
		errFrames += c.errFrames.Load()
		if c.dropped.Load() {
			dropped++
		}
	}
	m.set("after_error_frames", float64(errFrames))
	m.set("after_dropped", float64(dropped))
	return m, nil
}

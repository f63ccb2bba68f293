package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
)

// churnFigures returns the rows of the churn table for waves waves.
func churnFigures(waves int) []figure {
	f := []figure{
		{"connected", "connections opened (all waves)", ""},
		{"connect_failures", "connect or join failures", "lower"},
		{"connect_rate", "connect rate, mean of waves (conns/s)", "higher"},
		{"missing_echoes", "decisions without their echo", "lower"},
		{"missing_left", "leave_game without game_left", "lower"},
		{"error_frames", "error frames received", "lower"},
		{"dropped_conns", "connections dropped by the server", "lower"},
		{"close_ms", "close burst, mean of waves (ms)", ""},
		{"rss_before_mib", "server RSS before first wave (MiB)", ""},
		{"goroutines_before", "server goroutines before first wave", ""},
	}
	for w := 1; w <= waves; w++ {
		p := "w" + strconv.Itoa(w) + "_"
		l := "wave " + strconv.Itoa(w) + ": "
		f = append(f,
			figure{p + "zero_ms", l + "time to zero sessions and games (ms)", "lower"},
			figure{p + "rss_mib", l + "server RSS after (MiB)", "lower"},
			figure{p + "rss_delta_mib", l + "RSS minus RSS before first wave (MiB)", "lower"},
			figure{p + "goroutines", l + "server goroutines after", ""},
		)
	}
	return append(f, figure{"zero_timeouts", "waves that never reached zero", "lower"},
		figure{"other_cpu_pct", "other processes' CPU during the waves (% of a core)", ""})
}

// churnClient is one short-lived client of a wave.
type churnClient struct {
	ws        *websocket.Conn
	gid       string
	joined    chan struct{}
	left      chan struct{}
	echoed    chan struct{} // closed when all its decisions came back
	echoes    int
	want      int
	errFrames int64
	dropped   atomic.Bool
	closing   atomic.Bool
	once      [3]sync.Once
}

func (c *churnClient) readLoop() {
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			if !c.closing.Load() {
				c.dropped.Store(true)
			}
			return
		}
		var f frame
		if json.Unmarshal(b, &f) != nil {
			c.errFrames++
			continue
		}
		switch f.Type {
		case "game_joined":
			c.once[0].Do(func() { close(c.joined) })
		case "game_left":
			c.once[1].Do(func() { close(c.left) })
		case "defensive_decision":
			if f.ID != "" { // our own, echoed with its id
				c.echoes++
				if c.echoes == c.want {
					c.once[2].Do(func() { close(c.echoed) })
				}
			}
		case "error":
			c.errFrames++
		}
	}
}

// waitAll waits for ch of every client, up to timeout, and returns how many never closed.
func waitAll(ctx context.Context, clients []*churnClient, ch func(*churnClient) chan struct{}, timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
loop:
	for _, c := range clients {
		if c == nil {
			continue
		}
		select {
		case <-ch(c):
		case <-t.C:
			break loop
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	missing := 0
	for _, c := range clients {
		if c == nil {
			continue
		}
		select {
		case <-ch(c):
		default:
			missing++
		}
	}
	return missing, nil
}

func runChurn(ctx context.Context, o *options, p *proc, d *dialer) (*measurement, error) {
	m := newMeasurement()
	isDugout := p.name == "dugout"
	C, G, K := o.clients, o.games, o.decisions
	toks, err := tokens(o.jwtSecret, C)
	if err != nil {
		return nil, err
	}
	url := "ws://" + p.addr + "/ws"
	gids := make([]string, G)
	for g := range gids {
		gids[g] = uuid.NewString()
	}
	if err := sleepCtx(ctx, o.settle); err != nil {
		return nil, err
	}
	rss0, err := rss(p.pid)
	if err != nil {
		return nil, err
	}
	m.set("rss_before_mib", mib(rss0))
	if isDugout {
		h, err := getHealth(ctx, p.addr)
		if err != nil {
			return nil, err
		}
		m.set("goroutines_before", float64(h.Goroutines))
	}

	s0 := snap(p.pid)
	var fails sampler
	var connected, missingEchoes, missingLeft, errFrames, dropped, zeroTimeouts int
	var rateSum, closeSum float64
	for w := 1; w <= o.waves; w++ {
		prefix := "w" + strconv.Itoa(w) + "_"
		clients := make([]*churnClient, C)
		conns := make([]*websocket.Conn, C)
		var readers sync.WaitGroup
		var wfails atomic.Int64
		t0 := time.Now()
		parallelFor(ctx, C, o.parallel, func(i int) {
			tok, uid := tokenFor(toks, i)
			ws, err := d.dial(ctx, url, tok)
			if err != nil {
				fails.add("wave %d dial: %v", w, err)
				wfails.Add(1)
				return
			}
			if err := readSession(ctx, ws, uid); err != nil {
				fails.add("wave %d: %v", w, err)
				wfails.Add(1)
				_ = ws.CloseNow()
				return
			}
			c := &churnClient{ws: ws, gid: gids[i%G], want: K, joined: make(chan struct{}),
				left: make(chan struct{}), echoed: make(chan struct{})}
			if K == 0 {
				close(c.echoed)
			}
			clients[i], conns[i] = c, ws
			readers.Add(1)
			go func() { defer readers.Done(); c.readLoop() }()
		})
		ok := C - int(wfails.Load())
		connected += ok
		rateSum += float64(ok) / time.Since(t0).Seconds()
		abort := func(err error) (*measurement, error) {
			closeAll(conns)
			readers.Wait()
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return abort(err)
		}

		// Everyone joins, then sends K decisions and waits for their echoes.
		parallelFor(ctx, C, o.parallel, func(i int) {
			if c := clients[i]; c != nil {
				if err := write(ctx, c.ws, []byte(`{"type":"join_game","id":"j","data":{"game_id":"`+c.gid+`"}}`)); err != nil {
					fails.add("wave %d join: %v", w, err)
				}
			}
		})
		if miss, err := waitAll(ctx, clients, func(c *churnClient) chan struct{} { return c.joined }, 30*time.Second); err != nil {
			return abort(err)
		} else if miss > 0 {
			fails.add("wave %d: %d joins unanswered", w, miss)
		}
		parallelFor(ctx, C, o.parallel, func(i int) {
			c := clients[i]
			if c == nil {
				return
			}
			for k := 1; k <= K; k++ {
				msg := fmt.Sprintf(`{"type":"submit_defensive_decision","id":"d%d","data":{"game_id":"%s","decision":{"seq":%d,"sent_ns":%d,"from":%d}}}`,
					k, c.gid, k, time.Now().UnixNano(), i)
				if err := write(ctx, c.ws, []byte(msg)); err != nil {
					fails.add("wave %d decision: %v", w, err)
					return
				}
			}
		})
		miss, err := waitAll(ctx, clients, func(c *churnClient) chan struct{} { return c.echoed }, 30*time.Second)
		if err != nil {
			return abort(err)
		}
		missingEchoes += miss

		// Half leave and close normally, half vanish, all at once.
		tClose := time.Now()
		var closers sync.WaitGroup
		var leftMissing atomic.Int64
		for i, c := range clients {
			if c == nil {
				continue
			}
			closers.Add(1)
			go func() {
				defer closers.Done()
				if i%2 == 1 {
					c.closing.Store(true)
					_ = c.ws.CloseNow()
					return
				}
				if err := write(ctx, c.ws, []byte(`{"type":"leave_game","id":"l","data":{"game_id":"`+c.gid+`"}}`)); err == nil {
					select {
					case <-c.left:
					case <-time.After(10 * time.Second):
						leftMissing.Add(1)
					}
				} else {
					leftMissing.Add(1)
				}
				c.closing.Store(true)
				_ = c.ws.Close(websocket.StatusNormalClosure, "")
			}()
		}
		closers.Wait()
		closeSum += float64(time.Since(tClose).Milliseconds())
		readers.Wait()
		missingLeft += int(leftMissing.Load())
		for _, c := range clients {
			if c != nil {
				errFrames += int(c.errFrames)
				if c.dropped.Load() {
					dropped++
				}
			}
		}

		if isDugout {
			zero := false
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				h, err := getHealth(ctx, p.addr)
				if err == nil && h.TotalSessions == 0 && h.ActiveGames == 0 {
					m.set(prefix+"zero_ms", float64(time.Since(tClose).Microseconds())/1000)
					zero = true
					break
				}
				if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
					return nil, err
				}
			}
			if !zero {
				zeroTimeouts++
				h, _ := getHealth(ctx, p.addr)
				m.notef("wave %d: 30 s after the close burst dugout still holds %d sessions and %d games",
					w, h.TotalSessions, h.ActiveGames)
			}
		}
		if err := sleepCtx(ctx, o.settle); err != nil {
			return nil, err
		}
		r, _ := rss(p.pid)
		m.set(prefix+"rss_mib", mib(r))
		m.set(prefix+"rss_delta_mib", mib(r-rss0))
		if isDugout {
			if h, err := getHealth(ctx, p.addr); err == nil {
				m.set(prefix+"goroutines", float64(h.Goroutines))
			}
		}
	}
	m.set("other_cpu_pct", otherPct(s0, snap(p.pid)))
	m.set("connected", float64(connected))
	m.set("connect_failures", float64(fails.count()))
	m.set("connect_rate", rateSum/float64(o.waves))
	m.set("missing_echoes", float64(missingEchoes))
	m.set("missing_left", float64(missingLeft))
	m.set("error_frames", float64(errFrames))
	m.set("dropped_conns", float64(dropped))
	m.set("close_ms", closeSum/float64(o.waves))
	if isDugout {
		m.set("zero_timeouts", float64(zeroTimeouts))
	}
	m.notes = append(m.notes, fails.report("connect, join or send failures")...)
	return m, nil
}

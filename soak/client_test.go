package soak

// Shared client code: dialling, reading frames with deadlines, joining,
// health, polling with deadlines, and the figures tables.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"dugout/internal/servertest"

	"github.com/coder/websocket"
)

// epoch is the zero of the timestamps the tests put inside decisions: the
// sender and every receiver are this process, so time.Since(epoch) is one
// monotonic clock for both ends.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// httpClient dials the WebSocket handshakes and reads health. Keep-alives are
// off, so no idle connection (and no goroutine) outlives a request; an upgraded
// connection is handed to the WebSocket and never pooled anyway.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// startServer runs dugout with env added to the servertest defaults. These
// soak tests check protocol 1's rules, so unless a test says otherwise the
// server runs with RESUME_WINDOW=0: a lost connection ends its session at once.
func startServer(t *testing.T, env map[string]string) *servertest.Proc {
	t.Helper()
	if _, ok := env["RESUME_WINDOW"]; !ok {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["RESUME_WINDOW"] = "0"
	}
	return servertest.Start(t, servertest.Options{Env: env})
}

// frameIn is every server frame the soak tests read, decoded in one pass.
type frameIn struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		SID      string    `json:"sid"`
		GameID   string    `json:"game_id"`
		Status   string    `json:"status"`
		Reason   string    `json:"reason"`
		Code     frameCode `json:"code"`
		Message  string    `json:"message"`
		Decision *decision `json:"decision"`
		Members  []struct {
			SID string `json:"sid"`
		} `json:"members"`
	} `json:"data"`
}

// frameCode is an error's code (a string) or a goodbye's (a close code, a number).
type frameCode string

// UnmarshalJSON takes either.
func (c *frameCode) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*c = frameCode(s)
		return nil
	}
	*c = frameCode(b)
	return nil
}

// isDecision reports whether f is a relayed decision. One without a
// decision object is not one: it goes uncounted, and shows as a loss.
func (f *frameIn) isDecision() bool {
	return (f.Type == "defensive_decision" || f.Type == "offensive_decision") && f.Data.Decision != nil
}

// decision is the object the soak clients submit: a per-sender sequence
// number (from 1) and the send time on epoch's clock.
type decision struct {
	Seq  int    `json:"seq"`
	Sent int64  `json:"sent"`
	Pad  string `json:"pad,omitempty"`
}

// client is one WebSocket session seen from the client side.
type client struct {
	ws  *websocket.Conn
	sid string

	done chan struct{} // closed when the reader goroutine has returned
	err  error         // why the reader stopped; read after done

	dialed   int64        // when the handshake began, on epoch's clock
	pings    atomic.Int64 // server pings received (each answered by the library)
	lastPing atomic.Int64 // arrival of the latest, on epoch's clock
	// maxGap is the longest time between two pings' arrivals. The server
	// sends the next ping only once the last one's pong is in, so a gap well
	// over PING_INTERVAL is a pong that took long to come back.
	maxGap atomic.Int64
}

// dial opens a session and reads its session frame, all within timeout.
func dial(ctx context.Context, p *servertest.Proc, timeout time.Duration) (*client, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &client{done: make(chan struct{}), dialed: now()}
	ws, resp, err := websocket.Dial(ctx, p.WSURL(), &websocket.DialOptions{
		HTTPClient: httpClient,
		// Runs on the reader goroutine, so these never race with each other.
		OnPingReceived: func(context.Context, []byte) bool {
			at := now()
			if last := c.lastPing.Swap(at); last != 0 && at-last > c.maxGap.Load() {
				c.maxGap.Store(at - last)
			}
			c.pings.Add(1)
			return true // answer it
		},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(1 << 20)
	f, err := readFrame(ctx, ws)
	if err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("reading the session frame: %w", err)
	}
	if f.Type != "session" || f.Data.SID == "" {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("first frame is %q, not a session frame", f.Type)
	}
	c.ws, c.sid = ws, f.Data.SID
	return c, nil
}

// readFrame reads and decodes one frame. If ctx ends first the connection is
// closed (coder/websocket's rule), which is what a deadline should do here.
func readFrame(ctx context.Context, ws *websocket.Conn) (*frameIn, error) {
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, fmt.Errorf("a %v message; dugout sends text only", typ)
	}
	f := new(frameIn)
	if err := json.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("undecodable frame %q: %w", b, err)
	}
	return f, nil
}

// readUntil reads frames synchronously until one satisfies match, within timeout.
func (c *client) readUntil(timeout time.Duration, match func(*frameIn) bool) (*frameIn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		f, err := readFrame(ctx, c.ws)
		if err != nil {
			return nil, err
		}
		if match(f) {
			return f, nil
		}
	}
}

// startReader reads every frame on its own goroutine and hands it, with its
// arrival time, to handle until the connection ends. handle runs on that one
// goroutine, so per-client state it touches needs no lock; read it after done.
func (c *client) startReader(handle func(f *frameIn, at int64)) {
	go func() {
		defer close(c.done)
		for {
			typ, b, err := c.ws.Read(context.Background())
			if err != nil {
				c.err = err
				return
			}
			at := now()
			if typ != websocket.MessageText {
				c.err = fmt.Errorf("a %v message; dugout sends text only", typ)
				_ = c.ws.CloseNow()
				return
			}
			f := new(frameIn)
			if err := json.Unmarshal(b, f); err != nil {
				c.err = fmt.Errorf("undecodable frame %q: %w", b, err)
				_ = c.ws.CloseNow()
				return
			}
			handle(f, at)
		}
	}()
}

// ended reports whether the reader has stopped.
func (c *client) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// send writes one frame within timeout.
func (c *client) send(timeout time.Duration, typ, id string, data any) error {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		ID   string `json:"id,omitempty"`
		Data any    `json:"data,omitempty"`
	}{typ, id, data})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// join sends join_game for game.
func (c *client) join(game string) error {
	return c.send(5*time.Second, "join_game", "j", map[string]string{"game_id": game})
}

// submit sends decision seq for game, alternating the two decision types.
func (c *client) submit(game string, d decision) error {
	typ := "submit_defensive_decision"
	if d.Seq%2 == 0 {
		typ = "submit_offensive_decision"
	}
	return c.send(5*time.Second, typ, fmt.Sprintf("d%d", d.Seq), map[string]any{"game_id": game, "decision": d})
}

// closeStatus describes how a connection ended: the close code and reason
// the server sent, or -1 when no close frame was received.
func closeStatus(err error) (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

// health is /health/connections with the goroutines field dugout adds.
type health struct {
	Status          string         `json:"status"`
	TotalSessions   int            `json:"total_sessions"`
	UniqueUsers     int            `json:"unique_users"`
	ActiveGames     int            `json:"active_games"`
	SessionsPerGame map[string]int `json:"sessions_per_game"`
	Goroutines      int            `json:"goroutines"`
}

func (h health) String() string {
	return fmt.Sprintf("total_sessions=%d active_games=%d games_listed=%d goroutines=%d",
		h.TotalSessions, h.ActiveGames, len(h.SessionsPerGame), h.Goroutines)
}

// idle reports whether the server holds no session and no game.
func (h health) idle() bool {
	return h.TotalSessions == 0 && h.ActiveGames == 0 && len(h.SessionsPerGame) == 0
}

// getHealth reads /health/connections.
func getHealth(p *servertest.Proc) (health, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL("/health/connections"), nil)
	if err != nil {
		return health{}, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return health{}, err
	}
	defer resp.Body.Close()
	var h health
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// poll calls cond every interval until it reports true or within has passed,
// and returns the last description cond gave, for the failure message.
func poll(within, interval time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, desc := cond()
		if ok || time.Now().After(deadline) {
			return ok, desc
		}
		<-tick.C
	}
}

// waitHealth polls health until cond holds, failing the test after within.
func waitHealth(t *testing.T, p *servertest.Proc, within time.Duration, what string, cond func(health) bool) health {
	t.Helper()
	var last health
	ok, desc := poll(within, 50*time.Millisecond, func() (bool, string) {
		h, err := getHealth(p)
		if err != nil {
			return false, err.Error()
		}
		last = h
		return cond(h), h.String()
	})
	if !ok {
		t.Fatalf("%s: not within %s; last health: %s", what, within, desc)
	}
	return last
}

// restingGoroutines waits for the server to be idle and for its goroutine
// count to read the same twice in a row, and returns it.
func restingGoroutines(t *testing.T, p *servertest.Proc) int {
	t.Helper()
	prev := -1
	ok, desc := poll(10*time.Second, 100*time.Millisecond, func() (bool, string) {
		h, err := getHealth(p)
		if err != nil {
			return false, err.Error()
		}
		stable := h.idle() && h.Goroutines == prev
		prev = h.Goroutines
		return stable, h.String()
	})
	if !ok {
		t.Fatalf("server did not come to rest: %s", desc)
	}
	return prev
}

// countdown is closed once n events have happened: a WaitGroup one can wait
// on with a deadline, without leaving a goroutine behind.
type countdown struct {
	n    atomic.Int64
	zero chan struct{}
}

func newCountdown(n int) *countdown {
	c := &countdown{zero: make(chan struct{})}
	c.n.Store(int64(n))
	if n <= 0 {
		close(c.zero)
	}
	return c
}

func (c *countdown) done() {
	if c.n.Add(-1) == 0 {
		close(c.zero)
	}
}

// wait reports whether the count reached zero within d.
func (c *countdown) wait(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.zero:
		return true
	case <-timer.C:
		return false
	}
}

// pool runs f(0..n-1) on par workers and returns how many calls failed and
// the first error.
func pool(n, par int, f func(i int) error) (failed int, first error) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
	)
	for range min(par, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					mu.Lock()
					failed++
					if first == nil {
						first = fmt.Errorf("#%d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return failed, first
}

// rssSampler records the server's peak RSS until stopped.
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	peak atomic.Int64
}

func sampleRSS(p *servertest.Proc, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if rss, err := p.RSS(); err == nil && rss > s.peak.Load() {
				s.peak.Store(rss)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// takePeak returns the peak so far and starts a new one.
func (s *rssSampler) takePeak() int64 { return s.peak.Swap(0) }

// Stop ends sampling and returns the peak.
func (s *rssSampler) Stop() int64 {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return s.peak.Load()
}

// percentiles returns p50, p90, p99 and max of samples (sorted in place).
func percentiles(samples []time.Duration) [4]time.Duration {
	if len(samples) == 0 {
		return [4]time.Duration{}
	}
	slices.Sort(samples)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(samples))+0.5) - 1
		return samples[max(0, min(i, len(samples)-1))]
	}
	return [4]time.Duration{at(0.50), at(0.90), at(0.99), samples[len(samples)-1]}
}

// table logs rows under a title as aligned columns.
func table(t *testing.T, title string, rows [][]string) {
	t.Helper()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	_ = tw.Flush()
	t.Logf("%s\n%s", title, b.String())
}

// mb formats bytes as MiB.
func mb(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// ms formats a duration in milliseconds with a useful precision.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// endings summarises the server's "connection ended" log lines by reason and
// close code, and lists its warnings and errors: what to look at first when
// a soak test fails. The lines are there at LOG_LEVEL=info.
func endings(p *servertest.Proc) string {
	counts, other := endingCounts(p)
	return fmt.Sprintf("connections ended by reason/code: %v; warnings and errors: %q", counts, other)
}

// endingCounts counts the "connection ended" log lines by "reason/code" and
// returns up to five warning or error lines.
func endingCounts(p *servertest.Proc) (map[string]int, []string) {
	counts := map[string]int{}
	var other []string
	for _, line := range strings.Split(p.Log(), "\n") {
		var l struct {
			Level, Message, Reason string
			Code                   int
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch {
		case l.Message == "connection ended":
			counts[fmt.Sprintf("%s/%d", l.Reason, l.Code)]++
		case l.Level == "warn" || l.Level == "error":
			if len(other) < 5 {
				other = append(other, line)
			}
		}
	}
	return counts, other
}

func itoa(n int) string { return strconv.Itoa(n) }

func errString(err error) string {
	if err == nil {
		return "accepted"
	}
	return err.Error()
}

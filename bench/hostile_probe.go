package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// watcher reads one connection until it ends, hands every message to
// onFrame, and remembers when and how the connection ended. Reading is what
// answers the server's pings, so a watched connection stays alive.
type watcher struct {
	ws      *websocket.Conn
	onFrame func(b []byte) // nil: messages are only read
	full    bool           // pass whole messages; otherwise only their first prefixBytes
	done    chan struct{}
	closing atomic.Bool // the tool is closing it: the end is not the server's doing

	// written by the reader before done is closed
	endAt   time.Time
	endCode websocket.StatusCode // -1: ended without a close frame
	endErr  error
}

// prefixBytes is how much of a message a prefix-only watcher keeps: enough
// for type, id and error code, never the megabyte of padding behind them.
const prefixBytes = 512

func watch(ws *websocket.Conn, full bool, onFrame func(b []byte)) *watcher {
	w := &watcher{ws: ws, onFrame: onFrame, full: full, done: make(chan struct{})}
	go w.loop()
	return w
}

func (w *watcher) loop() {
	defer close(w.done)
	buf := make([]byte, prefixBytes)
	var whole bytes.Buffer
	for {
		_, r, err := w.ws.Reader(context.Background())
		var b []byte
		if err == nil {
			if w.full {
				whole.Reset()
				_, err = whole.ReadFrom(r)
				b = whole.Bytes()
			} else {
				var n int
				n, err = io.ReadFull(r, buf)
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					err = nil
				} else if err == nil {
					_, err = io.Copy(io.Discard, r)
				}
				b = buf[:n]
			}
		}
		if err != nil {
			w.endAt, w.endCode, w.endErr = time.Now(), websocket.CloseStatus(err), err
			return
		}
		if w.onFrame != nil {
			w.onFrame(b)
		}
	}
}

// ended reports whether the connection has ended.
func (w *watcher) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// byServer reports whether the connection ended, and not because the tool closed it.
func (w *watcher) byServer() bool { return w.ended() && !w.closing.Load() }

// stop closes the connection without a handshake and waits for the reader.
func (w *watcher) stop() {
	w.closing.Store(true)
	_ = w.ws.CloseNow()
	<-w.done
}

var (
	typeKey = []byte(`{"type":"`)
	idKey   = []byte(`"id":"`)
	codeKey = []byte(`"code":"`)
)

// frameType is a server frame's type, read without encoding/json: dugout
// writes "type" first. A frame in any other shape goes to encoding/json.
func frameType(b []byte) string {
	if rest, ok := bytes.CutPrefix(b, typeKey); ok {
		if i := bytes.IndexByte(rest, '"'); i >= 0 {
			return string(rest[:i])
		}
	}
	var f struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(b, &f)
	return f.Type
}

// stringAfter is the string value following key in b (the first occurrence),
// or "" when there is none.
func stringAfter(b, key []byte) string {
	i := bytes.Index(b, key)
	if i < 0 {
		return ""
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// bystanderConns and bystanderEvery shape the bystander: one heartbeat every
// 20 ms is 50 messages a second, more than the default RATE_LIMIT of 20 lets one
// session send, so it takes turns over three sessions (about 17 a second
// each). Every heartbeat_ack passes through the hub and a writer, so its round
// trip shows whether the server still serves a well-behaved client promptly.
const (
	bystanderConns = 3
	bystanderEvery = 20 * time.Millisecond
)

// bystander is the well-behaved client beside the abuse.
type bystander struct {
	ws       []*websocket.Conn
	watchers []*watcher
	running  bool // run was started
	stopped  chan struct{}
	finished chan struct{}

	mu      sync.Mutex
	sentAt  []int64 // unix ns of heartbeat n (id "b<n>")
	rtt     []int64 // ns; -1 until its ack arrives
	refused int     // heartbeats answered with an error (e.g. rate_limited)
	sendErr error
}

// startBystander opens the bystander's sessions and starts its heartbeats.
func startBystander(ctx context.Context, d *dialer, url string) (*bystander, error) {
	b := &bystander{stopped: make(chan struct{}), finished: make(chan struct{})}
	for range bystanderConns {
		ws, err := d.dial(ctx, url, "")
		if err == nil {
			err = readSession(ctx, ws, -1)
		}
		if err != nil {
			b.close()
			return nil, err
		}
		b.ws = append(b.ws, ws)
		b.watchers = append(b.watchers, watch(ws, false, b.onFrame))
	}
	b.running = true
	go b.run(ctx)
	return b, nil
}

func (b *bystander) onFrame(f []byte) {
	typ := frameType(f)
	if typ != "heartbeat_ack" && typ != "error" {
		return
	}
	now := time.Now().UnixNano()
	id := stringAfter(f, idKey)
	n, err := strconv.Atoi(id[min(1, len(id)):])
	if id == "" || id[0] != 'b' || err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 0 || n >= len(b.rtt) || b.rtt[n] >= 0 {
		return
	}
	if typ == "error" {
		b.refused++
		b.rtt[n] = -2 // answered, but not timed: it never reached the hub
		return
	}
	b.rtt[n] = now - b.sentAt[n]
}

// run sends one heartbeat every bystanderEvery, on the sessions in turn, until stop.
func (b *bystander) run(ctx context.Context) {
	defer close(b.finished)
	t := time.NewTicker(bystanderEvery)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-t.C:
		case <-b.stopped:
			return
		case <-ctx.Done():
			return
		}
		b.mu.Lock()
		b.sentAt = append(b.sentAt, time.Now().UnixNano())
		b.rtt = append(b.rtt, -1)
		b.mu.Unlock()
		msg := []byte(`{"type":"heartbeat","id":"b` + strconv.Itoa(n) + `"}`)
		if err := write(ctx, b.ws[n%len(b.ws)], msg); err != nil {
			b.mu.Lock()
			if b.sendErr == nil {
				b.sendErr = err
			}
			b.mu.Unlock()
		}
	}
}

// stop ends the heartbeats and waits up to wait for the answers still due,
// so that the windows read afterwards count as missing only what never came.
// The sessions stay open until close.
func (b *bystander) stop(wait time.Duration) {
	if !b.running {
		return
	}
	select {
	case <-b.stopped:
	default:
		close(b.stopped)
	}
	<-b.finished
	end := time.Now().Add(wait)
	for time.Now().Before(end) && b.outstanding() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *bystander) outstanding() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, r := range b.rtt {
		if r == -1 {
			n++
		}
	}
	return n
}

// close stops the heartbeats (if still running) and the sessions.
func (b *bystander) close() {
	b.stop(0)
	for _, w := range b.watchers {
		w.stop()
	}
}

// latency is the bystander's round trips of the heartbeats sent in [from, to).
type latency struct {
	p50, p99, max float64 // ms
	samples       int
	missing       int // sent in the window, never answered
	refused       int // answered with an error
}

func (b *bystander) window(from, to time.Time) latency {
	b.mu.Lock()
	defer b.mu.Unlock()
	var l latency
	var rtts []int64
	lo, hi := from.UnixNano(), to.UnixNano()
	for i, s := range b.sentAt {
		if s < lo || s >= hi {
			continue
		}
		switch r := b.rtt[i]; {
		case r >= 0:
			rtts = append(rtts, r)
		case r == -2:
			l.refused++
		default:
			l.missing++
		}
	}
	slices.Sort(rtts)
	l.samples = len(rtts)
	if len(rtts) > 0 {
		l.p50, l.p99, l.max = ms(quantile(rtts, 0.50)), ms(quantile(rtts, 0.99)), ms(rtts[len(rtts)-1])
	}
	return l
}

// closedByServer is how many of the bystander's sessions the server ended.
func (b *bystander) closedByServer() int {
	n := 0
	for _, w := range b.watchers {
		if w.byServer() {
			n++
		}
	}
	return n
}

// record sets the bystander's figures for one window under prefix ("by_" etc.).
func (l latency) record(m *measurement, prefix string) {
	m.set(prefix+"samples", float64(l.samples))
	m.set(prefix+"missing", float64(l.missing+l.refused))
	if l.samples > 0 {
		m.set(prefix+"p50_ms", l.p50)
		m.set(prefix+"p99_ms", l.p99)
		m.set(prefix+"max_ms", l.max)
	}
	if l.refused > 0 {
		m.notef("bystander (%s): %d heartbeats refused with an error frame", prefix, l.refused)
	}
}

// bystanderFigures are the rows of one bystander window.
func bystanderFigures(prefix, when string) []figure {
	return []figure{
		{prefix + "p50_ms", "bystander heartbeat RTT p50 " + when + " (ms)", "lower"},
		{prefix + "p99_ms", "bystander heartbeat RTT p99 " + when + " (ms)", "lower"},
		{prefix + "max_ms", "bystander heartbeat RTT max " + when + " (ms)", "lower"},
		{prefix + "samples", "bystander heartbeats answered " + when, ""},
		{prefix + "missing", "bystander heartbeats unanswered or refused " + when, "lower"},
	}
}

// finish adds what every hostile scenario reports about its bystander.
func (b *bystander) finish(m *measurement) {
	m.set("by_closed", float64(b.closedByServer()))
	b.mu.Lock()
	err := b.sendErr
	b.mu.Unlock()
	if err != nil {
		m.notef("bystander: a heartbeat could not be sent: %v", err)
	}
	for i, w := range b.watchers {
		if w.byServer() {
			m.notef("bystander session %d was closed by the server (code %d): %v", i, w.endCode, w.endErr)
		}
	}
}

// cpuWindow is what the server, the tool and everyone else used between two snaps.
func cpuWindow(m *measurement, prefix string, a, b cpuSnap) {
	sec := b.t.Sub(a.t).Seconds()
	m.set(prefix+"cpu_s", b.srv-a.srv)
	if sec > 0 {
		m.set(prefix+"cpu_pct", (b.srv-a.srv)/sec*100)
		m.set(prefix+"tool_cpu_pct", (b.tool-a.tool)/sec*100)
	}
	m.set(prefix+"other_cpu_pct", otherPct(a, b))
}

// cpuFigures are the rows cpuWindow fills.
func cpuFigures(prefix, when string) []figure {
	return []figure{
		{prefix + "cpu_s", "server CPU-seconds " + when, "lower"},
		{prefix + "cpu_pct", "server CPU " + when + " (% of a core)", "lower"},
		{prefix + "tool_cpu_pct", "tool CPU " + when + " (% of its core)", ""},
		{prefix + "other_cpu_pct", "other processes' CPU " + when + " (% of a core)", ""},
	}
}

func wsURL(p *proc) string { return "ws://" + p.addr + "/ws" }

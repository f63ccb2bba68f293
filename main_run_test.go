package main

// run in the test process: the start-up line carrying the bound address at
// any log level, and a bad LISTEN_ADDR refused. startRun and syncBuffer serve
// other tests too.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// syncBuffer is a log sink that the server's goroutines and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// entries parses the JSON log lines written so far.
func (b *syncBuffer) entries(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// running is one call of run in the background, with its log.
type running struct {
	addr   string // as onListen reported it
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error // run's result

	finished bool
	err      error
}

// startRun calls run with cfg in a goroutine, returns once it listens, and
// stops it when the test ends.
func startRun(t *testing.T, cfg config) *running {
	t.Helper()
	r := &running{logs: &syncBuffer{}, done: make(chan error, 1)}
	log := zerolog.New(r.logs).Level(zerolog.TraceLevel)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	listening := make(chan net.Addr, 1)
	go func() { r.done <- run(ctx, cfg, log, func(a net.Addr) { listening <- a }) }()
	t.Cleanup(func() {
		r.cancel()
		if err := r.wait(t, cfg.ShutdownTimeout+waitFor); err != nil {
			t.Logf("run at cleanup: %v", err)
		}
	})
	select {
	case a := <-listening:
		r.addr = a.String()
	case err := <-r.done:
		r.finished, r.err = true, err
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(waitFor):
		t.Fatal("run did not listen")
	}
	return r
}

// wait returns run's result, failing the test if run is still going after within.
func (r *running) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	if r.finished {
		return r.err
	}
	select {
	case r.err = <-r.done:
		r.finished = true
		return r.err
	case <-time.After(within):
		t.Fatalf("run still running %s after it was asked to stop", within)
		return nil
	}
}

// returned reports whether run has returned, without waiting.
func (r *running) returned() bool {
	if r.finished {
		return true
	}
	select {
	case r.err = <-r.done:
		r.finished = true
		return true
	default:
		return false
	}
}

func TestRunLogsTheBoundAddress(t *testing.T) {
	cfg := testConfig(t)
	cfg.ListenAddr = "127.0.0.1:0"
	r := startRun(t, cfg)
	var addrs []string
	eventually(t, "a start-up line carrying addr", func() bool {
		addrs = addrs[:0]
		for _, e := range r.logs.entries(t) {
			if a, ok := e["addr"].(string); ok {
				addrs = append(addrs, a)
			}
		}
		return len(addrs) > 0
	})
	if len(addrs) != 1 {
		t.Fatalf("%d start-up lines carry addr, want 1: %s", len(addrs), r.logs.String())
	}
	addr := addrs[0]
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" || port == "" {
		t.Fatalf("logged addr %q is not the bound address", addr)
	}
	if addr != r.addr {
		t.Fatalf("logged addr %q, but run listens on %q", addr, r.addr)
	}
	// The logged address is one a client can reach.
	c := dial(t, "ws://"+addr+"/ws", nil)
	c.send(`{"type":"heartbeat","id":"h"}`)
	c.expect("heartbeat_ack")
	r.cancel()
	if code := c.expectClose(cfg.ShutdownTimeout); code != websocket.StatusGoingAway {
		t.Fatalf("close code %d, want %d", code, websocket.StatusGoingAway)
	}
	if err := r.wait(t, cfg.ShutdownTimeout); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestRunLogsTheAddressAtAnyLogLevel holds run to the contract's unconditional
// "at start the server logs one line carrying the address", which is what makes
// LISTEN_ADDR=127.0.0.1:0 usable: main hands run a logger filtered at
// LOG_LEVEL, as here. Only LOG_LEVEL=disabled may silence it.
func TestRunLogsTheAddressAtAnyLogLevel(t *testing.T) {
	for _, level := range []string{"trace", "info", "warn", "error"} {
		t.Run("LOG_LEVEL="+level, func(t *testing.T) {
			cfg, err := loadConfig([]string{"LISTEN_ADDR=127.0.0.1:0", "LOG_LEVEL=" + level})
			if err != nil {
				t.Fatal(err)
			}
			logs := &syncBuffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			listening := make(chan net.Addr, 1)
			go func() {
				done <- run(ctx, cfg, zerolog.New(logs).Level(cfg.level), func(a net.Addr) { listening <- a })
			}()
			var bound net.Addr
			select {
			case bound = <-listening:
			case err := <-done:
				cancel()
				t.Fatalf("run: %v", err)
			case <-time.After(waitFor):
				cancel()
				<-done
				t.Fatal("run did not listen")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			var addrs []string
			for _, e := range logs.entries(t) {
				if a, ok := e["addr"].(string); ok {
					addrs = append(addrs, a)
				}
			}
			if len(addrs) != 1 || addrs[0] != bound.String() {
				t.Fatalf("with LOG_LEVEL=%s the start-up lines carrying addr are %q, want one with %s", level, addrs, bound)
			}
		})
	}
}

func TestRunRefusesABadListenAddr(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct{ name, addr string }{
		{"not an address", "not-an-address"},
		{"port out of range", "127.0.0.1:99999"},
		{"port already taken", taken.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ListenAddr = tc.addr
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			listened := make(chan net.Addr, 1)
			go func() {
				done <- run(ctx, cfg, zerolog.New(io.Discard), func(a net.Addr) { listened <- a })
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "LISTEN_ADDR") {
					t.Fatalf("run with LISTEN_ADDR=%q: %v, want an error naming LISTEN_ADDR", tc.addr, err)
				}
				t.Logf("%v", err)
			case a := <-listened:
				cancel()
				<-done
				t.Fatalf("run with LISTEN_ADDR=%q listened on %s", tc.addr, a)
			case <-time.After(waitFor):
				cancel()
				<-done
				t.Fatalf("run with LISTEN_ADDR=%q neither failed nor listened", tc.addr)
			}
		})
	}
}

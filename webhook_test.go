package main

// The webhook's own rules (contract v2 §9): the body and its signature, the
// queue's bound, the retry budget, the shutdown deadline, what the log may
// say, and that every presence frame the server emits reaches the webhook.
// The delivery goroutine is the real one, POSTing to a real receiver.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// startTestWebhook runs a webhook POSTing to rcv, logging to logs, with the
// contract's timing changed by timing, and stops it when the test ends.
func startTestWebhook(t *testing.T, rcv *hookReceiver, logs *syncBuffer, timing func(*webhookTiming)) *webhook {
	t.Helper()
	u, err := url.Parse(rcv.url)
	if err != nil {
		t.Fatal(err)
	}
	tm := defaultWebhookTiming()
	if timing != nil {
		timing(&tm)
	}
	w := newWebhook(u, rcv.secret, tm, zerolog.New(logs))
	t.Cleanup(func() { rcv.unhang(); w.stop(time.Now().Add(waitFor)) })
	return w
}

// testPresence is the n-th event of one game, numbered by its offset.
func testPresence(n int) presenceEvent {
	return presenceEvent{game: hubGame, epoch: "E", offset: uint64(n), sid: "S", status: "joined", at: time.Now()}
}

// offsetsOf lists the offsets of events.
func offsetsOf(events []hookEvent) []uint64 {
	out := make([]uint64, len(events))
	for i, e := range events {
		out[i] = e.Offset
	}
	return out
}

// warnings returns the log's warn entries whose message is msg.
func warnings(t *testing.T, logs *syncBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, e := range logs.entries(t) {
		if e["level"] == "warn" && e["message"] == msg {
			out = append(out, e)
		}
	}
	return out
}

func TestWebhookSignatureMatchesAnIndependentHMAC(t *testing.T) {
	// Computed with Python's hmac module: hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest()
	const want = "sha256=6ce1dec8225324d1a0ee24c3e9ea5271391881dd5ac684804fd7c906f798d584"
	if got := signWebhook([]byte(webhookTestSecret), "1700000000", []byte(`{"events":[]}`)); got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}

func TestWebhookBodyFormat(t *testing.T) {
	at := time.Date(2025, 5, 1, 14, 0, 0, 7_400_000, time.FixedZone("CEST", 2*3600))
	user := int64(42)
	got := string(encodeWebhookBody([]presenceEvent{
		{game: hubGame, epoch: "EP", offset: 1, sid: "S1", status: "joined", at: at},
		{game: hubGame, epoch: "EP", offset: 2, sid: "S2", userID: &user, status: "left", reason: "kicked", at: at},
	}))
	want := `{"events":[` +
		`{"type":"presence","game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","sid":"S1","user_id":null,"status":"joined","reason":null,"offset":1,"epoch":"EP","time":"2025-05-01T12:00:00.007Z"},` +
		`{"type":"presence","game_id":"6f9619ff-8b86-d011-b42d-00c04fd430c8","sid":"S2","user_id":42,"status":"left","reason":"kicked","offset":2,"epoch":"EP","time":"2025-05-01T12:00:00.007Z"}]}`
	if got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}

// TestWebhookQueueOverflowDropsTheOldest: with a bound of 10 and the receiver
// holding the first POST, 30 more events keep the newest 10; the 20 oldest
// are dropped, counted and logged, and the rest arrive in order.
func TestWebhookQueueOverflowDropsTheOldest(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.answerWith(func(n int) int {
		if n == 0 {
			return hookHang
		}
		return http.StatusOK
	})
	logs := &syncBuffer{}
	w := startTestWebhook(t, rcv, logs, func(tm *webhookTiming) { tm.queueMax, tm.batchMax, tm.batchWait = 10, 5, time.Millisecond })
	w.push(testPresence(1))
	rcv.awaitHanging(t)
	for i := 2; i <= 31; i++ {
		w.push(testPresence(i))
	}
	if n, _ := w.queued(); n != 10 {
		t.Fatalf("%d events queued, want the bound, 10", n)
	}
	rcv.unhang()
	got := offsetsOf(rcv.awaitEvents(t, 11))
	want := []uint64{1, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}
	if !slices.Equal(got, want) {
		t.Fatalf("offsets %v, want %v", got, want)
	}
	if d := w.dropped.Load(); d != 20 {
		t.Errorf("dropped %d, want 20", d)
	}
	sum := 0.0
	for _, e := range warnings(t, logs, "webhook queue full: the oldest events were dropped") {
		sum += e["dropped"].(float64)
	}
	if sum != 20 {
		t.Errorf("the log reports %v events dropped for the bound, want 20:\n%s", sum, logs)
	}
}

// TestWebhookRetryBudgetDropsTheBatch: a batch the receiver refuses for
// longer than the retry budget is retried, then dropped and counted, and the
// next batch goes out as if nothing happened.
func TestWebhookRetryBudgetDropsTheBatch(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.answerWith(func(int) int { return http.StatusBadGateway })
	logs := &syncBuffer{}
	w := startTestWebhook(t, rcv, logs, func(tm *webhookTiming) {
		tm.batchWait, tm.backoffBase, tm.backoffCap, tm.retryBudget = time.Millisecond, 10*time.Millisecond, 40*time.Millisecond, 300*time.Millisecond
	})
	w.push(testPresence(1))
	eventually(t, "the batch to be given up", func() bool { return w.abandoned.Load() == 1 })
	posts := rcv.snapshot()
	if len(posts) < 3 {
		t.Fatalf("%d attempts in a 300 ms budget with waits under 40 ms, want several", len(posts))
	}
	for _, p := range posts {
		if p.body != posts[0].body {
			t.Fatalf("a retry carried another body")
		}
	}
	// The receiver sees arrivals, not starts: an attempt's way over loopback
	// can take a millisecond more than the first's on a busy machine (under
	// -race one run saw 300.98 ms). A retry started past the budget would be
	// late by a whole pause, 10 to 40 ms here, so 10 ms of slack still sees it.
	if span := posts[len(posts)-1].at.Sub(posts[0].at); span > 310*time.Millisecond {
		t.Errorf("the last attempt came %s after the first, past the 300 ms budget", span)
	}
	if w.dropped.Load() != 1 || w.failures.Load() != uint64(len(posts)) {
		t.Errorf("dropped %d, failed POSTs %d: want 1 and %d", w.dropped.Load(), w.failures.Load(), len(posts))
	}
	lines := warnings(t, logs, "webhook batch dropped: its retries ran out")
	if len(lines) != 1 || lines[0]["dropped"] != 1.0 || lines[0]["abandoned_batches_total"] != 1.0 ||
		!strings.Contains(lines[0]["error"].(string), "502") {
		t.Errorf("log lines %v, want one warning of 1 event dropped, with the receiver's 502:\n%s", lines, logs)
	}
	rcv.answerWith(func(int) int { return http.StatusNoContent })
	w.push(testPresence(2))
	if got := offsetsOf(rcv.awaitEvents(t, 1)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("accepted offsets %v, want [2]", got)
	}
}

// TestWebhookStopsAtTheShutdownDeadline: stop sends what is queued at once,
// and past the deadline cuts the POST a hanging receiver holds, drops (and
// counts) what is left, and returns; the goroutine is gone (goleak).
func TestWebhookStopsAtTheShutdownDeadline(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.answerWith(func(int) int { return hookHang })
	logs := &syncBuffer{}
	w := startTestWebhook(t, rcv, logs, func(tm *webhookTiming) { tm.batchMax = 2 }) // a batch waits up to 1 s…
	for i := 1; i <= 3; i++ {
		w.push(testPresence(i))
	}
	rcv.awaitHanging(t) // …but two make a batch
	start := time.Now()
	w.stop(start.Add(200 * time.Millisecond))
	if took := time.Since(start); took > 200*time.Millisecond+waitFor/5 {
		t.Errorf("stop took %s with a deadline of 200 ms", took)
	}
	if d := w.dropped.Load(); d != 3 {
		t.Errorf("dropped %d, want the 3 never accepted", d)
	}
	if len(warnings(t, logs, "webhook batch in flight at the shutdown deadline was dropped")) != 1 ||
		len(warnings(t, logs, "webhook events still queued at the shutdown deadline were dropped")) != 1 {
		t.Errorf("want the batch in flight and the one queued logged as dropped:\n%s", logs)
	}
}

func TestWebhookBackoffIsFullJitterUnderTheCap(t *testing.T) {
	base, limit := 100*time.Millisecond, 2*time.Second
	for attempt, bound := range []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000} {
		bound *= time.Millisecond
		var most time.Duration
		for range 200 {
			d := backoff(base, limit, attempt)
			if d < 0 || d >= bound {
				t.Fatalf("attempt %d waited %s, want [0, %s)", attempt, d, bound)
			}
			most = max(most, d)
		}
		if most < bound/2 {
			t.Errorf("attempt %d: 200 waits all under %s, want them spread over [0, %s)", attempt, most, bound)
		}
	}
	if d := backoff(base, limit, 1000); d >= limit {
		t.Errorf("attempt 1000 waited %s, want under the cap %s", d, limit)
	}
}

// TestWebhookLogsNeitherSecretNorURL: the URL may carry credentials in its
// userinfo and query. The log names only scheme and host, whether the
// receiver refuses (HTTP 500) or cannot be reached (a transport error,
// whose net/http text would quote the whole URL), and never the secret.
func TestWebhookLogsNeitherSecretNorURL(t *testing.T) {
	rcv := newHookReceiver(t)
	rcv.answerWith(func(int) int { return http.StatusInternalServerError })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	for _, tc := range []struct{ name, host string }{
		{"receiver answers 500", strings.TrimPrefix(rcv.ts.URL, "http://")},
		{"connection refused", refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := withWebhook(t, testConfig(t), rcv, func(tm *webhookTiming) {
				tm.batchWait, tm.backoffBase, tm.backoffCap = time.Millisecond, 10*time.Millisecond, 20*time.Millisecond
			})
			cfg.WebhookURL = "http://hookuser:pw-in-userinfo@" + tc.host + "/hooks/presence?token=in-the-query"
			if err := cfg.validateWebhook(); err != nil {
				t.Fatal(err)
			}
			cfg.ShutdownTimeout = 500 * time.Millisecond // the batch never goes through: shutdown gives up on it
			r := startRun(t, cfg)
			c := rsDial(t, "ws://"+r.addr+"/ws", nil)
			c.join(uuid.NewString(), "j")
			eventually(t, "two failed POSTs in the log", func() bool {
				return strings.Count(r.logs.String(), "webhook POST failed") >= 2
			})
			r.cancel()
			if err := r.wait(t, cfg.ShutdownTimeout+waitFor); err != nil {
				t.Fatalf("run: %v", err)
			}
			logs := r.logs.String()
			if want := `"target":"http://` + tc.host + `"`; !strings.Contains(logs, want) {
				t.Errorf("the log does not say %s", want)
			}
			for _, secret := range []string{"hookuser", "pw-in-userinfo", "in-the-query", "/hooks/presence", webhookTestSecret} {
				if strings.Contains(logs, secret) {
					t.Errorf("the log shows %q:\n%s", secret, logs)
				}
			}
			if !strings.Contains(logs, "webhook batch in flight at the shutdown deadline was dropped") {
				t.Errorf("the log does not say shutdown dropped the batch:\n%s", logs)
			}
		})
	}
}

// TestPresenceFramesGoThroughTheHook: the webhook hears of presence in one
// place, hub.presence. A presence frame built anywhere else than as an
// argument of a .presence call (or .presenceBy, .presenceThen: the same hook
// with a superseding sid or a continuation; or in prepare, the reader's, which passes
// its presenceNote beside it) would reach the room and not the backend: a
// kick or a new reason added later must go through the hook too.
func TestPresenceFramesGoThroughTheHook(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	encoders := map[string]bool{"encodePresence": true, "encodeAway": true, "encodeBack": true}
	fset := token.NewFileSet()
	found := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil || fn.Name.Name == "prepare" || encoders[fn.Name.Name] {
				continue
			}
			hooked := map[ast.Expr]bool{} // the arguments of .presence(…) calls
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "presence") {
					for _, arg := range call.Args {
						hooked[arg] = true
					}
				}
				if id, ok := call.Fun.(*ast.Ident); ok && encoders[id.Name] {
					found++
					if !hooked[call] {
						t.Errorf("%s: %s builds a presence frame outside hub.presence: the webhook would not hear it",
							fset.Position(call.Pos()), id.Name)
					}
				}
				return true
			})
		}
	}
	if found < 3 { // drop's left, goAway's away, resume's back

		t.Fatalf("found %d presence frames built by the hub; the test no longer sees the code", found)
	}
}

package main

// A real webhook receiver for the tests: an httptest server on loopback that
// checks every POST the way a backend would (the signature with crypto/hmac,
// from the contract's definition, not from dugout's code), keeps what it got,
// and answers as the test tells it: a status, or hanging until released.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// webhookTestSecret is the WEBHOOK_SECRET of the tests: 36 characters.
const webhookTestSecret = "test-webhook-secret-0123456789abcdef"

// hookHang is an answer that holds the request until the test releases it.
const hookHang = -1

// hookEvent is one event of a POST as the receiver decodes it.
type hookEvent struct {
	Type   string  `json:"type"`
	GameID string  `json:"game_id"`
	SID    string  `json:"sid"`
	UserID *int64  `json:"user_id"`
	Status string  `json:"status"`
	Reason *string `json:"reason"`
	Offset uint64  `json:"offset"`
	Epoch  string  `json:"epoch"`
	Time   string  `json:"time"`
}

// String is how a failing test shows an event.
func (e hookEvent) String() string {
	reason := "null"
	if e.Reason != nil {
		reason = *e.Reason
	}
	return fmt.Sprintf("%.6s %s/%s @%d", e.SID, e.Status, reason, e.Offset)
}

// hookPost is one request the receiver got.
type hookPost struct {
	at        time.Time
	timestamp int64
	body      string
	events    []hookEvent
	status    int // what the receiver answered; hookHang while it hangs
}

// hookReceiver is the test's backend.
type hookReceiver struct {
	ts      *httptest.Server
	url     string
	secret  string
	release chan struct{} // closed to end every hanging request with 200

	mu       sync.Mutex
	answer   func(n int) int // the status of the n-th request (from 0)
	posts    []hookPost
	problems []string
	hanging  int           // requests held now
	changed  chan struct{} // capacity 1: something above changed
}

// newHookReceiver starts a receiver that answers 200 to everything until told
// otherwise, and closes it when the test ends.
func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	r := &hookReceiver{secret: webhookTestSecret, release: make(chan struct{}), changed: make(chan struct{}, 1),
		answer: func(int) int { return http.StatusOK }}
	r.ts = httptest.NewServer(http.HandlerFunc(r.serve))
	r.url = r.ts.URL + "/hooks/presence"
	t.Cleanup(func() {
		r.unhang()
		r.ts.Close()
		r.check(t)
	})
	return r
}

// answerWith makes fn decide the status of every request from now on.
func (r *hookReceiver) answerWith(fn func(n int) int) {
	r.mu.Lock()
	r.answer = fn
	r.mu.Unlock()
}

// unhang releases every hanging request, and every later one at once.
func (r *hookReceiver) unhang() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.release:
	default:
		close(r.release)
	}
}

// hookTimePattern is RFC 3339 in UTC with milliseconds, as §9's time is written.
var hookTimePattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// hookEventKeys is every key of an event, and no other.
var hookEventKeys = []string{"epoch", "game_id", "offset", "reason", "sid", "status", "time", "type", "user_id"}

// serve checks one POST, records it and answers it.
func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	post := hookPost{at: time.Now(), body: string(body)}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if err != nil {
		bad("reading the body: %v", err)
	}
	if req.Method != http.MethodPost || req.URL.Path != "/hooks/presence" {
		bad("%s %s, want POST /hooks/presence", req.Method, req.URL.Path)
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		bad("Content-Type %q", ct)
	}
	ts := req.Header.Get("X-Dugout-Timestamp")
	post.timestamp, err = strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(post.timestamp, 0)).Abs() > 5*time.Second {
		bad("X-Dugout-Timestamp %q is not the Unix time now", ts)
	}
	// The signature, checked from the contract's words alone.
	mac := hmac.New(sha256.New, []byte(r.secret))
	mac.Write([]byte(ts + "." + string(body)))
	sig, ok := strings.CutPrefix(req.Header.Get("X-Dugout-Signature"), "sha256=")
	got, err := hex.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		bad("X-Dugout-Signature %q does not sign %q at %s", req.Header.Get("X-Dugout-Signature"), body, ts)
	}
	var raw struct {
		Events []map[string]json.RawMessage `json:"events"`
	}
	var decoded struct {
		Events []hookEvent `json:"events"`
	}
	if json.Unmarshal(body, &raw) != nil || json.Unmarshal(body, &decoded) != nil || len(raw.Events) == 0 {
		bad("body %q is not {\"events\":[…]} with at least one event", body)
	}
	for i, e := range raw.Events {
		keys := slices.Sorted(maps.Keys(e))
		if !slices.Equal(keys, hookEventKeys) {
			bad("event %d has keys %v, want %v", i, keys, hookEventKeys)
		}
	}
	for _, e := range decoded.Events {
		if e.Type != "presence" || !hookTimePattern.MatchString(e.Time) || e.Epoch == "" || e.Offset == 0 {
			bad("event %+v: want type presence, a time like 2006-01-02T15:04:05.000Z, an epoch and an offset", e)
		}
		if (e.Reason == nil) != (e.Status == "joined" || e.Status == "back") {
			bad("event %+v: reason must be null exactly for joined and back", e)
		}
	}
	post.events = decoded.Events

	r.mu.Lock()
	n := len(r.posts)
	status := r.answer(n)
	post.status = status
	r.posts = append(r.posts, post)
	r.problems = append(r.problems, problems...)
	if status == hookHang {
		r.hanging++
	}
	r.signal()
	r.mu.Unlock()
	if status == hookHang {
		select {
		case <-r.release:
			status = http.StatusOK
		case <-req.Context().Done():
			status = http.StatusServiceUnavailable // nobody reads it: the client gave up
		}
		r.mu.Lock()
		r.hanging--
		r.posts[n].status = status
		r.signal()
		r.mu.Unlock()
	}
	w.WriteHeader(status)
}

// signal wakes a test waiting for a change. Called with mu held.
func (r *hookReceiver) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// check fails the test for everything the receiver found wrong.
func (r *hookReceiver) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.problems {
		t.Errorf("webhook receiver: %s", p)
	}
	r.problems = nil
}

// snapshot returns a copy of every request so far.
func (r *hookReceiver) snapshot() []hookPost {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.posts)
}

// accepted returns the events of every POST answered 2xx, in arrival order.
func accepted(posts []hookPost) []hookEvent {
	var out []hookEvent
	for _, p := range posts {
		if p.status >= 200 && p.status <= 299 {
			out = append(out, p.events...)
		}
	}
	return out
}

// await waits until cond holds of the requests so far, failing after within.
func (r *hookReceiver) await(t *testing.T, within time.Duration, what string, cond func([]hookPost) bool) []hookPost {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		posts := r.snapshot()
		if cond(posts) {
			return posts
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("webhook receiver: no %s within %s; got %d requests: %v", what, within, len(posts), accepted(posts))
		}
	}
}

// awaitEvents waits until n events have been accepted and returns them.
func (r *hookReceiver) awaitEvents(t *testing.T, n int) []hookEvent {
	t.Helper()
	posts := r.await(t, 2*waitFor, fmt.Sprintf("%d accepted events", n), func(p []hookPost) bool { return len(accepted(p)) >= n })
	return accepted(posts)
}

// awaitHanging waits until a request is being held.
func (r *hookReceiver) awaitHanging(t *testing.T) {
	t.Helper()
	r.await(t, 2*waitFor, "hanging request", func([]hookPost) bool { return r.hangingNow() > 0 })
}

// hangingNow returns how many requests are held now.
func (r *hookReceiver) hangingNow() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hanging
}

// hookWant is an expected event: who, what, why and its offset.
type hookWant struct {
	sid    string
	status string
	reason string // "" for null
	offset uint64
}

// checkEvents compares got with want in order, and checks every event is of
// game, in one epoch, by user (nil: anonymous), at a time between since and now,
// in time order.
func checkEvents(t *testing.T, got []hookEvent, game string, since time.Time, want ...hookWant) {
	t.Helper()
	var wants []string
	for _, w := range want {
		e := hookEvent{SID: w.sid, Status: w.status, Offset: w.offset}
		if w.reason != "" {
			e.Reason = &w.reason
		}
		wants = append(wants, e.String())
	}
	var gots []string
	for _, e := range got {
		gots = append(gots, e.String())
	}
	if !slices.Equal(gots, wants) {
		t.Fatalf("webhook events\n got %v\nwant %v", gots, wants)
	}
	prev := since.Truncate(time.Millisecond)
	for _, e := range got {
		at, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil || at.Before(prev) || at.After(time.Now()) {
			t.Errorf("event %s at %q: want a time from %s on, in order, not in the future", e, e.Time, prev.Format(webhookTimeFormat))
		}
		prev = at
		if e.GameID != game || e.Epoch != got[0].Epoch {
			t.Errorf("event %s of game %s epoch %s, want game %s epoch %s", e, e.GameID, e.Epoch, game, got[0].Epoch)
		}
	}
}

// withWebhook returns cfg sending presence to r, with the contract's timing
// except where the test shortens it.
func withWebhook(t *testing.T, cfg config, r *hookReceiver, timing func(*webhookTiming)) config {
	t.Helper()
	cfg.WebhookURL, cfg.WebhookSecret = r.url, r.secret
	if err := cfg.validateWebhook(); err != nil {
		t.Fatalf("webhook config: %v", err)
	}
	cfg.webhookTiming = defaultWebhookTiming()
	if timing != nil {
		timing(&cfg.webhookTiming)
	}
	return cfg
}

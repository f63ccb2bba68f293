package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// Presence webhooks (contract v2 §9): every presence change is POSTed to the
// game's backend, signed, in batches. The hub hands each event to a bounded
// queue without waiting; one goroutine owns everything that touches the
// network (batching, signing, POSTing, retrying), so a receiver that is slow,
// down or hanging costs the hub and every conn nothing.

// webhookTiming is the webhook's bounds and durations. The contract fixes
// them (defaultWebhookTiming); they are fields so that tests can shorten them.
type webhookTiming struct {
	batchMax    int           // events per POST
	batchWait   time.Duration // the longest the first event of a batch waits for others
	postTimeout time.Duration // one POST, from dial to the end of the response
	retryBudget time.Duration // no retry of a batch starts later than this after its first attempt
	backoffBase time.Duration // the first retry waits up to this; each further one up to twice as long...
	backoffCap  time.Duration // ...but never more than this
	queueMax    int           // events queued; past it the oldest are dropped
}

// defaultWebhookTiming is the contract's: 100 events or 1 s per POST, 5 s per
// POST, retries for 5 minutes, 10 000 events queued. The backoff is dugout's
// own: from 0.5 s, doubling, up to 30 s, each wait drawn uniformly below its
// bound (full jitter), so that many servers retrying one receiver spread out.
func defaultWebhookTiming() webhookTiming {
	return webhookTiming{batchMax: 100, batchWait: time.Second, postTimeout: 5 * time.Second,
		retryBudget: 5 * time.Minute, backoffBase: 500 * time.Millisecond, backoffCap: 30 * time.Second, queueMax: 10000}
}

// presenceEvent is one presence change as the hub hands it over: plain
// values, encoded to JSON only by the delivery goroutine, off the hub.
type presenceEvent struct {
	game   uuid.UUID
	epoch  string
	offset uint64 // the game event's offset in epoch
	sid    string
	userID *int64 // shared with the session, never written
	status string // joined, away, back or left
	reason string // "" for joined and back
	at     time.Time
}

// webhookEvent is a presenceEvent on the wire. reason is null for joined and
// back; user_id is null for an anonymous session.
type webhookEvent struct {
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

// webhookTimeFormat is RFC 3339 in UTC with milliseconds.
const webhookTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// encodeWebhookBody builds the body of one POST.
func encodeWebhookBody(batch []presenceEvent) []byte {
	events := make([]webhookEvent, len(batch))
	for i, e := range batch {
		events[i] = webhookEvent{Type: "presence", GameID: e.game.String(), SID: e.sid, UserID: e.userID,
			Status: e.status, Offset: e.offset, Epoch: e.epoch, Time: e.at.UTC().Format(webhookTimeFormat)}
		if e.reason != "" {
			events[i].Reason = &batch[i].reason
		}
	}
	b, err := json.Marshal(struct {
		Events []webhookEvent `json:"events"`
	}{events})
	if err != nil {
		panic("encoding a webhook body: " + err.Error()) // plain strings and numbers cannot fail
	}
	return b
}

// signWebhook returns the X-Dugout-Signature value for body sent at
// timestamp: the HMAC-SHA256 of "<timestamp>.<body>" with secret.
func signWebhook(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhook is the queue of presence events and the one goroutine that
// delivers them. A nil *webhook is a server without WEBHOOK_URL: push and
// stop do nothing.
type webhook struct {
	// set at construction
	target  *url.URL
	secret  []byte
	timing  webhookTiming
	log     zerolog.Logger
	client  *http.Client
	ready   chan struct{}      // capacity 1: wakes the delivery goroutine; never closed
	flush   chan struct{}      // closed when shutdown begins: send what is queued at once, then stop
	hard    context.Context    // ends at the shutdown deadline: in-flight POSTs are cut, the rest dropped
	cancel  context.CancelFunc //
	done    chan struct{}      // closed when the delivery goroutine returns
	stopped sync.Once

	// the ring, guarded by mu: the hub pushes, the delivery goroutine takes.
	// The lock is held only to move a few words, never across I/O.
	mu       sync.Mutex
	buf      []presenceEvent
	head, n  int
	overflow int // dropped for the bound since the delivery goroutine last logged it

	// counters for operators (logged as they change; metrics will read them)
	delivered atomic.Uint64 // events a receiver accepted
	posted    atomic.Uint64 // POSTs a receiver accepted
	dropped   atomic.Uint64 // events lost: the queue's bound, a batch out of retries, the shutdown deadline
	failures  atomic.Uint64 // POST attempts that failed
	abandoned atomic.Uint64 // batches dropped when their retry budget ran out
}

// newWebhook returns a webhook for target, signing with secret, and starts
// its delivery goroutine.
func newWebhook(target *url.URL, secret string, timing webhookTiming, log zerolog.Logger) *webhook {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	w := &webhook{
		target: target, secret: []byte(secret), timing: timing,
		log: log.With().Str("component", "webhook").Logger(),
		client: &http.Client{Transport: transport,
			// A redirect would move a signed body somewhere the operator did
			// not name (or turn the POST into a GET): it counts as a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		ready: make(chan struct{}, 1),
		flush: make(chan struct{}),
		done:  make(chan struct{}),
	}
	w.hard, w.cancel = context.WithCancel(context.Background())
	go w.run()
	return w
}

// push queues e without waiting. Past the bound the oldest event is dropped:
// the receiver learns the newest state, and the loss is counted and logged
// by the delivery goroutine (the hub does no I/O). Safe from any goroutine.
func (w *webhook) push(e presenceEvent) {
	if w == nil {
		return
	}
	w.mu.Lock()
	if w.n == w.timing.queueMax {
		w.buf[w.head] = presenceEvent{}
		w.head = (w.head + 1) % len(w.buf)
		w.n--
		w.overflow++
	}
	if w.n == len(w.buf) {
		buf := make([]presenceEvent, min(max(2*len(w.buf), 16), w.timing.queueMax))
		for i := range w.n {
			buf[i] = w.buf[(w.head+i)%len(w.buf)]
		}
		w.buf, w.head = buf, 0
	}
	w.buf[(w.head+w.n)%len(w.buf)] = e
	w.n++
	w.mu.Unlock()
	select {
	case w.ready <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// queued returns how many events wait, and when the oldest of them happened.
func (w *webhook) queued() (int, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n == 0 {
		return 0, time.Time{}
	}
	return w.n, w.buf[w.head].at
}

// take removes up to max of the oldest events, and the count of events
// dropped for the bound since the last take.
func (w *webhook) take(max int) ([]presenceEvent, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	batch := make([]presenceEvent, min(max, w.n))
	for i := range batch {
		batch[i] = w.buf[w.head]
		w.buf[w.head] = presenceEvent{}
		w.head = (w.head + 1) % len(w.buf)
	}
	w.n -= len(batch)
	if w.n == 0 {
		w.buf, w.head = nil, 0 // a burst's ring is not kept for the quiet after it
	}
	overflow := w.overflow
	w.overflow = 0
	return batch, overflow
}

// stop delivers what is queued until deadline, then cuts whatever is still
// in flight, and returns once the delivery goroutine has. Events still queued
// then are dropped and counted. Safe to call more than once, and on nil.
func (w *webhook) stop(deadline time.Time) {
	if w == nil {
		return
	}
	w.stopped.Do(func() {
		close(w.flush)
		cut := time.AfterFunc(time.Until(deadline), w.cancel)
		<-w.done
		cut.Stop()
		w.cancel()
		w.client.CloseIdleConnections()
	})
}

// The hub's side: presence events are handed over here, in the hub step that
// emits them.

// presenceNote is a presence event's status and reason, passed beside its
// encoded frame so that nobody parses the frame back.
type presenceNote struct{ status, reason string }

// presence emits a presence event about s into game: to the other members as
// any game event, and to the webhook with the offset it got, at the hub's
// clock. Every presence frame goes through here (TestPresenceFramesGoThroughTheHook
// checks the source), so the webhook hears every one, whatever its reason.
// Runs on the hub goroutine.
func (h *hub) presence(game uuid.UUID, s *session, note presenceNote, shared []byte) {
	h.presenceThen(game, s, note, shared, "", nil)
}

// presenceBy is presence for a seat superseded by session by (or "").
// Runs on the hub goroutine.
func (h *hub) presenceBy(game uuid.UUID, s *session, note presenceNote, shared []byte, by string) {
	h.presenceThen(game, s, note, shared, by, nil)
}

// presenceThen is presence that runs then, in cluster mode, once the event
// is sequenced (on one node it is sequenced at once, and then is not
// needed). Runs on the hub goroutine.
func (h *hub) presenceThen(game uuid.UUID, s *session, note presenceNote, shared []byte, by string, then func(mailMsg)) {
	if h.clustered() {
		h.clusterPresence(game, s, note, shared, by, then)
		return
	}
	if h.cl != nil && note.status == "left" {
		h.leftWhileDown(game, s, note)
	}
	if h.event(game, s, shared) == nil || h.cfg.webhook == nil {
		return
	}
	log := h.idx.logs[game]
	h.cfg.webhook.push(presenceEvent{game: game, epoch: log.epoch, offset: log.last, sid: s.sid, userID: s.userID,
		status: note.status, reason: note.reason, at: time.Now()})
}

// shutdownPresence tells the webhook that every seat is left: on one node a
// shutdown ends every session (goodbye 1001, not resumable), and the backend
// must not think them seated. The members are not told: every conn is
// closing. Each event takes the offset it would have had. Runs on the hub
// goroutine.
func (h *hub) shutdownPresence() {
	if h.cfg.webhook == nil {
		return
	}
	now := time.Now()
	for g, members := range h.idx.byGame {
		log := h.idx.logs[g]
		offset := log.last
		for s := range members {
			offset++
			h.cfg.webhook.push(presenceEvent{game: g, epoch: log.epoch, offset: offset, sid: s.sid, userID: s.userID,
				status: "left", reason: reasonShutdown.presence, at: now})
		}
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The webhook's delivery goroutine: the only code that waits on a receiver.

// run is the delivery goroutine: it sends one batch at a time, in order, each
// retried until a receiver accepts it or its budget runs out, and returns once
// stop has been called and the queue is empty, or at the shutdown deadline.
func (w *webhook) run() {
	defer close(w.done)
	for {
		batch := w.nextBatch()
		if batch == nil {
			break
		}
		w.deliver(batch)
	}
	if left, overflow := w.take(w.timing.queueMax); len(left)+overflow > 0 {
		w.lose(len(left)+overflow, "shutdown deadline", "webhook events still queued at the shutdown deadline were dropped")
	}
}

// nextBatch waits until a batch is due and takes it: batchMax events queued,
// the oldest of them batchWait old, or shutdown begun. It returns nil when
// shutdown has begun with nothing queued, or at the shutdown deadline.
func (w *webhook) nextBatch() []presenceEvent {
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	var waitC <-chan time.Time
	for {
		if w.hard.Err() != nil {
			return nil
		}
		n, oldest := w.queued()
		draining := closed(w.flush)
		if n > 0 && (n >= w.timing.batchMax || draining || time.Since(oldest) >= w.timing.batchWait) {
			batch, overflow := w.take(w.timing.batchMax)
			if overflow > 0 {
				w.lose(overflow, "queue full", "webhook queue full: the oldest events were dropped")
			}
			return batch
		}
		if draining && n == 0 {
			return nil
		}
		if n > 0 && wait == nil { // the oldest stays the oldest until taken
			wait = time.NewTimer(w.timing.batchWait - time.Since(oldest))
			waitC = wait.C
		}
		select {
		case <-w.ready:
		case <-waitC:
		case <-w.flush:
		case <-w.hard.Done():
		}
	}
}

// deliver POSTs batch until a receiver accepts it. A failure is retried after
// an exponential backoff with full jitter, with a fresh timestamp and so a
// fresh signature (a receiver that checks freshness accepts a late retry);
// once no retry can start within retryBudget of the first attempt, the batch
// is dropped and counted. Later events wait behind it, so the receiver sees
// every game's events in offset order.
func (w *webhook) deliver(batch []presenceEvent) {
	body := encodeWebhookBody(batch)
	first := time.Now()
	for attempt := 0; ; attempt++ {
		err := w.post(body)
		if err == nil {
			w.delivered.Add(uint64(len(batch)))
			w.posted.Add(1)
			if attempt > 0 {
				w.log.Info().Int("attempts", attempt+1).Int("events", len(batch)).Msg("webhook batch delivered after retries")
			}
			return
		}
		if w.hard.Err() != nil { // cut by the shutdown deadline, not failed by the receiver
			w.lose(len(batch), "shutdown deadline", "webhook batch in flight at the shutdown deadline was dropped", err)
			return
		}
		w.failures.Add(1)
		pause := backoff(w.timing.backoffBase, w.timing.backoffCap, attempt)
		if time.Since(first)+pause > w.timing.retryBudget {
			w.abandoned.Add(1)
			w.lose(len(batch), "retry budget", "webhook batch dropped: its retries ran out", err)
			return
		}
		w.log.Warn().Err(err).Int("attempt", attempt+1).Int("events", len(batch)).
			Uint64("failed_posts_total", w.failures.Load()).Dur("retry_in", pause).Msg("webhook POST failed")
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-w.hard.Done():
			t.Stop()
			w.lose(len(batch), "shutdown deadline", "webhook batch in flight at the shutdown deadline was dropped", err)
			return
		}
		if overflow := w.takeOverflow(); overflow > 0 {
			w.lose(overflow, "queue full", "webhook queue full: the oldest events were dropped")
		}
	}
}

// takeOverflow returns and resets the count of events dropped for the
// bound, so that drops are logged while a batch is being retried, not only
// when the next batch is taken.
func (w *webhook) takeOverflow() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	o := w.overflow
	w.overflow = 0
	return o
}

// lose counts n dropped events and logs it at warn, with the running total.
func (w *webhook) lose(n int, why, msg string, err ...error) {
	total := w.dropped.Add(uint64(n))
	ev := w.log.Warn().Int("dropped", n).Uint64("dropped_total", total).Str("reason", why).
		Uint64("abandoned_batches_total", w.abandoned.Load())
	if len(err) > 0 {
		ev = ev.Err(err[0])
	}
	ev.Msg(msg)
}

// post sends body once, signed now, and reports why it failed: a transport
// error, the POST timeout, or a status other than 2xx. The error never
// carries the URL, which may hold a secret in its userinfo or query.
func (w *webhook) post(body []byte) error {
	ctx, cancel := context.WithTimeout(w.hard, w.timing.postTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.target.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building the request: %w", redactURL(err))
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dugout-webhook")
	req.Header.Set("X-Dugout-Timestamp", ts)
	req.Header.Set("X-Dugout-Signature", signWebhook(w.secret, ts, body))
	resp, err := w.client.Do(req)
	if err != nil {
		return redactURL(err)
	}
	// Read a little of the body so the connection can be reused, not all of
	// it: a receiver must not make us read without end.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
	return nil
}

// redactURL strips the URL net/http puts in its errors ("Post \"…\": …").
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("POST: %w", ue.Err)
	}
	return err
}

// backoff returns the wait before retry attempt+1: drawn uniformly from
// [0, min(limit, base×2^attempt)) (full jitter).
func backoff(base, limit time.Duration, attempt int) time.Duration {
	bound := base
	for range attempt {
		if bound >= limit/2 {
			bound = limit
			break
		}
		bound *= 2
	}
	return randDuration(min(bound, limit))
}

// closed reports whether ch is closed, without waiting.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// webhookTargetForLog is what the log may say of the URL: scheme and host,
// never its userinfo, path or query, any of which may carry a secret.
func webhookTargetForLog(u *url.URL) string { return u.Scheme + "://" + u.Host }

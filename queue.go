package main

import "sync"

// sendQueue is a conn's outbound queue: frames wait here for the writer.
//
// It is a ring that grows on demand up to its limit and is released when it
// empties after a burst, because a buffered channel of SEND_QUEUE_SIZE would
// hold 256 slice headers (6 KiB) for every idle connection. Pushing never
// waits: the lock is held only to move a slice header, never across I/O.
//
// It is bounded twice, in frames and in bytes, because a frame may be as large
// as MAX_MESSAGE_BYTES: SEND_QUEUE_SIZE frames of a megabyte each would let one
// member that stops reading pin a quarter of a gigabyte.
type sendQueue struct {
	// set at construction
	limit      int           // frames queued before the conn counts as a slow consumer
	limitBytes int           // bytes queued before the conn counts as a slow consumer
	ready      chan struct{} // capacity 1: wakes the writer; never closed

	mu        sync.Mutex
	buf       [][]byte // ring storage, nil while idle
	head      int      // index of the oldest frame
	n         int      // frames queued
	bytes     int      // bytes queued
	discarded bool     // the conn is ending: nothing queued will be written

	// A resume's catch-up is forced in and must not count against the
	// bounds, or the first live frame after a long catch-up would make the
	// client it helps a slow consumer. forced marks those frames (nil
	// unless some are queued) so that pop can take them back out.
	forced      []bool
	forcedN     int
	forcedBytes int
}

// queueKeep is the ring size kept after the queue drains; a larger ring, left
// by a burst, is released to the garbage collector.
const queueKeep = 8

// newSendQueue returns an empty queue that holds at most limit frames and
// limitBytes bytes.
func newSendQueue(limit, limitBytes int) *sendQueue {
	return &sendQueue{limit: limit, limitBytes: limitBytes, ready: make(chan struct{}, 1)}
}

// push appends frame without waiting and reports false, dropping it, when it
// does not fit: the queue holds limit frames already, or frame would take it
// past limitBytes. A discarded queue takes every frame and keeps none, so a
// conn that is already ending is never reported slow again.
func (q *sendQueue) push(frame []byte) bool {
	return q.add(frame, q.limit, q.limitBytes, false) != pushFull
}

// offer queues frame only while the queue is at most half full, in frames and
// in bytes, and reports whether it did. Replies to a client's own refused
// messages go through offer: a client that bursts far past its rate limit gets
// as many of them as it reads, and is never made a slow consumer by them.
func (q *sendQueue) offer(frame []byte) bool {
	return q.add(frame, q.limit/2, q.limitBytes/2, false) == pushQueued
}

// force queues frame whatever the queue holds (unless it is discarded), and
// leaves it out of what push and offer count until it is written: a resume's
// catch-up is bounded by the games' histories, and must never make the client
// it is meant to help a slow consumer.
func (q *sendQueue) force(frame []byte) {
	q.add(frame, int(^uint(0)>>1), int(^uint(0)>>1), true)
}

// pushResult says what add did with a frame.
type pushResult uint8

const (
	pushQueued  pushResult = iota
	pushFull               // over the bound given
	pushDropped            // the queue is discarded
)

// add appends frame when the frames counted (all but the forced ones) stay
// within frames and bytes; a forced frame is marked and not counted.
func (q *sendQueue) add(frame []byte, frames, bytes int, forced bool) pushResult {
	q.mu.Lock()
	if q.discarded {
		q.mu.Unlock()
		return pushDropped
	}
	if q.n-q.forcedN >= frames || q.bytes-q.forcedBytes+len(frame) > bytes {
		q.mu.Unlock()
		return pushFull
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	at := (q.head + q.n) % len(q.buf)
	q.buf[at] = frame
	q.n++
	q.bytes += len(frame)
	if forced {
		if q.forced == nil {
			q.forced = make([]bool, len(q.buf))
		}
		q.forced[at] = true
		q.forcedN++
		q.forcedBytes += len(frame)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
	return pushQueued
}

// grow doubles the ring (from 2, up to limit, or beyond it for a forced
// frame), keeping the frames in order. Called with mu held.
func (q *sendQueue) grow() {
	size := min(max(2*len(q.buf), 2), q.limit)
	if size <= q.n {
		size = 2 * q.n
	}
	buf := make([][]byte, size)
	var forced []bool
	if q.forced != nil {
		forced = make([]bool, size)
	}
	for i := range q.n {
		j := (q.head + i) % len(q.buf)
		buf[i] = q.buf[j]
		if forced != nil {
			forced[i] = q.forced[j]
		}
	}
	q.buf, q.forced, q.head = buf, forced, 0
}

// pop takes the oldest frame, or reports false when the queue is empty.
func (q *sendQueue) pop() ([]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return nil, false
	}
	frame := q.buf[q.head]
	q.buf[q.head] = nil // the ring must not keep a sent frame alive
	if q.forced != nil && q.forced[q.head] {
		q.forced[q.head] = false
		q.forcedN--
		q.forcedBytes -= len(frame)
		if q.forcedN == 0 {
			q.forced = nil
		}
	}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	q.bytes -= len(frame)
	if q.n == 0 && len(q.buf) > queueKeep {
		q.buf, q.head = nil, 0
	}
	return frame, true
}

// discard drops every queued frame and every later one. A conn that is ending
// writes nothing more from its queue, so what it holds is released at once
// rather than when the conn's goroutines return (a slow consumer's may wait a
// whole PING_TIMEOUT on its close).
func (q *sendQueue) discard() {
	q.mu.Lock()
	q.buf, q.head, q.n, q.bytes, q.discarded = nil, 0, 0, 0, true
	q.forced, q.forcedN, q.forcedBytes = nil, 0, 0
	q.mu.Unlock()
}

// len returns the number of frames queued.
func (q *sendQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// size returns the number of bytes queued.
func (q *sendQueue) size() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

package main

import "sync"

// sendQueue is a conn's outbound queue: frames wait here for the writer.
//
// It is a ring that grows on demand up to its limit and is released when it
// empties after a burst, because a buffered channel of SEND_QUEUE_SIZE would
// hold 256 slice headers (6 KiB) for every idle connection. Pushing never
// waits: the lock is held only to move a slice header, never across I/O.
type sendQueue struct {
	// set at construction
	limit int           // frames queued before the conn counts as a slow consumer
	ready chan struct{} // capacity 1: wakes the writer; never closed

	mu   sync.Mutex
	buf  [][]byte // ring storage, nil while idle
	head int      // index of the oldest frame
	n    int      // frames queued
}

// queueKeep is the ring size kept after the queue drains; a larger ring, left
// by a burst, is released to the garbage collector.
const queueKeep = 8

// newSendQueue returns an empty queue that holds at most limit frames.
func newSendQueue(limit int) *sendQueue {
	return &sendQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push appends frame without waiting and reports false, dropping it, when the
// queue already holds limit frames.
func (q *sendQueue) push(frame []byte) bool {
	q.mu.Lock()
	if q.n >= q.limit {
		q.mu.Unlock()
		return false
	}
	if q.n == len(q.buf) {
		q.grow()
	}
	q.buf[(q.head+q.n)%len(q.buf)] = frame
	q.n++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default: // the writer has a wake-up pending already
	}
	return true
}

// grow doubles the ring (from 2, up to limit), keeping the frames in order.
// Called with mu held.
func (q *sendQueue) grow() {
	size := min(max(2*len(q.buf), 2), q.limit)
	buf := make([][]byte, size)
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
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
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	if q.n == 0 && len(q.buf) > queueKeep {
		q.buf, q.head = nil, 0
	}
	return frame, true
}

// len returns the number of frames queued.
func (q *sendQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

package main

import (
	"fmt"
	"testing"
)

// next pops a frame for tests that know one is queued; nil when none is.
func (q *sendQueue) next() []byte {
	f, _ := q.pop()
	return f
}

// TestSendQueue checks the queue keeps order across growth and wrap-around,
// refuses frames past its limit, wakes the writer, and lets go of its ring
// once a burst has drained.
func TestSendQueue(t *testing.T) {
	t.Run("order across growth and wrap-around", func(t *testing.T) {
		q := newSendQueue(64, testQueueBytes)
		next, want := 0, 0
		for round := range 50 {
			for range round%7 + 1 {
				if !q.push([]byte(fmt.Sprint(next))) {
					t.Fatalf("push %d refused with %d queued", next, q.len())
				}
				next++
			}
			for range round%5 + 1 {
				f, ok := q.pop()
				if !ok {
					break
				}
				if string(f) != fmt.Sprint(want) {
					t.Fatalf("popped %s, want %d", f, want)
				}
				want++
			}
		}
	})
	t.Run("refuses past the limit and accepts again after a pop", func(t *testing.T) {
		q := newSendQueue(3, testQueueBytes)
		for i := range 3 {
			if !q.push([]byte{byte(i)}) {
				t.Fatalf("push %d refused", i)
			}
		}
		if q.push([]byte{9}) {
			t.Fatal("a fourth frame fit in a queue of 3")
		}
		if f, _ := q.pop(); f[0] != 0 {
			t.Fatalf("popped %v, want the oldest", f)
		}
		if !q.push([]byte{3}) {
			t.Fatal("push refused after a pop made room")
		}
		if q.len() != 3 {
			t.Fatalf("len %d, want 3", q.len())
		}
	})
	t.Run("a push wakes the writer once", func(t *testing.T) {
		q := newSendQueue(4, testQueueBytes)
		q.push([]byte{1})
		q.push([]byte{2})
		select {
		case <-q.ready:
		default:
			t.Fatal("no wake-up after a push")
		}
		select {
		case <-q.ready:
			t.Fatal("two wake-ups for frames that one drain takes")
		default:
		}
	})
	t.Run("the ring is released after a burst and kept when small", func(t *testing.T) {
		q := newSendQueue(256, testQueueBytes)
		for range 200 {
			q.push([]byte{1})
		}
		for q.len() > 0 {
			q.pop()
		}
		if q.buf != nil {
			t.Fatalf("ring of %d kept after the burst drained", len(q.buf))
		}
		q.push([]byte{1})
		q.pop()
		if q.buf == nil || len(q.buf) > queueKeep {
			t.Fatalf("small ring of %d not kept", len(q.buf))
		}
	})
	t.Run("popping an empty queue", func(t *testing.T) {
		if _, ok := newSendQueue(1, testQueueBytes).pop(); ok {
			t.Fatal("pop on an empty queue reported a frame")
		}
	})
}

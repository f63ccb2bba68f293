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

// TestSendQueueBytes checks the byte bound: a queue of large frames refuses
// the frame that would take it past limitBytes however few frames it holds,
// and offer stops at half the bound, in frames or in bytes, without ever
// reporting the queue full.
func TestSendQueueBytes(t *testing.T) {
	mib := make([]byte, 1<<20)
	t.Run("large frames overflow the bytes long before the frames", func(t *testing.T) {
		q := newSendQueue(256, 4<<20)
		for i := range 4 {
			if !q.push(mib) {
				t.Fatalf("frame %d of 1 MiB refused with %d bytes queued", i, q.size())
			}
		}
		if q.push([]byte("x")) {
			t.Fatalf("a byte past the 4 MiB bound was queued: %d frames, %d bytes", q.len(), q.size())
		}
		if q.size() != 4<<20 || q.len() != 4 {
			t.Fatalf("queue holds %d frames, %d bytes; want 4 and 4 MiB", q.len(), q.size())
		}
		q.pop()
		if !q.push(mib) {
			t.Fatalf("a popped frame's bytes were not given back: %d bytes queued", q.size())
		}
	})
	t.Run("a frame larger than the whole bound never fits", func(t *testing.T) {
		q := newSendQueue(256, 1<<20)
		if q.push(make([]byte, 1<<20+1)) {
			t.Fatal("a frame larger than limitBytes was queued")
		}
	})
	t.Run("offer stops at half the frames", func(t *testing.T) {
		q := newSendQueue(8, 1<<30)
		offered := 0
		for range 100 {
			if q.offer([]byte("e")) {
				offered++
			}
		}
		if offered != 4 || q.len() != 4 {
			t.Fatalf("offer queued %d of 100 into a queue of 8 (holds %d), want 4", offered, q.len())
		}
		for range 4 {
			if !q.push([]byte("f")) {
				t.Fatalf("push refused after offers filled half the queue: %d queued", q.len())
			}
		}
	})
	t.Run("offer stops at half the bytes", func(t *testing.T) {
		q := newSendQueue(256, 4<<20)
		offered := 0
		for range 10 {
			if q.offer(mib) {
				offered++
			}
		}
		if offered != 2 {
			t.Fatalf("offer queued %d MiB into a 4 MiB queue, want 2", offered)
		}
	})
}

// TestSendQueueDiscard checks that a discarded queue lets go of every frame at
// once and takes later ones without keeping them or reporting itself full.
func TestSendQueueDiscard(t *testing.T) {
	q := newSendQueue(4, 1<<30)
	for range 4 {
		q.push(make([]byte, 1<<20))
	}
	q.discard()
	if q.len() != 0 || q.size() != 0 || q.buf != nil {
		t.Fatalf("discarded queue still holds %d frames, %d bytes, ring %d", q.len(), q.size(), len(q.buf))
	}
	for i := range 10 {
		if !q.push([]byte("late")) {
			t.Fatalf("push %d into a discarded queue reported it full", i)
		}
	}
	if q.offer([]byte("late")) {
		t.Fatal("offer into a discarded queue reported the frame queued")
	}
	if f, ok := q.pop(); ok {
		t.Fatalf("a discarded queue gave the writer %q", f)
	}
}

// TestSendQueueForcedFramesDoNotCount: a resume's catch-up, forced in, leaves
// the whole bound to the live frames that follow it (frames and bytes, push
// and offer), in order with them, and counts again from the moment the forced
// frames are written.
func TestSendQueueForcedFramesDoNotCount(t *testing.T) {
	q := newSendQueue(4, 400)
	for i := range 10 {
		q.force(fmt.Appendf(nil, "f%02d", i)) // 10 frames, 40 bytes: past the frame bound
	}
	if !q.offer([]byte("o0")) || !q.offer([]byte("o1")) || q.offer([]byte("o2")) {
		t.Fatalf("offer counted forced frames: queue of %d", q.len())
	}
	if !q.push([]byte("p0")) || !q.push([]byte("p1")) || q.push([]byte("p2")) {
		t.Fatalf("push counted forced frames: queue of %d", q.len())
	}
	var got []string
	for range 12 {
		got = append(got, string(q.next()))
	}
	want := "[f00 f01 f02 f03 f04 f05 f06 f07 f08 f09 o0 o1]"
	if fmt.Sprint(got) != want {
		t.Fatalf("popped %v, want %s", got, want)
	}
	// p0 and p1 are still queued; they count, and so the bound is 2 more.
	if !q.push([]byte("p3")) || !q.push([]byte("p4")) || q.push([]byte("p5")) {
		t.Fatalf("after the forced frames went, the bound is wrong: queue of %d", q.len())
	}
	if q.forced != nil || q.forcedN != 0 || q.forcedBytes != 0 {
		t.Fatalf("forced marks kept after they drained: %v %d %d", q.forced, q.forcedN, q.forcedBytes)
	}
	// Bytes: forced bytes leave the byte bound whole too.
	q = newSendQueue(100, 10)
	q.force(make([]byte, 50))
	if !q.push(make([]byte, 10)) || q.push([]byte("x")) {
		t.Fatal("push counted forced bytes")
	}
	q.discard()
	if q.forced != nil || q.forcedN != 0 || q.forcedBytes != 0 {
		t.Fatal("discard kept forced marks")
	}
}

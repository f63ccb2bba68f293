package main

import (
	"maps"
	"testing"

	"github.com/google/uuid"
)

// seatsOf reads a snapshot into a map.
func seatsOf(s *seatSnapshot) map[uuid.UUID]int {
	m := map[uuid.UUID]int{}
	s.each(func(g uuid.UUID, n int) { m[g] = n })
	return m
}

// TestSeatCountsCopyOnWrite checks that a snapshot keeps the counts of its
// instant while the hub goes on changing them, and that the hub's own counts
// are never disturbed by a snapshot taken meanwhile.
func TestSeatCountsCopyOnWrite(t *testing.T) {
	c := newSeatCounts()
	want := map[uuid.UUID]int{}
	games := make([]uuid.UUID, 3000)
	for i := range games {
		games[i] = uuid.New()
		for range i%3 + 1 {
			c.add(games[i], 1)
		}
		want[games[i]] = i%3 + 1
	}
	first := c.snapshot()
	for i, g := range games {
		if i%2 == 0 {
			c.add(g, -int32(want[g])) // emptied: forgotten
		} else {
			c.add(g, 1)
		}
	}
	second := c.snapshot()
	c.add(uuid.New(), 1)
	if got := seatsOf(first); !maps.Equal(got, want) {
		t.Fatalf("the first snapshot changed with the hub: %d games, want %d", len(got), len(want))
	}
	if first.count() != len(want) {
		t.Fatalf("first.count() = %d, want %d", first.count(), len(want))
	}
	got := seatsOf(second)
	for i, g := range games {
		n, ok := got[g]
		switch {
		case i%2 == 0 && ok:
			t.Fatalf("game %d emptied, yet listed with %d seats", i, n)
		case i%2 == 1 && n != want[g]+1:
			t.Fatalf("game %d has %d seats in the second snapshot, want %d", i, n, want[g]+1)
		}
	}
	if second.count() != len(games)/2 {
		t.Fatalf("second snapshot lists %d games, want %d", second.count(), len(games)/2)
	}
}

// TestSeatSnapshotCostsNoCopy checks that a snapshot of 100,000 games costs
// the hub one small allocation, however many games there are.
func TestSeatSnapshotCostsNoCopy(t *testing.T) {
	c := newSeatCounts()
	for range 100_000 {
		c.add(uuid.New(), 1)
	}
	if allocs := testing.AllocsPerRun(100, func() { c.snapshot() }); allocs > 1 {
		t.Fatalf("a snapshot of 100,000 games allocates %.0f times, want 1", allocs)
	}
}

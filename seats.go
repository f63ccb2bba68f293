package main

import (
	"hash/maphash"
	"maps"

	"github.com/google/uuid"
)

// /health/connections lists every game's seat count, needs no token, and must
// be exact (the counts of one instant). Copying 150,000 games on the hub for
// each call held it for 200 ms, so the counts live in copy-on-write shards: a
// snapshot costs the hub a copy of seatShards map references, and the first
// change to a shard after a snapshot copies that shard alone. The health
// handler then reads the snapshot off the hub, at leisure.
const seatShards = 1024

// seatCounts mirrors how many seats each game has. It is hub-owned data: only
// the hub goroutine calls its methods; a seatSnapshot it hands out is never
// written again, by anyone.
type seatCounts struct {
	// set at construction: game ids are the clients' choice, so the shard is
	// picked by a seeded hash, or one client could fill one shard.
	seed maphash.Seed

	shards [seatShards]seatShard
}

// seatShard is one shard's games and whether a snapshot shares its map.
type seatShard struct {
	games  map[uuid.UUID]int32
	shared bool // a snapshot holds games: copy it before the next write
}

// seatSnapshot is every game's seat count at one instant, read-only.
type seatSnapshot [seatShards]map[uuid.UUID]int32

// newSeatCounts returns empty counts.
func newSeatCounts() *seatCounts {
	return &seatCounts{seed: maphash.MakeSeed()}
}

// add changes game's seat count by delta, forgetting a game at zero.
func (c *seatCounts) add(game uuid.UUID, delta int32) {
	sh := &c.shards[maphash.Comparable(c.seed, game)%seatShards]
	if sh.shared {
		sh.games, sh.shared = maps.Clone(sh.games), false
	}
	if sh.games == nil {
		sh.games = make(map[uuid.UUID]int32)
	}
	n := sh.games[game] + delta
	if n <= 0 {
		delete(sh.games, game)
		return
	}
	sh.games[game] = n
}

// snapshot returns the counts as they are now, sharing every shard's map.
func (c *seatCounts) snapshot() *seatSnapshot {
	var snap seatSnapshot
	for i := range c.shards {
		snap[i] = c.shards[i].games
		c.shards[i].shared = snap[i] != nil
	}
	return &snap
}

// each calls fn for every game in the snapshot, in no particular order.
func (s *seatSnapshot) each(fn func(game uuid.UUID, seats int)) {
	for _, games := range s {
		for g, n := range games {
			fn(g, int(n))
		}
	}
}

// count returns the number of games in the snapshot.
func (s *seatSnapshot) count() int {
	n := 0
	for _, games := range s {
		n += len(games)
	}
	return n
}

package main

import (
	"bytes"
	"slices"
	"time"

	"github.com/google/uuid"
)

// The dashboard's largest games (contract v2 §11), for the operator only.
// Ranking every game on the hub cost it 51 µs at 2,500 games but 6.6 ms at
// 100,000 (a cache miss per game's member set; BenchmarkTopGames), longer
// than a step may take. So the ranking is done off the hub, on the seat
// counts the hub maintains anyway and hands out copy-on-write for health
// (seats.go), and the hub is asked only for the details of the few games
// ranked first: its time no longer grows with the number of games.

// gameDetailsRequest asks the hub for the details of games, as of now.
type gameDetailsRequest struct {
	games []uuid.UUID
	now   time.Time
	reply chan []topGame
}

// topGame is one of the largest games as the dashboard shows it.
type topGame struct {
	GameID       string  `json:"game_id"`
	Seats        int     `json:"seats"`
	AwaySeats    int     `json:"away_seats"`
	State        *string `json:"state"`          // null when the backend set none
	OldestIdleMS int64   `json:"oldest_idle_ms"` // of the seat idle longest
}

// gameDetails answers m with the games that still have a seat, largest
// first (then by id, so that equal games keep their order from poll to
// poll). Runs on the hub goroutine.
func (h *hub) gameDetails(m gameDetailsRequest) {
	out := make([]topGame, 0, len(m.games))
	for _, g := range m.games {
		set := h.idx.byGame[g]
		if len(set) == 0 {
			continue // emptied since the snapshot it was ranked on
		}
		t := topGame{GameID: g.String(), Seats: len(set), State: viewOf(h.idx.settings.byGame[g]).State}
		for s := range set {
			if s.conn == nil {
				t.AwaySeats++
			}
			t.OldestIdleMS = max(t.OldestIdleMS, m.now.Sub(s.lastActivity).Milliseconds())
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b topGame) int {
		if a.Seats != b.Seats {
			return b.Seats - a.Seats
		}
		return bytes.Compare([]byte(a.GameID), []byte(b.GameID)) // canonical form sorts as the bytes do
	})
	m.reply <- out
}

// largestGames returns the n games of snap with the most seats, largest
// first, equal ones by id. It reads a snapshot no one writes, off the hub.
func largestGames(snap *seatSnapshot, n int) []uuid.UUID {
	type sized struct {
		game  uuid.UUID
		seats int
	}
	// before reports whether a ranks before b.
	before := func(a, b sized) bool {
		return a.seats > b.seats || a.seats == b.seats && bytes.Compare(a.game[:], b.game[:]) < 0
	}
	if n <= 0 {
		return nil
	}
	kept := make([]sized, 0, n+1) // best first
	snap.each(func(g uuid.UUID, seats int) {
		c := sized{g, seats}
		if len(kept) == n && !before(c, kept[n-1]) {
			return
		}
		i, _ := slices.BinarySearchFunc(kept, c, func(k, c sized) int {
			if before(k, c) {
				return -1
			}
			return 1
		})
		kept = slices.Insert(kept, i, c)
		if len(kept) > n {
			kept = kept[:n]
		}
	})
	out := make([]uuid.UUID, len(kept))
	for i, k := range kept {
		out[i] = k.game
	}
	return out
}

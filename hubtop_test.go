package main

import (
	"fmt"
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
)

func TestHubTopGames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := hubGamesConfig()
		cfg.resumeWindow = time.Minute
		h := startTestHub(t, cfg)
		big, mid, small := uuid.MustParse("00000000-0000-4000-8000-000000000003"),
			uuid.MustParse("00000000-0000-4000-8000-000000000002"), uuid.MustParse("00000000-0000-4000-8000-000000000001")
		hubPut(t, h, mid, "in_progress")
		var cs []*conn
		for i := range 6 {
			c := fakeHubConn(fmt.Sprintf("sid-%d", i), hubUser(int64(i)), 64)
			cs = append(cs, c)
			hubRegister(t, h, c)
		}
		t0 := time.Now()
		hubTell(t, h, joinCmd(cs[0], big, ""), joinCmd(cs[1], big, ""), joinCmd(cs[2], big, ""),
			joinCmd(cs[3], mid, ""), joinCmd(cs[4], mid, ""), joinCmd(cs[5], small, ""))
		time.Sleep(30 * time.Second) // the bubble's clock: cs[0] idles from t0 on
		hubTell(t, h, heartbeatCmd(cs[1], ""), heartbeatCmd(cs[2], ""), heartbeatCmd(cs[3], ""),
			unregisterMsg{c: cs[4], sid: cs[4].sid, reason: reasonDisconnected})
		time.Sleep(10 * time.Second)
		now := time.Now()
		top := func(n int) []topGame {
			reply := make(chan []topGame, 1)
			hubTell(t, h, gameDetailsRequest{games: largestGames(hubStatsOf(t, h).seats, n), now: now, reply: reply})
			return <-reply
		}
		state := "in_progress"
		want := []topGame{
			{GameID: big.String(), Seats: 3, OldestIdleMS: now.Sub(t0).Milliseconds()},
			{GameID: mid.String(), Seats: 2, AwaySeats: 1, State: &state, OldestIdleMS: now.Sub(t0).Milliseconds()},
		}
		if got := top(2); !reflect.DeepEqual(got, want) {
			t.Errorf("top 2:\n got %+v\nwant %+v", got, want)
		}
		if got := top(10); len(got) != 3 || got[2].GameID != small.String() || got[2].Seats != 1 {
			t.Errorf("top 10: %+v, want the three games, the smallest last", got)
		}
		if got := top(0); len(got) != 0 {
			t.Errorf("top 0: %+v", got)
		}
		// A game ranked on an older snapshot and emptied since is left out.
		snap := hubStatsOf(t, h).seats
		hubTell(t, h, leaveCmd(cs[5], small, ""))
		reply := make(chan []topGame, 1)
		hubTell(t, h, gameDetailsRequest{games: largestGames(snap, 3), now: now, reply: reply})
		if got := <-reply; len(got) != 2 {
			t.Errorf("after the small game emptied: %+v, want the two others", got)
		}
	})
}

func TestLargestGamesTiesByID(t *testing.T) {
	c := newSeatCounts()
	var ids []uuid.UUID
	for i := range 20 {
		g := uuid.UUID{15: byte(20 - i)}
		ids = append(ids, g)
		c.add(g, 1)
	}
	c.add(ids[19], 5) // the lowest id, now the largest game
	got := largestGames(c.snapshot(), 3)
	want := []uuid.UUID{ids[19], ids[18], ids[17]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("largest 3: %v, want %v", got, want)
	}
}

// BenchmarkTopGames measures the dashboard's largest games with 10,000
// sessions in 2,500 games, and at 100,000 games to see the slope. "hub" is
// the hub's part (a seat snapshot and the details of ten games), the time
// one operator poll adds to a hub step; "rank" is the ranking, off the hub;
// "hubscan" only visits every game's member set on the hub: the floor of any
// ranking done there (a first version, ranking there, took 51 µs and 6.6 ms).
func BenchmarkTopGames(b *testing.B) {
	for _, tc := range []struct{ sessions, perGame int }{{10_000, 4}, {100_000, 1}} {
		name := fmt.Sprintf("sessions=%d/games=%d", tc.sessions, tc.sessions/tc.perGame)
		bh := newBenchHub(b, tc.sessions, hubDefaults, time.Now())
		fillGames(bh, tc.perGame)
		reply := make(chan []topGame, 1)
		games := largestGames(bh.h.idx.seats.snapshot(), topGamesShown)
		b.Run(name+"/hub", func(b *testing.B) {
			for b.Loop() {
				bh.h.snapshot(0)
				bh.h.gameDetails(gameDetailsRequest{games: games, now: time.Now(), reply: reply})
				<-reply
			}
		})
		b.Run(name+"/rank", func(b *testing.B) {
			snap := bh.h.idx.seats.snapshot()
			for b.Loop() {
				largestGames(snap, topGamesShown)
			}
		})
		b.Run(name+"/hubscan", func(b *testing.B) {
			for b.Loop() {
				n := 0
				for _, set := range bh.h.idx.byGame {
					n += len(set)
				}
			}
		})
	}
}

// fillGames seats bh's sessions perGame to a game, in order; every 97th
// also takes a seat in one of seven shared games, so the ranking has
// larger games to find.
func fillGames(bh *benchHub, perGame int) {
	var game uuid.UUID
	for i, c := range bh.conns {
		if i%perGame == 0 {
			game = uuid.New()
		}
		bh.h.handle(prepare(c, &command{kind: cmdJoin, game: game}, nil))
		if i%97 == 0 {
			bh.h.handle(prepare(c, &command{kind: cmdJoin, game: uuid.UUID{byte(i % 7)}}, nil))
		}
	}
	bh.drain(bh.conns)
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// BenchmarkDashboardData measures /dashboard/data, as the operator polls it,
// on a real server (its hub goroutine, its registry with the Go and process
// collectors) holding 10,000 sessions in 2,500 games. The contract's budget
// is 100 ms; it reports the median and the slowest of the calls. Run:
//
//	go test -run '^$' -bench DashboardData -benchtime 200x
func BenchmarkDashboardData(b *testing.B) {
	cfg, err := loadConfig([]string{"OPERATOR_TOKEN=" + testOperatorToken})
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(cfg, zerolog.New(io.Discard))
	defer func() { _ = s.shutdown(5*time.Second, func(context.Context) error { return nil }) }()
	const sessions, perGame = 10_000, 4
	var game uuid.UUID
	for i := range sessions {
		c := &conn{sid: fmt.Sprintf("s%07d", i), out: newSendQueue(64, testQueueBytes), quit: make(chan struct{}), connectedAt: time.Now()}
		if !s.hub.register(c) {
			b.Fatal("register refused")
		}
		if i%perGame == 0 {
			game = uuid.New()
		}
		s.hub.send(prepare(c, &command{kind: cmdJoin, game: game}, nil))
	}
	if st, _ := s.hub.stats(noSeats); st.TotalSessions != sessions || st.ActiveGames != sessions/perGame {
		b.Fatalf("set up %d sessions in %d games", st.TotalSessions, st.ActiveGames)
	}
	req := httptest.NewRequest(http.MethodGet, "/dashboard/data", nil)
	req.Header.Set("Authorization", "Bearer "+testOperatorToken)
	var took []time.Duration
	for b.Loop() {
		w := httptest.NewRecorder()
		start := time.Now()
		s.serveDashboardData(w, req)
		took = append(took, time.Since(start))
		if w.Code != http.StatusOK {
			b.Fatalf("HTTP %d", w.Code)
		}
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}

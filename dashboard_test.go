package main

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// specMetrics registers on a fresh registry the spec's families the
// dashboard reads, as the metrics work will (metrics-spec.md), so the
// dashboard's reading is tested against the real client library.
type specMetrics struct {
	reg                 *prometheus.Registry
	framesIn, framesOut *prometheus.CounterVec
	closes, resumes     *prometheus.CounterVec
	pingRTT, hubStep    prometheus.Histogram
}

func newSpecMetrics() *specMetrics {
	m := &specMetrics{
		reg:       prometheus.NewRegistry(),
		framesIn:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: famFramesIn, Help: "frames in"}, []string{"type"}),
		framesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: famFramesOut, Help: "frames out"}, []string{"type"}),
		closes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: famCloses, Help: "closes"}, []string{"code", "reason"}),
		resumes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: famResumes, Help: "resumes"}, []string{"result"}),
		pingRTT: prometheus.NewHistogram(prometheus.HistogramOpts{Name: famPingRTT, Help: "rtt",
			Buckets: []float64{0.001, 0.002, 0.005, 0.01, 0.1}}),
		hubStep: prometheus.NewHistogram(prometheus.HistogramOpts{Name: famHubStep, Help: "step",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 8)}),
	}
	m.reg.MustRegister(m.framesIn, m.framesOut, m.closes, m.resumes, m.pingRTT, m.hubStep)
	return m
}

// dashData fetches /dashboard/data with auth and decodes it.
func dashData(t *testing.T, s *testServer, auth string) (dashboardData, []byte) {
	t.Helper()
	status, hdr, body := getWith(t, s, "/dashboard/data", auth)
	if status != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
		t.Fatalf("/dashboard/data: HTTP %d %s: %s", status, hdr.Get("Content-Type"), body)
	}
	var d dashboardData
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("/dashboard/data body %s: %v", body, err)
	}
	return d, body
}

func TestDashboardData(t *testing.T) {
	cfg := testConfig(t)
	cfg.OperatorToken = testOperatorToken
	s, games := seatedServer(t, cfg)
	m := newSpecMetrics()
	s.gatherer = m.reg
	m.framesIn.WithLabelValues("join_game").Add(4)
	m.framesIn.WithLabelValues("heartbeat").Add(6)
	m.closes.WithLabelValues("4000", "expired").Inc()
	m.resumes.WithLabelValues("resumed").Add(2)
	for _, v := range []float64{0.0015, 0.0015, 0.003, 0.2} {
		m.pingRTT.Observe(v)
	}

	t.Run("a wrong token is 401", func(t *testing.T) {
		for _, auth := range []string{"Bearer " + testOperatorToken + "x", "Bearer ", "Basic abc"} {
			status, hdr, body := getWith(t, s, "/dashboard/data", auth)
			if status != http.StatusUnauthorized || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%q: HTTP %d, WWW-Authenticate %q: %s", auth, status, hdr.Get("WWW-Authenticate"), body)
			}
			if anyUUID.Find(body) != nil {
				t.Errorf("%q: a game id in a 401: %s", auth, body)
			}
		}
	})
	d, body := dashData(t, s, "")
	t.Run("gauges equal health's", func(t *testing.T) {
		h := s.health(t)
		if d.Connections != h.ConnectedSessions || d.SessionsConnected != h.ConnectedSessions || d.SessionsAway != h.AwaySessions ||
			d.Users != h.UniqueUsers || d.Games != h.ActiveGames || d.Draining || d.Games != 3 || d.SessionsConnected != 4 {
			t.Fatalf("dashboard %s\nhealth %+v", body, h)
		}
	})
	t.Run("no top games without the token", func(t *testing.T) {
		if d.TopGames != nil || strings.Contains(string(body), "top_games") || anyUUID.Find(body) != nil {
			t.Fatalf("details without the token: %s", body)
		}
	})
	t.Run("counters and quantiles from the registry", func(t *testing.T) {
		if d.FramesIn.Total != 10 || d.FramesOut.Total != 0 || d.Closes["4000 expired"].Total != 1 || d.Resumes["resumed"].Total != 2 {
			t.Fatalf("counters: %s", body)
		}
		// The first reading has nothing to compare with: no rates, quantiles of the whole history.
		if d.WindowSeconds != nil || d.FramesIn.PerSecond != nil || d.PingRTT.Count != 4 || d.HubStep.Count != 0 || d.HubStep.P50 != nil {
			t.Fatalf("first reading: %s", body)
		}
		// histogram_quantile: rank 2 of 4 is the end of (0.001, 0.002], 2 of 2 in it.
		if p := d.PingRTT.P50; p == nil || math.Abs(*p-0.002) > 1e-12 {
			t.Fatalf("p50 %v, want 0.002: %s", p, body)
		}
		if p := d.PingRTT.P99; p == nil || *p != 0.1 {
			t.Fatalf("p99 %v, want 0.1 (a rank in +Inf is the highest finite bound): %s", p, body)
		}
	})
	t.Run("the operator sees the largest games", func(t *testing.T) {
		d, body := dashData(t, s, "Bearer "+testOperatorToken)
		if d.TopGames == nil || len(*d.TopGames) != 3 {
			t.Fatalf("top games: %s", body)
		}
		first := (*d.TopGames)[0]
		if first.GameID != games[0] || first.Seats != 2 || first.AwaySeats != 0 || first.State != nil || first.OldestIdleMS < 0 {
			t.Fatalf("largest game %+v, want %s with 2 seats", first, games[0])
		}
	})
}

func TestDashboardWithoutOperatorToken(t *testing.T) {
	s := startServer(t, testConfig(t))
	if status, _, body := getWith(t, s, "/dashboard/data", "Bearer anything"); status != http.StatusUnauthorized {
		t.Fatalf("no OPERATOR_TOKEN set, a token sent: HTTP %d %s, want 401", status, body)
	}
	if d, body := dashData(t, s, ""); d.TopGames != nil {
		t.Fatalf("no OPERATOR_TOKEN set, none sent: %s", body)
	}
}

func TestDashboardReadsTheRealRegistry(t *testing.T) {
	s, _ := seatedServer(t, testConfig(t))
	fams, err := s.met.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	for _, name := range []string{famFramesIn, famFramesOut, famCloses, famResumes, famPingRTT, famHubStep} {
		if !have[name] {
			t.Errorf("the registry has no %s", name)
		}
	}
	d, body := dashData(t, s, "")
	// Four joins in, four game_joined (and their presences) out, one hub turn at least.
	if d.FramesIn.Total < 4 || d.FramesOut.Total < 4 || d.HubStep.Count < 1 || d.SessionsConnected != 4 {
		t.Fatalf("dashboard over the real registry: %s", body)
	}
}

func TestDashboardPageUnderItsPolicy(t *testing.T) {
	s := startServer(t, testConfig(t))
	for path, kind := range map[string]string{"/dashboard": "text/html", "/dashboard/app.js": "text/javascript", "/dashboard/app.css": "text/css"} {
		status, hdr, body := getWith(t, s, path, "")
		if status != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), kind) || len(body) == 0 {
			t.Fatalf("%s: HTTP %d %q, %d bytes", path, status, hdr.Get("Content-Type"), len(body))
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'self'") ||
			strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		// The SVG namespace is a name, never fetched; any other URL would be.
		text := strings.ReplaceAll(string(body), "http://www.w3.org/2000/svg", "")
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") || strings.Contains(text, "//cdn") {
			t.Errorf("%s names another origin", path)
		}
	}
	_, _, page := getWith(t, s, "/dashboard", "")
	html := string(page)
	// The policy would block inline code; the page must not need any.
	for _, inline := range []string{"<style", " style=", "onclick=", "onload=", "javascript:"} {
		if strings.Contains(html, inline) {
			t.Errorf("the page has inline %q, which its policy blocks", inline)
		}
	}
	if strings.Count(html, "<script") != strings.Count(html, `<script src="/dashboard/app.js"`) {
		t.Errorf("the page has a script other than /dashboard/app.js")
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	b := buckets{le: []float64{0.1, 0.2, 0.4, inf}, counts: []float64{10, 30, 40, 40}}
	for _, tc := range []struct{ q, want float64 }{
		{0, 0}, {0.125, 0.05}, {0.25, 0.1}, {0.5, 0.15}, {0.875, 0.3}, {1, 0.4},
	} {
		if got := b.quantile(tc.q); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("q%.3f = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (buckets{le: []float64{1, inf}, counts: []float64{0, 0}}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("no observations: %v, want NaN", got)
	}
	tail := buckets{le: []float64{1, 2, inf}, counts: []float64{1, 1, 10}}
	if got := tail.quantile(0.9); got != 2 {
		t.Errorf("rank in +Inf: %v, want the highest finite bound 2", got)
	}
	if d := tail.minus(buckets{le: tail.le, counts: []float64{1, 1, 4}}); !equalFloats(d.counts, []float64{0, 0, 6}) {
		t.Errorf("minus: %v", d.counts)
	}
	if d := tail.minus(buckets{le: tail.le, counts: []float64{5, 5, 50}}); !equalFloats(d.counts, tail.counts) {
		t.Errorf("a histogram that shrank (a restart) is taken whole: %v", d.counts)
	}
}

// equalFloats compares two slices exactly.
func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDashboardRatesOverTheWindow(t *testing.T) {
	var ring readRing
	t0 := time.Now()
	inf := math.Inf(1)
	at := func(d time.Duration, frames float64, rtt []float64) reading {
		return reading{at: t0.Add(d), counters: map[string]float64{famFramesIn: frames, famCloses + "\x001001 going_away": frames / 10},
			hists: map[string]buckets{famPingRTT: {le: []float64{0.01, 0.1, inf}, counts: rtt}}}
	}
	var d dashboardData
	ring.fill(&d, at(0, 100, []float64{5, 5, 5}))
	if d.WindowSeconds != nil || d.FramesIn.PerSecond != nil {
		t.Fatalf("first reading has rates: %+v", d)
	}
	ring.fill(&d, at(500*time.Millisecond, 110, []float64{5, 5, 5})) // too soon to keep; compared with t0
	ring.fill(&d, at(4*time.Second, 140, []float64{5, 9, 9}))
	if *d.WindowSeconds != 4 || *d.FramesIn.PerSecond != 10 || *d.Closes["1001 going_away"].PerSecond != 1 {
		t.Fatalf("rates over 4 s: window %v, frames %v, closes %+v", *d.WindowSeconds, *d.FramesIn.PerSecond, d.Closes)
	}
	if d.PingRTT.Count != 4 || math.Abs(*d.PingRTT.P50-0.055) > 1e-12 { // the 4 new ones all in (0.01, 0.1]
		t.Fatalf("quantiles over the window: %+v p50 %v", d.PingRTT, *d.PingRTT.P50)
	}
	// Past rateWindow, the baseline moves up to the newest reading at least that old.
	ring.fill(&d, at(14*time.Second, 240, []float64{5, 9, 9}))
	if *d.WindowSeconds != 10 || *d.FramesIn.PerSecond != 10 || d.PingRTT.Count != 0 || d.PingRTT.P50 != nil {
		t.Fatalf("after the window moved: window %v, rate %v, rtt %+v", *d.WindowSeconds, *d.FramesIn.PerSecond, d.PingRTT)
	}
	if n := len(ring.ring); n > 3 {
		t.Fatalf("the ring keeps %d readings", n)
	}
}

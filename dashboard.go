package main

import (
	"embed"
	"math"
	"net/http"
	"strings"
	"time"
)

// The operator's dashboard (contract v2 §11): one page, its script and its
// style, embedded, same-origin only, polling /dashboard/data.
//
//go:embed dashboard/index.html dashboard/app.js dashboard/app.css
var dashboardFiles embed.FS

var (
	dashboardPage   = newAsset(dashboardFiles, "dashboard/index.html", "text/html; charset=utf-8")
	dashboardScript = newAsset(dashboardFiles, "dashboard/app.js", "text/javascript; charset=utf-8")
	dashboardStyle  = newAsset(dashboardFiles, "dashboard/app.css", "text/css; charset=utf-8")
)

// dashboardPolicy allows the page nothing from another origin, and no inline
// script or style: its script and style are files of its own. No page may
// frame it, as it asks for a token.
const dashboardPolicy = "default-src 'self'; frame-ancestors 'none'"

// topGamesShown is how many of the largest games the operator sees.
const topGamesShown = 10

// dashboardRoutes adds the dashboard's paths to mux.
func (s *server) dashboardRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /dashboard", dashboardPage.serveDashboard)
	mux.HandleFunc("GET /dashboard/app.js", dashboardScript.serveDashboard)
	mux.HandleFunc("GET /dashboard/app.css", dashboardStyle.serveDashboard)
	mux.HandleFunc("GET /dashboard/data", s.serveDashboardData)
}

// serveDashboard serves one of the dashboard's files under its policy.
func (a asset) serveDashboard(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", dashboardPolicy)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	a.servePage(w, r, dashboardPolicy)
}

// dashboardData is the body of /dashboard/data (documented in PROTOCOL.md).
type dashboardData struct {
	TimeMS   int64 `json:"time_ms"`
	Draining bool  `json:"draining"`
	// from one hub snapshot
	Connections       int `json:"connections"`
	SessionsConnected int `json:"sessions_connected"`
	SessionsAway      int `json:"sessions_away"`
	Users             int `json:"users"`
	Games             int `json:"games"`
	// from the registry; null rates and the whole history in the quantiles
	// until there is an earlier reading to compare with
	WindowSeconds *float64               `json:"window_seconds"`
	FramesIn      dashCounter            `json:"frames_in"`
	FramesOut     dashCounter            `json:"frames_out"`
	Closes        map[string]dashCounter `json:"closes"`  // by "<code> <reason>", those with a total above 0
	Resumes       map[string]dashCounter `json:"resumes"` // by result, those with a total above 0
	PingRTT       quantiles              `json:"ping_rtt_seconds"`
	HubStep       quantiles              `json:"hub_step_seconds"`
	TopGames      *[]topGame             `json:"top_games,omitempty"` // with the operator token only
}

// dashCounter is a counter's total and its rate over the window.
type dashCounter struct {
	Total     float64  `json:"total"`
	PerSecond *float64 `json:"per_second"`
}

// quantiles are a histogram's p50, p90 and p99 (null without observations)
// and how many observations they are of.
type quantiles struct {
	P50   *float64 `json:"p50"`
	P90   *float64 `json:"p90"`
	P99   *float64 `json:"p99"`
	Count float64  `json:"count"`
}

// serveDashboardData answers the page's poll. A wrong token is 401, so the
// page can tell the operator at once; no token is the public view.
func (s *server) serveDashboardData(w http.ResponseWriter, r *http.Request) {
	access := s.operatorAccess(r)
	if access == accessWrong {
		w.Header().Set("WWW-Authenticate", `Bearer realm="dugout operator"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized",
			"message": "a valid Authorization: Bearer <OPERATOR_TOKEN> is required for the details"})
		return
	}
	now := time.Now()
	// The operator's view ranks the games on the seat counts of the very
	// snapshot the gauges come from; the public one needs no seat counts.
	have := noSeats
	if access == accessOperator {
		have = 0
	}
	st, ok := s.hub.stats(have)
	var top *[]topGame
	if ok && access == accessOperator {
		reply := make(chan []topGame, 1)
		var games []topGame
		games, ok = ask(s.hub, gameDetailsRequest{games: largestGames(st.seats, topGamesShown), now: now, reply: reply}, reply)
		top = &games
	}
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	// A Gather with an error still returns every family it could gather:
	// the dashboard shows those rather than nothing.
	fams, _ := s.gatherer.Gather()
	d := dashboardData{TimeMS: now.UnixMilli(), Draining: s.draining.Load(),
		Connections: st.Connected, SessionsConnected: st.Connected, SessionsAway: st.Away,
		Users: st.UniqueUsers, Games: st.ActiveGames, TopGames: top}
	s.dashRing.fill(&d, readFamilies(fams, now))
	writeJSON(w, http.StatusOK, d)
}

// fill records cur and sets d's counters, rates and quantiles from it.
func (r *readRing) fill(d *dashboardData, cur reading) {
	base, ok := r.add(cur)
	var span float64
	if ok {
		span = cur.at.Sub(base.at).Seconds()
		d.WindowSeconds = &span
	}
	value := func(key string) dashCounter {
		v := dashCounter{Total: cur.counters[key]}
		if ok && span > 0 {
			rate := max(0, v.Total-base.counters[key]) / span // a restart's drop is no negative rate
			v.PerSecond = &rate
		}
		return v
	}
	d.FramesIn, d.FramesOut = value(famFramesIn), value(famFramesOut)
	d.Closes, d.Resumes = map[string]dashCounter{}, map[string]dashCounter{}
	for key, total := range cur.counters {
		if total == 0 {
			continue // every label value is registered up front: a reason never seen is left out
		}
		family, label, _ := strings.Cut(key, "\x00")
		switch family {
		case famCloses:
			d.Closes[label] = value(key)
		case famResumes:
			d.Resumes[label] = value(key)
		}
	}
	hist := func(name string) quantiles {
		b := cur.hists[name]
		if ok {
			b = b.minus(base.hists[name])
		}
		if len(b.counts) == 0 {
			return quantiles{}
		}
		return quantiles{P50: finite(b.quantile(0.5)), P90: finite(b.quantile(0.9)), P99: finite(b.quantile(0.99)),
			Count: b.counts[len(b.counts)-1]}
	}
	d.PingRTT, d.HubStep = hist(famPingRTT), hist(famHubStep)
}

// finite returns v, or nil (JSON null) when it is NaN or infinite.
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

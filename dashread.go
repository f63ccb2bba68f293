package main

import (
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The dashboard's counters and histograms are read from the Prometheus
// registry, the one source /metrics serves, picking the families by name.
// Rates and quantiles are computed here, over the last rateWindow, from a
// small ring of earlier readings: the page stays a plain view (a curl of
// /dashboard/data gives the same figures), and a quantile of "the last ten
// seconds" needs the buckets of ten seconds ago, which only the server
// sees in every reading.

// Family names of the metrics spec (/work/notes/metrics-spec.md) the dashboard reads.
const (
	famFramesIn  = "dugout_frames_received_total"
	famFramesOut = "dugout_frames_sent_total"
	famCloses    = "dugout_closes_total"
	famResumes   = "dugout_resumes_total"
	famPingRTT   = "dugout_ping_rtt_seconds"
	famHubStep   = "dugout_hub_step_seconds"
)

// rateWindow is the span rates and quantiles are taken over; the page polls
// every 2 s, so it spans about five polls. ringEvery spaces the readings
// kept, so that many open dashboards keep the ring no longer.
const (
	rateWindow = 10 * time.Second
	ringEvery  = time.Second
)

// reading is what one Gather yielded of the families above.
type reading struct {
	at       time.Time
	counters map[string]float64 // by series key (seriesKey)
	hists    map[string]buckets // by family
}

// buckets is a histogram summed over its label sets: upper bounds ascending,
// cumulative counts, +Inf last.
type buckets struct {
	le     []float64
	counts []float64
}

// readRing keeps recent readings, oldest first; safe for concurrent use.
type readRing struct {
	mu   sync.Mutex
	ring []reading
}

// add records now's reading and returns the baseline to compare it with:
// the newest reading at least rateWindow old, else the oldest there is
// (ok false when there is none yet). Readings older than the baseline go.
func (r *readRing) add(cur reading) (base reading, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := -1
	for i, old := range r.ring {
		if cur.at.Sub(old.at) >= rateWindow {
			b = i
		}
	}
	if b > 0 {
		r.ring = slices.Delete(r.ring, 0, b)
	}
	if len(r.ring) > 0 {
		base, ok = r.ring[0], true
	}
	if len(r.ring) == 0 || cur.at.Sub(r.ring[len(r.ring)-1].at) >= ringEvery {
		r.ring = append(r.ring, cur)
	}
	return base, ok
}

// readFamilies picks the dashboard's families out of a Gather's result.
func readFamilies(fams []*dto.MetricFamily, at time.Time) reading {
	r := reading{at: at, counters: map[string]float64{}, hists: map[string]buckets{}}
	for _, f := range fams {
		switch name := f.GetName(); name {
		case famFramesIn, famFramesOut, famCloses, famResumes:
			for _, m := range f.GetMetric() {
				r.counters[seriesKey(name, m)] += m.GetCounter().GetValue()
			}
		case famPingRTT, famHubStep:
			r.hists[name] = sumBuckets(f.GetMetric())
		}
	}
	return r
}

// seriesKey names one series of the dashboard: the family, and for closes
// and resumes the labels the page breaks them down by.
func seriesKey(family string, m *dto.Metric) string {
	label := func(name string) string {
		for _, l := range m.GetLabel() {
			if l.GetName() == name {
				return l.GetValue()
			}
		}
		return ""
	}
	switch family {
	case famCloses:
		return family + "\x00" + label("code") + " " + label("reason")
	case famResumes:
		return family + "\x00" + label("result")
	}
	return family
}

// sumBuckets adds up the histograms of every label set (Prometheus's
// sum by (le)); every label set of one family has the same bounds.
func sumBuckets(ms []*dto.Metric) buckets {
	var b buckets
	for _, m := range ms {
		h := m.GetHistogram()
		if b.le == nil {
			for _, bk := range h.GetBucket() {
				if !math.IsInf(bk.GetUpperBound(), 1) {
					b.le = append(b.le, bk.GetUpperBound())
				}
			}
			b.le = append(b.le, math.Inf(1))
			b.counts = make([]float64, len(b.le))
		}
		i := 0
		for _, bk := range h.GetBucket() {
			if i < len(b.le)-1 && bk.GetUpperBound() == b.le[i] {
				b.counts[i] += float64(bk.GetCumulativeCount())
				i++
			}
		}
		b.counts[len(b.counts)-1] += float64(h.GetSampleCount())
	}
	return b
}

// minus returns b less an earlier reading of the same histogram (the
// observations in between); a histogram that shrank (a restart) is taken whole.
func (b buckets) minus(old buckets) buckets {
	if len(b.counts) == 0 || len(old.counts) != len(b.counts) || old.counts[len(old.counts)-1] > b.counts[len(b.counts)-1] {
		return b
	}
	d := buckets{le: b.le, counts: make([]float64, len(b.counts))}
	for i := range b.counts {
		d.counts[i] = b.counts[i] - old.counts[i]
	}
	return d
}

// quantile is Prometheus's histogram_quantile over b: linear interpolation
// inside the bucket the rank falls in, the lowest bucket starting at 0, and
// a rank in the +Inf bucket answered with the highest finite bound. NaN when
// there are no observations.
func (b buckets) quantile(q float64) float64 {
	n := len(b.counts)
	if n < 2 || b.counts[n-1] == 0 {
		return math.NaN()
	}
	rank := q * b.counts[n-1]
	i := sort.SearchFloat64s(b.counts, rank)
	if i == n-1 {
		return b.le[n-2]
	}
	if i == 0 && b.le[0] <= 0 {
		return b.le[0]
	}
	start, below := 0.0, 0.0
	if i > 0 {
		start, below = b.le[i-1], b.counts[i-1]
	}
	in := b.counts[i] - below
	if in == 0 {
		return b.le[i]
	}
	return start + (b.le[i]-start)*(rank-below)/in
}

package main

// The failover mode's flags, environment and rows (failover.go runs it).

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"
)

// failoverOptions are the flags only the failover mode has.
type failoverOptions struct {
	window      time.Duration // RESUME_WINDOW
	kill        int           // the node killed, 1-based
	backoffBase time.Duration
	backoffCap  time.Duration
	delay       time.Duration // added to every victim's first backoff
	stormWait   time.Duration // how long after the kill resumes may take
	retryFailed bool          // resume_failed unknown is retried, not final
}

func (f *failoverOptions) register(fs *flag.FlagSet) {
	f.window = 60 * time.Second
	fs.Var(durValue{&f.window, time.Second}, "resume-window", "failover: RESUME_WINDOW of the nodes (bare number = s)")
	fs.IntVar(&f.kill, "kill", 1, "failover: the node SIGKILLed (1 = n1)")
	f.backoffBase, f.backoffCap = time.Second, 30*time.Second
	fs.Var(durValue{&f.backoffBase, time.Millisecond}, "backoff-base", "failover: reconnect backoff base, the browser client's (full jitter: attempt k waits [0, min(cap, base·2^k)); bare number = ms)")
	fs.Var(durValue{&f.backoffCap, time.Millisecond}, "backoff-cap", "failover: reconnect backoff cap (bare number = ms)")
	fs.Var(durValue{&f.delay, time.Millisecond}, "reconnect-delay", "failover: a fixed delay added to every victim's first reconnect (e.g. NODE_TTL, to reconnect only once the node is declared dead; bare number = ms)")
	f.stormWait = 30 * time.Second
	fs.Var(durValue{&f.stormWait, time.Second}, "storm-wait", "failover: a victim not resumed this long after the kill counts as failed (timeout) (bare number = s)")
	fs.BoolVar(&f.retryFailed, "retry-failed", false, "failover: retry a resume answered resume_failed unknown (with backoff) instead of counting it failed as the browser client does (it starts a fresh session)")
}

// resolveFailover checks the failover flags and fills in the defaults.
func (o *options) resolveFailover(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["server"] {
		return errors.New("failover: runs a dugout cluster only (-cluster K), not -server")
	}
	if len(o.cluster.sizes) == 0 {
		o.cluster.sizes = []int{3}
	}
	f := &o.failover
	switch k := o.cluster.sizes[0]; {
	case len(o.cluster.sizes) != 1 || k < 2:
		return errors.New("failover: -cluster takes one node count, at least 2")
	case f.kill < 1 || f.kill > k:
		return fmt.Errorf("failover: -kill must name a node from 1 to %d", k)
	}
	o.servers = []string{clusterName(o.cluster.sizes[0])}
	if !set["node-ttl"] {
		o.cluster.nodeTTL = 2 * time.Second
	}
	if !set["n"] {
		o.n = 3000
	}
	if !set["games"] {
		o.games = (o.n + o.members - 1) / o.members
	}
	if o.games*o.members < o.n {
		return fmt.Errorf("failover: %d games of %d members hold fewer than -n %d", o.games, o.members, o.n)
	}
	if !set["interval"] {
		o.interval = 5 * time.Second // 600 events/s for 3,000: the storm has headroom on one shared core
	}
	if f.backoffBase <= 0 || f.backoffCap < f.backoffBase || f.stormWait <= 0 || f.delay < 0 {
		return errors.New("failover: -backoff-base positive, -backoff-cap at least that, -storm-wait positive, -reconnect-delay not negative")
	}
	if f.window < f.stormWait+o.settle+10*time.Second {
		return errors.New("failover: -resume-window must exceed -storm-wait + -settle by at least 10s")
	}
	return nil
}

// failoverEnv is every node's environment (the cluster's own variables are
// added per node): no idle expiry, a resume window that outlasts the storm.
func (o *options) failoverEnv() map[string]string {
	return map[string]string{
		"LISTEN_ADDR":     "127.0.0.1:0",
		"PING_INTERVAL":   o.pingInterval.String(),
		"PING_TIMEOUT":    o.pingTimeout.String(),
		"RATE_LIMIT":      "1000",
		"RATE_BURST":      "1000",
		"LOG_LEVEL":       o.logLevel,
		"GOMAXPROCS":      strconv.Itoa(o.serverProcs),
		"SESSION_TIMEOUT": "0",
		"RESUME_WINDOW":   o.failover.window.String(),
		"ACTION_ID_TTL":   max(120*time.Second, o.failover.window).String(),
	}
}

func (o *options) failoverParams(p map[string]any) {
	f := o.failover
	p["n"], p["games"], p["members"], p["nodes"] = o.n, o.games, o.members, o.cluster.sizes[0]
	p["interval_ms"], p["node_ttl"], p["resume_window"] = o.interval.Milliseconds(), o.cluster.nodeTTL.String(), f.window.String()
	p["kill"], p["backoff_base"], p["backoff_cap"] = f.kill, f.backoffBase.String(), f.backoffCap.String()
	p["reconnect_delay"], p["storm_wait"], p["retry_failed"] = f.delay.String(), f.stormWait.String(), f.retryFailed
	p["settle"] = o.settle.String()
}

func (o *options) failoverParamLine() string {
	f := o.failover
	return fmt.Sprintf("n=%d games=%d members=%d nodes=%d kill=n%d interval=%s node_ttl=%s backoff=%s..%s reconnect_delay=%s retry_failed=%t",
		o.n, o.games, o.members, o.cluster.sizes[0], f.kill, o.interval, o.cluster.nodeTTL, f.backoffBase, f.backoffCap, f.delay, f.retryFailed)
}

// failoverFigures are the rows of the failover table, in order.
func failoverFigures(nodes int) []figure {
	return []figure{
		{"sessions", "sessions connected and joined", ""},
		{"games", "games", ""},
		{"connect_failures", "connect or join failures", "lower"},
		{"victims", "sessions on the killed node", ""},
		{"decisions_per_s", "decisions sent/s before the kill", ""},
		{"loss_first_ms", "kill → first victim sees its connection drop (ms)", ""},
		{"loss_last_ms", "kill → last victim sees it (ms)", ""},
		{"dead_seen_ms", "kill → a survivor's health no longer lists the node (NODE_TTL) (ms)", ""},
		{"away_first_ms", "kill → first away presence about a victim, at a survivor (ms)", ""},
		{"away_last_ms", "kill → last away presence about a victim (ms)", ""},
		{"resumed", "victims resumed", "higher"},
		{"recovered", "  of which recovered:true (caught up from the history)", "higher"},
		{"failed", "victims not resumed (all reasons)", "lower"},
		{"failed_unknown", "  failed: resume_failed unknown", "lower"},
		{"failed_other", "  failed: other (timeout, user_mismatch, wrong reply; see notes)", "lower"},
		{"failed_attempts", "resume attempts answered resume_failed (victims retried with -retry-failed)", "lower"},
		{"failed_answer_first_ms", "kill → first resume_failed answer (ms)", ""},
		{"failed_answer_last_ms", "kill → last resume_failed answer (ms)", ""},
		{"failed_lat_min_ms", "resume sent → resume_failed, fastest (ms; the claim waits 800 ms for a release)", ""},
		{"failed_lat_max_ms", "resume sent → resume_failed, slowest (ms)", ""},
		{"failed_fast", "resume_failed answers faster than 700 ms (not the claim's timeout)", "lower"},
		{"failed_after_dead_seen", "resume_failed answers to resumes sent after the node was seen dead", "lower"},
		{"attempts_mean", "connections per victim until resumed or failed", "lower"},
		{"resumed_p50_ms", "kill → resumed, p50 (ms)", "lower"},
		{"resumed_p99_ms", "kill → resumed, p99 (ms)", "lower"},
		{"resumed_max_ms", "kill → resumed, max: every victim resumed (ms)", "lower"},
		{"resume_lat_p50_ms", "dial → resumed of the attempt that worked, p50 (ms)", "lower"},
		{"resume_lat_p99_ms", "dial → resumed, p99 (ms)", "lower"},
		{"replayed", "events replayed to recovered victims", ""},
		{"replay_missing", "events a recovered victim should have been replayed and was not", "lower"},
		{"replay_disorder", "replayed events out of order or at or before the victim's offset", "lower"},
		{"resumed_without_back", "recovered victims replayed every event up to resumed's offset: resumed with no back event", ""},
		{"victim_offset_gaps", "victims: game events after the catch-up whose offset is not the previous + 1", "lower"},
		{"survivor_offset_gaps", "survivors: game events after the kill whose offset is not the previous + 1", "lower"},
		{"offset_gaps_before", "every member: offset gaps before the kill", "lower"},
		{"away_seen", "away presences about victims heard by survivors", ""},
		{"back_seen", "back presences about victims heard by survivors", ""},
		{"left_seen", "left presences about victims heard by survivors", ""},
		{"survivors_dropped", "connections the server closed, other than the killed node's", "lower"},
		{"error_frames", "error frames (other than resume_failed answers)", "lower"},
		{"storm_nodes_cpu_pct", "surviving nodes' CPU, kill → last resumed (% of a core)", ""},
		{"storm_redis_cpu_pct", "redis-server CPU over the same span (% of a core)", ""},
		{"resume_cpu_ms", "survivors' + Redis's CPU over the storm ÷ resumes (ms, traffic included)", "lower"},
		{"health_connected_after", "connected sessions in a survivor's health after the storm", ""},
		{"health_away_after", "away sessions in it", ""},
		{"health_nodes_after", "nodes it lists", ""},
	}
}

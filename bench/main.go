// Command bench is dugout's load tool. It builds dugout and a baseline server
// (./bench/baseline: the bare coder/websocket library), starts each as its own
// pinned process, drives it over loopback, and prints the figures of both
// side by side. See bench/README.md.
//
//	go run ./bench idle    [-n 10000] [-hold 110s] [-jwt]
//	go run ./bench fanout  [-games 1000] [-members 4] [-interval 1000] [-duration 20s] [-cluster 1,2,3]
//	go run ./bench churn   [-waves 5] [-clients 2000]
//	go run ./bench hostile -scenario flood|nonreaders|fds|healthloop|expiry|join
//	go run ./bench resume  [-n 5000] [-resume-window 60s]
//	go run ./bench failover [-n 3000] [-cluster 3] [-node-ttl 2s]
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command line, resolved per mode.
type options struct {
	mode                string
	servers             []string
	n                   int
	games, members      int
	interval            time.Duration
	duration, warmup    time.Duration
	drain, hold, settle time.Duration
	waves, clients      int
	decisions           int
	runs                int
	jwt                 bool
	noIDs               bool // fanout: decisions without an id (not exactly-once)
	jwtSecret           string
	cpuServer, cpuTool  int
	serverProcs         int
	pingInterval        time.Duration
	pingTimeout         time.Duration
	parallel, perIP     int
	deadline            time.Duration
	quietWait           time.Duration
	quietPct            float64
	busyRetries         int
	busyPct             float64
	logLevel            string
	dugoutBin, baseBin  string
	version             string // the dugout source measured
	hostile             hostileOptions
	resume              resumeOptions
	cluster             clusterOptions
	failover            failoverOptions
}

// durValue is a duration flag that also takes a bare number in unit.
type durValue struct {
	d    *time.Duration
	unit time.Duration
}

func (v durValue) String() string {
	if v.d == nil || *v.d == 0 {
		return ""
	}
	return v.d.String()
}

func (v durValue) Set(s string) error {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*v.d = time.Duration(n * float64(v.unit))
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*v.d = d
	return nil
}

const usage = `usage: go run ./bench <idle|fanout|churn|hostile|resume|failover> [flags]

  idle    hold N connections open and idle: connect rate, memory and CPU per connection
  fanout  G games of M members each sending a decision every I ms: throughput and latency
          (-cluster 1,2,3: also with the members spread over 1, 2 and 3 nodes on one Redis)
  churn   waves of clients that connect, join, play, then leave or vanish: cleanup
  hostile -scenario S: one kind of abuse against dugout alone, and a bystander's latency beside it
  resume  N sessions drop at once and all resume at once (contract v2), against dugout alone
  failover N sessions in games over K nodes on one Redis; one node is SIGKILLed; its clients resume on the others

Run "go run ./bench <mode> -h" for the flags. Details in bench/README.md.
`

func parseOptions(args []string) (*options, error) {
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		return nil, fmt.Errorf("%s", usage)
	}
	o := &options{mode: args[0]}
	switch o.mode {
	case "idle", "fanout", "churn", "hostile", "resume", "failover":
	default:
		return nil, fmt.Errorf("unknown mode %q\n%s", o.mode, usage)
	}
	fs := flag.NewFlagSet("bench "+o.mode, flag.ContinueOnError)
	defServers := "dugout,baseline"
	if o.mode == "hostile" || o.mode == "resume" {
		defServers = "dugout"
	}
	servers := fs.String("server", defServers, "servers to run, comma-separated: dugout, baseline")
	fs.IntVar(&o.n, "n", 10000, "idle: connections to hold")
	fs.IntVar(&o.games, "games", 0, "fanout/churn: games (default 1000 for fanout, 500 for churn)")
	fs.IntVar(&o.members, "members", 4, "fanout: members per game")
	o.interval = time.Second
	fs.Var(durValue{&o.interval, time.Millisecond}, "interval", "fanout: each member sends a decision this often (bare number = ms)")
	o.duration = 20 * time.Second
	fs.Var(durValue{&o.duration, time.Second}, "duration", "fanout: measured window after the warm-up (bare number = s)")
	o.warmup = 3 * time.Second
	fs.Var(durValue{&o.warmup, time.Second}, "warmup", "fanout: warm-up before the window, excluded (bare number = s)")
	o.drain = 5 * time.Second
	fs.Var(durValue{&o.drain, time.Second}, "drain", "fanout: longest wait for the last frames before counting losses (bare number = s)")
	// Four ping rounds at the server's default PING_INTERVAL: an idle
	// server's memory after its first rounds is what a long-lived one keeps.
	o.hold = 110 * time.Second
	fs.Var(durValue{&o.hold, time.Second}, "hold", "idle: how long the connections are held (bare number = s)")
	o.settle = 2 * time.Second
	fs.Var(durValue{&o.settle, time.Second}, "settle", "pause before reading a 'settled' RSS (bare number = s)")
	fs.IntVar(&o.waves, "waves", 5, "churn: waves")
	fs.IntVar(&o.clients, "clients", 2000, "churn: clients per wave")
	fs.IntVar(&o.decisions, "decisions", 3, "churn: decisions each client sends")
	fs.IntVar(&o.runs, "runs", 1, "repetitions, servers interleaved; the table shows the median")
	fs.BoolVar(&o.noIDs, "no-ids", false, "fanout: send decisions without an id, so the server remembers none (in cluster mode: no session record written per decision)")
	fs.BoolVar(&o.jwt, "jwt", false, "connect with an HS256 token per client (sub = client index), JWT_SECRET set on both servers")
	fs.IntVar(&o.cpuServer, "cpu-server", 1, "CPU the servers are pinned to (-1: unpinned)")
	fs.IntVar(&o.cpuTool, "cpu-tool", 0, "CPU the tool is pinned to (-1: unpinned)")
	fs.IntVar(&o.serverProcs, "server-procs", 1, "GOMAXPROCS of the servers")
	o.pingInterval = 25 * time.Second // the server's default
	fs.Var(durValue{&o.pingInterval, time.Second}, "ping-interval", "PING_INTERVAL of both servers")
	o.pingTimeout = 30 * time.Second
	fs.Var(durValue{&o.pingTimeout, time.Second}, "ping-timeout", "PING_TIMEOUT of both servers")
	fs.IntVar(&o.parallel, "parallel", 64, "connections opened at once")
	fs.IntVar(&o.perIP, "per-ip", 5000, "connections per loopback source address before moving to the next")
	fs.Var(durValue{&o.deadline, time.Second}, "deadline", "hard limit on one server's run of the mode (bare number = s; default 5m, for idle -hold + 3m when that is more)")
	o.quietWait = 2 * time.Minute
	fs.Var(durValue{&o.quietWait, time.Second}, "quiet-wait", "before each server's run, wait up to this long for a quiet machine (bare number = s; 0: don't)")
	fs.Float64Var(&o.quietPct, "quiet-pct", 10, "quiet means other processes use less than this % of a core")
	fs.IntVar(&o.busyRetries, "busy-retries", 2, "repeat a server's run up to this many times when other processes used more than -busy-pct during it")
	fs.Float64Var(&o.busyPct, "busy-pct", 25, "other processes' CPU (% of a core) over a run above which the run counts as disturbed")
	fs.StringVar(&o.logLevel, "log-level", "info", "LOG_LEVEL of dugout (the baseline logs nothing per connection)")
	fs.StringVar(&o.dugoutBin, "dugout-bin", "", "use this dugout binary instead of building one")
	fs.StringVar(&o.baseBin, "baseline-bin", "", "use this baseline binary instead of building one")
	if o.mode == "hostile" {
		o.hostile.register(fs)
	}
	if o.mode == "resume" {
		o.resume.register(fs)
	}
	if o.mode == "fanout" || o.mode == "failover" {
		o.cluster.register(fs, o.mode)
	}
	if o.mode == "failover" {
		o.failover.register(fs)
	}
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*servers, ",") {
		s = strings.TrimSpace(s)
		if s != "dugout" && s != "baseline" {
			return nil, fmt.Errorf("-server: unknown server %q (dugout, baseline)", s)
		}
		if !slices.Contains(o.servers, s) {
			o.servers = append(o.servers, s)
		}
	}
	if o.mode == "hostile" {
		if err := o.resolveHostile(fs); err != nil {
			return nil, err
		}
	}
	if o.mode == "resume" {
		if err := o.resolveResume(fs); err != nil {
			return nil, err
		}
	}
	if o.mode == "fanout" && len(o.cluster.sizes) > 0 {
		// The single node (no Redis) is the reference the clusters stand
		// beside; the baseline only when asked for.
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "server" })
		if !set {
			o.servers = []string{"dugout"}
		}
		for _, k := range o.cluster.sizes {
			o.servers = append(o.servers, clusterName(k))
		}
	}
	if o.mode == "failover" {
		if err := o.resolveFailover(fs); err != nil {
			return nil, err
		}
	}
	if o.games == 0 {
		o.games = map[string]int{"fanout": 1000, "churn": 500}[o.mode]
	}
	if o.deadline == 0 {
		o.deadline = 5 * time.Minute
		if o.mode == "idle" {
			o.deadline = max(o.deadline, o.hold+3*time.Minute)
		}
	}
	switch {
	case o.n < 1, o.games < 1 && o.mode != "idle", o.members < 2, o.clients < 1, o.waves < 1, o.runs < 1,
		o.decisions < 0, o.parallel < 1, o.perIP < 1, o.serverProcs < 1:
		return nil, fmt.Errorf("counts must be positive (members at least 2)")
	case o.interval <= 0, o.duration <= 0, o.hold < 0, o.warmup < 0, o.drain < 0, o.settle < 0,
		o.deadline <= 0, o.pingInterval <= 0, o.pingTimeout <= 0:
		return nil, fmt.Errorf("durations must be positive")
	}
	if o.jwt {
		o.jwtSecret = "bench-" + rand.Text()
	}
	return o, nil
}

// conns is how many connections the mode holds at once.
func (o *options) conns() int {
	switch o.mode {
	case "idle", "resume", "failover":
		return o.n
	case "fanout":
		return o.games * o.members
	case "hostile":
		return o.hostileConns()
	}
	return o.clients
}

func (o *options) params() map[string]any {
	p := map[string]any{"servers": o.servers, "runs": o.runs, "jwt": o.jwt,
		"ping_interval": o.pingInterval.String(), "ping_timeout": o.pingTimeout.String(),
		"cpu_server": o.cpuServer, "cpu_tool": o.cpuTool, "server_gomaxprocs": o.serverProcs,
		"log_level": o.logLevel, "parallel": o.parallel, "clk_tck": clkTck, "dugout_version": o.version}
	if o.hasCluster() {
		p["cpu_redis"] = o.cluster.cpuRedis // -2: with the servers
	}
	switch o.mode {
	case "idle":
		p["n"], p["hold"], p["settle"] = o.n, o.hold.String(), o.settle.String()
	case "fanout":
		p["games"], p["members"], p["interval_ms"] = o.games, o.members, o.interval.Milliseconds()
		p["duration"], p["warmup"], p["drain"] = o.duration.String(), o.warmup.String(), o.drain.String()
		p["ids"] = !o.noIDs
		if len(o.cluster.sizes) > 0 {
			p["cluster"], p["node_ttl"] = o.cluster.sizes, orDefault(o.cluster.nodeTTL)
		}
	case "churn":
		p["waves"], p["clients"], p["games"], p["decisions"] = o.waves, o.clients, o.games, o.decisions
		p["settle"] = o.settle.String()
	case "hostile":
		o.hostileParams(p)
	case "resume":
		o.resumeParams(p)
	case "failover":
		o.failoverParams(p)
	}
	return p
}

// serverEnv is the environment both servers get (the baseline ignores what it does not know).
func (o *options) serverEnv() map[string]string {
	if o.mode == "hostile" {
		return o.hostileEnv()
	}
	if o.mode == "resume" {
		return o.resumeEnv()
	}
	if o.mode == "failover" {
		return o.failoverEnv()
	}
	env := map[string]string{
		"LISTEN_ADDR":   "127.0.0.1:0",
		"PING_INTERVAL": o.pingInterval.String(),
		"PING_TIMEOUT":  o.pingTimeout.String(),
		"RATE_LIMIT":    "1000",
		"RATE_BURST":    "1000",
		"LOG_LEVEL":     o.logLevel,
		"GOMAXPROCS":    strconv.Itoa(o.serverProcs),
	}
	if o.mode != "churn" {
		env["SESSION_TIMEOUT"] = "0"
	} else {
		// churn's clients vanish without a close frame; with a resume window
		// their sessions would stay away, and a wave would never drain.
		env["RESUME_WINDOW"] = "0"
	}
	if o.jwtSecret != "" {
		env["JWT_SECRET"] = o.jwtSecret
	}
	return env
}

// figure is one row of a table.
type figure struct {
	key, label string
	better     string // "higher", "lower" or "" (informational)
}

func (o *options) figures() []figure {
	var f []figure
	switch o.mode {
	case "idle":
		f = idleFigures
	case "fanout":
		f = fanoutFigures
		if o.hasCluster() {
			f = append(slices.Clip(f), clusterFanoutFigures(o.maxNodes())...)
		}
	case "failover":
		f = failoverFigures(o.cluster.sizes[0])
	case "hostile":
		f = o.hostileFigures()
	case "resume":
		f = resumeFigures
	default:
		f = churnFigures(o.waves)
	}
	return append(slices.Clip(f), runFigures...)
}

// runFigures are the rows every mode ends with.
var runFigures = []figure{
	{"rss_peak_mib", "server peak RSS over the run, VmHWM (MiB)", "lower"},
	{"run_other_cpu_pct", "other processes' CPU over the whole run (% of a core)", ""},
	{"attempts", "attempts (runs repeated on a busy machine)", ""},
}

// measurement is what one server's run of a mode found.
type measurement struct {
	vals  map[string]float64
	notes []string
}

func newMeasurement() *measurement { return &measurement{vals: map[string]float64{}} }

func (m *measurement) set(k string, v float64) {
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		m.vals[k] = v
	}
}

func (m *measurement) notef(format string, args ...any) {
	m.notes = append(m.notes, fmt.Sprintf(format, args...))
}

// result is one server's run: its figures, or the error that stopped it.
type result struct {
	m   *measurement
	err error
}

var tasksetPath string

// pin re-executes the tool under taskset on o.cpuTool (once), and decides
// whether servers can be pinned. It returns a line saying what it did.
func pin(o *options) string {
	if o.cpuServer < 0 && o.cpuTool < 0 {
		return "pinning: off (asked)"
	}
	p, err := exec.LookPath("taskset")
	if err != nil {
		o.cpuServer, o.cpuTool = -1, -1
		return "pinning: taskset not found, running UNPINNED (figures are noisier)"
	}
	tasksetPath = p
	if os.Getenv("BENCH_PINNED") == "" {
		if ncpu := runtime.NumCPU(); o.cpuServer >= ncpu || o.cpuTool >= ncpu {
			o.cpuServer, o.cpuTool = -1, -1
			return fmt.Sprintf("pinning: only %d CPUs usable, running UNPINNED", ncpu)
		}
		if o.cpuTool >= 0 {
			exe, err := os.Executable()
			if err == nil {
				args := append([]string{"taskset", "-c", strconv.Itoa(o.cpuTool), exe}, os.Args[1:]...)
				err = syscall.Exec(p, args, append(os.Environ(), "BENCH_PINNED=1"))
			}
			fmt.Fprintf(os.Stderr, "bench: could not re-exec under taskset (%v); tool unpinned\n", err)
			o.cpuTool = -1
		}
	}
	tool := "unpinned"
	if o.cpuTool >= 0 {
		tool = "CPU " + cpusAllowed("self") + " (re-exec under taskset)"
	}
	srv := "unpinned"
	if o.cpuServer >= 0 {
		srv = fmt.Sprintf("CPU %d (taskset -c %d)", o.cpuServer, o.cpuServer)
	}
	if o.cpuServer >= 0 && o.cpuServer == o.cpuTool {
		srv += " — SAME CPU as the tool"
	}
	return fmt.Sprintf("pinning: tool on %s, servers on %s with GOMAXPROCS=%d", tool, srv, o.serverProcs)
}

// cpusAllowed reads Cpus_allowed_list of a process ("self" or a pid).
func cpusAllowed(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// raiseNofile lifts the soft open-files limit to the hard one (the servers
// inherit it) and returns the limit.
func raiseNofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(2)
	}
	pinNote := pin(o)
	nofile := raiseNofile()
	if need := uint64(o.conns()) + 256; need > nofile {
		fmt.Fprintf(os.Stderr, "bench: %d connections need about %d open files, the limit is %d\n", o.conns(), need, nofile)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, o, pinNote))
}

func run(ctx context.Context, o *options, pinNote string) int {
	bins := map[string]string{"dugout": o.dugoutBin, "baseline": o.baseBin}
	o.version = "prebuilt " + o.dugoutBin
	if o.dugoutBin == "" {
		o.version = sourceVersion() // before the build, so a commit landing meanwhile is not credited
	}
	needBase := bins["baseline"] == "" && slices.Contains(o.servers, "baseline")
	if bins["dugout"] == "" || needBase {
		dir, err := os.MkdirTemp("", "dugout-bench-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		logf("building dugout and the baseline")
		d, b, err := buildServers(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if bins["dugout"] == "" {
			bins["dugout"] = d
		}
		if bins["baseline"] == "" {
			bins["baseline"] = b
		}
	}
	logf("%s", pinNote)

	d := newDialer(o.perIP)
	runs := make([]map[string]result, o.runs)
	failed := false
	for r := range o.runs {
		runs[r] = map[string]result{}
		order := slices.Clone(o.servers)
		if r%2 == 1 {
			slices.Reverse(order) // interleaved: drift in the machine hits both alike
		}
		for _, name := range order {
			if ctx.Err() != nil {
				break
			}
			var res result
			for attempt := 1; ; attempt++ {
				logf("run %d/%d: %s %s (attempt %d)", r+1, o.runs, o.mode, name, attempt)
				bin := bins[name]
				if clusterSize(name) > 0 {
					bin = bins["dugout"] // every node of a cluster is dugout
				}
				res = measure(ctx, o, name, bin, d)
				if res.m == nil || ctx.Err() != nil {
					break
				}
				res.m.set("attempts", float64(attempt))
				busy := res.m.vals["run_other_cpu_pct"]
				if busy <= o.busyPct {
					break
				}
				if attempt > o.busyRetries {
					res.m.notef("DISTURBED: other processes used %.0f%% of a core during this run (limit %.0f%%) and the retries ran out", busy, o.busyPct)
					break
				}
				logf("other processes used %.0f%% of a core during the run; repeating it", busy)
			}
			if res.err != nil {
				failed = true
				logf("run %d: %s: %v", r+1, name, res.err)
			}
			runs[r][name] = res
		}
	}
	printReport(os.Stdout, o, pinNote, runs)
	if failed || ctx.Err() != nil {
		return 1
	}
	return 0
}

// measure starts one server (or one cluster: its Redis and nodes), runs the
// mode against it within the deadline, and stops it.
func measure(ctx context.Context, o *options, name, bin string, d *dialer) result {
	var busyNote string
	if o.quietWait > 0 {
		if pct := waitQuiet(ctx, o.quietWait, o.quietPct); pct >= o.quietPct {
			busyNote = fmt.Sprintf("machine not quiet when the run began: other processes used %.0f%% of a core (waited %s)", pct, o.quietWait)
			logf("%s", busyNote)
		}
	}
	dep, err := o.startDeployment(ctx, name, bin)
	if err != nil {
		return result{err: err}
	}
	defer dep.stop(15 * time.Second)
	p := dep.nodes[0]
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()
	// A run that ignores its context past the deadline ends the tool.
	watchdog := time.AfterFunc(o.deadline+time.Minute, func() {
		fmt.Fprintf(os.Stderr, "bench: %s run stuck %s past its deadline; killing it\n", name, time.Minute)
		dep.kill()
		os.Exit(3)
	})
	defer watchdog.Stop()
	if o.cpuServer >= 0 {
		for _, pid := range dep.pids() {
			want := o.cpuServer
			if dep.redis != nil && pid == dep.redis.pid && o.cluster.cpuRedis >= 0 {
				want = o.cluster.cpuRedis
			}
			if got := cpusAllowed(strconv.Itoa(pid)); got != strconv.Itoa(want) {
				logf("warning: %s (pid %d) runs on CPUs %s, not %d", name, pid, got, want)
			}
		}
	}
	var m *measurement
	s0 := dep.snap()
	switch o.mode {
	case "idle":
		m, err = runIdle(ctx, o, p, d)
	case "fanout":
		m, err = runFanout(ctx, o, dep, d)
	case "churn":
		m, err = runChurn(ctx, o, p, d)
	case "hostile":
		m, err = runHostile(ctx, o, p, d)
	case "resume":
		m, err = runResume(ctx, o, p, d)
	case "failover":
		m, err = runFailover(ctx, o, dep, d)
	}
	if m != nil {
		m.set("run_other_cpu_pct", otherPct(s0, dep.snap()))
		if hwm, err := dep.peakRSS(); err == nil {
			m.set("rss_peak_mib", mib(hwm))
		}
	}
	if derr := dep.deadErr(); derr != nil {
		err = derr
	} else if err != nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("deadline of %s exceeded: %w", o.deadline, err)
	}
	if m != nil {
		if busyNote != "" {
			m.notes = append(m.notes, busyNote)
		}
		dep.logNotes(m)
	}
	return result{m: m, err: err}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// median of the values a figure has across runs; ok is false when it has none.
func median(runs []map[string]result, server, key string) (float64, bool) {
	var vs []float64
	for _, r := range runs {
		if res, ok := r[server]; ok && res.m != nil {
			if v, ok := res.m.vals[key]; ok {
				vs = append(vs, v)
			}
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

func formatNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == math.Trunc(v) && a < 1e12:
		return strconv.FormatInt(int64(v), 10)
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// printReport writes the human table (medians across runs) and then one JSON
// line per run.
func printReport(w *os.File, o *options, pinNote string, runs []map[string]result) {
	fmt.Fprintf(w, "\n== bench %s  %s\n", o.mode, paramLine(o))
	fmt.Fprintf(w, "   dugout source: %s; report written %s\n", o.version, time.Now().Format(time.RFC3339))
	fmt.Fprintf(w, "   %s; CPU times from /proc/<pid>/stat at CLK_TCK=%d%s\n", pinNote, int(clkTck),
		map[bool]string{true: " (assumed: getconf failed)", false: " (getconf)"}[clkTckAssumed])
	if o.runs > 1 {
		fmt.Fprintf(w, "   median of %d runs, servers interleaved\n", o.runs)
	}
	cols := []string{"dugout", "baseline"}
	if o.hasCluster() {
		cols = o.servers // the single node first, then each cluster
	}
	withRatio := slices.Contains(cols, "dugout") && slices.Contains(cols, "baseline")
	head := append([]string{"figure"}, cols...)
	if withRatio {
		head = append(head, "ratio (d/b)")
	}
	rows := [][]string{head}
	for _, f := range o.figures() {
		row := []string{f.label}
		vals := map[string]float64{}
		for _, s := range cols {
			v, ok := median(runs, s, f.key)
			if ok {
				vals[s] = v
				row = append(row, formatNum(v))
			} else {
				row = append(row, "-")
			}
		}
		if withRatio {
			ratio := "-"
			dv, dok := vals["dugout"]
			bv, bok := vals["baseline"]
			if dok && bok && bv != 0 {
				ratio = strconv.FormatFloat(dv/bv, 'f', 2, 64)
			}
			row = append(row, ratio)
		}
		rows = append(rows, row)
	}
	widths := make([]int, len(head))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for i, r := range rows {
		var b strings.Builder
		for j, c := range r {
			pad := widths[j] - len([]rune(c))
			if j > 0 {
				b.WriteString(" | ")
				b.WriteString(strings.Repeat(" ", pad) + c) // numbers right-aligned
			} else {
				b.WriteString(c + strings.Repeat(" ", pad))
			}
		}
		fmt.Fprintln(w, b.String())
		if i == 0 {
			dashes := make([]string, len(widths))
			for j, wd := range widths {
				dashes[j] = strings.Repeat("-", wd)
			}
			fmt.Fprintln(w, strings.Join(dashes, "-+-"))
		}
	}
	for r, run := range runs {
		for _, s := range o.servers {
			res, ok := run[s]
			if !ok {
				continue
			}
			if res.err != nil {
				fmt.Fprintf(w, "run %d %s: ERROR: %v\n", r+1, s, res.err)
			}
			if res.m != nil {
				for _, n := range res.m.notes {
					fmt.Fprintf(w, "run %d %s: %s\n", r+1, s, n)
				}
			}
		}
	}
	for r, run := range runs {
		line := map[string]any{"mode": o.mode, "run": r + 1, "params": o.params()}
		figs, errs, notes := map[string]any{}, map[string]string{}, map[string][]string{}
		for _, s := range o.servers {
			res, ok := run[s]
			if !ok {
				errs[s] = "not run"
				continue
			}
			if res.m != nil {
				figs[s] = res.m.vals
				if len(res.m.notes) > 0 {
					notes[s] = res.m.notes
				}
			}
			if res.err != nil {
				errs[s] = res.err.Error()
			}
		}
		ratios := map[string]float64{}
		dr, bres := run["dugout"], run["baseline"]
		if dr.m != nil && bres.m != nil {
			for k, dv := range dr.m.vals {
				if bv, ok := bres.m.vals[k]; ok && bv != 0 {
					ratios[k] = math.Round(dv/bv*1e4) / 1e4
				}
			}
		}
		line["figures"], line["ratios"] = figs, ratios
		if len(errs) > 0 {
			line["errors"] = errs
		}
		if len(notes) > 0 {
			line["notes"] = notes
		}
		b, _ := json.Marshal(line)
		fmt.Fprintln(w, string(b))
	}
}

func paramLine(o *options) string {
	var s string
	switch o.mode {
	case "idle":
		s = fmt.Sprintf("n=%d hold=%s", o.n, o.hold)
	case "fanout":
		s = fmt.Sprintf("games=%d members=%d interval=%dms duration=%s warmup=%s ids=%t", o.games, o.members,
			o.interval.Milliseconds(), o.duration, o.warmup, !o.noIDs)
	case "churn":
		s = fmt.Sprintf("waves=%d clients=%d games=%d decisions=%d", o.waves, o.clients, o.games, o.decisions)
	case "hostile":
		s = o.hostileParamLine()
	case "resume":
		s = o.resumeParamLine()
	case "failover":
		s = o.failoverParamLine()
	}
	if o.mode == "fanout" && len(o.cluster.sizes) > 0 {
		s += fmt.Sprintf(" cluster=%v node_ttl=%s", o.cluster.sizes, orDefault(o.cluster.nodeTTL))
	}
	if o.hasCluster() && o.cluster.cpuRedis != -2 {
		s += fmt.Sprintf(" cpu_redis=%d", o.cluster.cpuRedis)
	}
	s += fmt.Sprintf(" ping_interval=%s ping_timeout=%s jwt=%t runs=%d log_level=%s", o.pingInterval,
		o.pingTimeout, o.jwt, o.runs, o.logLevel)
	return s
}

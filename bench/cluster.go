package main

// Cluster configurations (contract v2 §12): one redis-server and K dugout
// nodes on it, started fresh for every run like the single servers. A
// configuration is a "server" of the report named clusterK, so the fan-out
// mode measures `-cluster 1,2,3` beside the single node (no Redis) in one
// run, and the failover mode kills one node of one. See "Cluster mode" in
// bench/README.md.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clusterOptions are the flags of the modes that run clusters.
type clusterOptions struct {
	sizes    []int         // node counts to run, one configuration each
	nodeTTL  time.Duration // NODE_TTL of every node; 0: the server's default
	cpuRedis int           // the CPU redis-server is pinned to; -2: -cpu-server's
}

func (c *clusterOptions) register(fs *flag.FlagSet, mode string) {
	help := "fanout: also run the fan-out on clusters of these many nodes sharing one Redis, comma-separated (e.g. 1,2,3)"
	if mode == "failover" {
		help = "failover: the cluster's node count (at least 2)"
	}
	fs.Func("cluster", help, func(s string) error {
		c.sizes = nil
		for _, f := range strings.Split(s, ",") {
			k, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || k < 1 || k > 16 {
				return fmt.Errorf("node counts must be 1 to 16, got %q", f)
			}
			if !slices.Contains(c.sizes, k) {
				c.sizes = append(c.sizes, k)
			}
		}
		return nil
	})
	fs.IntVar(&c.cpuRedis, "cpu-redis", -2, "CPU redis-server is pinned to (default: -cpu-server's, with the nodes; -1: unpinned)")
	fs.Var(durValue{&c.nodeTTL, time.Second}, "node-ttl", "NODE_TTL of the cluster nodes (bare number = s; default 2s for failover, the server's own for fanout)")
}

// orDefault prints a duration flag, 0 meaning the server's default.
func orDefault(d time.Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}

// clusterName is the report's name for a cluster of k nodes.
func clusterName(k int) string { return "cluster" + strconv.Itoa(k) }

// clusterSize is k for a name made by clusterName, 0 for a single server.
func clusterSize(name string) int {
	k, err := strconv.Atoi(strings.TrimPrefix(name, "cluster"))
	if !strings.HasPrefix(name, "cluster") || err != nil {
		return 0
	}
	return k
}

// hasCluster reports whether any configuration of the run is a cluster.
func (o *options) hasCluster() bool {
	return slices.ContainsFunc(o.servers, func(s string) bool { return clusterSize(s) > 0 })
}

// maxNodes is the largest node count of the run (1 without clusters).
func (o *options) maxNodes() int {
	n := 1
	for _, s := range o.servers {
		n = max(n, clusterSize(s))
	}
	return n
}

// deployment is what one run measures: one server, or a cluster's nodes and
// its Redis.
type deployment struct {
	name  string
	nodes []*proc
	redis *redisProc // nil for a single server

	mu      sync.Mutex
	lastCPU map[int]float64 // the last CPU reading of each pid: a killed node keeps what it used
}

// startDeployment starts server name: a single process, or Redis and the
// nodes of clusterK, each pinned like a single server, and waits until every
// node sees every other in its health.
func (o *options) startDeployment(ctx context.Context, name, bin string) (*deployment, error) {
	dep := &deployment{name: name, lastCPU: map[int]float64{}}
	k := clusterSize(name)
	if k == 0 {
		start := startServer
		if o.mode == "hostile" {
			start = o.startHostile // fds: under prlimit
		}
		p, err := start(name, bin, o.serverEnv(), o.cpuServer)
		if err != nil {
			return nil, err
		}
		dep.nodes = []*proc{p}
		return dep, nil
	}
	cpu := o.cluster.cpuRedis
	if cpu == -2 || o.cpuServer < 0 {
		cpu = o.cpuServer
	}
	r, err := startRedis(cpu)
	if err != nil {
		return nil, err
	}
	dep.redis = r
	for i := range k {
		env := o.serverEnv()
		env["REDIS_URL"] = r.url()
		env["NODE_ID"] = "n" + strconv.Itoa(i+1)
		if o.cluster.nodeTTL > 0 {
			env["NODE_TTL"] = o.cluster.nodeTTL.String()
		}
		p, err := startServer(name+"/n"+strconv.Itoa(i+1), bin, env, o.cpuServer)
		if err != nil {
			dep.stop(5 * time.Second)
			return nil, err
		}
		dep.nodes = append(dep.nodes, p)
	}
	for _, p := range dep.nodes {
		if err := waitCluster(ctx, p.addr, k, 15*time.Second); err != nil {
			dep.stop(5 * time.Second)
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	return dep, nil
}

// clusterHealth is the part of a node's /health/connections that says
// whether it is in the cluster.
type clusterHealth struct {
	Engine    string `json:"engine"`
	Scope     string `json:"scope"`
	Total     int    `json:"total_sessions"`
	Connected int    `json:"connected_sessions"`
	Away      int    `json:"away_sessions"`
	Nodes     []struct {
		NodeID        string `json:"node_id"`
		TotalSessions int    `json:"total_sessions"`
	} `json:"nodes"`
}

func getClusterHealth(ctx context.Context, addr string) (clusterHealth, error) {
	var h clusterHealth
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/health/connections", nil)
	if err != nil {
		return h, err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// waitCluster polls a node's health until its engine is up and it lists k
// nodes: until then its events would be sequenced locally.
func waitCluster(ctx context.Context, addr string, k int, within time.Duration) error {
	end := time.Now().Add(within)
	for {
		h, err := getClusterHealth(ctx, addr)
		if err == nil && h.Engine == "up" && h.Scope == "cluster" && len(h.Nodes) == k {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("health never showed the engine up with %d nodes (last: %+v, %v)", k, h, err)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// pids are the processes whose CPU is the server side's: the nodes, then Redis.
func (d *deployment) pids() []int {
	var p []int
	for _, n := range d.nodes {
		p = append(p, n.pid)
	}
	if d.redis != nil {
		p = append(p, d.redis.pid)
	}
	return p
}

// cpu is pid's CPU-seconds, or its last reading once it has exited.
func (d *deployment) cpu(pid int) float64 {
	v, err := cpuSeconds(pid)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		return d.lastCPU[pid]
	}
	d.lastCPU[pid] = v
	return v
}

// snap is a CPU snapshot whose server part is the whole deployment (nodes
// and Redis), with each process's share in per (pids' order).
func (d *deployment) snap() cpuSnap {
	s := cpuSnap{t: time.Now(), sys: sysBusy()}
	s.tool, _ = cpuSeconds(0)
	for _, pid := range d.pids() {
		v := d.cpu(pid)
		s.srv += v
		s.per = append(s.per, v)
	}
	return s
}

// nodesCPU is the nodes' CPU between a and b (Redis excluded), each and in all.
func (d *deployment) nodesCPU(a, b cpuSnap) (each []float64, sum float64) {
	for i := range d.nodes {
		v := b.per[i] - a.per[i]
		each = append(each, v)
		sum += v
	}
	return each, sum
}

// redisCPU is Redis's CPU between a and b; 0 without Redis.
func (d *deployment) redisCPU(a, b cpuSnap) float64 {
	if d.redis == nil {
		return 0
	}
	i := len(d.nodes)
	return b.per[i] - a.per[i]
}

// peakRSS is the sum of the nodes' VmHWM (Redis excluded).
func (d *deployment) peakRSS() (int64, error) {
	var sum int64
	for _, n := range d.nodes {
		if n.killed.Load() {
			continue
		}
		v, err := peakRSS(n.pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// deadErr says which process exited that was not killed on purpose.
func (d *deployment) deadErr() error {
	for _, n := range d.nodes {
		if !n.alive() && !n.killed.Load() {
			return fmt.Errorf("%s exited during the run (%v); last log lines:\n%s", n.name, n.waitErr, n.tailText())
		}
	}
	if d.redis != nil {
		select {
		case <-d.redis.exited:
			return fmt.Errorf("redis-server exited during the run: %v", d.redis.waitErr)
		default:
		}
	}
	return nil
}

// stop ends every node, then Redis.
func (d *deployment) stop(within time.Duration) {
	var wg sync.WaitGroup
	for _, n := range d.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.stop(within) }()
	}
	wg.Wait()
	if d.redis != nil {
		d.redis.stop()
	}
}

// kill ends everything at once: a run stuck past its deadline.
func (d *deployment) kill() {
	for _, n := range d.nodes {
		n.kill()
	}
	if d.redis != nil {
		d.redis.stop()
	}
}

// notes are the nodes' noteworthy log lines, and Redis's pid for the reader.
func (d *deployment) logNotes(m *measurement) {
	for _, n := range d.nodes {
		for _, l := range n.problemLines() {
			m.notef("%s log: %s", n.name, l)
		}
	}
}

// info reads Redis's INFO; nil without Redis or when it cannot be read.
func (d *deployment) info() *redisStats {
	if d.redis == nil {
		return nil
	}
	st, err := redisInfo(d.redis.addr)
	if err != nil {
		return nil
	}
	return st
}

// redisFigures sets the rows every cluster run has about Redis, from the CPU
// and INFO readings that open and close a window in which the tool sent
// events (game events sequenced) and its clients got deliveries: Redis's CPU,
// and per event its CPU, the scripts it ran (the sequencing script, and the
// session record writes that go with an action that has an id), their time,
// the PUBLISHes, and the bytes in and out.
func (d *deployment) redisFigures(m *measurement, a, b cpuSnap, ia, ib *redisStats, deliveries, events float64) {
	if d.redis == nil {
		return
	}
	win := b.t.Sub(a.t).Seconds()
	cpu := d.redisCPU(a, b)
	m.set("redis_cpu_pct", cpu/win*100)
	if deliveries > 0 {
		m.set("redis_cpu_s_per_100k", cpu/deliveries*1e5)
	}
	if events <= 0 {
		return
	}
	m.set("redis_cpu_us_per_event", cpu/events*1e6)
	if ia == nil || ib == nil {
		m.notef("INFO could not be read from redis-server: no per-event figures from it")
		return
	}
	sc := ib.delta(ia, "evalsha")
	e2 := ib.delta(ia, "eval")
	sc.calls, sc.usec = sc.calls+e2.calls, sc.usec+e2.usec
	m.set("redis_scripts_per_event", sc.calls/events)
	m.set("redis_script_us_per_event", sc.usec/events)
	m.set("redis_publish_per_event", ib.delta(ia, "publish").calls/events)
	m.set("redis_in_bytes_per_event", (ib.in-ia.in)/events)
	m.set("redis_out_bytes_per_event", (ib.out-ia.out)/events)
}

// clusterRedisFigures are the rows about Redis, for every mode that runs a cluster.
var clusterRedisFigures = []figure{
	{"redis_cpu_pct", "redis-server CPU in window (% of a core)", "lower"},
	{"redis_cpu_s_per_100k", "redis-server CPU-s per 100,000 deliveries", "lower"},
	{"redis_cpu_us_per_event", "redis: CPU per game event, all it did ÷ events (µs)", "lower"},
	{"redis_scripts_per_event", "redis: scripts run per event (sequencing + session records)", ""},
	{"redis_script_us_per_event", "redis: time inside those scripts per event, INFO commandstats (µs)", "lower"},
	{"redis_publish_per_event", "redis: PUBLISHes per event (nodes holding the game)", ""},
	{"redis_in_bytes_per_event", "redis: bytes received per event", "lower"},
	{"redis_out_bytes_per_event", "redis: bytes sent per event", "lower"},
}

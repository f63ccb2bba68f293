package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// repoRoot is the directory holding go.mod, found with `go env GOMOD`.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module (go env GOMOD is empty); run from the dugout repository")
	}
	return filepath.Dir(mod), nil
}

// sourceVersion names the dugout source being built: the commit, with
// "+dirty" when files outside bench/ differ from it.
func sourceVersion() string {
	root, err := repoRoot()
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown (no git)"
	}
	v := strings.TrimSpace(string(out))
	st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", ".", ":(exclude)bench").Output()
	if err == nil && len(strings.TrimSpace(string(st))) > 0 {
		v += "+dirty"
	}
	return v
}

// buildServers builds dugout (the repository root) and the baseline into dir.
func buildServers(dir string) (dugout, baseline string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	dugout, baseline = filepath.Join(dir, "dugout"), filepath.Join(dir, "baseline")
	for _, b := range []struct{ out, pkg string }{{dugout, "."}, {baseline, "./bench/baseline"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return dugout, baseline, nil
}

// proc is one running server process.
type proc struct {
	name string
	cmd  *exec.Cmd
	pid  int
	addr string

	mu       sync.Mutex
	lines    int
	levels   map[string]int // log lines per level
	problems []string       // first warn/error/fatal/panic lines
	tail     []string       // last lines, for a crash report

	exited  chan struct{}
	waitErr error
	killed  atomic.Bool // ended on purpose by the run (failover), not a crash
}

// startServer runs bin with env, pinned to cpu (when cpu >= 0 and taskset is
// available), and waits for the start-up line carrying "addr".
func startServer(name, bin string, env map[string]string, cpu int) (*proc, error) {
	args := []string{bin}
	if cpu >= 0 {
		args = []string{tasksetPath, "-c", strconv.Itoa(cpu), bin}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// If the tool dies, its servers die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, pid: cmd.Process.Pid, levels: map[string]int{}, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go p.readLog(stderr, addr)
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	select {
	case a := <-addr:
		p.addr = a
	case <-p.exited:
		return nil, fmt.Errorf("%s exited at start: %v\n%s", name, p.waitErr, p.tailText())
	case <-time.After(30 * time.Second):
		p.kill()
		return nil, fmt.Errorf("%s printed no start-up line in 30 s\n%s", name, p.tailText())
	}
	return p, nil
}

// readLog drains the server's stderr (a server blocked on a full pipe would
// stall), counts lines per level and keeps the noteworthy ones.
func (p *proc) readLog(r io.Reader, addr chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var l struct {
			Addr  string `json:"addr"`
			Level string `json:"level"`
		}
		_ = json.Unmarshal([]byte(line), &l)
		p.mu.Lock()
		p.lines++
		p.levels[l.Level]++
		switch l.Level {
		case "warn", "error", "fatal", "panic", "":
			if l.Addr == "" && len(p.problems) < 20 {
				p.problems = append(p.problems, line)
			}
		}
		p.tail = append(p.tail, line)
		if len(p.tail) > 40 {
			p.tail = p.tail[len(p.tail)-40:]
		}
		p.mu.Unlock()
		if l.Addr != "" {
			select {
			case addr <- l.Addr:
			default:
			}
		}
	}
}

func (p *proc) tailText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// problemLines returns the first warn-or-worse (or non-JSON) log lines.
func (p *proc) problemLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.problems...)
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits, then kills.
func (p *proc) stop(within time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(within):
		p.kill()
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// crash ends the process with SIGKILL on purpose, as a failing machine would,
// and returns once it has been reaped.
func (p *proc) crash() {
	p.killed.Store(true)
	p.kill()
}

// rss is the process's VmRSS in bytes.
func rss(pid int) (int64, error) { return statusKB(pid, "VmRSS:") }

// peakRSS is the process's VmHWM (the highest VmRSS so far) in bytes.
func peakRSS(pid int) (int64, error) { return statusKB(pid, "VmHWM:") }

func statusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// clkTck is the kernel's clock tick rate for /proc/<pid>/stat times.
var clkTck = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	clkTckAssumed = true
	return 100
}()

var clkTckAssumed bool

// cpuSeconds is the process's user+system CPU time from /proc/<pid>/stat.
// pid 0 means this process.
func cpuSeconds(pid int) (float64, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", path)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state): utime is field 14, stime 15
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: too few fields", path)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: bad utime/stime", path)
	}
	return float64(ut+st) / clkTck, nil
}

// health is dugout's /health/connections.
type health struct {
	Status        string `json:"status"`
	TotalSessions int    `json:"total_sessions"`
	ActiveGames   int    `json:"active_games"`
	Goroutines    int    `json:"goroutines"`
}

var healthClient = &http.Client{Timeout: 5 * time.Second}

func getHealth(ctx context.Context, addr string) (health, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/health/connections", nil)
	if err != nil {
		return health{}, err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return health{}, err
	}
	defer resp.Body.Close()
	var h health
	if resp.StatusCode != http.StatusOK {
		return h, fmt.Errorf("health: HTTP %d", resp.StatusCode)
	}
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// sysBusy is the CPU time all processes have used, from the first line of
// /proc/stat (everything but idle and iowait), in seconds.
func sysBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 { // idle, iowait; guest times are already in user
			busy += n
		}
	}
	return float64(busy) / clkTck
}

// cpuSnap is a moment's CPU accounting: the whole machine, the tool, a server.
type cpuSnap struct {
	t              time.Time
	sys, tool, srv float64
	per            []float64 // a deployment's processes, each (deployment.snap)
}

func snap(pid int) cpuSnap {
	s := cpuSnap{t: time.Now(), sys: sysBusy()}
	s.tool, _ = cpuSeconds(0)
	if pid != 0 {
		s.srv, _ = cpuSeconds(pid)
	}
	return s
}

// otherPct is the CPU other processes used between a and b, in % of one core.
func otherPct(a, b cpuSnap) float64 {
	other := (b.sys - a.sys) - (b.tool - a.tool) - (b.srv - a.srv)
	if other < 0.5/clkTck { // float noise; the counters move in whole ticks
		return 0
	}
	return other / b.t.Sub(a.t).Seconds() * 100
}

// waitQuiet waits, up to limit, for a second in which other processes use
// less than threshold % of a core. It returns the last second's figure.
func waitQuiet(ctx context.Context, limit time.Duration, threshold float64) float64 {
	end := time.Now().Add(limit)
	for {
		a := snap(0)
		if sleepCtx(ctx, time.Second) != nil {
			return -1
		}
		pct := otherPct(a, snap(0))
		if pct < threshold || !time.Now().Before(end) {
			return pct
		}
	}
}

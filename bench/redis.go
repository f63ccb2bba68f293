package main

// The Redis of a cluster configuration (bench -cluster, bench failover).
//
// It is started here, not with internal/redistest, because redistest.Start
// takes a testing.TB (it fails with t.Fatal, skips with t.Skip, cleans up with
// t.Cleanup and t.TempDir), and a command has none to give: testing.TB has an
// unexported method, so only the testing package can make one. What this does
// is what redistest does — redis-server on a free 127.0.0.1 port, nothing kept
// on disk, ready once it answers PING and INFO names its pid — plus what the
// bench needs: pinned with taskset like the servers, and INFO read back for the
// figures.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// redisProc is one redis-server process.
type redisProc struct {
	addr    string // 127.0.0.1:P
	cmd     *exec.Cmd
	pid     int
	dir     string // its --dir and log, removed at stop
	exited  chan struct{}
	waitErr error
}

// startRedis runs redis-server on a free loopback port, pinned to cpu when
// cpu >= 0, and returns once it answers. A port found free can be taken
// before redis-server binds it, so it tries three.
func startRedis(cpu int) (*redisProc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("cluster mode needs redis-server on PATH (Debian package redis-server)")
	}
	var last error
	for range 3 {
		r, err := launchRedis(bin, cpu)
		if err == nil {
			return r, nil
		}
		last = err
	}
	return nil, last
}

func launchRedis(bin string, cpu int) (*redisProc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	dir, err := os.MkdirTemp("", "dugout-bench-redis-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(dir + "/redis.log")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close() // the process has its own copy
	args := []string{bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no"}
	if cpu >= 0 && tasksetPath != "" {
		args = append([]string{tasksetPath, "-c", strconv.Itoa(cpu)}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the tool
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	r := &redisProc{addr: "127.0.0.1:" + port, cmd: cmd, pid: cmd.Process.Pid, dir: dir, exited: make(chan struct{})}
	go func() { r.waitErr = cmd.Wait(); close(r.exited) }()
	end := time.Now().Add(10 * time.Second)
	for {
		reply, err := redisDo(r.addr, time.Second, "PING")
		if err == nil && reply == "+PONG" {
			// taskset execs redis-server, so the pid is redis-server's.
			info, err := redisDo(r.addr, time.Second, "INFO", "server")
			if err == nil && strings.Contains(info, "\r\nprocess_id:"+strconv.Itoa(r.pid)+"\r\n") {
				return r, nil
			}
			r.stop()
			return nil, fmt.Errorf("%s is answered by another process than redis-server %d", r.addr, r.pid)
		}
		select {
		case <-r.exited:
			r.stop()
			return nil, fmt.Errorf("redis-server on %s exited at start: %v", r.addr, r.waitErr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(end) {
			r.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer PING within 10 s: %v", r.addr, err)
		}
	}
}

// url is what REDIS_URL gets.
func (r *redisProc) url() string { return "redis://" + r.addr + "/0" }

// stop kills the process (there is nothing to save) and removes its folder.
func (r *redisProc) stop() {
	_ = r.cmd.Process.Kill()
	<-r.exited
	os.RemoveAll(r.dir)
}

// redisStats is what the figures read of INFO: per command, calls and the
// microseconds Redis spent in them (the commands a script calls are counted
// under their own names too, and EVALSHA's time includes them), and the bytes
// Redis read from and wrote to its clients.
type redisStats struct {
	cmds    map[string]cmdStat
	in, out float64
}

type cmdStat struct{ calls, usec float64 }

// redisInfo reads INFO stats and commandstats.
func redisInfo(addr string) (*redisStats, error) {
	info, err := redisDo(addr, 2*time.Second, "INFO", "stats", "commandstats")
	if err != nil {
		return nil, err
	}
	st := &redisStats{cmds: map[string]cmdStat{}}
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch name {
		case "total_net_input_bytes":
			st.in, _ = strconv.ParseFloat(rest, 64)
		case "total_net_output_bytes":
			st.out, _ = strconv.ParseFloat(rest, 64)
		}
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !isCmd {
			continue
		}
		var c cmdStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				c.calls = n
			case "usec":
				c.usec = n
			}
		}
		st.cmds[name] = c
	}
	return st, nil
}

// delta is b − a for one command.
func (b *redisStats) delta(a *redisStats, name string) cmdStat {
	return cmdStat{calls: b.cmds[name].calls - a.cmds[name].calls, usec: b.cmds[name].usec - a.cmds[name].usec}
}

// redisDo sends one command over a fresh connection and returns the reply:
// "+OK", "-ERR …", ":3", or a bulk string's contents. The bench needs no
// more than PING and INFO.
func redisDo(addr string, within time.Duration, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, within)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(within))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return line, nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 {
		return "", fmt.Errorf("bad bulk reply %q", line)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(rd, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

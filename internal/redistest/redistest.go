// Package redistest runs a real redis-server for the tests of cluster mode, on
// a loopback port of its own, with nothing kept on disk. It talks to Redis
// over a raw socket with a few hand-written RESP lines, so that the tests of
// the Redis bridge do not depend on the client library they are testing.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timing of the helpers. readyWithin bounds a start on a slow, busy CI machine
// (redis-server is ready in milliseconds when idle); pollEvery is how often a
// start is checked, short against readyWithin; doWithin bounds one command.
const (
	readyWithin = 10 * time.Second
	pollEvery   = 10 * time.Millisecond
	doWithin    = 5 * time.Second
)

// startAttempts is how many free ports Start tries: a port found free can be
// taken by another process before redis-server binds it.
const startAttempts = 3

// Server is one redis-server process, and after Restart its successor on the
// same port.
type Server struct {
	// Set at construction.
	Addr string // "127.0.0.1:P", the same for every process Restart starts
	dir  string // redis-server's --dir, a t.TempDir, and where its log goes
	log  string // path of the log file every process of this Server appends to

	mu   sync.Mutex
	proc *proc // the current process, nil once killed; guarded by mu
}

// proc is one redis-server process and the goroutine that reaps it.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	err  error         // Wait's result, valid after done
}

// Start runs redis-server on a free 127.0.0.1 port and returns once it
// answers PING. The process is killed and reaped when the test ends. Without
// redis-server on PATH the test is skipped, or fails when CI=true, as the
// browser tests do with a missing Chromium: CI must not pass by skipping.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		const hint = "redis-server (Debian package redis-server: apt-get install redis-server)"
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and the cluster-mode tests need " + hint)
		}
		t.Skip("skipping: the cluster-mode tests need " + hint)
	}
	// TempDir before Cleanup: cleanups run last-in first-out, so the process
	// is gone before its directory is removed.
	dir := t.TempDir()
	s := &Server{dir: dir, log: filepath.Join(dir, "redis.log")}
	t.Cleanup(s.Kill)
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.launch(); lastErr == nil {
			return s
		}
		s.Kill()
	}
	t.Fatalf("redistest: redis-server did not start in %d attempts: %v\n%s", startAttempts, lastErr, s.logText())
	return nil
}

// freePort asks the kernel for a free loopback port. The port is free only
// at that moment, which is why Start tries again when redis-server exits.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts a process on s.Addr and waits until it answers PING. On an
// error the process may still be running; the caller kills it.
func (s *Server) launch() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// The process writes to the file itself: no pipe, so no copying goroutine
	// for Wait to wait on.
	defer logf.Close()
	cmd := exec.Command("redis-server",
		"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--protected-mode", "no")
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return waitReady(s.Addr, p)
}

// waitReady polls addr with PING until p answers +PONG, p exits, or
// readyWithin passes.
func waitReady(addr string, p *proc) error {
	deadline := time.NewTimer(readyWithin)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var lastErr error
	for {
		reply, err := roundTrip(addr, []string{"PING"}, time.Second)
		if err == nil && reply == "+PONG" {
			return isOurs(addr, p)
		}
		if err == nil {
			err = fmt.Errorf("PING answered %q", reply)
		}
		lastErr = err
		select {
		case <-p.done:
			return fmt.Errorf("redis-server on %s exited before answering PING: %v", addr, p.err)
		case <-deadline.C:
			return fmt.Errorf("redis-server on %s did not answer PING within %s: %w", addr, readyWithin, lastErr)
		case <-tick.C:
		}
	}
}

// isOurs checks that the server answering on addr is p and not another
// process, a parallel test's redis-server for one, that took the port
// between freePort and p's bind (p then exits, but may not have yet).
func isOurs(addr string, p *proc) error {
	info, err := roundTrip(addr, []string{"INFO", "server"}, time.Second)
	if err != nil {
		return fmt.Errorf("INFO server on %s: %w", addr, err)
	}
	if !strings.Contains(info, fmt.Sprintf("\r\nprocess_id:%d\r\n", p.cmd.Process.Pid)) {
		return fmt.Errorf("%s is answered by another process than redis-server %d", addr, p.cmd.Process.Pid)
	}
	return nil
}

// URL is the redis:// URL of database 0, as cluster mode's config takes it.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// PID is the current process's id, or 0 once it has been killed.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Kill ends the process with SIGKILL, as a crash would (no shutdown, no
// goodbye to clients), and returns once it has been reaped. A stopped
// process is killed too. Killing a killed Server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Restart kills the process if it is running and starts a new, empty one on
// the same port, as a Redis restarted without persistence comes back: the
// clients' address stays valid and every key is gone. It returns once the
// new process answers PING.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	if err := s.launch(); err != nil {
		s.Kill()
		t.Fatalf("redistest: restarting redis-server on %s: %v\n%s", s.Addr, err, s.logText())
	}
}

// Stop freezes the process with SIGSTOP: its sockets stay open and nothing
// answers, as with a Redis stuck in a long command or a paused VM.
func (s *Server) Stop() { s.signal(syscall.SIGSTOP) }

// Cont resumes a process frozen by Stop.
func (s *Server) Cont() { s.signal(syscall.SIGCONT) }

// signal sends sig to the current process, if there is one.
func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		_ = s.proc.cmd.Process.Signal(sig)
	}
}

// Do sends one command over a fresh connection and returns its reply, its
// type byte kept so that an error cannot pass for a value: "+OK", "-ERR ...",
// ":3", "$value" for a bulk string and "(nil)" for a nil one. Arrays are not
// read: these are for setting a test up (FLUSHALL, SET) and looking at what
// is left (DBSIZE, GET), not a client. Call it from the test goroutine only:
// it fails the test when Redis cannot be reached.
func (s *Server) Do(t testing.TB, args ...string) string {
	t.Helper()
	reply, err := roundTrip(s.Addr, args, doWithin)
	if err != nil {
		t.Fatalf("redistest: %s on %s: %v", strings.Join(args, " "), s.Addr, err)
	}
	return reply
}

// roundTrip dials addr, writes args as a RESP array and reads one reply.
func roundTrip(addr string, args []string, within time.Duration) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, within)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(within)); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(conn))
}

// readReply reads one simple string, error, integer or bulk string reply.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch line[0] {
	case '+', '-', ':':
		return line, nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2) // the payload and its CRLF
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return "$" + string(buf[:n]), nil
	default:
		return "", fmt.Errorf("reply type %q is not supported by redistest.Do", line[0])
	}
}

// logText is what the processes of s have logged, for failure messages.
func (s *Server) logText() string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return fmt.Sprintf("(no redis-server log: %v)", err)
	}
	return "redis-server log:\n" + string(b)
}

package redistest

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: each
// process's reaper must have returned by the time its test ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestStartAnswers checks the address forms and that PING, SET and GET work
// through Do, with the reply kinds Do reads.
func TestStartAnswers(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q, want 127.0.0.1:<port>", s.Addr)
	}
	if want := "redis://" + s.Addr + "/0"; s.URL() != want {
		t.Fatalf("URL() = %q, want %q", s.URL(), want)
	}
	if s.PID() <= 0 {
		t.Fatalf("PID() = %d, want a process id", s.PID())
	}
	for _, c := range []struct {
		args   []string
		want   string
		prefix bool // want is only the start of the reply
	}{
		{[]string{"PING"}, "+PONG", false},
		{[]string{"SET", "k", "a value\r\nwith a CRLF"}, "+OK", false},
		{[]string{"GET", "k"}, "$a value\r\nwith a CRLF", false},
		{[]string{"GET", "missing"}, "(nil)", false},
		{[]string{"SET", "empty", ""}, "+OK", false},
		{[]string{"GET", "empty"}, "$", false},
		{[]string{"DBSIZE"}, ":2", false},
		{[]string{"NOSUCHCOMMAND"}, "-ERR ", true},
	} {
		got := s.Do(t, c.args...)
		if got != c.want && !(c.prefix && strings.HasPrefix(got, c.want)) {
			t.Errorf("Do(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// TestRestartSamePortEmpty checks that Restart comes back on the same port
// as a new process with no keys.
func TestRestartSamePortEmpty(t *testing.T) {
	s := Start(t)
	addr, pid := s.Addr, s.PID()
	s.Do(t, "SET", "k", "v")
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("Addr after Restart = %q, want %q", s.Addr, addr)
	}
	if s.PID() == pid || s.PID() <= 0 {
		t.Fatalf("PID after Restart = %d, want a new process (was %d)", s.PID(), pid)
	}
	if got := s.Do(t, "DBSIZE"); got != ":0" {
		t.Fatalf("DBSIZE after Restart = %q, want :0", got)
	}
	// Restart after Kill starts it again too.
	s.Kill()
	s.Restart(t)
	if got := s.Do(t, "PING"); got != "+PONG" {
		t.Fatalf("PING after Kill and Restart = %q, want +PONG", got)
	}
}

// TestKillRefusesDials checks that after Kill the process is gone and its
// port refuses connections.
func TestKillRefusesDials(t *testing.T) {
	s := Start(t)
	pid := s.PID()
	s.Kill()
	if s.PID() != 0 {
		t.Fatalf("PID after Kill = %d, want 0", s.PID())
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("process %d still exists after Kill", pid)
	}
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s after Kill succeeded, want it refused", s.Addr)
	}
	s.Kill() // a second Kill is a no-op
}

// TestStopCont checks that a stopped server accepts (the kernel completes
// the handshake) but does not answer until continued.
func TestStopCont(t *testing.T) {
	s := Start(t)
	s.Stop()
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		t.Fatalf("dial a stopped server: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		t.Fatalf("write PING: %v", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("a stopped server answered %q", buf[:n])
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read from a stopped server: %v, want a timeout", err)
	}
	s.Cont()
	if err := c.SetReadDeadline(time.Now().Add(doWithin)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "+PONG\r\n" {
		t.Fatalf("after Cont read %q, %v; want +PONG", buf[:n], err)
	}
}

// TestMissingBinary checks the skip when redis-server is not on PATH, in a
// subtest so that the skip is its own. With CI=true that case fails instead,
// which this test cannot observe without failing, so it runs only without CI.
func TestMissingBinary(t *testing.T) {
	if os.Getenv("CI") == "true" {
		t.Skip("CI=true: a missing redis-server fails the test, which cannot be checked from inside it")
	}
	t.Setenv("PATH", t.TempDir())
	var skipped bool
	t.Run("start", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Start(t)
	})
	if !skipped {
		t.Fatal("Start without redis-server on PATH did not skip")
	}
}

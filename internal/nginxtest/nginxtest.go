// Package nginxtest runs the shipped nginx configuration, deploy/nginx/dugout.conf,
// through a real nginx in front of dugout processes on loopback, for the tests
// that must see what players see through the proxy: deploy/ today, and the
// cluster tests (many nodes, one address) after it.
//
// The configuration under test is the shipped file itself, not a copy: Start
// reads it and changes only what a test must (render says each change and
// why), so an edit to the file is an edit to what the tests exercise.
package nginxtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// workers is how many worker processes the test nginx runs: more than one, so
// that what the workers share (the upstream zone, least_conn's counts) is
// exercised, and no more, for a two-core machine.
const workers = 2

// Timing. startWithin and stopWithin bound nginx's start and its fast
// shutdown; a loopback start takes a few milliseconds.
const (
	startWithin = 10 * time.Second
	stopWithin  = 10 * time.Second
)

// Nginx is one nginx master process (and its workers) run for a test.
type Nginx struct {
	// set at construction
	Addr string // 127.0.0.1:port it listens on
	dir  string // everything of this nginx's: config, logs, pid, temp
	conf string // the rendered configuration's path
	port int
	cmd  *exec.Cmd

	// closed once Wait has returned; err is valid after that
	exited chan struct{}
	err    error
}

// Access is one line of the test's access log: what a client asked, what
// nginx answered, and every node nginx tried for it, in order.
type Access struct {
	Request        string `json:"request"`         // "GET /ws HTTP/1.1"
	Status         int    `json:"status,string"`   // what the client got: 101 for a WebSocket
	Upstream       string `json:"upstream"`        // "127.0.0.1:41000, 127.0.0.1:41002"
	UpstreamStatus string `json:"upstream_status"` // "503, 101": the first node refused, the next took it
}

// Binary returns the nginx to run. A machine without one skips the test,
// naming the Debian package, unless CI=true: there a missing prerequisite is
// a broken machine, not a reason to pass.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	const sbin = "/usr/sbin/nginx" // Debian's, outside a non-root PATH
	if _, err := os.Stat(sbin); err == nil {
		return sbin
	}
	msg := "nginx is not installed (Debian: apt-get install -y nginx)"
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and " + msg)
	}
	t.Skip(msg)
	return ""
}

// ConfPath is the shipped configuration's path, found from this file's location.
func ConfPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "nginx", "dugout.conf")
}

// Start runs nginx with the shipped configuration in front of upstreams
// (host:port each, in the order given) and waits until it accepts
// connections. It is stopped, by its PID, when the test ends.
func Start(t testing.TB, upstreams []string) *Nginx {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	var n *Nginx
	var err error
	// The port is picked free and then handed to nginx, so another process
	// may take it in between: a start that finds it taken tries another.
	for attempt := 0; attempt < 3; attempt++ {
		n, err = start(t, bin, dir, upstreams)
		if err == nil {
			return n
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("nginx did not start: %v", err)
	return nil
}

// start makes one attempt at Start on a fresh port. The process, once
// started, is stopped at cleanup whatever the outcome.
func start(t testing.TB, bin, dir string, upstreams []string) (*Nginx, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &Nginx{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, port: port,
		conf: filepath.Join(dir, "nginx.conf"), exited: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o755); err != nil {
		return nil, err
	}
	if err := n.write(upstreams); err != nil {
		return nil, err
	}
	if out, err := exec.Command(bin, n.args("-t")...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nginx -t: %v\n%s\nconfiguration:\n%s", err, out, n.confText())
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		return nil, err
	}
	defer stderr.Close() // the child has its own copy
	// A file, not a pipe: no goroutine copies it, and workers that hold it
	// cannot keep Wait from returning.
	n.cmd = exec.Command(bin, n.args("-g", "daemon off;")...)
	n.cmd.Stdout, n.cmd.Stderr = stderr, stderr
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { n.err = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(n.stop)
	if err := n.waitListening(time.Now().Add(startWithin)); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, n.Log())
	}
	return n, nil
}

// args is nginx's command line for this instance, then extra: -p keeps every
// relative path (and the compiled-in prefix) inside dir, -e sends the start-up
// errors, before the configuration is read, to the error log too.
func (n *Nginx) args(extra ...string) []string {
	return append([]string{"-p", n.dir + "/", "-c", n.conf, "-e", filepath.Join(n.dir, "error.log")}, extra...)
}

// write renders the shipped configuration for upstreams into n.conf.
func (n *Nginx) write(upstreams []string) error {
	shipped, err := os.ReadFile(ConfPath())
	if err != nil {
		return fmt.Errorf("the shipped configuration: %w", err)
	}
	text, err := render(string(shipped), n.dir, n.port, upstreams)
	if err != nil {
		return fmt.Errorf("%s: %w", ConfPath(), err)
	}
	return os.WriteFile(n.conf, []byte(text), 0o644)
}

// confText is the rendered configuration, for failure messages.
func (n *Nginx) confText() string {
	b, _ := os.ReadFile(n.conf)
	return string(b)
}

// freePort asks the kernel for a loopback port nobody holds at this instant.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitListening returns once a TCP connection to n.Addr is accepted. The
// master opens the listening socket before it starts the workers, and a
// connection made meanwhile waits in the backlog for the first worker, so
// from then on a request is answered. The probe sends no request: it shows in
// no log and costs the upstreams nothing.
func (n *Nginx) waitListening(deadline time.Time) error {
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("nginx exited at start: %v", n.err)
		default:
		}
		c, err := net.DialTimeout("tcp", n.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx accepted no connection on %s within %s: %v", n.Addr, startWithin, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PID is the master process's id.
func (n *Nginx) PID() int { return n.cmd.Process.Pid }

// URL returns an http:// URL for path through nginx.
func (n *Nginx) URL(path string) string { return "http://" + n.Addr + path }

// WSURL returns the ws:// URL of /ws through nginx.
func (n *Nginx) WSURL() string { return "ws://" + n.Addr + "/ws" }

// Log is nginx's error log and anything it wrote to stderr, for failure messages.
func (n *Nginx) Log() string {
	var b strings.Builder
	for _, name := range []string{"stderr.log", "error.log"} {
		if data, err := os.ReadFile(filepath.Join(n.dir, name)); err == nil && len(data) > 0 {
			fmt.Fprintf(&b, "--- nginx %s\n%s", name, data)
		}
	}
	return b.String()
}

// AccessLog returns every access log line written so far. nginx writes a
// line when a request ends, and a WebSocket's request ends when it closes.
func (n *Nginx) AccessLog(t testing.TB) []Access {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dir, "access.log"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1] // a line being written is not yet a line
	var out []Access
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var a Access
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, a)
	}
	return out
}

// Reload points nginx at upstreams instead, the way an operator does it: the
// configuration is rewritten and checked, the master gets SIGHUP, and Reload
// returns once every old worker has stopped accepting. Old workers keep the
// WebSockets they hold until those close; every new connection is the new
// configuration's.
func (n *Nginx) Reload(t testing.TB, upstreams []string) {
	t.Helper()
	if err := n.write(upstreams); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(n.cmd.Path, n.args("-t")...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	before := n.errorLogCount("gracefully shutting down")
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP to nginx %d: %v", n.PID(), err)
	}
	// An old worker logs this line and closes its listening sockets in one
	// step of its loop, so once every old worker has logged it, only new
	// workers accept.
	deadline := time.Now().Add(startWithin)
	for n.errorLogCount("gracefully shutting down") < before+workers {
		select {
		case <-n.exited:
			t.Fatalf("nginx exited on reload: %v\n%s", n.err, n.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx's old workers did not stop accepting within %s of SIGHUP\n%s", startWithin, n.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// errorLogCount counts the error log's lines that contain s.
func (n *Nginx) errorLogCount(s string) int {
	data, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return bytes.Count(data, []byte(s))
}

// stop ends nginx by its PID: SIGTERM is nginx's fast shutdown (the master
// stops its workers, which drop their connections, and exits last). Should
// that not finish, the master and its workers are killed by their PIDs.
func (n *Nginx) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return
	case <-time.After(stopWithin):
	}
	children := childPIDs(n.PID()) // before the master goes: then they are init's
	_ = n.cmd.Process.Kill()
	for _, pid := range children {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-n.exited
}

// childPIDs lists pid's children, from /proc (Linux only; none elsewhere).
func childPIDs(pid int) []int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// The changes render makes to the shipped file. Each must match: a file whose
// shape has moved on fails here, loudly, instead of running something else.
var (
	// The node list: every server line inside "upstream dugout { ... }".
	upstreamBlock = regexp.MustCompile(`(?ms)^[ \t]*upstream\s+dugout\s*\{.*?^[ \t]*\}`)
	serverLine    = regexp.MustCompile(`(?m)^([ \t]*)server\s+(\S+)([^;]*);[^\n]*\n`)
	// The public listeners (listen 80; the TLS one is a comment).
	listenLine = regexp.MustCompile(`(?m)^([ \t]*)listen\s+[^;]*;`)
	// Log paths under /var/log, which a test neither may nor should write.
	accessLogLine = regexp.MustCompile(`(?m)^([ \t]*)access_log\s+[^;]*;`)
	errorLogLine  = regexp.MustCompile(`(?m)^([ \t]*)error_log\s+[^;]*;`)
)

// render turns the shipped file, which is an http-context file for
// /etc/nginx/conf.d/, into a whole configuration for one test, in dir:
//
//  1. the upstream's server lines become one line per address in upstreams,
//     each with the parameters (max_fails=..., fail_timeout=...) of the first
//     shipped line, so the health settings under test are the shipped ones;
//  2. every listen directive becomes one on 127.0.0.1:port (the shipped file
//     listens on :80, and its TLS listener is a comment);
//  3. the access log goes to dir/access.log in a JSON format of the fields a
//     test reads (which node took a request, after which refusals), and any
//     error log to dir/error.log;
//  4. it is wrapped in what Debian's /etc/nginx/nginx.conf would give it: the
//     main and events contexts (pid and logs under dir, no daemon: -g says
//     so) and an http block whose temporary files are under dir.
//
// Nothing else changes: map, timeouts, headers, failover and locations are
// the shipped file's, byte for byte.
func render(shipped, dir string, port int, upstreams []string) (string, error) {
	if len(upstreams) == 0 {
		return "", fmt.Errorf("no upstreams given")
	}
	block := upstreamBlock.FindString(shipped)
	if block == "" {
		return "", fmt.Errorf(`no "upstream dugout { ... }" block`)
	}
	first := serverLine.FindStringSubmatch(block)
	if first == nil {
		return "", fmt.Errorf("no server line in the upstream block")
	}
	indent, params := first[1], first[3]
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "%sserver %s%s;\n", indent, u, params)
	}
	replaced := false
	newBlock := serverLine.ReplaceAllStringFunc(block, func(string) string {
		if replaced {
			return ""
		}
		replaced = true
		return servers.String()
	})
	out := strings.Replace(shipped, block, newBlock, 1)

	if !listenLine.MatchString(out) {
		return "", fmt.Errorf("no listen directive")
	}
	listened := false
	out = listenLine.ReplaceAllStringFunc(out, func(m string) string {
		indent := listenLine.FindStringSubmatch(m)[1]
		if listened {
			return indent + "# (a further listen, dropped for the test)"
		}
		listened = true
		return fmt.Sprintf("%slisten 127.0.0.1:%d;", indent, port)
	})

	if !accessLogLine.MatchString(out) {
		return "", fmt.Errorf("no access_log directive")
	}
	out = accessLogLine.ReplaceAllString(out, "${1}access_log "+filepath.Join(dir, "access.log")+" nginxtest;")
	out = errorLogLine.ReplaceAllString(out, "${1}error_log "+filepath.Join(dir, "error.log")+" notice;")

	return wrap(dir, out), nil
}

// wrap puts the http-context text inside a whole configuration in dir.
// Notice is the error log's level because Reload reads the workers' notices.
// Run as root, nginx would start its workers as nobody, who cannot enter a
// test's temporary directory; they run as root then, as the test does.
func wrap(dir, httpText string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Rendered by internal/nginxtest from %s for one test; see render.\n", ConfPath())
	if os.Geteuid() == 0 {
		b.WriteString("user root;\n")
	}
	fmt.Fprintf(&b, "worker_processes %d;\n", workers)
	fmt.Fprintf(&b, "pid %s;\n", filepath.Join(dir, "nginx.pid"))
	fmt.Fprintf(&b, "error_log %s notice;\n", filepath.Join(dir, "error.log"))
	b.WriteString("events {\n    worker_connections 1024;\n}\n")
	b.WriteString("http {\n")
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", kind, filepath.Join(dir, "temp", kind))
	}
	b.WriteString(`    log_format nginxtest escape=json '{"request":"$request","status":"$status",` +
		`"upstream":"$upstream_addr","upstream_status":"$upstream_status"}';` + "\n")
	b.WriteString("# ---- deploy/nginx/dugout.conf, rendered\n")
	b.WriteString(httpText)
	b.WriteString("# ---- end of deploy/nginx/dugout.conf\n}\n")
	return b.String()
}

// Package redistest starts private redis-server processes (a single server or a small
// cluster) on free loopback ports for tests. It is the only way tests in this module reach
// Redis: never a fixed port, never the system Redis, never a mock. Not for production code.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// waitLimit bounds every wait of this package (start, restart, cluster formation).
const waitLimit = 10 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	t    testing.TB
	port int
	dir  string
	args []string // extra config arguments (cluster mode)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	out  *lockedWriter // the process's stdout and stderr, for error messages
}

// binary returns the path of the named redis program, skipping (or failing under CI=true) the test
// when it is not installed.
func binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("%s not found: apt-get install redis-server", name))
	}
	return p
}

// Start launches a private redis-server on a free 127.0.0.1 port with persistence off and
// its own temporary directory. It is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil)
}

func start(t testing.TB, args func(port int) []string) *Server {
	t.Helper()
	bin := binary(t, "redis-server")
	dir := t.TempDir()
	var lastErr error
	// A port found free can be taken by someone else before redis binds it; try again.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s := &Server{t: t, port: port, dir: dir}
		if args != nil {
			s.args = args(port)
		}
		if lastErr = s.launch(bin); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// freePort asks the kernel for a free port on 127.0.0.1 and releases it.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// launch starts the process and waits until it answers on its port.
func (s *Server) launch(bin string) error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--protected-mode", "no",
		"--loglevel", "warning",
	}
	args = append(args, s.args...)
	cmd := exec.Command(bin, args...)
	out := &lockedWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()

	deadline := time.Now().Add(waitLimit)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, out.String())
		default:
		}
		// Answering is not enough: another test's server may have taken the port meanwhile.
		if pid, err := serverPID(s.Addr()); err == nil {
			if pid == cmd.Process.Pid {
				return nil
			}
			s.kill()
			return fmt.Errorf("port %d answered by another redis-server (pid %d)", s.port, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("redis-server on port %d did not answer PING within %s", s.port, waitLimit)
}

// serverPID asks the server at addr for its process id.
func serverPID(addr string) (int, error) {
	info, err := command(addr, "INFO", "server")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// command sends one inline command and returns the first line of the reply, or for a bulk
// string its whole body. It needs no client library so the helper can probe a node that a
// go-redis client would route elsewhere (a cluster node).
func command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(strings.Join(args, " ") + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("bad bulk header %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return strings.TrimPrefix(line, "+"), nil
}

// Addr is "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is "redis://127.0.0.1:port/0".
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Stop kills the server (SIGKILL, so clients see an abrupt outage) and waits for it to exit.
// The port stays the server's for Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() { s.kill() }

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(waitLimit):
		s.t.Errorf("redistest: redis-server on port %d did not exit within %s", s.port, waitLimit)
	}
}

// Freeze stops the server's process with SIGSTOP, as a fork of a large dataset, an fsync or
// a CPU-starved host stalls Redis: its sockets stay open and the kernel keeps accepting bytes
// and connections, but nothing is answered. The returned thaw resumes it (SIGCONT); it is
// safe to call more than once and runs when the test ends anyway, so a failing test never
// leaves a stopped process behind.
func (s *Server) Freeze() (thaw func()) {
	s.t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatalf("redistest: freeze redis-server on port %d: not running", s.port)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("redistest: SIGSTOP redis-server on port %d: %v", s.port, err)
	}
	var once sync.Once
	thaw = func() {
		once.Do(func() { _ = cmd.Process.Signal(syscall.SIGCONT) })
	}
	s.t.Cleanup(thaw)
	return thaw
}

// Restart starts the server again on the same port, with an empty dataset (unless it was
// started with persistence, see StartWith), and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	bin := binary(s.t, "redis-server")
	var err error
	// The old socket may linger briefly; redis sets SO_REUSEADDR, a retry covers the rest.
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.launch(bin); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on port %d: %v", s.port, err)
}

// Client is a go-redis client of this server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// lockedWriter collects the process output; exec writes to it from its own goroutine.
type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// StartWith is Start with extra redis-server arguments, kept across Restart: for example
// "--appendonly", "yes", "--appendfsync", "always" for a server whose data survives a kill.
func StartWith(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, func(int) []string { return args })
}

package e2e_test

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
)

// The real binary, built once per run of the suite, for the tests that need a process:
// signals, exit codes, subcommands, `make run` with no configuration at all.

var built struct {
	once sync.Once
	dir  string
	path string
	err  error
	out  []byte
}

// serviceBinary builds ./cmd/websocket-service (once) and returns its path. The race
// detector is left out: the process is tested from outside, and a plain build is quicker.
func serviceBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "websocket-service-e2e-")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "websocket-service")
		cmd := exec.Command("go", "build", "-o", built.path, "github.com/huleedu/websocket-service/cmd/websocket-service")
		built.out, built.err = cmd.CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("go build ./cmd/websocket-service: %v\n%s", built.err, built.out)
	}
	return built.path
}

// cleanupBinaries removes the build directory (from TestMain).
func cleanupBinaries() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// freePort finds a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a running websocket-service binary.
type process struct {
	cmd    *exec.Cmd
	addr   string
	out    *syncBuffer
	exited chan struct{}
	err    error // Wait's result, valid once exited is closed
}

// syncBuffer collects the output that exec copies from another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProcess runs the binary with exactly env (nothing inherited) in an empty working
// directory (so no stray .env is read), and waits until /healthz answers on addr.
func startProcess(t *testing.T, env []string, port int, args ...string) *process {
	t.Helper()
	return startProcessIn(t, t.TempDir(), env, port, args...)
}

// startProcessIn is startProcess with dir as the working directory (where a .env is read).
func startProcessIn(t *testing.T, dir string, env []string, port int, args ...string) *process {
	t.Helper()
	cmd := exec.Command(serviceBinary(t), args...)
	cmd.Env = append([]string{}, env...) // never nil: nil would inherit the test's environment
	cmd.Dir = dir
	p := &process{cmd: cmd, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start binary: %v", err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("binary output:\n%s", p.out.String())
		}
	})
	awaitOK(t, "http://"+p.addr+"/healthz", 2*wait, p.exited, p.out.String)
	return p
}

// awaitOK polls url until it answers 200 OK. It ends the test, showing the server's output,
// when exited is closed first (the server died) or within passes.
func awaitOK(t *testing.T, url string, within time.Duration, exited <-chan struct{}, output func() string) {
	t.Helper()
	died := false
	ok := testenv.Until(within, func() bool {
		select {
		case <-exited:
			died = true
			return true
		default:
		}
		return statusOf(url) == http.StatusOK
	})
	switch {
	case died:
		t.Fatalf("server exited before %s answered 200:\n%s", url, output())
	case !ok:
		t.Fatalf("%s not answering 200 within %v:\n%s", url, within, output())
	}
}

// statusOf is the status of GET url, 0 when the request failed. It uses the default client,
// whose idle connections TestMain closes before its leak check.
func statusOf(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// signal sends sig to the process.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits for the process to end and returns its exit code.
func (p *process) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("process still running after %v:\n%s", timeout, p.out.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// runTool runs the binary to completion with env and args and returns its exit code, stdout
// and stderr.
func runTool(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(serviceBinary(t), args...)
	cmd.Env = append([]string{}, env...) // never nil: nil would inherit the test's environment
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start binary: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * wait):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish within %v; stderr:\n%s", args, 2*wait, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

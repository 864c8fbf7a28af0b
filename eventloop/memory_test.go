//go:build linux

package eventloop

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/wsraw"
)

// TestIdleConnectionMemory measures what an idle authenticated connection costs the server:
// the process's Pss before and after N connections, divided by N. The clients run in a child
// process so their own memory is not counted. It is opt-in (it needs N descriptors in each
// process): EVENTLOOP_MEMORY_CONNS=19000 go test -run IdleConnectionMemory -v ./eventloop
func TestIdleConnectionMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("EVENTLOOP_MEMORY_CONNS"))
	if n <= 0 {
		t.Skip("set EVENTLOOP_MEMORY_CONNS=19000 to measure")
	}
	raiseFDLimit(t)
	h := newHarness(t, nil)
	settle := func() int {
		runtime.GC()
		debug.FreeOSMemory()
		return pssKiB(t)
	}
	before := settle()
	defer holdClients(t, h, n, false)()
	after := settle()
	per := float64(after-before) * 1024 / float64(n)
	t.Logf("%d idle connections: Pss %d KiB -> %d KiB, %.0f bytes per connection", n, before, after, per)
	if per > 3072 {
		t.Errorf("%.0f bytes per idle connection, over the 3 KiB goal", per)
	}
}

// TestIdleConnectionHeap guards what an idle authenticated connection keeps on the engine's
// heap (its conn, its registry entries, its identity; the breakdown is in docs/DESIGN.md,
// "Memory per connection"): live heap after a GC, before and after a few thousand
// connections of distinct users, each in a group of many, divided by their number. The
// clients run in a child process so their memory is not counted.
func TestIdleConnectionHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	const n = 3000
	raiseFDLimit(t)
	h := newHarness(t, nil)
	settle := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := settle()
	defer holdClients(t, h, n, true)()
	after := settle()
	per := float64(int64(after)-int64(before)) / n
	t.Logf("%d idle connections: %.0f bytes of live heap each", n, per)
	if per > maxHeapPerConn {
		t.Errorf("%.0f bytes of live heap per idle connection, over %d", per, maxHeapPerConn)
	}
}

// maxHeapPerConn bounds TestIdleConnectionHeap's figure with room for runtime versions and
// the race detector (228 bytes measured, 236 under -race); docs/DESIGN.md has the breakdown.
const maxHeapPerConn = 270

// holdClients opens n upgraded connections to h from a child process (TestMemoryHelperClients)
// and returns once the engine has registered them all; the returned func closes them. With
// unique, each connection has a user of its own, else two share one.
func holdClients(t *testing.T, h *harness, n int, unique bool) func() {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^TestMemoryHelperClients$", "-test.v")
	child.Env = append(os.Environ(), "EVENTLOOP_HELPER_ADDR="+h.addr, "EVENTLOOP_HELPER_N="+strconv.Itoa(n), "EVENTLOOP_MEMORY_CONNS=")
	if unique {
		child.Env = append(child.Env, "EVENTLOOP_HELPER_UNIQUE=1")
	}
	stdin, _ := child.StdinPipe()
	stdout, _ := child.StdoutPipe()
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		stdin.Close()
		_ = child.Wait()
	}
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "READY") {
			ready = true
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if !ready {
		stop()
		t.Fatal("client process failed")
	}
	if !testenv.Until(30*time.Second, func() bool { return h.metrics.ConnectionsActive.Get() >= float64(n) }) {
		got := h.metrics.ConnectionsActive.Get()
		stop()
		t.Fatalf("%.0f of %d connections registered", got, n)
	}
	return stop
}

// TestMemoryHelperClients is the client side of TestIdleConnectionMemory, run in a child
// process: it opens N upgraded connections, says READY and holds them until stdin closes.
func TestMemoryHelperClients(t *testing.T) {
	addr := os.Getenv("EVENTLOOP_HELPER_ADDR")
	n, _ := strconv.Atoi(os.Getenv("EVENTLOOP_HELPER_N"))
	if addr == "" || n <= 0 {
		t.Skip("helper process for TestIdleConnectionMemory")
	}
	raiseFDLimit(t)
	minter, err := auth.NewMinter("HS256", testSecret, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 0, n)
	for i := range n {
		user := i % (n/2 + 1)
		if os.Getenv("EVENTLOOP_HELPER_UNIQUE") != "" {
			user = i
		}
		tok, err := minter.Mint(fmt.Sprintf("user-%d", user), []string{"class-" + strconv.Itoa(i%100)}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := wsraw.Dial(addr, "/ws?token="+tok, wsraw.Options{})
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if c.Response.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %d: %s", i, c.Response.Status)
		}
		conns = append(conns, c.Conn) // the socket alone: its read buffer need not stay

	}
	fmt.Println("READY")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

func raiseFDLimit(t *testing.T) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

// pssKiB reads the process's proportional set size.
func pssKiB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("Pss:")); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(rest)), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatal("no Pss in smaps_rollup")
	return 0
}

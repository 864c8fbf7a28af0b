package e2e_test

// The drain test runs the real binary, not the in-process service: what it proves is what a
// Kubernetes pod deletion does (SIGTERM to the process), including signal handling and the
// exit code, which no in-process test can see.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/server"
)

const (
	// drainClients connect to node A before it is told to stop.
	drainClients = 50
	// drainWindow is SHUTDOWN_DRAIN_TIMEOUT for node A.
	drainWindow = 3 * time.Second
	// exitMargin is how long after the window A may take to unsubscribe, close Redis and exit.
	exitMargin = 2 * time.Second
	// readinessDeadline is how soon after SIGTERM /readyz must answer 503, so that
	// Kubernetes stops routing upgrades to the pod at its next probe.
	readinessDeadline = 200 * time.Millisecond
	// publishEvery is the period of the publisher's rounds (one message to every user).
	publishEvery = 25 * time.Millisecond
)

// readyStatus is the status of GET /readyz on addr, 0 when the request failed.
func readyStatus(addr string) int { return statusOf("http://" + addr + server.PathReadyz) }

// startReadyNode runs the binary on a free port with vars and waits until /readyz answers 200
// (startProcess waits for /healthz only; ready also means Redis is connected).
func startReadyNode(t *testing.T, vars ...string) *process {
	t.Helper()
	port := freePort(t)
	p := startProcess(t, prefixed(append(vars, "HOST", "127.0.0.1", "PORT", strconv.Itoa(port))...), port)
	awaitOK(t, "http://"+p.addr+server.PathReadyz, 2*wait, p.exited, p.out.String)
	return p
}

// notification is the payload the publisher sends; the service forwards it verbatim.
type notification struct {
	Type      string `json:"type"`
	EventType string `json:"event_type"`
	Data      struct {
		Seq int `json:"seq"`
	} `json:"data"`
}

func payload(seq int) string {
	return fmt.Sprintf(`{"type":"notification","event_type":"drain_probe","data":{"seq":%d}}`, seq)
}

func seqOf(t *testing.T, text string) int {
	t.Helper()
	var n notification
	if err := json.Unmarshal([]byte(text), &n); err != nil {
		t.Fatalf("message %q is not the published notification: %v", text, err)
	}
	return n.Data.Seq
}

// publishLog records when each message to each user was handed to Redis.
type publishLog struct {
	mu     sync.Mutex
	sentAt map[string][]time.Time // user → send time by seq (index seq-1)
}

func (p *publishLog) record(user string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sentAt[user] = append(p.sentAt[user], at)
}

// rounds counts the messages to user sent after since.
func (p *publishLog) rounds(user string, since time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, at := range p.sentAt[user] {
		if at.After(since) {
			n++
		}
	}
	return n
}

// reconnect is what a client did after node A closed it.
type reconnect struct {
	code     uint16
	closedAt time.Time
	client   *servicetest.Client // on node B; nil when the dial failed
	openAt   time.Time
	err      error
}

func TestSIGTERMDrainsOverTheWindowAndClientsResumeOnAnotherNode(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		rds := redistest.Start(t)
		testDrain(t, rds, engine)
	})
}

func testDrain(t *testing.T, rds *redistest.Server, engine string) {
	vars := []string{
		"ENGINE", engine,
		"REDIS_URL", rds.URL(),
		"JWT_SECRET_KEY", testSecret,
		"SHUTDOWN_DRAIN_TIMEOUT", strconv.Itoa(int(drainWindow / time.Second)),
		"LOG_LEVEL", "WARNING",
	}
	a := startReadyNode(t, vars...)
	b := startReadyNode(t, vars...)
	var aExitedAt time.Time
	aExited := make(chan struct{})
	go func() {
		<-a.exited
		aExitedAt = time.Now()
		close(aExited)
	}()

	users := make([]string, drainClients)
	tokens := make([]string, drainClients)
	clients := make([]*servicetest.Client, drainClients)
	for i := range users {
		users[i] = fmt.Sprintf("drain-%s-%d", engine, i)
		tokens[i] = mint(t, testSecret, users[i])
		clients[i] = servicetest.Dial(t, wsURL(a.addr, tokens[i]))
	}

	// Round 0, published and received before the stop: proves the clients and A's Redis
	// subscriptions work, so a later failure is about the drain.
	rdb := rds.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, u := range users {
		if err := rdb.Publish(ctx, "ws:"+u, payload(0)).Err(); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	for i, c := range clients {
		if seq := seqOf(t, c.NextText(t, 5*time.Second)); seq != 0 {
			t.Fatalf("client %d got seq %d before the drain, want 0", i, seq)
		}
	}

	// The publisher: every publishEvery, seq n to every user, recording when each PUBLISH
	// was issued.
	log := &publishLog{sentAt: map[string][]time.Time{}}
	stopPublishing := make(chan struct{})
	published := make(chan int, 1)
	go func() {
		seq := 0
		defer func() { published <- seq }()
		tick := time.NewTicker(publishEvery)
		defer tick.Stop()
		for {
			select {
			case <-stopPublishing:
				return
			case <-tick.C:
			}
			seq++
			for _, u := range users {
				log.record(u, time.Now())
				if err := rdb.Publish(ctx, "ws:"+u, payload(seq)).Err(); err != nil {
					t.Errorf("publish seq %d: %v", seq, err)
					return
				}
			}
		}
	}()

	// Node A's readiness, polled from before the signal on.
	notReady := make(chan time.Time, 1)
	stopPolling := make(chan struct{})
	go func() {
		var at time.Time
		testenv.Until(time.Minute, func() bool {
			select {
			case <-stopPolling:
				return true
			default:
			}
			if readyStatus(a.addr) == http.StatusServiceUnavailable {
				at = time.Now()
				return true
			}
			return false
		})
		if !at.IsZero() {
			notReady <- at
		}
	}()
	defer close(stopPolling)

	// Each client, once A closes it, reconnects to B at once, as the frontend does.
	results := make([]reconnect, drainClients)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-c.Done():
			case <-time.After(drainWindow + exitMargin + 5*time.Second):
				results[i] = reconnect{err: errors.New("node A never closed the connection")}
				return
			}
			// Closed already, so WaitClose returns at once (it cannot time out here, which
			// matters: it would call t.Fatal off the test goroutine).
			code, _ := c.WaitClose(t, time.Minute)
			r := reconnect{code: code, closedAt: c.ClosedAt()}
			r.client, r.err = servicetest.TryDial(wsURL(b.addr, tokens[i]))
			r.openAt = time.Now()
			if r.err == nil {
				t.Cleanup(func() { r.client.Conn.NetConn().Close() })
			}
			results[i] = r
		}()
	}

	// The publisher runs against A when the signal comes. (No t.Fatal while it runs: it would
	// report to a finished test.)
	if !testenv.Until(wait, func() bool { return log.rounds(users[len(users)-1], time.Time{}) >= 3 }) {
		close(stopPublishing)
		<-published
		t.Fatalf("the publisher did not complete three rounds against A within %v", wait)
	}
	sigterm := time.Now()
	a.signal(t, syscall.SIGTERM)

	select {
	case at := <-notReady:
		if d := at.Sub(sigterm); d > readinessDeadline {
			t.Errorf("A's %s answered 503 %v after SIGTERM, want within %v", server.PathReadyz, d, readinessDeadline)
		} else {
			t.Logf("A's %s answered 503 %v after SIGTERM", server.PathReadyz, d.Round(time.Millisecond))
		}
	case <-time.After(drainWindow):
		t.Errorf("A's %s never answered 503 during the drain", server.PathReadyz)
	}

	select {
	case <-aExited:
		took := aExitedAt.Sub(sigterm)
		t.Logf("A exited %v after SIGTERM (window %v)", took.Round(time.Millisecond), drainWindow)
		if a.err != nil {
			t.Errorf("A exited with %v, want exit status 0", a.err)
		}
		if took > drainWindow+exitMargin {
			t.Errorf("A took %v to exit, want at most the %v window + %v", took, drainWindow, exitMargin)
		}
	case <-time.After(drainWindow + exitMargin + wait):
		t.Fatalf("A still running %v after SIGTERM", drainWindow+exitMargin+wait)
	}

	wg.Wait()
	// A few more rounds, every user's sent after the last reconnect, for checkResumed to
	// expect on B.
	var lastOpen time.Time
	for _, r := range results {
		if r.openAt.After(lastOpen) {
			lastOpen = r.openAt
		}
	}
	if !testenv.Until(wait, func() bool { return log.rounds(users[0], lastOpen) >= 3 }) {
		t.Errorf("the publisher did not start three rounds after the last reconnect within %v", wait)
	}
	close(stopPublishing)
	lastSeq := <-published
	if t.Failed() {
		return
	}

	checkCloses(t, results, sigterm)
	checkResumed(t, results, users, log, lastSeq)
}

// checkCloses: every client was closed with 1001, the closes spread over the drain window
// instead of arriving all at once, and all within it.
func checkCloses(t *testing.T, results []reconnect, sigterm time.Time) {
	t.Helper()
	offsets := make([]time.Duration, 0, len(results))
	for i, r := range results {
		if r.closedAt.IsZero() {
			t.Errorf("client %d: %v", i, r.err)
			continue
		}
		if r.code != 1001 {
			t.Errorf("client %d closed with %d, want 1001 (going away)", i, r.code)
		}
		offsets = append(offsets, r.closedAt.Sub(sigterm))
	}
	if len(offsets) == 0 {
		return
	}
	slices.Sort(offsets)
	first, last := offsets[0], offsets[len(offsets)-1]
	t.Logf("closes from %v to %v after SIGTERM (window %v)", first.Round(time.Millisecond), last.Round(time.Millisecond), drainWindow)
	if spread := last - first; spread < drainWindow/2 {
		t.Errorf("closes spread over %v, want at least half the %v window (a stampede otherwise)", spread, drainWindow)
	}
	if last > drainWindow+500*time.Millisecond {
		t.Errorf("last close %v after SIGTERM, past the %v window", last, drainWindow)
	}
	// No tenth of the window may hold more than a quarter of the closes.
	buckets := make([]int, 10)
	for _, o := range offsets {
		buckets[min(max(int(o*10/drainWindow), 0), 9)]++
	}
	if busiest := slices.Max(buckets); busiest > len(offsets)/4 {
		t.Errorf("%d of %d closes fell in one tenth of the window: %v", busiest, len(offsets), buckets)
	}
}

// checkResumed: every client reconnected to B and received, in order, every message
// published to its user after its reconnect completed.
func checkResumed(t *testing.T, results []reconnect, users []string, log *publishLog, lastSeq int) {
	t.Helper()
	var lastOpen time.Time
	for i, r := range results {
		if r.err != nil || r.client == nil {
			t.Errorf("client %d could not reconnect to B: %v", i, r.err)
			continue
		}
		if r.openAt.After(lastOpen) {
			lastOpen = r.openAt
		}
		log.mu.Lock()
		sent := log.sentAt[users[i]]
		log.mu.Unlock()
		var want []int
		for s, at := range sent {
			if at.After(r.openAt) {
				want = append(want, s+1)
			}
		}
		if len(want) == 0 {
			t.Errorf("client %d: no message was published after its reconnect; the test proves nothing", i)
			continue
		}
		got := receiveUpTo(t, i, r.client, lastSeq)
		if !slices.IsSorted(got) {
			t.Errorf("client %d received out of order on B: %v", i, got)
		}
		for _, s := range want {
			if !slices.Contains(got, s) {
				t.Errorf("client %d missed seq %d published %v after it reconnected (got %s)", i, s,
					log.sentAt[users[i]][s-1].Sub(r.openAt).Round(time.Microsecond), summarize(got))
				break
			}
		}
	}
	t.Logf("%d clients reconnected to B; %d publish rounds; each got every message published after its reconnect", len(results), lastSeq)
}

// receiveUpTo reads client i's messages on B until seq last, the final round, arrives.
func receiveUpTo(t *testing.T, i int, c *servicetest.Client, last int) []int {
	t.Helper()
	var got []int
	complete := false
	// NextText ends the test when a message does not come; say which client and how far it got.
	defer func() {
		if !complete {
			t.Logf("client %d had received %s on B, waiting for seq %d", i, summarize(got), last)
		}
	}()
	for len(got) == 0 || got[len(got)-1] < last {
		got = append(got, seqOf(t, c.NextText(t, 3*time.Second)))
	}
	complete = true
	return got
}

// summarize shortens a long sequence list for a failure message.
func summarize(seqs []int) string {
	if len(seqs) <= 12 {
		return fmt.Sprint(seqs)
	}
	parts := []string{}
	for _, s := range append(seqs[:6:6], seqs[len(seqs)-6:]...) {
		parts = append(parts, strconv.Itoa(s))
	}
	return "[" + strings.Join(parts[:6], " ") + " … " + strings.Join(parts[6:], " ") + "]"
}

package e2e_test

// Rolling drain with notifications.v2 (issue 10): the clients of a node that is stopped
// resume on another node and lose nothing, published through the API and through FCALL.

import (
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/seqtest"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

const (
	// rollingClients connect to the drained node, per engine, on one Redis and on a cluster:
	// the 1,000 of issue 10, over 100 users, 4 groups and broadcast.
	rollingClients = 1000
	// rollingDrain is node A's SHUTDOWN_DRAIN_TIMEOUT, over which it closes its clients with
	// 1001 (docs/OPERATIONS.md, "Kubernetes"); the publisher runs throughout, so resumes have
	// something to replay. Production's 30 s would only make the test wait; 2 s still spreads
	// the reconnects (500 a second) rather than sending them all at once.
	rollingDrain = 2 * time.Second
	rollingKey   = "rolling-publish-key-0123456789abcdef"
)

// The engines' runs of a topology go in parallel: each is a few seconds of CPU for the test's
// clients and mostly waiting (the drain window, the publisher's rounds), and they share
// nothing (a Redis, two nodes and 1,000 clients each). The two topologies' tests run one after
// the other, so the test process never holds more than 2,000 clients.
func TestRollingDrainV2ClientsResumeOnAnotherNodeLosingNothing(t *testing.T) {
	for _, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			rds := redistest.Start(t)
			testRollingDrain(t, engine, []string{"REDIS_URL", rds.URL()}, noRetryClient(t, rds.Addr()))
		})
	}
}

func TestRollingDrainOnARedisClusterV2ClientsResumeLosingNothing(t *testing.T) {
	for _, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			cl := redistest.StartCluster(t, 3)
			rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1})
			t.Cleanup(func() { _ = rc.Close() })
			testRollingDrain(t, engine, []string{"REDIS_URL", cl.URL(), "REDIS_CLUSTER", "true"}, rc)
		})
	}
}

func testRollingDrain(t *testing.T, engine string, redisVars []string, rdb redis.UniversalClient) {
	vars := append([]string{
		"ENGINE", engine,
		"JWT_SECRET_KEY", testSecret,
		"SHUTDOWN_DRAIN_TIMEOUT", strconv.FormatFloat(rollingDrain.Seconds(), 'f', -1, 64),
		"PUBLISH_API_KEY", rollingKey,
		"MAX_CONNECTIONS_PER_USER", "64",
		"LOG_LEVEL", "WARNING",
	}, redisVars...)
	began := time.Now()
	phase := func(format string, args ...any) {
		t.Logf("%6.1fs "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	a := startReadyNode(t, vars...)
	b := startReadyNode(t, vars...)
	clients, channels := fleet(t, "roll", rollingClients, rollingClients/10, 4, true)
	tokens := map[*relClient]string{}
	for _, c := range clients {
		tokens[c] = mint(t, testSecret, c.sub, c.groups...)
	}
	phase("nodes ready")

	// Through B's API (A stops taking requests) and through FCALL, in turn, from before the
	// clients connect: their first syncs start their streams wherever the publisher is.
	pub := seqtest.New(channels, apiVia(t, "http://"+b.addr, rollingKey), fcallVia(rdb))
	pub.Run(t, 5*time.Millisecond, 2*time.Second, 20_000)
	connectAll(t, clients, func(c *relClient) string { return wsURL(a.addr, tokens[c]) })
	phase("%d v2 clients synced on A", len(clients))
	// A round over every channel live on A, then one after every client resumed on B.
	round := func() {
		total, _ := pub.Counts()
		waitPublished(t, pub, total+len(channels))
	}
	round()

	phase("SIGTERM to A")
	a.signal(t, syscall.SIGTERM)
	resumeOn(t, clients, b.addr, tokens)
	waitSynced(t, clients, 1)
	phase("every client resumed on B")
	select {
	case <-a.exited:
		if a.err != nil {
			t.Errorf("A exited with %v, want 0", a.err)
		}
	case <-time.After(2 * wait):
		t.Errorf("A still running %v after its clients left", 2*wait)
	}
	round()

	checkDelivery(t, pub, clients)
	phase("delivery checked")
	if h := holes(clients); len(h) > 0 {
		t.Errorf("%d recovered:false across a rolling drain, want none: %v", len(h), firstOf(h, 5))
	}
	r, resumers := replayed(clients), 0
	for _, c := range clients {
		if replayed([]*relClient{c}) > 0 {
			resumers++
		}
	}
	t.Logf("resumes on B replayed %d messages to %d clients", r, resumers)
	if r == 0 {
		t.Error("no resume replayed anything: nothing was published while clients moved, the test proves nothing")
	}
}

// resumeOn has each client, once the drained node closes it with 1001, reconnect to addr and
// resume, as the reference client does; it returns once every client has reconnected.
func resumeOn(t *testing.T, clients []*relClient, addr string, tokens map[*relClient]string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-c.closed():
			case <-time.After(rollingDrain + 3*wait):
				errs <- fmt.Errorf("%s: A never closed the connection", c.sub)
				return
			}
			if c.code() != 1001 {
				errs <- fmt.Errorf("%s: closed with %d, want 1001", c.sub, c.code())
			}
			// Like the reference client, retry a failed dial after a backoff (bounded).
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if _, err = c.connect(wsURL(addr, tokens[c])); err == nil {
					return
				}
				time.Sleep(time.Duration(100<<attempt) * time.Millisecond)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

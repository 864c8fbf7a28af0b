package e2e_test

// A v2 client's own network cut (issue 10): toxiproxy, in process, between the client and the
// node. Short cuts resume with nothing lost; one past HISTORY_TTL is told "expired"; one that
// missed more than RECOVERY_MAX_MESSAGES is told "limit" with how many.

import (
	"context"
	"strconv"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/seqtest"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

const (
	cutTTL       = 2  // HISTORY_TTL, seconds
	cutMaxReplay = 20 // RECOVERY_MAX_MESSAGES
)

// cutNode is a node on Redis; small, with a short history TTL and a small replay limit.
func cutNode(t *testing.T, engine string, small bool) (*servicetest.Service, *redistest.Server) {
	t.Helper()
	rds := redistest.Start(t)
	env := map[string]string{}
	if small {
		env["HISTORY_TTL"], env["RECOVERY_MAX_MESSAGES"] = strconv.Itoa(cutTTL), strconv.Itoa(cutMaxReplay)
	}
	return servicetest.Start(t, servicetest.Options{Engine: engine, RedisURL: rds.URL(), Env: env}), rds
}

// cutProxy is a toxiproxy proxy to addr on a free loopback port, stopped when the test ends.
func cutProxy(t *testing.T, addr string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, t.Name(), "127.0.0.1:0", addr)
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// cutFor cuts every connection through p and refuses new ones for d, then lets c reconnect
// through it and resume.
func cutFor(t *testing.T, p *toxiproxy.Proxy, c *relClient, d time.Duration, url string, during func()) {
	t.Helper()
	p.Stop()
	select {
	case <-c.closed():
	case <-time.After(wait):
		t.Fatal("the cut did not end the client's connection")
	}
	end := time.Now().Add(d)
	if during != nil {
		during()
	}
	time.Sleep(time.Until(end)) // the cut itself: nothing to wait for
	if err := p.Start(); err != nil {
		t.Fatalf("toxiproxy restart: %v", err)
	}
	if _, err := c.connect(url); err != nil {
		t.Fatalf("reconnect after the cut: %v", err)
	}
	waitSynced(t, []*relClient{c}, 1)
}

func TestNetworkCutOfTwoSecondsResumesWithNothingLost(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		svc, rds := cutNode(t, engine, false)
		p := cutProxy(t, svc.Addr)
		clients, channels := fleet(t, "cut", 1, 1, 1, true)
		c := clients[0]
		url := "ws://" + p.Listen + "/ws?token=" + svc.Token(t, c.sub, c.groups...)
		connectAll(t, clients, func(*relClient) string { return url })
		pub := seqtest.New(channels, apiVia(t, svc.URL, servicetest.PublishKey), fcallVia(noRetryClient(t, rds.Addr())))
		pub.Run(t, 5*time.Millisecond, time.Second, 20_000)
		waitPublished(t, pub, 30)
		before, _ := pub.Counts()
		cutFor(t, p, c, 2*time.Second, url, nil)
		after, _ := pub.Counts()
		waitPublished(t, pub, after+30)
		checkDelivery(t, pub, clients)
		if h := holes(clients); len(h) > 0 {
			t.Errorf("recovered:false after a 2 s cut, want none: %v", h)
		}
		if r := replayed(clients); r == 0 {
			t.Errorf("the resume replayed nothing though %d messages were published during the cut", after-before)
		}
	})
}

func TestNetworkCutPastTheHistoryTTLIsReportedExpired(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		c, p, url, pub := cutOne(t, engine, "exp")
		ch := "ws:" + c.sub
		publishN(t, pub, ch, 3)
		eventually(t, wait, "the first messages", func() bool { return c.rec.Last(ch) == 3 })
		// Five more while cut off, then quiet for twice the TTL: they expire.
		cutFor(t, p, c, 2*cutTTL*time.Second, url, func() { publishN(t, pub, ch, 5) })
		checkCutSync(t, c, "user", "expired", 5)
	})
}

func TestNetworkCutMissingMoreThanTheReplayLimitIsReportedLimit(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		c, p, url, pub := cutOne(t, engine, "lim")
		ch := "ws:" + c.sub
		const missed = cutMaxReplay + 10
		cutFor(t, p, c, 0, url, func() { publishN(t, pub, ch, missed) })
		checkCutSync(t, c, "user", "limit", missed)
		// Live again after the hole.
		publishN(t, pub, ch, 1)
		eventually(t, wait, "the message after the hole", func() bool { return c.rec.Last(ch) == missed+1 })
		if err := c.rec.Check(pub, ch); err != nil {
			t.Error(err)
		}
	})
}

// cutOne is one v2 client synced through a proxy to a node with a short TTL and a small
// replay limit, its dial URL, and a publisher the test drives by hand.
func cutOne(t *testing.T, engine, name string) (*relClient, *toxiproxy.Proxy, string, *seqtest.Publisher) {
	t.Helper()
	svc, rds := cutNode(t, engine, true)
	p := cutProxy(t, svc.Addr)
	clients, _ := fleet(t, name, 1, 1, 1, true)
	c := clients[0]
	url := "ws://" + p.Listen + "/ws?token=" + svc.Token(t, c.sub, c.groups...)
	connectAll(t, clients, func(*relClient) string { return url })
	return c, p, url, seqtest.New(nil, apiVia(t, svc.URL, servicetest.PublishKey), fcallVia(noRetryClient(t, rds.Addr())))
}

// publishN publishes n sequenced messages on channel, each of which must succeed.
func publishN(t *testing.T, pub *seqtest.Publisher, channel string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := pub.One(ctx, channel, i)
		cancel()
		if err != nil {
			t.Fatalf("publish %d on %s: %v", i, channel, err)
		}
	}
}

// checkCutSync checks the resumed connection's syncs: stream not recovered for reason with
// missed, every other stream recovered.
func checkCutSync(t *testing.T, c *relClient, stream, reason string, missed int) {
	t.Helper()
	c.mu.Lock()
	syncs := append([]syncFrame(nil), c.syncs[1]...)
	c.mu.Unlock()
	for _, s := range syncs {
		switch {
		case s.Stream == stream:
			if s.Recovered || s.Reason != reason || s.Missed != missed {
				t.Errorf("%s: sync %+v, want recovered:false reason %q missed %d", stream, s, reason, missed)
			}
		case !s.Recovered:
			t.Errorf("%s: sync %+v, want recovered:true (nothing was published on it)", s.Stream, s)
		}
	}
	select {
	case <-c.closed():
		t.Errorf("the connection closed (%d) after the sync; it stays open", c.code())
	default:
	}
}

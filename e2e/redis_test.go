package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
)

// docs/PROTOCOL.md "Channels" and docs/OPERATIONS.md "Lifecycle" on the Redis backplane:
// outages, and a fixed set of connections.

func TestRedisOutageMakesReadyz503AndOpenConnectionsReceiveAgainAfterRestart(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, redisBP, nil)
		c := dial(t, n.Service, "u1", "class7")
		other := dial(t, n.Service, "u2")
		waitActive(t, n.Service, 2)
		n.publish(t, user("u1"), `{"before":true}`)
		expectText(t, c, `{"before":true}`)

		n.redis.Stop()
		eventually(t, wait, "/readyz 503 while Redis is down", func() bool {
			status, reason := readyReason(t, n.Service)
			return status == http.StatusServiceUnavailable && strings.Contains(reason, "backplane")
		})
		n.WaitMetric(t, "backplane_connected", 0, wait)
		// Down for 5 s in all; readiness stays 503 throughout.
		outage := time.Now().Add(5 * time.Second)
		for time.Now().Before(outage) {
			if status, body := n.Get(t, "/readyz"); status != http.StatusServiceUnavailable {
				t.Fatalf("/readyz %d %s while Redis is down", status, body)
			}
			time.Sleep(250 * time.Millisecond) // samples the outage, whose length is under test
		}
		n.redis.Restart()
		eventually(t, 3*wait, "/readyz 200 after Redis is back", func() bool {
			status, _ := n.Get(t, "/readyz")
			return status == http.StatusOK
		})
		n.WaitMetric(t, "backplane_connected", 1, wait)
		if got := n.Metric(t, "backplane_reconnects_total"); got < 1 {
			t.Errorf("backplane_reconnects_total = %v after an outage", got)
		}

		// The same connections, never reconnected, receive on every kind of channel.
		stillOpen(t, c)
		stillOpen(t, other)
		n.publish(t, user("u1"), `{"after":"user"}`)
		expectText(t, c, `{"after":"user"}`)
		n.publish(t, group("class7"), `{"after":"group"}`)
		expectText(t, c, `{"after":"group"}`)
		n.publish(t, everyone, `{"after":"all"}`)
		expectText(t, c, `{"after":"all"}`)
		expectText(t, other, `{"after":"all"}`)
		if chans := n.subscriptions(t); len(chans) != 4 {
			t.Errorf("PUBSUB CHANNELS after restart = %q, want ws:u1, ws:u2, ws-group:class7, ws-broadcast", chans)
		}
	})
}

func TestThousandUsersUseAtMostFourRedisConnections(t *testing.T) {
	const users = 1000
	// Not parallel: a thousand connections per engine is enough load for two cores.
	for _, engine := range servicetest.Engines() {
		t.Run(engine, func(t *testing.T) {
			n := startNode(t, engine, redisBP, nil)
			conns := make([]*rawConn, users)
			paths := make([]string, users)
			for i := range paths {
				paths[i] = "/ws?token=" + n.Token(t, fmt.Sprintf("user-%d", i), fmt.Sprintf("class-%d", i%50))
			}
			t.Cleanup(func() {
				for _, c := range conns {
					if c != nil {
						c.Close()
					}
				}
			})
			var wg sync.WaitGroup
			sem := make(chan struct{}, 16)
			errs := make(chan string, users)
			for i := 0; i < users; i++ {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					c, err := rawHandshake(n.Addr, paths[i], nil, 0)
					if err != nil {
						errs <- fmt.Sprintf("user-%d: %v", i, err)
						return
					}
					conns[i] = c
					if c.Resp.StatusCode != http.StatusSwitchingProtocols {
						errs <- fmt.Sprintf("user-%d: status %d", i, c.Resp.StatusCode)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Fatal(e)
			}
			waitActive(t, n.Service, users)
			// Every user, every group and the broadcast channel are live...
			if got := n.Metric(t, "backplane_subscriptions_active"); got != users+50+1 {
				t.Errorf("backplane_subscriptions_active = %v, want %d", got, users+50+1)
			}
			if chans := n.subscriptions(t); len(chans) != users+50+1 {
				t.Errorf("PUBSUB CHANNELS lists %d channels, want %d", len(chans), users+50+1)
			}
			// ...over a handful of Redis connections, not one per user.
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			list, err := n.rdb.ClientList(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Count(strings.TrimSpace(list), "\n") + 1
			service := lines - 1
			if service > 4 || service < 1 {
				t.Fatalf("the service holds %d Redis connections for %d users, want 1 to 4:\n%s", service, users, list)
			}
			t.Logf("%d users, %d channels, %d Redis connections", users, users+50+1, service)
			// And a message to one of them arrives.
			n.publish(t, user("user-777"), `{"to":"user-777"}`)
			f, err := conns[777].readFrame(time.Now().Add(wait))
			if err != nil || f.Op != opText || string(f.Payload) != `{"to":"user-777"}` {
				t.Fatalf("user-777 read %#x %q (%v)", f.Op, f.Payload, err)
			}
		})
	}
}

func TestRedisClusterDeliversOverShardedPubSub(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		cl := redistest.StartCluster(t, 3)
		svc := servicetest.Start(t, servicetest.Options{Engine: engine, RedisURL: cl.URL(), Cluster: true})
		eventually(t, 2*wait, "/readyz 200 on a cluster", func() bool {
			status, _ := svc.Get(t, "/readyz")
			return status == http.StatusOK
		})
		users := []string{"u1", "u2", "u3", "u4", "u5", "u6"} // spread over the cluster's slots
		clients := make([]*servicetest.Client, len(users))
		for i, u := range users {
			clients[i] = dial(t, svc, u, "class7")
		}
		waitActive(t, svc, len(users))
		rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
		defer rc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		topics := svc.App.Server().Topics()
		for i, u := range users {
			if err := rc.SPublish(ctx, topics.UserChannel(u), "to "+u).Err(); err != nil {
				t.Fatalf("SPUBLISH: %v", err)
			}
			expectText(t, clients[i], "to "+u)
		}
		if err := rc.SPublish(ctx, topics.GroupChannel("class7"), "to class7").Err(); err != nil {
			t.Fatalf("SPUBLISH: %v", err)
		}
		for _, c := range clients {
			expectText(t, c, "to class7")
		}
		// The publish tool speaks sharded Pub/Sub too.
		code, _, stderr := runTool(t, prefixed("REDIS_URL", cl.URL(), "REDIS_CLUSTER", "true"), "publish", "--user", "u4", "from the tool")
		if code != 0 {
			t.Fatalf("publish on a cluster exited %d: %s", code, stderr)
		}
		expectText(t, clients[3], "from the tool")
	})
}

func TestRedisDownAtStartIsRetriedUntilReady(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		rs := redistest.Start(t)
		rs.Stop()
		svc := servicetest.Start(t, servicetest.Options{Engine: engine, RedisURL: rs.URL()})
		if status, _ := svc.Get(t, "/healthz"); status != http.StatusOK {
			t.Fatalf("/healthz %d while Redis is down at start", status)
		}
		status, reason := readyReason(t, svc)
		if status != http.StatusServiceUnavailable || reason == "" {
			t.Fatalf("/readyz %d %q while Redis is down at start, want 503 with a reason", status, reason)
		}
		rs.Restart()
		eventually(t, 3*wait, "/readyz 200 once Redis is up", func() bool {
			status, _ := svc.Get(t, "/readyz")
			return status == http.StatusOK
		})
		c := dial(t, svc, "u1")
		waitActive(t, svc, 1)
		rdb := rs.Client(t)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := rdb.Publish(ctx, "ws:u1", "finally").Err(); err != nil {
			t.Fatal(err)
		}
		expectText(t, c, "finally")
	})
}

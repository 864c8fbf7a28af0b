package resume_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/v2client"
	"github.com/huleedu/websocket-service/registry"
)

// wait bounds every "eventually" of these tests; the box is shared and slow.
const wait = 20 * time.Second

const (
	embedded = servicetest.Embedded
	redisBP  = servicetest.Redis
)

// each runs f over every engine and both backplanes, in parallel.
func each(t *testing.T, f func(t *testing.T, engine, bp string)) {
	t.Helper()
	servicetest.EachEngineAndBackplane(t, f)
}

// cluster is one or more nodes sharing a backplane (Redis), or one embedded node.
type cluster struct {
	engine string
	redis  *redistest.Server
	rdb    *redis.Client
	env    map[string]string
}

func newCluster(t *testing.T, engine, bp string, env map[string]string) *cluster {
	t.Helper()
	c := &cluster{engine: engine, env: env}
	if bp == redisBP {
		c.redis = redistest.Start(t)
		c.rdb = c.redis.Client(t)
	}
	return c
}

// node starts one more node.
func (c *cluster) node(t *testing.T) *servicetest.Service {
	t.Helper()
	o := servicetest.Options{Engine: c.engine, Env: c.env}
	if c.redis != nil {
		o.RedisURL = c.redis.URL()
	}
	return servicetest.Start(t, o)
}

// dialV2 connects user with groups to s and sends a resume with cursors.
func dialV2(t *testing.T, s *servicetest.Service, cursors map[string]string, user string, groups ...string) *v2client.Client {
	t.Helper()
	c, err := v2client.Dial(s.DialURL(s.Token(t, user, groups...)), cursors)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if got := c.Selected(); got != v2client.Subprotocol {
		t.Fatalf("selected subprotocol %q, want %q", got, v2client.Subprotocol)
	}
	return c
}

// syncs reads until every stream in streams has its sync and returns the frames, by stream.
func syncs(t *testing.T, c *v2client.Client, streams ...string) map[string][]v2client.Frame {
	t.Helper()
	frames, err := c.Syncs(len(streams), wait)
	if err != nil {
		t.Fatalf("%v (got %s)", err, raws(frames))
	}
	out := map[string][]v2client.Frame{}
	for _, f := range frames {
		out[f.Stream] = append(out[f.Stream], f)
	}
	for _, s := range streams {
		if fs := out[s]; len(fs) == 0 || !fs[len(fs)-1].IsSync() {
			t.Fatalf("stream %s: frames %s, want its sync last", s, raws(frames))
		}
	}
	return out
}

// next reads the next frame.
func next(t *testing.T, c *v2client.Client) v2client.Frame {
	t.Helper()
	f, err := c.Next(wait)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func raws(fs []v2client.Frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.Raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// publishN publishes n sequenced messages {"n":i} (i from first) to target.
func publishN(t *testing.T, s *servicetest.Service, target registry.Target, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		s.Publish(t, target, fmt.Sprintf(`{"n":%d}`, i))
	}
}

// plainPublish publishes payload live only (plain PUBLISH on Redis).
func (c *cluster) plainPublish(t *testing.T, s *servicetest.Service, target registry.Target, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if c.rdb == nil {
		t.Fatal("plain PUBLISH needs Redis")
	}
	if err := c.rdb.Publish(ctx, s.App.Server().Topics().Channel(target), payload).Err(); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
}

// waitActive waits until s has n connections.
func waitActive(t *testing.T, s *servicetest.Service, n int) {
	t.Helper()
	s.WaitMetric(t, "websocket_connections_active", float64(n), wait)
}

var (
	userT      = registry.Target{Kind: registry.User, ID: "u1"}
	groupT     = registry.Target{Kind: registry.Group, ID: "class7"}
	broadcastT = registry.Target{Kind: registry.Broadcast}
)

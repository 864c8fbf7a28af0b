package backplane

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

var testHistory = history.Limits{Size: 16, TTL: time.Minute}

// sequencer is what the server needs from either backplane to publish with positions.
type sequencer interface {
	Subscribe(ctx context.Context, chans []string) error
	Publish(ctx context.Context, channel string, payload []byte) error
	PublishSequenced(ctx context.Context, channel string, payload []byte, traceparent string) (history.Position, error)
	History() history.Reader
}

// sequencedBackplanes starts each kind of backplane with history on, delivering to sink.
var sequencedBackplanes = []struct {
	name  string
	start func(t *testing.T, sink Sink) sequencer
}{
	{"embedded", func(t *testing.T, sink Sink) sequencer {
		return startEmbedded(t, EmbeddedOptions{History: testHistory}, sink)
	}},
	{"redis", func(t *testing.T, sink Sink) sequencer {
		return startRedis(t, RedisOptions{URL: redistest.Start(t).URL(), History: testHistory}, sink)
	}},
	{"redis cluster", func(t *testing.T, sink Sink) sequencer {
		return startRedis(t, RedisOptions{URL: redistest.StartCluster(t, 3).URL(), Cluster: true, History: testHistory}, sink)
	}},
}

// A sequenced publish is stored and published in one step: subscribers receive the payload
// byte for byte with the position the publish returned, and the history holds it; a plain
// publish on the same channel arrives unchanged without a position.
func TestSequencedPublishIsDeliveredWithItsPosition(t *testing.T) {
	for _, bp := range sequencedBackplanes {
		t.Run(bp.name, func(t *testing.T) {
			sink := newCollector()
			b := bp.start(t, sink)
			// The last two: a channel with its own hash tag, and one with a "}" but no tag.
			chans := []string{"ws:u1", "ws-group:class7", "ws-broadcast", "ws:{odd}}name", "ws:a}b"}
			if err := b.Subscribe(ctx, chans); err != nil {
				t.Fatal(err)
			}
			payloads := [][]byte{[]byte(`{"type":"notification","n":1}`), []byte("plain text\n"), []byte(`"quoted"`), []byte("tagged"), []byte("last")}
			var want []history.Position
			for i, ch := range chans {
				p, err := b.PublishSequenced(ctx, ch, payloads[i], "")
				if err != nil {
					t.Fatalf("publish to %s: %v", ch, err)
				}
				want = append(want, p)
			}
			if err := b.Publish(ctx, "ws:u1", []byte("\xff1 1 2 3 4 \nforged by a plain publish")); err != nil {
				t.Fatal(err)
			}
			// Order holds per channel; channels on different masters of a cluster may interleave.
			msgs := sink.waitFor(t, len(chans)+1, 10*time.Second)
			first := map[string]Message{}
			var plain Message
			for _, m := range msgs {
				if _, seen := first[m.Channel]; seen {
					plain = m
				} else {
					first[m.Channel] = m
				}
			}
			for i, ch := range chans {
				m := first[ch]
				if m.Channel != ch || !bytes.Equal(m.Payload, payloads[i]) || m.Position != want[i] || m.Position.Seq != 1 || m.Prev != 0 {
					t.Errorf("delivered %s %q at %+v prev %d; want %s %q at %+v", m.Channel, m.Payload, m.Position, m.Prev, ch, payloads[i], want[i])
				}
				res, err := b.History().Read(ctx, ch, history.Position{Epoch: want[i].Epoch}, 100)
				if err != nil || !res.Recovered || len(res.Entries) != 1 || !bytes.Equal(res.Entries[0].Payload, payloads[i]) || res.Cursor != want[i] {
					t.Errorf("history of %s: %+v, %v", ch, res, err)
				}
			}
			// On the embedded backplane, a plain publish is not a Redis message at all: it is
			// never opened. Through Redis it is opened, and it forges a position: which is why
			// every publisher that can reach Redis must be trusted (docs/PROTOCOL.md).
			if bp.name == "embedded" && (!plain.Position.IsZero() || !bytes.HasPrefix(plain.Payload, []byte("\xff1"))) {
				t.Errorf("plain publish delivered as %+v %q", plain.Position, plain.Payload)
			}
		})
	}
}

// Bytes published with plain PUBLISH arrive as they were, with no position, whatever they
// are: a payload that starts with the envelope's mark but is not an envelope included.
func TestPlainPublishOfArbitraryBytesIsNeverSequenced(t *testing.T) {
	srv := redistest.Start(t)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: srv.URL(), History: testHistory}, sink)
	if err := r.Subscribe(ctx, []string{"ws:u1"}); err != nil {
		t.Fatal(err)
	}
	payloads := [][]byte{
		[]byte(`{"type":"notification"}`), {}, []byte("\xff"), []byte("\xff1 x"), []byte("\xff1 1 2 3 4 no newline"),
		[]byte("\xff\xfe\x00\x01"), []byte("\x001 1 2 3 4 \nx"), bytes.Repeat([]byte{0xff}, 100),
	}
	c := srv.Client(t)
	for _, p := range payloads {
		if err := c.Publish(ctx, "ws:u1", p).Err(); err != nil {
			t.Fatal(err)
		}
	}
	msgs := sink.waitFor(t, len(payloads), 10*time.Second)
	for i, m := range msgs {
		if !m.Position.IsZero() || !bytes.Equal(m.Payload, payloads[i]) {
			t.Errorf("plain %q delivered as %q at %+v", payloads[i], m.Payload, m.Position)
		}
	}
}

// The backplane installs the function library at start, on every primary of a cluster, so a
// backend can FCALL it before this node publishes anything; and again after Redis restarted
// without persistence.
func TestRedisBackplaneInstallsTheFunctionsForOtherPublishers(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		sink := newCollector()
		r := startRedis(t, RedisOptions{URL: srv.URL(), History: testHistory}, sink)
		if err := r.Subscribe(ctx, []string{"ws:u1"}); err != nil {
			t.Fatal(err)
		}
		c := srv.Client(t)
		fcallOnce(t, c, sink, "ws:u1", 1)
		srv.Restart()
		testenv.Eventually(t, 15*time.Second, "library installed again after the restart", func() bool {
			return libraryInstalled(c)
		})
		// Redis itself says when the relay has subscribed again: Ready only says its connection
		// is up, which it may be (or still look) before the SUBSCRIBE has reached the new server.
		testenv.Eventually(t, 15*time.Second, "resubscribed", func() bool {
			n, err := c.PubSubNumSub(ctx, "ws:u1").Result()
			return err == nil && n["ws:u1"] == 1 && r.Ready() == nil
		})
		fcallOnce(t, c, sink, "ws:u1", 2)
	})
	t.Run("redis cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, 3)
		sink := newCollector()
		r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true, History: testHistory}, sink)
		for _, addr := range cl.Addrs() {
			n := redis.NewClient(&redis.Options{Addr: addr})
			testenv.Eventually(t, 15*time.Second, "library on "+addr, func() bool { return libraryInstalled(n) })
			_ = n.Close()
		}
		chans := []string{"ws:a", "ws:b", "ws:c", "ws:d", "ws:e", "ws:f"} // spread over the masters
		if err := r.Subscribe(ctx, chans); err != nil {
			t.Fatal(err)
		}
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
		defer c.Close()
		for i, ch := range chans {
			fcallOnce(t, c, sink, ch, i+1)
		}
	})
}

// docs/PROTOCOL.md: "a missing function (Redis restarted without persistence, a new primary)
// is loaded and called again at once", on a cluster: the master owning a stream's slot loses
// the library (FUNCTION FLUSH, as a new primary would have none; no outage nor topology change
// asks the backplane to reinstall it), and the next publish through the backplane (the API's
// path) loads it there and runs once: it succeeds, the stream's history grows by exactly one
// entry, the message is delivered with that position, and the master has the library again.
func TestClusterPublishReloadsALibraryItsMasterLost(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	sink := newCollector()
	r := startRedis(t, RedisOptions{URL: cl.URL(), Cluster: true, History: testHistory}, sink)
	const ch = "ws:reload"
	if err := r.Subscribe(ctx, []string{ch}); err != nil {
		t.Fatal(err)
	}
	m := openMasters(t, cl)
	for addr, n := range m.nodes {
		testenv.Eventually(t, 15*time.Second, "library on "+addr, func() bool { return libraryInstalled(n) })
	}
	h, _ := history.Keys(ch)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer cc.Close()
	serving, err := cc.MasterForKey(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	owner := m.nodes[serving.Options().Addr]
	if owner == nil {
		t.Fatalf("the master of %s, %s, is none of %v", h, serving.Options().Addr, cl.Addrs())
	}
	first, err := r.PublishSequenced(ctx, ch, []byte("before"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := owner.FunctionFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if libraryInstalled(owner) {
		t.Fatal("FUNCTION FLUSH left the library on the master")
	}
	p, err := r.PublishSequenced(ctx, ch, []byte("after the flush"), "")
	if err != nil {
		t.Fatalf("publish with the library missing on %s: %v", owner.Options().Addr, err)
	}
	if n := owner.XLen(ctx, h).Val(); n != 2 {
		t.Fatalf("history of %s holds %d entries after two publishes, want 2", ch, n)
	}
	if p.Epoch != first.Epoch || p.Seq != first.Seq+1 {
		t.Fatalf("publish after the reload at %+v, the one before at %+v: want the next position", p, first)
	}
	got := sink.waitFor(t, 2, 10*time.Second)
	if last := got[len(got)-1]; string(last.Payload) != "after the flush" || last.Position != p {
		t.Fatalf("delivered %q at %+v, want %q at %+v", last.Payload, last.Position, "after the flush", p)
	}
	if !libraryInstalled(owner) {
		t.Fatalf("library not on %s again after the publish", owner.Options().Addr)
	}
}

func libraryInstalled(c *redis.Client) bool {
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: history.LibraryName}).Result()
	return err == nil && len(libs) == 1
}

// fcallOnce publishes as a backend in another language would (docs/PROTOCOL.md) and checks
// that the n-th delivered message is its payload with the position FCALL returned.
func fcallOnce(t *testing.T, c redis.Cmdable, sink *collector, ch string, n int) {
	t.Helper()
	h, m := history.Keys(ch)
	v, err := c.FCall(ctx, history.PublishFunction, []string{h, m}, ch, `{"from":"fcall"}`).Slice()
	if err != nil || len(v) != 3 {
		t.Fatalf("FCALL %s: %v %v", history.PublishFunction, v, err)
	}
	got := sink.waitFor(t, n, 10*time.Second)[n-1]
	if got.Channel != ch || string(got.Payload) != `{"from":"fcall"}` || got.Position.IsZero() {
		t.Fatalf("FCALL delivered %s %q at %+v", got.Channel, got.Payload, got.Position)
	}
	if s := got.Position.Seq; v[1] != itoa(s) {
		t.Fatalf("FCALL returned %v, delivered at %d", v, s)
	}
}

package history

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// fixture is one store under test, with the operations that differ between stores.
type fixture struct {
	read   func(ctx context.Context, ch string, after Position, limit int) (Result, error)
	append func(t *testing.T, ch, payload string) Position
	expire func(t *testing.T, ch string) // until ch's history has expired
	lose   func(t *testing.T)            // all history lost: a restart without persistence, a new process
	later  func(t *testing.T)            // a long quiet period (longer than the TTL)
}

// factory makes a fresh store with the given limits.
type factory func(t *testing.T, l Limits) *fixture

var (
	roomy = Limits{Size: 8, TTL: time.Minute}
	short = Limits{Size: 8, TTL: time.Second}
)

// historyCases is the table every store passes.
var historyCases = []struct {
	name   string
	limits Limits
	run    func(t *testing.T, f *fixture)
}{
	{"no cursor is new, with the stream's cursor", roomy, func(t *testing.T, f *fixture) {
		r := mustRead(t, f, "ws:new", Position{}, 100)
		expect(t, r, false, ReasonNew, -1, 0)
		if r.Cursor.IsZero() || r.Cursor.Seq != 0 {
			t.Fatalf("cursor of a never-published stream = %+v, want an epoch at position 0", r.Cursor)
		}
	}},
	{"cursor of a never-published stream is continuous however much later", roomy, func(t *testing.T, f *fixture) {
		c := mustRead(t, f, "ws:quiet", Position{}, 100).Cursor
		expect(t, mustRead(t, f, "ws:quiet", c, 100), true, "", 0, 0)
		f.later(t)
		expect(t, mustRead(t, f, "ws:quiet", c, 100), true, "", 0, 0)
		p := f.append(t, "ws:quiet", "first")
		r := mustRead(t, f, "ws:quiet", c, 100)
		expect(t, r, true, "", 0, 1)
		if r.Entries[0].Position != p || r.Cursor != p {
			t.Fatalf("replay %+v, cursor %+v; want position %+v", r.Entries[0].Position, r.Cursor, p)
		}
	}},
	{"replay after a cursor, in order, byte for byte", roomy, func(t *testing.T, f *fixture) {
		c0 := mustRead(t, f, "ws:a", Position{}, 100).Cursor
		var ps []Position
		for i := 0; i < 5; i++ {
			ps = append(ps, f.append(t, "ws:a", fmt.Sprintf(`{"n":%d}`, i)))
		}
		r := mustRead(t, f, "ws:a", c0, 100)
		expect(t, r, true, "", 0, 5)
		for i, e := range r.Entries {
			if e.Position != ps[i] || string(e.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("entry %d = %+v %q, want %+v", i, e.Position, e.Payload, ps[i])
			}
		}
		if r.Cursor != ps[4] {
			t.Fatalf("cursor %+v, want %+v", r.Cursor, ps[4])
		}
		r = mustRead(t, f, "ws:a", ps[2], 100)
		expect(t, r, true, "", 0, 2)
		if r.Entries[0].Position != ps[3] || r.Entries[1].Position != ps[4] {
			t.Fatalf("replay from the 3rd = %+v", r.Entries)
		}
		expect(t, mustRead(t, f, "ws:a", ps[4], 100), true, "", 0, 0)
	}},
	{"positions count from 1 per stream", roomy, func(t *testing.T, f *fixture) {
		a1, b1, a2 := f.append(t, "ws:x", "1"), f.append(t, "ws:y", "1"), f.append(t, "ws:x", "2")
		if a1.Seq != 1 || b1.Seq != 1 || a2.Seq != 2 || a1.Epoch != a2.Epoch || a1.Tag == 0 {
			t.Fatalf("positions %+v %+v %+v", a1, b1, a2)
		}
	}},
	{"messages dropped by HISTORY_SIZE are trimmed, with the count missed", Limits{Size: 4, TTL: time.Minute}, func(t *testing.T, f *fixture) {
		c0 := mustRead(t, f, "ws:t", Position{}, 100).Cursor
		var ps []Position
		for i := 0; i < 10; i++ {
			ps = append(ps, f.append(t, "ws:t", "m"))
		}
		expect(t, mustRead(t, f, "ws:t", c0, 100), false, ReasonTrimmed, 10, 0)
		expect(t, mustRead(t, f, "ws:t", ps[4], 100), false, ReasonTrimmed, 5, 0)
		expect(t, mustRead(t, f, "ws:t", ps[5], 100), true, "", 0, 4) // the last 4 are held
	}},
	{"more than the limit is refused with the count", roomy, func(t *testing.T, f *fixture) {
		c0 := mustRead(t, f, "ws:l", Position{}, 100).Cursor
		for i := 0; i < 3; i++ {
			f.append(t, "ws:l", "m")
		}
		expect(t, mustRead(t, f, "ws:l", c0, 2), false, ReasonLimit, 3, 0)
		expect(t, mustRead(t, f, "ws:l", c0, 3), true, "", 0, 3)
		expect(t, mustRead(t, f, "ws:l", c0, 0), false, ReasonLimit, 3, 0)
	}},
	{"messages dropped by HISTORY_TTL are expired; the position survives", short, func(t *testing.T, f *fixture) {
		c0 := mustRead(t, f, "ws:e", Position{}, 100).Cursor
		f.append(t, "ws:e", "1")
		top := f.append(t, "ws:e", "2")
		f.expire(t, "ws:e")
		expect(t, mustRead(t, f, "ws:e", c0, 100), false, ReasonExpired, 2, 0)
		expect(t, mustRead(t, f, "ws:e", top, 100), true, "", 0, 0)
		next := f.append(t, "ws:e", "3")
		if next.Seq != 3 || next.Epoch != top.Epoch {
			t.Fatalf("after expiry the next position is %+v, want seq 3 of epoch %d", next, top.Epoch)
		}
		expect(t, mustRead(t, f, "ws:e", c0, 100), false, ReasonExpired, 3, 0)
		expect(t, mustRead(t, f, "ws:e", top, 100), true, "", 0, 1)
	}},
	{"a lost history is another epoch, never continuous", roomy, func(t *testing.T, f *fixture) {
		c0 := mustRead(t, f, "ws:lost", Position{}, 100).Cursor
		p := f.append(t, "ws:lost", "1")
		f.lose(t)
		expect(t, mustRead(t, f, "ws:lost", c0, 100), false, ReasonEpoch, -1, 0)
		expect(t, mustRead(t, f, "ws:lost", p, 100), false, ReasonEpoch, -1, 0)
		q := f.append(t, "ws:lost", "again")
		if q.Epoch == p.Epoch {
			t.Fatalf("same epoch %d after the history was lost", q.Epoch)
		}
		expect(t, mustRead(t, f, "ws:lost", p, 100), false, ReasonEpoch, -1, 0)
	}},
	{"without history (HISTORY_SIZE 0) positions go on but nothing is replayed", Limits{Size: 0}, func(t *testing.T, f *fixture) {
		c0 := mustRead(t, f, "ws:off", Position{}, 100).Cursor
		f.append(t, "ws:off", "1")
		top := f.append(t, "ws:off", "2")
		if top.Seq != 2 {
			t.Fatalf("position %+v, want seq 2", top)
		}
		expect(t, mustRead(t, f, "ws:off", c0, 100), false, ReasonTrimmed, 2, 0)
		expect(t, mustRead(t, f, "ws:off", top, 100), true, "", 0, 0)
	}},
	{"a cursor that names another message is another epoch", roomy, func(t *testing.T, f *fixture) {
		p1 := f.append(t, "ws:forged", "1")
		p2 := f.append(t, "ws:forged", "2")
		for _, c := range []Position{
			{Epoch: p2.Epoch, Seq: p2.Seq, Tag: p2.Tag + 1}, // the top, another tag
			{Epoch: p1.Epoch, Seq: p1.Seq, Tag: p1.Tag + 1}, // a held message, another tag
			{Epoch: p2.Epoch, Seq: p2.Seq + 1, Tag: 7},      // beyond the top
			{Epoch: p2.Epoch + 1, Seq: p2.Seq, Tag: p2.Tag}, // another epoch
		} {
			expect(t, mustRead(t, f, "ws:forged", c, 100), false, ReasonEpoch, -1, 0)
		}
	}},
}

func mustRead(t *testing.T, f *fixture, ch string, after Position, limit int) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := f.read(ctx, ch, after, limit)
	if err != nil {
		t.Fatalf("Read(%s, %+v): %v", ch, after, err)
	}
	return r
}

func expect(t *testing.T, r Result, recovered bool, reason Reason, missed int64, entries int) {
	t.Helper()
	if r.Recovered != recovered || r.Reason != reason || (!recovered && r.Missed != missed) || len(r.Entries) != entries {
		t.Fatalf("got recovered=%v reason=%q missed=%d entries=%d; want recovered=%v reason=%q missed=%d entries=%d",
			r.Recovered, r.Reason, r.Missed, len(r.Entries), recovered, reason, missed, entries)
	}
	if r.Cursor.IsZero() {
		t.Fatalf("result without the stream's cursor: %+v", r)
	}
}

func runHistoryCases(t *testing.T, newFixture factory) {
	for _, c := range historyCases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newFixture(t, c.limits)) })
	}
}

func TestMemoryHistory(t *testing.T) {
	runHistoryCases(t, func(t *testing.T, l Limits) *fixture {
		var mu sync.Mutex
		now := time.Unix(1_800_000_000, 0)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		m, err := NewMemory(l, clock)
		if err != nil {
			t.Fatal(err)
		}
		return &fixture{
			read: func(ctx context.Context, ch string, after Position, limit int) (Result, error) {
				return m.Read(ctx, ch, after, limit)
			},
			append: func(t *testing.T, ch, payload string) Position {
				e := m.Append(ch, []byte(payload), "")
				advance(time.Millisecond)
				return e.Position
			},
			expire: func(*testing.T, string) { advance(l.TTL) },
			lose: func(t *testing.T) {
				advance(time.Millisecond) // a new process starts later
				if m, err = NewMemory(l, clock); err != nil {
					t.Fatal(err)
				}
			},
			later: func(*testing.T) { advance(100 * l.TTL) },
		}
	})
}

func TestRedisHistory(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	runHistoryCases(t, redisFixture(c, false, func(ctx context.Context) error { return c.FlushAll(ctx).Err() }))
}

func TestRedisClusterHistory(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = c.Close() })
	runHistoryCases(t, redisFixture(c, true, func(ctx context.Context) error {
		return c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error { return n.FlushAll(ctx).Err() })
	}))
}

func redisFixture(c redis.UniversalClient, cluster bool, flush func(context.Context) error) factory {
	return func(t *testing.T, l Limits) *fixture {
		ctx := context.Background()
		if err := flush(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := NewRedis(c, cluster, l)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Load(ctx); err != nil {
			t.Fatal(err)
		}
		return &fixture{
			read: r.Read,
			append: func(t *testing.T, ch, payload string) Position {
				p, err := r.Append(ctx, ch, []byte(payload), "")
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
			expire: func(t *testing.T, ch string) {
				h, _ := Keys(ch)
				testenv.Eventually(t, 15*time.Second, "history key "+h+" expired", func() bool { return c.Exists(ctx, h).Val() == 0 })
			},
			lose: func(t *testing.T) {
				if err := flush(ctx); err != nil {
					t.Fatal(err)
				}
			},
			// Redis's clock cannot be moved: instead check that nothing holding a position can
			// expire (the meta key has no TTL) — the history key may.
			later: func(t *testing.T) {
				var metas []string
				if cc, ok := c.(*redis.ClusterClient); ok {
					var mu sync.Mutex // ForEachMaster runs on every master at once
					_ = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
						ks, err := n.Keys(ctx, KeyPrefix+"m:*").Result()
						mu.Lock()
						metas = append(metas, ks...)
						mu.Unlock()
						return err
					})
				} else {
					metas = c.Keys(ctx, KeyPrefix+"m:*").Val()
				}
				if len(metas) == 0 {
					t.Fatal("no meta key in Redis")
				}
				for _, k := range metas {
					if ttl := c.TTL(ctx, k).Val(); ttl != -1 {
						t.Fatalf("meta key %s has TTL %v; a stream's position must outlive any quiet period", k, ttl)
					}
				}
			},
		}
	}
}

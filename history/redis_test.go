package history

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/redistest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/redis/go-redis/v9"
)

func newRedisStore(t *testing.T, c redis.UniversalClient, l Limits) *Redis {
	t.Helper()
	r, err := NewRedis(c, false, l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// A restore from an older snapshot keeps the epoch but rewinds the positions, and the
// positions are then reused by other messages. Neither a cursor beyond the rewound top nor a
// cursor naming a message that is no longer there may be taken as continuous.
func TestRedisRewoundHistoryIsAnotherEpoch(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	r := newRedisStore(t, c, roomy)
	h, m := Keys("ws:u1")
	var before []Position
	var snapshot map[string]string // DUMP of both keys after the second publish
	for i := 0; i < 5; i++ {
		p, err := r.Append(ctx, "ws:u1", []byte("old"), "")
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, p)
		if i == 1 {
			snapshot = map[string]string{h: c.Dump(ctx, h).Val(), m: c.Dump(ctx, m).Val()}
		}
	}
	// The restore: both keys as they were after the second publish, same epoch.
	for k, v := range snapshot {
		if err := c.RestoreReplace(ctx, k, 0, v).Err(); err != nil {
			t.Fatal(err)
		}
	}

	r5 := mustRead(t, &fixture{read: r.Read}, "ws:u1", before[4], 100)
	expect(t, r5, false, ReasonEpoch, -1, 0)
	expect(t, mustRead(t, &fixture{read: r.Read}, "ws:u1", before[1], 100), true, "", 0, 0)

	var after []Position
	for i := 0; i < 3; i++ {
		p, err := r.Append(ctx, "ws:u1", []byte("new"), "")
		if err != nil {
			t.Fatal(err)
		}
		after = append(after, p)
	}
	if after[2].Seq != before[4].Seq || after[2].Epoch != before[4].Epoch {
		t.Fatalf("rewound history did not reuse position %d: %+v", before[4].Seq, after[2])
	}
	expect(t, mustRead(t, &fixture{read: r.Read}, "ws:u1", before[4], 100), false, ReasonEpoch, -1, 0) // the top, another message
	expect(t, mustRead(t, &fixture{read: r.Read}, "ws:u1", before[2], 100), false, ReasonEpoch, -1, 0) // held, another message
	got := mustRead(t, &fixture{read: r.Read}, "ws:u1", before[1], 100)                                // before the rewind point: continuous
	expect(t, got, true, "", 0, 3)
	if string(got.Entries[0].Payload) != "new" {
		t.Fatalf("replay after the rewind point = %q", got.Entries[0].Payload)
	}
}

// Redis restarted without persistence has lost the library too: the first publish loads it
// and runs once, so exactly one entry is appended.
func TestRedisPublishReloadsAMissingLibraryOnce(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	r := newRedisStore(t, c, roomy)
	for _, lose := range []func(){
		func() { c.FunctionFlush(ctx) },
		srv.Restart,
	} {
		lose()
		h, _ := Keys("ws:reload")
		before := c.XLen(ctx, h).Val()
		if _, err := r.Append(ctx, "ws:reload", []byte("x"), ""); err != nil {
			t.Fatalf("publish with the library missing: %v", err)
		}
		if n := c.XLen(ctx, h).Val(); n != before+1 {
			t.Fatalf("history grew from %d to %d entries, want exactly one more", before, n)
		}
	}
}

func TestRedisPublishesTheEnvelopeAndStoresTheTraceparent(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	r := newRedisStore(t, c, roomy)
	sub := c.Subscribe(ctx, "ws:env")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	p, err := r.Append(ctx, "ws:env", []byte(`{"a":1}`), tp)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := "\xff1 " + strconv.FormatUint(p.Epoch, 10) + " 1 " + strconv.FormatUint(uint64(p.Tag), 10) + " 0 " + tp + "\n" + `{"a":1}`
	if msg.Payload != want {
		t.Fatalf("published %q, want %q", msg.Payload, want)
	}
	res := mustRead(t, &fixture{read: r.Read}, "ws:env", Position{Epoch: p.Epoch}, 100)
	if len(res.Entries) != 1 || res.Entries[0].Traceparent != tp {
		t.Fatalf("stored entry %+v, want traceparent %s", res.Entries, tp)
	}
	if _, err := r.Append(ctx, "ws:env", []byte("x"), "bad traceparent\n"); err == nil {
		t.Fatal("a traceparent with a newline was accepted")
	}
	h, m := Keys("ws:env")
	for _, keys := range [][]string{{m, h}, {h, h}, {"wsh:h:{ws:other}", "wsh:m:{ws:other}"}, {"x", "y"}} {
		if err := c.FCall(ctx, PublishFunction, keys, "ws:env", "x").Err(); err == nil || !strings.Contains(err.Error(), "PROTOCOL.md") {
			t.Errorf("FCALL with keys %q for ws:env: %v, want refused", keys, err)
		}
	}
}

// 10,000 readers of one stream arriving together (a node died; its clients resume elsewhere)
// cost a handful of Redis reads, whatever their cursors: one read, then one for everyone who
// arrived during it, and so on. How many depends on how long the 10,000 take to arrive on
// this machine (12 with -race on two cores), not on how many they are.
func TestRedisReadsOfOneStreamAreCoalesced(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	r := newRedisStore(t, c, roomy)
	var ps []Position
	for i := 0; i < 5; i++ {
		p, err := r.Append(ctx, "ws-group:class7", []byte("m"+strconv.Itoa(i)), "")
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	c.ConfigResetStat(ctx)
	const readers = 10_000
	// The first read waits until every other reader has asked, so that the count does not
	// depend on how fast a loaded machine starts the goroutines: all of them then share the
	// second read.
	fetch, held := r.reads.fetch, false
	r.reads.fetch = func(ctx context.Context, channel string, n need) (snapshot, error) {
		if !held {
			held = true // only run's goroutine calls fetch, one read at a time
			if !testenv.Until(time.Minute, func() bool { return r.reads.waiting(channel) == readers-1 }) {
				t.Errorf("%d readers waiting for the next read, want %d", r.reads.waiting(channel), readers-1)
			}
			ctx = context.WithoutCancel(ctx) // its timeout bounds the read, not this wait
		}
		return fetch(ctx, channel, n)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			after := ps[i%len(ps)]
			res, err := r.Read(ctx, "ws-group:class7", after, 100)
			if err != nil || !res.Recovered || len(res.Entries) != len(ps)-1-i%len(ps) {
				t.Errorf("reader at %d: %+v, %v", after.Seq, res, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	calls := fcallCalls(t, c)
	t.Logf("%d readers, %d FCALLs", readers, calls)
	if calls != 2 {
		t.Fatalf("%d readers cost %d FCALLs, want 2 (the first reader's, then one for the rest)", readers, calls)
	}
}

var fcallStat = regexp.MustCompile(`cmdstat_fcall:calls=(\d+)`)

func fcallCalls(t *testing.T, c *redis.Client) int {
	t.Helper()
	info := c.Info(context.Background(), "commandstats").Val()
	m := fcallStat.FindStringSubmatch(info)
	if m == nil {
		if strings.Contains(info, "cmdstat_") {
			return 0
		}
		t.Fatalf("no commandstats: %s", info)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A publish that times out may have run: here Redis runs it but its reply is lost on the way
// back. It must not be sent again, as go-redis would by default after its read timeout.
func TestRedisPublishIsNeverRetriedAfterATimeout(t *testing.T) {
	srv := redistest.Start(t)
	px := newMutingProxy(t, srv.Addr())
	c := redis.NewClient(&redis.Options{Addr: px.addr(), ReadTimeout: 200 * time.Millisecond, MaxRetries: 3})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	r := newRedisStore(t, c, roomy)

	px.muteOpenConnections()
	_, err := r.Append(ctx, "ws:slow", []byte("once"), "")
	h, _ := Keys("ws:slow")
	if n := srv.Client(t).XLen(ctx, h).Val(); n != 1 {
		t.Fatalf("the timed-out publish ran %d times, want once", n)
	}
	if err == nil {
		t.Fatal("publish answered although its reply was lost")
	}
}

// Loading reports where it replaced a library loaded with other settings, so that an operator
// hears of nodes that disagree on HISTORY_SIZE or HISTORY_TTL.
func TestRedisLoadReportsALibraryWithOtherSettings(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	newRedisStore(t, c, roomy)
	same, err := NewRedis(c, false, roomy)
	if err != nil {
		t.Fatal(err)
	}
	if replaced, err := same.Load(ctx); err != nil || len(replaced) != 0 {
		t.Fatalf("reloading the same library: replaced %v, %v", replaced, err)
	}
	other, err := NewRedis(c, false, Limits{Size: roomy.Size + 1, TTL: roomy.TTL})
	if err != nil {
		t.Fatal(err)
	}
	if replaced, err := other.Load(ctx); err != nil || len(replaced) != 1 || replaced[0] != srv.Addr() {
		t.Fatalf("loading other limits: replaced %v, %v; want [%s]", replaced, err, srv.Addr())
	}
}

// Redis restarted without persistence has lost every stream: an old cursor is another
// epoch, never continuous, and the stream goes on in a new one.
func TestRedisRestartWithoutPersistenceIsAnotherEpoch(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	r := newRedisStore(t, c, roomy)
	f := &fixture{read: r.Read}
	start := mustRead(t, f, "ws:u1", Position{}, 100).Cursor
	p, err := r.Append(ctx, "ws:u1", []byte("before"), "")
	if err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	expect(t, mustRead(t, f, "ws:u1", start, 100), false, ReasonEpoch, -1, 0)
	expect(t, mustRead(t, f, "ws:u1", p, 100), false, ReasonEpoch, -1, 0)
	q, err := r.Append(ctx, "ws:u1", []byte("after"), "")
	if err != nil || q.Epoch == p.Epoch || q.Seq != 1 {
		t.Fatalf("after the restart: %+v, %v; want seq 1 of a new epoch", q, err)
	}
}

package resume

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/registry"
)

// topReader answers every Read with a stream at position 2 and nothing to replay.
type topReader struct{}

func (topReader) Read(context.Context, string, history.Position, int) (history.Result, error) {
	return history.Result{Recovered: true, Cursor: history.Position{Epoch: 1, Seq: 2, Tag: 2}}, nil
}

// The resumes in flight are bounded node-wide: with one slot, a second resume does not read
// until the first has released its slot (its replay handed to the socket).
func TestResumesInFlightAreBounded(t *testing.T) {
	svc := NewService(Options{Reader: topReader{}, Topics: registry.Topics{UserPrefix: "ws:", GroupPrefix: "g:", Broadcast: "b"}, InFlight: 1})
	streams := svc.Streams("u", nil)
	first := make(chan func(), 1)
	svc.Read(streams, nil, func(_ []Outcome, release func()) { first <- release })
	release := <-first
	second := make(chan struct{})
	svc.Read(streams, nil, func(_ []Outcome, release func()) { release(); close(second) })
	select {
	case <-second:
		t.Fatal("a second resume ran while the only slot was taken")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("the second resume never ran after the slot was freed")
	}
}

// Connections replaying the same read share each entry's frame.
func TestReplayFramesAreShared(t *testing.T) {
	entries := []history.Entry{
		{Position: history.Position{Epoch: 1, Seq: 1, Tag: 1}, Payload: []byte(`{"n":1}`)},
		{Position: history.Position{Epoch: 1, Seq: 2, Tag: 2}, Prev: 1, Payload: []byte(`{"n":2}`)},
	}
	svc := NewService(Options{})
	var frames [2][][]byte
	for i := range frames {
		var st State
		svc.Attach(&st)
		st.Begin()
		st.Ready([]Outcome{{Stream: "group:g", Result: history.Result{Entries: entries, Recovered: true, Cursor: entries[1].Position}}}, func() {})
		frames[i], _ = st.Next(nil, 1<<20, 0, func(b []byte) []byte { return b })
	}
	if len(frames[0]) != 3 || len(frames[1]) != 3 {
		t.Fatalf("frames %q and %q, want two messages and a sync each", frames[0], frames[1])
	}
	for k := range 2 {
		if &frames[0][k][0] != &frames[1][k][0] {
			t.Fatalf("replayed frame %d built twice", k)
		}
	}
}

// failingReader fails the reads of its failing channels (every channel when failing is nil)
// with err, up to fails times each, then answers as topReader.
type failingReader struct {
	err     error
	fails   int
	failing map[string]bool

	mu    sync.Mutex
	reads map[string]int
}

func (f *failingReader) Read(ctx context.Context, ch string, after history.Position, limit int) (history.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reads == nil {
		f.reads = map[string]int{}
	}
	f.reads[ch]++
	if (f.failing == nil || f.failing[ch]) && f.reads[ch] <= f.fails {
		return history.Result{Reason: history.ReasonUnavailable, Missed: -1}, f.err
	}
	return topReader{}.Read(ctx, ch, after, limit)
}

var (
	refused     = fmt.Errorf("read history: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	badReply    = errors.New("read history: unexpected ws_history reply string")
	testTopics  = registry.Topics{UserPrefix: "ws:", GroupPrefix: "g:", Broadcast: "b"}
	knownCursor = history.Position{Epoch: 1, Seq: 2, Tag: 2}.Cursor()
)

// A history read that failed for a moment (Redis refused the connection: a restart) is read
// again: the resume is continuous, not recovered:false.
func TestAHistoryReadThatFailedForAMomentIsReadAgain(t *testing.T) {
	r := &failingReader{err: refused, fails: 2}
	svc := NewService(Options{Reader: r, Topics: testTopics})
	out := svc.read(svc.Streams("u", nil)[:1], map[string]string{"user": knownCursor})
	if !out[0].Result.Recovered || r.reads["ws:u"] != 3 {
		t.Fatalf("result %+v after %d reads, want recovered after 3", out[0].Result, r.reads["ws:u"])
	}
}

// A read that keeps failing is given up when the resume's read time is over, and the other
// streams of the resume are read all the same.
func TestAStreamThatKeepsFailingCostsTheOthersNothing(t *testing.T) {
	r := &failingReader{err: refused, fails: 1 << 30, failing: map[string]bool{"ws:u": true}}
	svc := NewService(Options{Reader: r, Topics: testTopics})
	svc.reads = 300 * time.Millisecond
	streams := svc.Streams("u", []string{"g1"})
	out := svc.read(streams, map[string]string{"user": knownCursor, "group:g1": knownCursor, "broadcast": knownCursor})
	if res := out[0].Result; res.Recovered || res.Reason != history.ReasonUnavailable || r.reads["ws:u"] < 2 {
		t.Fatalf("user: %+v after %d reads, want unavailable after retries", res, r.reads["ws:u"])
	}
	for _, o := range out[1:] {
		if !o.Result.Recovered {
			t.Fatalf("%s: %+v, want recovered: another stream's outage must not cost it its read", o.Stream, o.Result)
		}
	}
}

// A read that fails for good (a reply that does not parse) is not read again: unavailable at
// once, its resume slot free for the next.
func TestALastingReadFailureIsNotRetried(t *testing.T) {
	r := &failingReader{err: badReply, fails: 1 << 30}
	svc := NewService(Options{Reader: r, Topics: testTopics})
	out := svc.read(svc.Streams("u", nil)[:1], map[string]string{"user": knownCursor})
	if res := out[0].Result; res.Reason != history.ReasonUnavailable || r.reads["ws:u"] != 1 {
		t.Fatalf("result %+v after %d reads, want unavailable after 1", res, r.reads["ws:u"])
	}
}

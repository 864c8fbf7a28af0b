package resume

import (
	"context"
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

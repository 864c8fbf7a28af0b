package backplane

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"testing"
)

// replay serves n copies of one encoded reply, as many whole ones per Read as fit.
type replay struct {
	msg []byte
	n   int
}

func (p *replay) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	k := min(len(b)/len(p.msg), p.n)
	if k == 0 {
		return 0, errors.New("read buffer smaller than one message")
	}
	for i := 0; i < k; i++ {
		copy(b[i*len(p.msg):], p.msg)
	}
	p.n -= k
	return k * len(p.msg), nil
}

type noEvents struct{}

func (noEvents) connected(*relay, bool)     {}
func (noEvents) disconnected(*relay, error) {}
func (noEvents) received(int)               {}

type countSink struct{ msgs, batches int }

func (s *countSink) Deliver(b []Message) { s.msgs += len(b); s.batches++ }

// newBenchRelay is a relay subscribed (on paper) to channel, reading from memory.
func newBenchRelay(sink Sink, channel string) *relay {
	r := newRelay(0, "memory", false, nil, sink, noEvents{}, slog.New(slog.DiscardHandler))
	r.chans[channel] = &chanState{name: channel, want: true, onWire: true}
	return r
}

func TestReceiveHandsMessagesOverInBatches(t *testing.T) {
	sink := &countSink{}
	r := newBenchRelay(sink, "ws:user-42")
	msg := appendCommand(nil, "message", []string{"ws:user-42", "payload"})
	err := r.receive(bufio.NewReaderSize(&replay{msg: msg, n: 10000}, readBufferSize), func() {})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("receive ended with %v, want EOF", err)
	}
	if sink.msgs != 10000 || sink.batches > 10000/maxBatch*2+2 {
		t.Fatalf("%d messages in %d batches", sink.msgs, sink.batches)
	}
}

// BenchmarkDispatch measures the path from a Pub/Sub message in the read buffer to
// sink.Deliver: parse, channel lookup, payload copy into the arena, batching. One op is one
// message.
func BenchmarkDispatch(b *testing.B) {
	payload := `{"type":"notification","event_type":"batch_completed","data":{"batch_id":"123","status":"completed"}}`
	sink := &countSink{}
	r := newBenchRelay(sink, "ws:user-42")
	msg := appendCommand(nil, "message", []string{"ws:user-42", payload})
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	_ = r.receive(bufio.NewReaderSize(&replay{msg: msg, n: b.N}, readBufferSize), func() {})
	b.StopTimer()
	if sink.msgs != b.N {
		b.Fatalf("delivered %d of %d", sink.msgs, b.N)
	}
	b.ReportMetric(float64(b.N)/float64(max(sink.batches, 1)), "msgs/batch")
}

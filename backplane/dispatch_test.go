package backplane

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"
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
func (noEvents) slotMoved(*relay)           {}
func (noEvents) received(int)               {}

type countSink struct{ msgs, batches int }

func (s *countSink) Deliver(b []Message) { s.msgs += len(b); s.batches++ }

// newBenchRelay is a relay subscribed (on paper) to channel, reading from memory.
func newBenchRelay(sink Sink, channel string) *relay {
	r := newRelay(0, "memory", false, 0, nil, sink, noEvents{}, slog.New(slog.DiscardHandler))
	r.chans.Put(&chanState{name: channel, want: true, onWire: true})
	return r
}

func TestReceiveHandsMessagesOverInBatches(t *testing.T) {
	sink := &countSink{}
	r := newBenchRelay(sink, "ws:user-42")
	msg := appendCommand(nil, "message", []string{"ws:user-42", "payload"})
	err := r.receive(&replay{msg: msg, n: 10000}, func() {})
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
	_ = r.receive(&replay{msg: msg, n: b.N}, func() {})
	b.StopTimer()
	if sink.msgs != b.N {
		b.Fatalf("delivered %d of %d", sink.msgs, b.N)
	}
	b.ReportMetric(float64(b.N)/float64(max(sink.batches, 1)), "msgs/batch")
}

func TestReceiveParsesRepliesSplitAcrossReads(t *testing.T) {
	var in []byte
	in = append(in, "*3\r\n$9\r\nsubscribe\r\n$4\r\nws:a\r\n:1\r\n"...)
	in = appendCommand(in, "message", []string{"ws:a", "first"})
	in = appendCommand(in, "message", []string{"ws:unknown", "dropped"})
	in = append(in, "*2\r\n$4\r\npong\r\n$0\r\n\r\n+PONG\r\n"...)
	big := strings.Repeat("x", 3*readBufferSize)
	in = appendCommand(in, "smessage", []string{"ws:a", big})
	in = appendCommand(in, "message", []string{"ws:a", ""})
	in = append(in, "-MOVED 3999 127.0.0.1:6381\r\n"...)

	for name, src := range map[string]func() io.Reader{
		"one byte per read": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(in)) },
		"half per read":     func() io.Reader { return iotest.HalfReader(bytes.NewReader(in)) },
		"all at once":       func() io.Reader { return bytes.NewReader(in) },
	} {
		t.Run(name, func(t *testing.T) {
			var got []Message
			r := newBenchRelay(SinkFunc(func(b []Message) { got = append(got, b...) }), "ws:a")
			st, _ := r.chans.Get("ws:a")
			st.acks, r.inflight = 1, 1 // the SUBSCRIBE is in flight
			err := r.receive(src(), func() {})
			var moved errorReply
			if !errors.As(err, &moved) || !strings.HasPrefix(string(moved), "MOVED") {
				t.Fatalf("receive ended with %v, want the MOVED error", err)
			}
			if len(got) != 3 || string(got[0].Payload) != "first" || string(got[1].Payload) != big || len(got[2].Payload) != 0 {
				t.Fatalf("got %d messages", len(got))
			}
			if !st.live() || r.inflight != 0 {
				t.Fatal("confirmation not applied")
			}
		})
	}
}

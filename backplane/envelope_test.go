package backplane

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/huleedu/websocket-service/history"
)

// What history/library.lua publishes for a message; the Redis tests check the real thing.
func envelope(p history.Position, prev uint32, traceparent string, payload []byte) []byte {
	b := []byte{envelopeMark, envelopeVersion, ' '}
	for _, n := range []uint64{p.Epoch, p.Seq, uint64(p.Tag), uint64(prev)} {
		b = append(b, []byte(itoa(n))...)
		b = append(b, ' ')
	}
	b = append(b, traceparent...)
	b = append(b, '\n')
	return append(b, payload...)
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

func TestEnvelopeIsTakenOffSequencedMessages(t *testing.T) {
	p := history.Position{Epoch: 1765000000123456, Seq: 42, Tag: 4294967295}
	for _, tc := range []struct{ tp, payload string }{
		{"", `{"type":"notification"}`},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "plain text"},
		{"", ""},
		{"", "line one\nline two"},
		{"", "\xff\xfe not utf-8 inside"},
	} {
		m := message("ws:u1", envelope(p, 7, tc.tp, []byte(tc.payload)))
		if m.Position != p || m.Prev != 7 || string(m.Traceparent) != tc.tp || string(m.Payload) != tc.payload || m.Channel != "ws:u1" {
			t.Errorf("message = %+v (payload %q, traceparent %q), want %+v prev 7 %q %q", m, m.Payload, m.Traceparent, p, tc.tp, tc.payload)
		}
	}
}

func TestPlainPayloadsAreNeverTakenForSequenced(t *testing.T) {
	good := envelope(history.Position{Epoch: 1, Seq: 2, Tag: 3}, 4, "", []byte("x"))
	cases := [][]byte{
		nil, []byte(""), []byte(`{"a":1}`), []byte("1 2 3 4 \nx"), good[1:],
		[]byte("\xff"), []byte("\xff1"), []byte("\xff2 1 2 3 4 \nx"), []byte("\xff1 1 2 3 4 x"),
		[]byte("\xff1 0 2 3 4 \nx"), []byte("\xff1 1 2 4294967296 4 \nx"), []byte("\xff1 1 2 3 \nx"),
		[]byte("\xff1 99999999999999999999999 2 3 4 \nx"), []byte("\xff1 a 2 3 4 \nx"), []byte("\xff1  1 2 3 4 \nx"),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		b := make([]byte, rng.IntN(64))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		if i%2 == 0 && len(b) > 0 {
			b[0] = envelopeMark // the hardest case: the mark, then noise
		}
		cases = append(cases, b)
	}
	for _, b := range cases {
		in := bytes.Clone(b)
		m := message("ch", b)
		if !m.Position.IsZero() {
			t.Fatalf("plain payload %q decoded as sequenced %+v", in, m.Position)
		}
		if !bytes.Equal(m.Payload, in) {
			t.Fatalf("plain payload %q changed to %q", in, m.Payload)
		}
	}
}

func BenchmarkMessageDecode(b *testing.B) {
	seq := envelope(history.Position{Epoch: 1765000000123456, Seq: 123456, Tag: 3000000000}, 2999999999,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", []byte(`{"type":"notification","event_type":"batch_completed"}`))
	plain := []byte(`{"type":"notification","event_type":"batch_completed"}`)
	b.Run("sequenced", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if m := message("ws:u1", seq); m.Position.Seq != 123456 {
				b.Fatal(m)
			}
		}
	})
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if m := message("ws:u1", plain); !m.Position.IsZero() {
				b.Fatal(m)
			}
		}
	})
}

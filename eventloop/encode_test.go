//go:build linux

package eventloop

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/internal/rfc6455"
)

// frameSize is the encoded length of a server frame carrying n payload bytes, for the tests
// that count what a socket holds.
func frameSize(n int) int { return rfc6455.FrameSize(n) }

func TestEncodedFramesParseBack(t *testing.T) {
	// A server frame is unmasked, so mask it as a client would and parse it back.
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		payload := []byte(strings.Repeat("é", n/2) + strings.Repeat("a", n%2))
		f := encodeFrame(opText, payload)
		hdrLen := len(f) - len(payload)
		client := append([]byte(nil), f[:hdrLen]...)
		client[1] |= 0x80
		client = append(client, 0, 0, 0, 0)
		client = append(client, payload...)
		var p parser
		rec := &recorder{}
		if code := p.feed(client, 1<<20, rec, nil); code != 0 || len(rec.events) != 1 || rec.events[0] != "msg1:"+string(payload) {
			t.Fatalf("n=%d: code %d, %d events", n, code, len(rec.events))
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, size := range []int{64, 1024, 64 << 10} {
		payload := bytes.Repeat([]byte{'n'}, size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				_ = encodeFrame(opText, payload)
			}
		})
	}
}

//go:build linux

package eventloop

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

func TestEncodeFrameHeaders(t *testing.T) {
	for _, tc := range []struct {
		n      int
		header []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xFF, 0xFF}},
		{65536, binary.BigEndian.AppendUint64([]byte{0x81, 127}, 65536)},
	} {
		payload := bytes.Repeat([]byte{'p'}, tc.n)
		f := encodeFrame(opText, payload)
		if len(f) != frameSize(tc.n) || cap(f) != len(f) {
			t.Errorf("n=%d: len %d cap %d, want %d", tc.n, len(f), cap(f), frameSize(tc.n))
		}
		if !bytes.Equal(f[:len(tc.header)], tc.header) || !bytes.Equal(f[len(tc.header):], payload) {
			t.Errorf("n=%d: header %x, want %x", tc.n, f[:min(len(f), 10)], tc.header)
		}
	}
}

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

func TestEncodeClose(t *testing.T) {
	if got := encodeClose(1013); !bytes.Equal(got, []byte{0x88, 2, 0x03, 0xF5}) {
		t.Fatalf("close 1013 = %x", got)
	}
	if got := encodeClose(0); !bytes.Equal(got, []byte{0x88, 0}) {
		t.Fatalf("empty close = %x", got)
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

package rfc6455

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
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
		f := EncodeFrame(OpText, payload)
		if len(f) != FrameSize(tc.n) || cap(f) != len(f) {
			t.Errorf("n=%d: len %d cap %d, want %d", tc.n, len(f), cap(f), FrameSize(tc.n))
		}
		if !bytes.Equal(f[:len(tc.header)], tc.header) || !bytes.Equal(f[len(tc.header):], payload) {
			t.Errorf("n=%d: header %x, want %x", tc.n, f[:min(len(f), 10)], tc.header)
		}
		h, ok := ParseHeader(f)
		if !ok || !h.Fin || h.Op != OpText || h.Masked || h.Length != uint64(tc.n) || h.Size != len(tc.header) {
			t.Errorf("n=%d: parsed back as %+v, %v", tc.n, h, ok)
		}
	}
}

// A client frame is masked with its key and parses back, header and payload, at every length
// form.
func TestClientFrameParsesBack(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, n := range []int{0, 1, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte{'c'}, n)
		f := AppendHeader([]byte("prefix"), OpBinary, uint64(n), true)
		f = AppendMasked(f, payload, key)[len("prefix"):]
		h, ok := ParseHeader(f)
		if !ok || h.Fin || h.Op != OpBinary || !h.Masked || h.Mask != key || h.Length != uint64(n) || h.Size != HeaderSize(f) {
			t.Fatalf("n=%d: header %+v, %v", n, h, ok)
		}
		body := f[h.Size:]
		Mask(body, h.Mask)
		if !bytes.Equal(body, payload) {
			t.Fatalf("n=%d: payload does not unmask back", n)
		}
	}
}

// Every prefix of a header is reported incomplete, and the length is known before the key.
func TestPartialHeaders(t *testing.T) {
	f := AppendMasked(AppendHeader(nil, FinBit|OpText, 70000, true), make([]byte, 70000), [4]byte{1, 2, 3, 4})
	for i := range MaxClientHeader {
		if _, ok := ParseHeader(f[:i]); ok {
			t.Fatalf("a header of %d bytes parsed", i)
		}
		n, ok := PayloadLength(f[:i])
		if want := i >= 10; ok != want || (ok && n != 70000) {
			t.Fatalf("PayloadLength of %d bytes = %d, %v", i, n, ok)
		}
	}
	if HeaderSize(f[:1]) != 2 || HeaderSize(f[:2]) != MaxClientHeader {
		t.Fatalf("HeaderSize = %d, %d", HeaderSize(f[:1]), HeaderSize(f[:2]))
	}
}

func TestAppendFrameDoesNotAllocateIntoRoom(t *testing.T) {
	payload := make([]byte, 1024)
	buf := make([]byte, 0, FrameSize(len(payload)))
	if n := testing.AllocsPerRun(100, func() { _ = AppendFrame(buf[:0], OpText, payload) }); n != 0 {
		t.Fatalf("AppendFrame into a buffer with room allocates %.0f times", n)
	}
}

func TestEncodeClose(t *testing.T) {
	if got := EncodeClose(1013); !bytes.Equal(got, []byte{0x88, 2, 0x03, 0xF5}) {
		t.Fatalf("close 1013 = %x", got)
	}
	if got := EncodeClose(0); !bytes.Equal(got, []byte{0x88, 0}) {
		t.Fatalf("empty close = %x", got)
	}
	if got := CloseBody(4000, "bye"); string(got) != "\x0f\xa0bye" {
		t.Fatalf("close body 4000 bye = %q", got)
	}
}

func TestParseCloseBody(t *testing.T) {
	for _, tc := range []struct {
		body string
		code uint16
		ok   bool
	}{
		{"", 1005, true},
		{"\x03", 0, false},
		{"\x03\xe8", 1000, true},
		{"\x03\xe8bye", 1000, true},
		{"\x03\xe9", 1001, true},
		{"\x03\xec", 1004, false},
		{"\x03\xed", 1005, false},
		{"\x03\xee", 1006, false},
		{"\x03\xf5", 1013, true},
		{"\x03\xf6", 1014, true},
		{"\x03\xf7", 1015, false},
		{"\x07\xcf", 1999, false},
		{"\x0b\xb8", 3000, true},
		{"\x13\x87", 4999, true},
		{"\x13\x88", 5000, false},
		{"\x03\xe8\xff", 1000, false}, // a reason that is not UTF-8
	} {
		code, _, ok := ParseCloseBody([]byte(tc.body))
		if code != tc.code || ok != tc.ok {
			t.Errorf("ParseCloseBody(%q) = %d, %v; want %d, %v", tc.body, code, ok, tc.code, tc.ok)
		}
	}
	if _, reason, _ := ParseCloseBody([]byte("\x03\xe8bye")); string(reason) != "bye" {
		t.Errorf("reason %q, want bye", reason)
	}
}

func TestMaskMatchesBytewise(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for n := range 40 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		want := append([]byte(nil), b...)
		for i := range want {
			want[i] ^= key[i%4]
		}
		Mask(b, key)
		if !bytes.Equal(b, want) {
			t.Fatalf("n=%d: %x, want %x", n, b, want)
		}
	}
}

func TestAcceptKey(t *testing.T) {
	const key = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 §1.3's example
	if got := Accept(key); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("Accept = %q", got)
	}
	if !ValidKey(key) || ValidKey("dGhlIHNhbXBsZSBub25jZQ") || ValidKey("dGhlIHNhbXBsZSBub25jZQ=!") {
		t.Fatal("ValidKey")
	}
	if got := Accept("short"); len(got) != AcceptLen {
		t.Fatalf("Accept of an odd key = %q", got)
	}
	b := make([]byte, 0, AcceptLen)
	if n := testing.AllocsPerRun(100, func() { _ = AppendAccept(b[:0], key) }); n != 0 {
		t.Fatalf("AppendAccept allocates %.0f times", n)
	}
}

func TestHeaderHasToken(t *testing.T) {
	h := http.Header{"Connection": {"keep-alive, Upgrade"}, "Sec-Websocket-Protocol": {"a", " B , c"}}
	for _, tc := range []struct {
		name, token string
		want        bool
	}{
		{"Connection", "upgrade", true},
		{"Connection", "keep-alive", true},
		{"Connection", "close", false},
		{"Sec-Websocket-Protocol", "b", true},
		{"Sec-Websocket-Protocol", "c", true},
		{"Sec-Websocket-Protocol", "a, b", false},
		{"Upgrade", "websocket", false},
	} {
		if got := HeaderHasToken(h, tc.name, tc.token); got != tc.want {
			t.Errorf("HeaderHasToken(%s, %q) = %v", tc.name, tc.token, got)
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	for _, size := range []int{64, 1024, 64 << 10} {
		payload := bytes.Repeat([]byte{'n'}, size)
		buf := make([]byte, 0, FrameSize(size))
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendFrame(buf[:0], OpText, payload)
			}
		})
	}
}

func TestIsUpgrade(t *testing.T) {
	for _, tc := range []struct {
		conn, upgrade string
		want          bool
	}{
		{"Upgrade", "websocket", true},
		{"keep-alive, Upgrade", "WebSocket", true},
		{"keep-alive", "websocket", false},
		{"Upgrade", "h2c", false},
		{"", "", false},
	} {
		h := http.Header{}
		if tc.conn != "" {
			h.Set("Connection", tc.conn)
		}
		if tc.upgrade != "" {
			h.Set("Upgrade", tc.upgrade)
		}
		if got := IsUpgrade(h); got != tc.want {
			t.Errorf("IsUpgrade(Connection %q, Upgrade %q) = %v", tc.conn, tc.upgrade, got)
		}
	}
}

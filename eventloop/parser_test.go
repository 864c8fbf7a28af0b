//go:build linux

package eventloop

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/internal/rfc6455"
	"github.com/huleedu/websocket-service/internal/wsraw"
	"github.com/huleedu/websocket-service/message"
)

// clientFrame encodes a client frame: masked (with a fixed key) unless unmasked is set; rsv
// goes into bits 4-6.
func clientFrame(fin bool, rsv, op byte, payload []byte, unmasked bool) []byte {
	return wsraw.Frame{Op: op, Payload: payload, More: !fin, RSV: rsv, Unmasked: unmasked, Key: [4]byte{0x37, 0xfa, 0x21, 0x3d}}.Encode()
}

func cf(op byte, payload string) []byte { return clientFrame(true, 0, op, []byte(payload), false) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// recorder is a frameHandler that writes down what it gets.
type recorder struct {
	events  []string
	stopped bool // after a close frame, as the loop stops reading a closing connection
}

func (r *recorder) onMessage(_ *conn, op byte, payload []byte) bool {
	r.events = append(r.events, fmt.Sprintf("msg%d:%s", op, payload))
	return true
}

func (r *recorder) onFrame(*conn) {}

func (r *recorder) onControl(_ *conn, op byte, payload []byte) bool {
	r.events = append(r.events, fmt.Sprintf("ctl%d:%s", op, payload))
	r.stopped = op == opClose
	return !r.stopped
}

type parserCase struct {
	name   string
	input  []byte
	limit  int
	events []string
	code   uint16
}

func parserCases() []parserCase {
	long := strings.Repeat("x", 70000)
	closeBody := func(code uint16, reason string) string {
		return string(rfc6455.CloseBody(code, reason))
	}
	hugeHeader := []byte{0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4}
	msbHeader := []byte{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
	return []parserCase{
		{name: "text", input: cf(opText, "hello"), events: []string{"msg1:hello"}},
		{name: "empty text", input: cf(opText, ""), events: []string{"msg1:"}},
		{name: "binary 126", input: cf(opBinary, strings.Repeat("b", 126)), events: []string{"msg2:" + strings.Repeat("b", 126)}},
		{name: "binary 65535", input: cf(opBinary, long[:65535]), limit: 70000, events: []string{"msg2:" + long[:65535]}},
		{name: "binary 64-bit length", input: cf(opBinary, long), limit: 70000, events: []string{"msg2:" + long}},
		{name: "two frames in one read", input: cat(cf(opText, "a"), cf(opBinary, "b")), events: []string{"msg1:a", "msg2:b"}},
		{name: "ping pong", input: cat(cf(opPing, "p"), cf(opPong, "q")), events: []string{"ctl9:p", "ctl10:q"}},
		{name: "close stops parsing", input: cat(cf(opClose, closeBody(1000, "bye")), cf(opText, "after")), events: []string{"ctl8:" + closeBody(1000, "bye")}},
		{
			name: "fragmented text with interleaved pings",
			input: cat(
				clientFrame(false, 0, opText, []byte("hel"), false),
				cf(opPing, "1"),
				clientFrame(false, 0, opContinuation, []byte("lo "), false),
				cf(opPong, "2"),
				clientFrame(true, 0, opContinuation, []byte("world"), false),
			),
			events: []string{"ctl9:1", "ctl10:2", "msg1:hello world"},
		},
		{
			name:   "fragmented binary with empty fragments",
			input:  cat(clientFrame(false, 0, opBinary, nil, false), clientFrame(false, 0, opContinuation, nil, false), clientFrame(true, 0, opContinuation, []byte("z"), false)),
			events: []string{"msg2:z"},
		},
		{
			name:   "utf-8 split across fragments",
			input:  cat(clientFrame(false, 0, opText, []byte("\xce"), false), clientFrame(true, 0, opContinuation, []byte("\xba"), false)),
			events: []string{"msg1:κ"},
		},
		{name: "unmasked", input: clientFrame(true, 0, opText, []byte("x"), true), code: 1002},
		{name: "rsv1", input: clientFrame(true, 4, opText, []byte("x"), false), code: 1002},
		{name: "rsv3", input: clientFrame(true, 1, opBinary, []byte("x"), false), code: 1002},
		{name: "opcode 3", input: cf(3, "x"), code: 1002},
		{name: "opcode 0xB", input: cf(0xB, "x"), code: 1002},
		{name: "control over 125", input: cf(opPing, strings.Repeat("p", 126)), code: 1002},
		{name: "fragmented control", input: clientFrame(false, 0, opPing, []byte("p"), false), code: 1002},
		{name: "continuation without start", input: clientFrame(true, 0, opContinuation, []byte("x"), false), code: 1002},
		{name: "new message inside fragmented one", input: cat(clientFrame(false, 0, opText, []byte("a"), false), cf(opText, "b")), code: 1002},
		{name: "invalid utf-8", input: cf(opText, "\xff\xfe"), code: 1007},
		{name: "invalid utf-8 in fragments", input: cat(clientFrame(false, 0, opText, []byte("ok"), false), clientFrame(true, 0, opContinuation, []byte("\xc0"), false)), code: 1007},
		{
			name:   "invalid utf-8 fails before the last fragment",
			input:  cat(clientFrame(false, 0, opText, []byte("ok\xed\xa0"), false), clientFrame(false, 0, opContinuation, []byte("more"), false)),
			code:   1007,
			events: nil,
		},
		{
			name:   "rune split over three fragments",
			input:  cat(clientFrame(false, 0, opText, []byte("\xf0\x9f"), false), clientFrame(false, 0, opContinuation, []byte("\x98"), false), clientFrame(true, 0, opContinuation, []byte("\x80!"), false)),
			events: []string{"msg1:😀!"},
		},
		{name: "incomplete rune at the end of fragments", input: cat(clientFrame(false, 0, opText, []byte("a"), false), clientFrame(true, 0, opContinuation, []byte("\xe2\x82"), false)), code: 1007},
		{name: "truncated utf-8 at end of message", input: cf(opText, "\xce"), code: 1007},
		{name: "binary not checked for utf-8", input: cf(opBinary, "\xff"), events: []string{"msg2:\xff"}},
		{name: "frame over limit", input: cf(opText, "12345"), limit: 4, code: 1009},
		{name: "frame at limit", input: cf(opText, "1234"), limit: 4, events: []string{"msg1:1234"}},
		{name: "fragments over limit", input: cat(clientFrame(false, 0, opText, []byte("123"), false), clientFrame(true, 0, opContinuation, []byte("45"), false)), limit: 4, code: 1009},
		{name: "2^63-1 length header", input: hugeHeader, code: 1009},
		{name: "length with top bit set", input: msbHeader, code: 1009},
		{name: "control frames ignore the limit", input: cf(opPing, strings.Repeat("p", 125)), limit: 1, events: []string{"ctl9:" + strings.Repeat("p", 125)}},
	}
}

// feedChunks feeds input in pieces of the given sizes (cycling), copying each piece as a read
// into a scratch buffer would.
func feedChunks(p *parser, input []byte, limit int, h *recorder, chunk func() int) uint16 {
	for len(input) > 0 && !h.stopped {
		n := min(chunk(), len(input))
		buf := append([]byte(nil), input[:n]...)
		input = input[n:]
		if code := p.feed(buf, limit, h, nil); code != 0 {
			return code
		}
	}
	return 0
}

func TestParserRules(t *testing.T) {
	for _, tc := range parserCases() {
		limit := tc.limit
		if limit == 0 {
			limit = 65536
		}
		rng := rand.New(rand.NewPCG(1, uint64(len(tc.input))))
		feeds := map[string]func() int{
			"whole":          func() int { return len(tc.input) },
			"byte-at-a-time": func() int { return 1 },
			"random chunks":  func() int { return 1 + rng.IntN(20) },
		}
		for how, chunk := range feeds {
			t.Run(tc.name+"/"+how, func(t *testing.T) {
				var p parser
				rec := &recorder{}
				code := feedChunks(&p, tc.input, limit, rec, chunk)
				if code != tc.code {
					t.Fatalf("code = %d, want %d (events %q)", code, tc.code, rec.events)
				}
				if tc.code == 0 && strings.Join(rec.events, "|") != strings.Join(tc.events, "|") {
					t.Fatalf("events = %.80q, want %.80q", rec.events, tc.events)
				}
				if tc.code == 0 && len(tc.events) > 0 && !strings.HasPrefix(tc.events[len(tc.events)-1], "ctl8") && p.rx != nil {
					t.Fatalf("parser still holds %d bytes after complete input", p.held())
				}
			})
		}
	}
}

// A header is a claim, not a fact: the parser holds what arrived (at most twice that, as its
// buffer doubles), never the length a header announces.
func TestParserHoldsWhatArrivedNeverWhatAHeaderAnnounces(t *testing.T) {
	const limit = 1 << 20
	frame := cf(opBinary, strings.Repeat("a", limit))
	var p parser
	rec := &recorder{}
	if code := p.feed(append([]byte(nil), frame[:rfc6455.MaxClientHeader]...), limit, rec, nil); code != 0 {
		t.Fatal(code)
	}
	if got := p.held(); got > 64 {
		t.Fatalf("held %d bytes for a bare header announcing %d, want the header's few bytes", got, limit)
	}
	if !p.begun() {
		t.Fatal("begun() = false after a bare header")
	}
	p.setDeadline(7)
	// Trickled bytes: the buffer follows them; the frame is not new.
	for i := rfc6455.MaxClientHeader; i < 4096; i++ {
		if code := p.feed(append([]byte(nil), frame[i]), limit, rec, nil); code != 0 {
			t.Fatal(code)
		}
		if got := p.held(); got > 2*(i+1) {
			t.Fatalf("held %d bytes after %d arrived", got, i+1)
		}
	}
	if p.begun() || p.deadline() != 7 {
		t.Fatalf("while trickling: begun() = %v, deadline() = %d; want false, 7", p.begun(), p.deadline())
	}
	if code := p.feed(append([]byte(nil), frame[4096:]...), limit, rec, nil); code != 0 {
		t.Fatal(code)
	}
	if p.deadline() != 0 || p.rx != nil || len(rec.events) != 1 {
		t.Fatalf("after completion: deadline=%d rx=%v events=%d", p.deadline(), p.rx, len(rec.events))
	}
}

// The same for a partial header: its bytes, no more.
func TestParserHoldsAPartialHeaderInItsOwnBytes(t *testing.T) {
	var p parser
	frame := cf(opBinary, strings.Repeat("a", 1000))
	if code := p.feed(append([]byte(nil), frame[:3]...), 65536, &recorder{}, nil); code != 0 {
		t.Fatal(code)
	}
	if got := p.held(); got > 16 {
		t.Fatalf("held %d bytes for 3 bytes of a header", got)
	}
}

func TestParserDecidesTooLargeFromTheHeaderAlone(t *testing.T) {
	var p parser
	// Only the first 4 bytes of a 16-bit-length frame of 1000 bytes against a 100-byte limit.
	frame := cf(opText, strings.Repeat("a", 1000))
	if code := p.feed(append([]byte(nil), frame[:4]...), 100, &recorder{}, nil); code != message.CloseMessageTooBig {
		t.Fatalf("code = %d, want 1009 before any payload", code)
	}
}

// FuzzParser feeds arbitrary bytes in arbitrary chunks: the parser must never panic, must
// answer the same whatever the chunking, and must never hold more than a frame's worth.
func FuzzParser(f *testing.F) {
	for _, tc := range parserCases() {
		if len(tc.input) < 4096 {
			f.Add(tc.input, uint8(3))
		}
	}
	f.Fuzz(func(t *testing.T, input []byte, chunk uint8) {
		const limit = 1024
		var whole parser
		recWhole := &recorder{}
		codeWhole := whole.feed(append([]byte(nil), input...), limit, recWhole, nil)

		var split parser
		recSplit := &recorder{}
		size := int(chunk%16) + 1
		codeSplit := feedChunks(&split, input, limit, recSplit, func() int { return size })
		if codeWhole != codeSplit {
			t.Fatalf("whole code %d, chunked (%d) code %d", codeWhole, size, codeSplit)
		}
		if strings.Join(recWhole.events, "|") != strings.Join(recSplit.events, "|") {
			t.Fatalf("events differ: %q vs %q", recWhole.events, recSplit.events)
		}
		if h := split.held(); h > 2*(limit+rfc6455.MaxClientHeader) {
			t.Fatalf("parser holds %d bytes", h)
		}
		switch codeWhole {
		case 0, message.CloseProtocolError, message.CloseInvalidPayload, message.CloseMessageTooBig:
		default:
			t.Fatalf("unexpected code %d", codeWhole)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, size := range []int{16, 1024, 16 << 10} {
		frame := cf(opText, strings.Repeat("a", size))
		input := bytes.Repeat(frame, 64)
		buf := make([]byte, len(input))
		b.Run(fmt.Sprintf("text-%dB-x64", size), func(b *testing.B) {
			var p parser
			h := discard{}
			b.SetBytes(int64(len(input)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, input)
				if code := p.feed(buf, 65536, h, nil); code != 0 {
					b.Fatal(code)
				}
			}
		})
	}
}

type discard struct{}

func (discard) onMessage(*conn, byte, []byte) bool { return true }
func (discard) onControl(*conn, byte, []byte) bool { return true }
func (discard) onFrame(*conn)                      {}

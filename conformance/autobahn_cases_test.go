package conformance

import (
	"bytes"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The cases of the Autobahn|Testsuite fuzzing client that apply to a server, numbered as
// Autobahn numbers them, with the frames each case sends and the outcome it expects (Autobahn's
// OK, with NON-STRICT alternatives where Autobahn allows them). Differences from Autobahn, all
// deliberate:
//   - text is echoed as "Echo: " + text (the service's echo); binary and pongs unchanged;
//   - a failed connection must carry its close code (1002 protocol error, 1007 invalid UTF-8):
//     Autobahn also accepts a bare TCP drop in some cases, docs/PROTOCOL.md does not;
//   - Autobahn's waits of 1 s are 200 ms, and group 9 (limits/performance) is scaled down:
//     sizes divided by 16 (16 MiB -> 1 MiB), 1,000 round trips -> 100.
// Not applicable: 10.* (auto-fragmentation is a client/echo-server feature), 12.*/13.*
// (permessage-deflate, which the service does not negotiate).

// caseWait is Autobahn's 1 s wait between the parts of a case, scaled down.
const caseWait = 200 * time.Millisecond

// autobahnCases returns every case in Autobahn's order.
func autobahnCases() []autobahnCase {
	var cs []autobahnCase
	cs = append(cs, framingCases()...)
	cs = append(cs, pingPongCases()...)
	cs = append(cs, reservedBitCases()...)
	cs = append(cs, opcodeCases()...)
	cs = append(cs, fragmentationCases()...)
	cs = append(cs, utf8Cases()...)
	cs = append(cs, closeCases()...)
	cs = append(cs, limitCases()...)
	return cs
}

// framingCases are 1.1.* (text) and 1.2.* (binary): messages of the lengths at the edges of
// the 7-bit, 16-bit and 64-bit length encodings.
func framingCases() []autobahnCase {
	lengths := []int{0, 125, 126, 127, 128, 65535, 65536}
	var cs []autobahnCase
	for i, n := range lengths {
		text := strings.Repeat("*", n)
		cs = append(cs, autobahnCase{
			id: fmt.Sprintf("1.1.%d", i+1), desc: fmt.Sprintf("text message of length %d", n),
			do: []action{send(Text(text))}, want: []Event{echoText(text)}, end: cleanClose,
		})
	}
	big := strings.Repeat("*", 65536)
	cs = append(cs, autobahnCase{
		id: "1.1.8", desc: "text message of length 65536, sent in chops of 997 octets",
		do: []action{chopped(997, Text(big))}, want: []Event{echoText(big)}, end: cleanClose,
	})
	for i, n := range lengths {
		bin := bytes.Repeat([]byte{0xfe}, n)
		cs = append(cs, autobahnCase{
			id: fmt.Sprintf("1.2.%d", i+1), desc: fmt.Sprintf("binary message of length %d", n),
			do: []action{send(Binary(bin))}, want: []Event{echoBinary(bin)}, end: cleanClose,
		})
	}
	bigBin := bytes.Repeat([]byte{0xfe}, 65536)
	cs = append(cs, autobahnCase{
		id: "1.2.8", desc: "binary message of length 65536, sent in chops of 997 octets",
		do: []action{chopped(997, Binary(bigBin))}, want: []Event{echoBinary(bigBin)}, end: cleanClose,
	})
	return cs
}

// pingPongCases are 2.*: pings answered with the same payload, control frame limits,
// unsolicited pongs ignored.
func pingPongCases() []autobahnCase {
	bin := string([]byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff})
	p125 := string(bytes.Repeat([]byte{0xfe}, 125))
	p126 := string(bytes.Repeat([]byte{0xfe}, 126))
	var tenPings []Frame
	var tenPongs []Event
	for i := 0; i < 10; i++ {
		s := fmt.Sprintf("payload-%d", i)
		tenPings = append(tenPings, Ping(s))
		tenPongs = append(tenPongs, pong(s))
	}
	return []autobahnCase{
		{id: "2.1", desc: "ping without payload", do: []action{send(Ping(""))}, want: []Event{pong("")}, end: cleanClose},
		{id: "2.2", desc: "ping with a small text payload", do: []action{send(Ping("Hello, world!"))}, want: []Event{pong("Hello, world!")}, end: cleanClose},
		{id: "2.3", desc: "ping with a small binary payload", do: []action{send(Ping(bin))}, want: []Event{pong(bin)}, end: cleanClose},
		{id: "2.4", desc: "ping with a 125-octet binary payload", do: []action{send(Ping(p125))}, want: []Event{pong(p125)}, end: cleanClose},
		{id: "2.5", desc: "ping with a 126-octet payload (control frames are at most 125)", do: []action{send(Ping(p126))}, end: fails(1002)},
		{id: "2.6", desc: "ping with a 125-octet payload, sent octet by octet", do: []action{octets(Ping(p125))}, want: []Event{pong(p125)}, end: cleanClose},
		{id: "2.7", desc: "unsolicited pong without payload: ignored", do: []action{send(Frame{Op: OpPong})}, end: cleanClose},
		{id: "2.8", desc: "unsolicited pong with payload: ignored", do: []action{send(Frame{Op: OpPong, Payload: []byte("unsolicited pong payload")})}, end: cleanClose},
		{id: "2.9", desc: "unsolicited pong, then ping: only the ping answered",
			do:   []action{send(Frame{Op: OpPong, Payload: []byte("unsolicited pong payload")}, Ping("ping payload"))},
			want: []Event{pong("ping payload")}, end: cleanClose},
		{id: "2.10", desc: "10 pings back to back: 10 pongs in order", do: []action{send(tenPings...)}, want: tenPongs, end: cleanClose},
		{id: "2.11", desc: "10 pings, each sent octet by octet: 10 pongs in order", do: []action{octets(tenPings...)}, want: tenPongs, end: cleanClose},
	}
}

// reservedBitCases are 3.*: a frame with RSV bits set and no extension negotiated fails the
// connection; messages before it are echoed (or, non-strict, the failure comes first).
func reservedBitCases() []autobahnCase {
	hello := "Hello, world!"
	rsv := func(f Frame, bits byte) Frame { f.RSV = bits; return f }
	bin := []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}
	return []autobahnCase{
		{id: "3.1", desc: "text with RSV = 1", do: []action{send(rsv(Text(hello), 1))}, end: fails(1002)},
		{id: "3.2", desc: "text, text with RSV = 2, ping", do: []action{send(Text(hello), rsv(Text(hello), 2), Ping(hello))},
			want: []Event{echoText(hello)}, alt: [][]Event{{}}, end: fails(1002)},
		{id: "3.3", desc: "text, text with RSV = 3, ping; frame by frame", do: []action{perFrame(Text(hello), rsv(Text(hello), 3), Ping(hello))},
			want: []Event{echoText(hello)}, alt: [][]Event{{}}, end: fails(1002)},
		{id: "3.4", desc: "text, text with RSV = 4, ping; octet by octet", do: []action{octets(Text(hello), rsv(Text(hello), 4), Ping(hello))},
			want: []Event{echoText(hello)}, alt: [][]Event{{}}, end: fails(1002)},
		{id: "3.5", desc: "binary with RSV = 5", do: []action{send(rsv(Binary(bin), 5))}, end: fails(1002)},
		{id: "3.6", desc: "ping with RSV = 6", do: []action{send(rsv(Ping(hello), 6))}, end: fails(1002)},
		{id: "3.7", desc: "close with RSV = 7", do: []action{send(rsv(Close(1000, ""), 7))}, end: fails(1002)},
	}
}

// opcodeCases are 4.*: reserved non-control (3-7) and control (11-15) opcodes fail the
// connection.
func opcodeCases() []autobahnCase {
	hello := "Hello, world!"
	var cs []autobahnCase
	for g, base := range []byte{3, 11} {
		kind := "non-control"
		if g == 1 {
			kind = "control"
		}
		op := func(i int) byte { return base + byte(i) }
		payload := []byte("reserved opcode payload")
		cs = append(cs,
			autobahnCase{id: fmt.Sprintf("4.%d.1", g+1), desc: fmt.Sprintf("reserved %s opcode %d", kind, op(0)),
				do: []action{send(Frame{Op: op(0)})}, end: fails(1002)},
			autobahnCase{id: fmt.Sprintf("4.%d.2", g+1), desc: fmt.Sprintf("reserved %s opcode %d with payload", kind, op(1)),
				do: []action{send(Frame{Op: op(1), Payload: payload})}, end: fails(1002)},
			autobahnCase{id: fmt.Sprintf("4.%d.3", g+1), desc: fmt.Sprintf("text, reserved %s opcode %d, ping", kind, op(2)),
				do:   []action{send(Text(hello), Frame{Op: op(2)}, Ping(hello))},
				want: []Event{echoText(hello)}, alt: [][]Event{{}}, end: fails(1002)},
			autobahnCase{id: fmt.Sprintf("4.%d.4", g+1), desc: fmt.Sprintf("text, reserved %s opcode %d with payload, ping", kind, op(3)),
				do:   []action{send(Text(hello), Frame{Op: op(3), Payload: payload}, Ping(hello))},
				want: []Event{echoText(hello)}, alt: [][]Event{{}}, end: fails(1002)},
			autobahnCase{id: fmt.Sprintf("4.%d.5", g+1), desc: fmt.Sprintf("text, reserved %s opcode %d with payload, ping; octet by octet", kind, op(4)),
				do:   []action{octets(Text(hello), Frame{Op: op(4), Payload: payload}, Ping(hello))},
				want: []Event{echoText(hello)}, alt: [][]Event{{}}, end: fails(1002)},
		)
	}
	return cs
}

// fragmentationCases are 5.*: fragmented messages reassembled, control frames between
// fragments answered, continuation frames without a message (or a new message inside one)
// failing the connection.
func fragmentationCases() []autobahnCase {
	first := func(op byte, s string) Frame { return Frame{Op: op, Payload: []byte(s), More: true} }
	cont := func(s string, more bool) Frame { return Frame{Op: OpContinuation, Payload: []byte(s), More: more} }
	f12 := []Frame{first(OpText, "fragment1"), cont("fragment2", false)}
	withPing := []Frame{first(OpText, "fragment1"), Ping("pongme!"), cont("fragment2", false)}
	stray := func(fin bool) []Frame {
		return []Frame{cont("non-continuation payload", !fin), Text("Hello, world!")}
	}
	repeated := func(fin bool) []Frame {
		var fs []Frame
		for i := 0; i < 2; i++ {
			fs = append(fs, cont("fragment1", !fin), first(OpText, "fragment2"), cont("fragment3", false))
		}
		return fs
	}
	frags := []string{"fragment1", "fragment2", "fragment3", "fragment4", "fragment5"}
	pings := []string{"pongme 1!", "pongme 2!"}
	interleaved := func(write func(...Frame) action) []action {
		return []action{
			write(first(OpText, frags[0]), cont(frags[1], true), Ping(pings[0])),
			pause(caseWait),
			write(cont(frags[2], true), cont(frags[3], true), Ping(pings[1]), cont(frags[4], false)),
		}
	}
	interleavedWant := []Event{pong(pings[0]), pong(pings[1]), echoText(strings.Join(frags, ""))}
	return []autobahnCase{
		{id: "5.1", desc: "ping in 2 fragments", do: []action{send(first(OpPing, "fragment1"), cont("fragment2", false))}, end: fails(1002)},
		{id: "5.2", desc: "pong in 2 fragments", do: []action{send(first(OpPong, "fragment1"), cont("fragment2", false))}, end: fails(1002)},
		{id: "5.3", desc: "text in 2 fragments", do: []action{send(f12...)}, want: []Event{echoText("fragment1fragment2")}, end: cleanClose},
		{id: "5.4", desc: "text in 2 fragments, frame by frame", do: []action{perFrame(f12...)}, want: []Event{echoText("fragment1fragment2")}, end: cleanClose},
		{id: "5.5", desc: "text in 2 fragments, octet by octet", do: []action{octets(f12...)}, want: []Event{echoText("fragment1fragment2")}, end: cleanClose},
		{id: "5.6", desc: "text in 2 fragments with a ping between", do: []action{send(withPing...)},
			want: []Event{pong("pongme!"), echoText("fragment1fragment2")}, end: cleanClose},
		{id: "5.7", desc: "text in 2 fragments with a ping between, frame by frame", do: []action{perFrame(withPing...)},
			want: []Event{pong("pongme!"), echoText("fragment1fragment2")}, end: cleanClose},
		{id: "5.8", desc: "text in 2 fragments with a ping between, octet by octet", do: []action{octets(withPing...)},
			want: []Event{pong("pongme!"), echoText("fragment1fragment2")}, end: cleanClose},
		{id: "5.9", desc: "continuation (FIN) with nothing to continue, then text", do: []action{send(stray(true)...)}, end: fails(1002)},
		{id: "5.10", desc: "continuation (FIN) with nothing to continue, then text; frame by frame", do: []action{perFrame(stray(true)...)}, end: fails(1002)},
		{id: "5.11", desc: "continuation (FIN) with nothing to continue, then text; octet by octet", do: []action{octets(stray(true)...)}, end: fails(1002)},
		{id: "5.12", desc: "continuation (no FIN) with nothing to continue, then text", do: []action{send(stray(false)...)}, end: fails(1002)},
		{id: "5.13", desc: "continuation (no FIN) with nothing to continue, then text; frame by frame", do: []action{perFrame(stray(false)...)}, end: fails(1002)},
		{id: "5.14", desc: "continuation (no FIN) with nothing to continue, then text; octet by octet", do: []action{octets(stray(false)...)}, end: fails(1002)},
		{id: "5.15", desc: "text in 2 fragments, then a stray continuation, then text",
			do:   []action{send(first(OpText, "fragment1"), cont("fragment2", false), cont("fragment3", true), Text("fragment4"))},
			want: []Event{echoText("fragment1fragment2")}, alt: [][]Event{{}}, end: fails(1002)},
		{id: "5.16", desc: "2x: stray continuation (no FIN), then text in 2 fragments", do: []action{send(repeated(false)...)}, end: fails(1002)},
		{id: "5.17", desc: "2x: stray continuation (FIN), then text in 2 fragments", do: []action{send(repeated(true)...)}, end: fails(1002)},
		{id: "5.18", desc: "text in 2 fragments, both with opcode text", do: []action{send(first(OpText, "fragment1"), Text("fragment2"))}, end: fails(1002)},
		{id: "5.19", desc: "text in 5 fragments with 2 pings between, with a wait", do: interleaved(send), want: interleavedWant, end: cleanClose},
		{id: "5.20", desc: "as 5.19, octet by octet", do: interleaved(octets), want: interleavedWant, end: cleanClose},
	}
}

// closeCases are 7.*: the closing handshake — nothing answered after a close, the close body
// validated (length, UTF-8 reason, code ranges), valid codes echoed.
func closeCases() []autobahnCase {
	hello := "Hello World"
	invalidReason := string([]byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64})
	big := strings.Repeat("BAsd7&jh23", 256<<10/10+1)[:256<<10]
	cs := []autobahnCase{
		{id: "7.1.1", desc: "text, then close", do: []action{send(Text(hello), Close(1000, ""))}, want: []Event{echoText(hello)}, end: echoesClose(1000)},
		{id: "7.1.2", desc: "close twice: one close answered", do: []action{send(Close(1000, ""), Close(1000, ""))}, end: echoesClose(1000)},
		{id: "7.1.3", desc: "close, then ping: no pong", do: []action{send(Close(1000, ""), Ping(hello))}, end: echoesClose(1000)},
		{id: "7.1.4", desc: "close, then text: no echo", do: []action{send(Close(1000, ""), Text(hello))}, end: echoesClose(1000)},
		{id: "7.1.5", desc: "first fragment, close, last fragment: no echo",
			do:  []action{send(Frame{Op: OpText, Payload: []byte("fragment1"), More: true}, Close(1000, ""), Frame{Op: OpContinuation, Payload: []byte("fragment2")})},
			end: echoesClose(1000)},
		{id: "7.1.6", desc: "256 KiB text, text, close, ping back to back", info: true,
			do:   []action{send(Text(big), Text("Hello World!"), Close(1000, ""), Ping(""))},
			want: []Event{echoText(big), echoText("Hello World!")}, alt: [][]Event{{}}, end: echoesClose(1000)},
		{id: "7.3.1", desc: "close with an empty body", do: []action{send(Frame{Op: OpClose})}, end: echoesClose(1000, 1005)},
		{id: "7.3.2", desc: "close with a 1-octet body", do: []action{send(Frame{Op: OpClose, Payload: []byte("*")})}, end: echoesClose(1002)},
		{id: "7.3.3", desc: "close 1000 without reason", do: []action{send(Close(1000, ""))}, end: echoesClose(1000)},
		{id: "7.3.4", desc: "close 1000 with a reason", do: []action{send(Close(1000, "Hello World!"))}, end: echoesClose(1000)},
		{id: "7.3.5", desc: "close 1000 with a 123-octet reason", do: []action{send(Close(1000, strings.Repeat("*", 123)))}, end: echoesClose(1000)},
		{id: "7.3.6", desc: "close 1000 with a 124-octet reason (body over 125)", do: []action{send(Close(1000, strings.Repeat("*", 124)))}, end: echoesClose(1002)},
		{id: "7.5.1", desc: "close with a reason that is not UTF-8", do: []action{send(Close(1000, invalidReason))}, end: echoesClose(1002, 1007)},
	}
	for i, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		cs = append(cs, autobahnCase{id: fmt.Sprintf("7.7.%d", i+1), desc: fmt.Sprintf("close with valid code %d: echoed or 1000", code),
			do: []action{send(Close(code, ""))}, end: echoesClose(1000, code)})
	}
	for i, code := range []uint16{0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999} {
		cs = append(cs, autobahnCase{id: fmt.Sprintf("7.9.%d", i+1), desc: fmt.Sprintf("close with invalid code %d", code),
			do: []action{send(Close(code, ""))}, end: echoesClose(1002)})
	}
	for i, code := range []uint16{5000, 65535} {
		cs = append(cs, autobahnCase{id: fmt.Sprintf("7.13.%d", i+1), desc: fmt.Sprintf("close with code %d (undefined by the spec)", code), info: true,
			do: []action{send(Close(code, ""))}, end: echoesClose(1000, code, 1002)})
	}
	return cs
}

// limitCases are 9.* scaled down by 16: large messages, large messages in many fragments or
// tiny TCP chops, and many sequential round trips.
func limitCases() []autobahnCase {
	const kib = 1 << 10
	var cs []autobahnCase
	sizes := []int{4 * kib, 16 * kib, 64 * kib, 256 * kib, 512 * kib, 1024 * kib}
	for g, binary := range []bool{false, true} {
		for i, n := range sizes {
			f, want := bigMessage(n, binary)
			cs = append(cs, autobahnCase{id: fmt.Sprintf("9.%d.%d", g+1, i+1), desc: fmt.Sprintf("%s message of %d KiB", kindName(binary), n/kib),
				do: []action{send(f)}, want: []Event{want}, end: cleanClose, timeout: 10 * time.Second})
		}
	}
	fragSizes := []int{64, 256, kib, 4 * kib, 16 * kib, 64 * kib, 256 * kib, 1024 * kib, 4096 * kib}
	for g, binary := range []bool{false, true} {
		for i, fs := range fragSizes {
			f, want := bigMessage(256*kib, binary)
			cs = append(cs, autobahnCase{id: fmt.Sprintf("9.%d.%d", g+3, i+1), desc: fmt.Sprintf("%s message of 256 KiB in fragments of %d octets", kindName(binary), fs),
				do: []action{send(fragment(f, fs)...)}, want: []Event{want}, end: cleanClose, timeout: 10 * time.Second})
		}
	}
	for g, binary := range []bool{false, true} {
		for i, chop := range []int{64, 128, 256, 512, 1024, 2048} {
			f, want := bigMessage(256*kib, binary)
			cs = append(cs, autobahnCase{id: fmt.Sprintf("9.%d.%d", g+5, i+1), desc: fmt.Sprintf("%s message of 256 KiB in TCP chops of %d octets", kindName(binary), chop),
				do: []action{chopped(chop, f)}, want: []Event{want}, end: cleanClose, timeout: 10 * time.Second})
		}
	}
	for g, binary := range []bool{false, true} {
		for i, n := range []int{0, 16, 64, 256, 1024, 4096} {
			cs = append(cs, autobahnCase{id: fmt.Sprintf("9.%d.%d", g+7, i+1), desc: fmt.Sprintf("100 %s messages of %d octets, one round trip each", kindName(binary), n),
				custom: roundTrips(100, n, binary)})
		}
	}
	return cs
}

func kindName(binary bool) string {
	if binary {
		return "binary"
	}
	return "text"
}

// bigMessage is a message of n octets and its expected echo.
func bigMessage(n int, binary bool) (Frame, Event) {
	if binary {
		b := bytes.Repeat([]byte{0xfe}, n)
		return Binary(b), echoBinary(b)
	}
	s := strings.Repeat("*", n)
	return Text(s), echoText(s)
}

// fragment splits a message frame into frames of at most size octets.
func fragment(f Frame, size int) []Frame {
	var fs []Frame
	p := f.Payload
	op := f.Op
	for {
		n := min(size, len(p))
		fs = append(fs, Frame{Op: op, Payload: p[:n], More: n < len(p)})
		p, op = p[n:], OpContinuation
		if len(p) == 0 {
			return fs
		}
	}
}

// utf8Cases are 6.*: UTF-8 validation of text, whole and fragmented at any octet, with the
// sequences of Markus Kuhn's UTF-8 decoder stress test (6.5-6.23) as Autobahn lists them.
func utf8Cases() []autobahnCase {
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	hello := "Hello-µ@ßöäüàá-UTF-8!!"
	invalid := kosme + "\xed\xa0\x80" + "edited"
	oneOctetFrames := func(s string) []Frame {
		var fs []Frame
		for i := 0; i < len(s); i++ {
			op := OpContinuation
			if i == 0 {
				op = OpText
			}
			fs = append(fs, Frame{Op: op, Payload: []byte{s[i]}, More: i < len(s)-1})
		}
		return fs
	}
	// 6.4.*: an invalid message in three parts with waits between; failing after the second
	// part is Autobahn's OK (fail fast), failing at the end of the message its NON-STRICT.
	p1, p2, p3 := kosme, "\xf4\x90\x80\x80", "edited"
	whole := p1 + p2 + p3
	frames3 := func(a, b, c string) []action {
		return []action{
			send(Frame{Op: OpText, Payload: []byte(a), More: true}), pause(caseWait),
			send(Frame{Op: OpContinuation, Payload: []byte(b), More: true}), pause(caseWait),
			mark(markLastPart), send(Frame{Op: OpContinuation, Payload: []byte(c)}),
		}
	}
	chops3 := func(cut1, cut2 int) []action {
		wire := Text(whole).Encode()
		head := len(wire) - len(whole)
		return []action{
			rawWrite(wire[:head+cut1]), pause(caseWait),
			rawWrite(wire[head+cut1 : head+cut2]), pause(caseWait),
			mark(markLastPart), rawWrite(wire[head+cut2:]),
		}
	}
	cs := []autobahnCase{
		{id: "6.1.1", desc: "text of length 0", do: []action{send(Text(""))}, want: []Event{echoText("")}, end: cleanClose},
		{id: "6.1.2", desc: "text in 3 fragments of length 0",
			do:   []action{send(Frame{Op: OpText, More: true}, Frame{Op: OpContinuation, More: true}, Frame{Op: OpContinuation})},
			want: []Event{echoText("")}, end: cleanClose},
		{id: "6.1.3", desc: "text in 3 fragments, first and last of length 0",
			do:   []action{send(Frame{Op: OpText, More: true}, Frame{Op: OpContinuation, Payload: []byte("middle frame payload"), More: true}, Frame{Op: OpContinuation})},
			want: []Event{echoText("middle frame payload")}, end: cleanClose},
		{id: "6.2.1", desc: "valid UTF-8 in one frame", do: []action{send(Text(hello))}, want: []Event{echoText(hello)}, end: cleanClose},
		{id: "6.2.2", desc: "valid UTF-8 in 2 fragments split on a code point boundary",
			do:   []action{send(Frame{Op: OpText, Payload: []byte("Hello-µ@ßöä"), More: true}, Frame{Op: OpContinuation, Payload: []byte("üàá-UTF-8!!")})},
			want: []Event{echoText(hello)}, end: cleanClose},
		{id: "6.2.3", desc: "valid UTF-8 in 1-octet fragments (splitting code points)", do: []action{send(oneOctetFrames(hello)...)}, want: []Event{echoText(hello)}, end: cleanClose},
		{id: "6.2.4", desc: "valid UTF-8 (κόσμε) in 1-octet fragments", do: []action{send(oneOctetFrames(kosme)...)}, want: []Event{echoText(kosme)}, end: cleanClose},
		{id: "6.3.1", desc: "invalid UTF-8 in one frame", do: []action{send(Text(invalid))}, end: fails(1007)},
		{id: "6.3.2", desc: "invalid UTF-8 in 1-octet fragments", do: []action{send(oneOctetFrames(invalid)...)}, end: fails(1007)},
		{id: "6.4.1", desc: "invalid UTF-8 in 3 frames with waits; the 2nd makes it invalid", do: frames3(p1, p2, p3), end: fails(1007)},
		{id: "6.4.2", desc: "as 6.4.1, the 2nd frame is only the octet that makes it invalid",
			do: frames3(whole[:12], whole[12:13], whole[13:]), end: fails(1007)},
		{id: "6.4.3", desc: "as 6.4.1, in 3 chops of one frame", do: chops3(len(p1), len(p1)+len(p2)), end: fails(1007)},
		{id: "6.4.4", desc: "as 6.4.2, in 3 chops of one frame", do: chops3(12, 13), end: fails(1007)},
	}
	for gi, g := range utf8Sequences() {
		for i, s := range g.seqs {
			c := autobahnCase{id: fmt.Sprintf("6.%d.%d", gi+5, i+1), do: []action{send(Text(s.payload))}}
			if s.valid {
				c.desc = fmt.Sprintf("%s: valid 0x%x", g.name, s.payload)
				c.want, c.end = []Event{echoText(s.payload)}, cleanClose
			} else {
				c.desc = fmt.Sprintf("%s: invalid 0x%x", g.name, s.payload)
				c.end = fails(1007)
			}
			cs = append(cs, c)
		}
	}
	return cs
}

// rawWrite writes bytes as they are.
func rawWrite(b []byte) action {
	return func(r *caseRun) error { return r.conn.Write(b) }
}

type utf8Seq struct {
	valid   bool
	payload string
}

type utf8Group struct {
	name string
	seqs []utf8Seq
}

// utf8Sequences are Autobahn's UTF-8 test sequences (groups 6.5 to 6.23, in order).
func utf8Sequences() []utf8Group {
	ok := func(ss ...string) []utf8Seq {
		var out []utf8Seq
		for _, s := range ss {
			out = append(out, utf8Seq{true, s})
		}
		return out
	}
	bad := func(ss ...string) []utf8Seq {
		var out []utf8Seq
		for _, s := range ss {
			out = append(out, utf8Seq{false, s})
		}
		return out
	}
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	var prefixes []utf8Seq
	for i := 1; i <= len(kosme); i++ {
		prefixes = append(prefixes, utf8Seq{utf8.ValidString(kosme[:i]), kosme[:i]})
	}
	span := func(from, to byte, sep string) string { // Python's xrange: to is exclusive
		var b strings.Builder
		for c := int(from); c < int(to); c++ {
			b.WriteByte(byte(c))
			b.WriteString(sep)
		}
		return b.String()
	}
	missing := []string{"\xc0", "\xe0\x80", "\xf0\x80\x80", "\xf8\x80\x80\x80", "\xfc\x80\x80\x80\x80",
		"\xdf", "\xef\xbf", "\xf7\xbf\xbf", "\xfb\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf"}
	var nonChars []string
	nonChars = append(nonChars, "\xef\xbf\xbe", "\xef\xbf\xbf")
	for _, z1 := range []string{"\xf0", "\xf1", "\xf2", "\xf3", "\xf4"} {
		for _, z2 := range []string{"\x8f", "\x9f", "\xaf", "\xbf"} {
			if z1 == "\xf4" && z2 != "\x8f" {
				continue
			}
			for _, z3 := range []string{"\xbe", "\xbf"} {
				zz := z1 + z2 + "\xbf" + z3
				if zz != "\xf0\x8f\xbf\xbe" && zz != "\xf0\x8f\xbf\xbf" {
					nonChars = append(nonChars, zz)
				}
			}
		}
	}
	return []utf8Group{
		{"some valid UTF-8 sequences", ok("hello\x24world", "hello\xc2\xa2world", "hello\xe2\x82\xacworld", "hello\xf0\xa4\xad\xa2world", kosme)},
		{"all prefixes of a valid multi-byte string", prefixes},
		{"first possible sequence of a certain length", ok("\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80")},
		{"first possible sequence of length 5/6", bad("\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80")},
		{"last possible sequence of a certain length", ok("\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf")},
		{"last possible sequence of length 4/5/6", bad("\xf7\xbf\xbf\xbf", "\xfb\xbf\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf\xbf")},
		{"other boundary conditions", append(ok("\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf"), bad("\xf4\x90\x80\x80")...)},
		{"unexpected continuation bytes", bad("\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80", "\x80\xbf\x80\xbf", "\x80\xbf\x80\xbf\x80", "\x80\xbf\x80\xbf\x80\xbf", span(0x80, 0xbf, ""))},
		{"lonely start characters", bad(span(0xc0, 0xdf, " "), span(0xe0, 0xef, " "), span(0xf0, 0xf7, " "), span(0xf8, 0xfb, " "), span(0xfc, 0xfd, " "))},
		{"sequences with the last continuation byte missing", bad(missing...)},
		{"concatenation of incomplete sequences", bad(strings.Join(missing, ""))},
		{"impossible bytes", bad("\xfe", "\xff", "\xfe\xfe\xff\xff")},
		{"overlong ASCII character", bad("\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xfc\x80\x80\x80\x80\xaf")},
		{"maximum overlong sequences", bad("\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf8\x87\xbf\xbf\xbf", "\xfc\x83\xbf\xbf\xbf\xbf")},
		{"overlong NUL", bad("\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xf8\x80\x80\x80\x80", "\xfc\x80\x80\x80\x80\x80")},
		{"single UTF-16 surrogates", bad("\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf")},
		{"paired UTF-16 surrogates", bad("\xed\xa0\x80\xed\xb0\x80", "\xed\xa0\x80\xed\xbf\xbf", "\xed\xad\xbf\xed\xb0\x80", "\xed\xad\xbf\xed\xbf\xbf",
			"\xed\xae\x80\xed\xb0\x80", "\xed\xae\x80\xed\xbf\xbf", "\xed\xaf\xbf\xed\xb0\x80", "\xed\xaf\xbf\xed\xbf\xbf")},
		{"non-character code points (valid UTF-8)", ok(nonChars...)},
		{"Unicode specials", ok("\xef\xbf\xb9", "\xef\xbf\xba", "\xef\xbf\xbb", "\xef\xbf\xbc", "\xef\xbf\xbd", "\xef\xbf\xbe", "\xef\xbf\xbf")},
	}
}

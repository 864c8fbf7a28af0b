package backplane

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The relay speaks RESP2 to its Pub/Sub connections itself rather than through go-redis, so
// that it sees every reply in order (confirmations, messages, errors), knows when its read
// buffer holds no further reply (the moment to hand a batch over), and reads a payload
// straight from the buffer into the batch's memory.

// pushKind is the first element of a Pub/Sub reply.
type pushKind uint8

const (
	pushOther pushKind = iota
	pushMessage
	pushSubscribe
	pushUnsubscribe
	pushPong
)

func classify(kind []byte) pushKind {
	// string(b) in a comparison or switch does not allocate.
	switch string(kind) {
	case "message", "smessage":
		return pushMessage
	case "subscribe", "ssubscribe":
		return pushSubscribe
	case "unsubscribe", "sunsubscribe":
		return pushUnsubscribe
	case "pong":
		return pushPong
	}
	return pushOther
}

// errorReply is an error the server sent (a "-ERR ..." or "-MOVED ..." line).
type errorReply string

func (e errorReply) Error() string { return "redis: " + string(e) }

var errProtocol = errors.New("redis protocol error")

// respReader reads replies from a Pub/Sub connection. Byte slices it returns point into its
// buffer and stay valid only until the next read.
type respReader struct {
	rd *bufio.Reader
}

// header reads a line "<prefix><int>\r\n" or a simple string / error line. It returns the
// type byte, the integer (for ':', '$', '*') and the line itself without CRLF.
func (r *respReader) header() (byte, int64, []byte, error) {
	line, err := r.rd.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, 0, nil, fmt.Errorf("%w: header line longer than %d bytes", errProtocol, r.rd.Size())
		}
		return 0, 0, nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return 0, 0, nil, fmt.Errorf("%w: bad line %q", errProtocol, line)
	}
	line = line[:len(line)-2]
	switch line[0] {
	case '+', '-':
		return line[0], 0, line[1:], nil
	case ':', '$', '*':
		n, err := parseInt(line[1:])
		if err != nil {
			return 0, 0, nil, fmt.Errorf("%w: bad length %q", errProtocol, line)
		}
		return line[0], n, line[1:], nil
	}
	return 0, 0, nil, fmt.Errorf("%w: unexpected reply type %q", errProtocol, line[0])
}

func parseInt(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, errProtocol
	}
	neg := b[0] == '-'
	if neg {
		b = b[1:]
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0, errProtocol
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// arrayLen reads the header of the next reply. A server error arrives as errorReply; a simple
// string (the "+PONG" of a connection without subscriptions) as length 0.
func (r *respReader) arrayLen() (int, error) {
	t, n, line, err := r.header()
	if err != nil {
		return 0, err
	}
	switch t {
	case '*':
		return int(n), nil
	case '-':
		return 0, errorReply(line)
	case '+':
		return 0, nil
	}
	return 0, fmt.Errorf("%w: expected an array, got %q", errProtocol, t)
}

// peekBulk reads a bulk string that fits in the read buffer without copying it; the result is
// valid until the next read. A null bulk string is returned as nil.
func (r *respReader) peekBulk() ([]byte, error) {
	n, err := r.bulkLen()
	if err != nil || n < 0 {
		return nil, err
	}
	if n+2 > r.rd.Size() {
		return nil, fmt.Errorf("%w: %d-byte name exceeds the read buffer", errProtocol, n)
	}
	b, err := r.rd.Peek(n + 2)
	if err != nil {
		return nil, err
	}
	if b[n] != '\r' || b[n+1] != '\n' {
		return nil, fmt.Errorf("%w: bulk string not terminated", errProtocol)
	}
	_, _ = r.rd.Discard(n + 2)
	return b[:n:n], nil
}

// bulkLen reads a bulk string header; -1 is a null bulk string.
func (r *respReader) bulkLen() (int, error) {
	t, n, _, err := r.header()
	if err != nil {
		return 0, err
	}
	if t != '$' {
		return 0, fmt.Errorf("%w: expected a bulk string, got %q", errProtocol, t)
	}
	if n > 512<<20 {
		return 0, fmt.Errorf("%w: bulk string of %d bytes", errProtocol, n)
	}
	return int(n), nil
}

// readBulkInto reads a bulk string of n bytes (its header already read) into a, growing a
// (or starting a new arena) as needed, and returns the bytes read as a capped sub-slice so a
// holder appending to it cannot overwrite its neighbour.
func (r *respReader) readBulkInto(a *arena, n int) ([]byte, error) {
	dst := a.take(n, r.rd.Buffered())
	if _, err := io.ReadFull(r.rd, dst); err != nil {
		return nil, err
	}
	crlf, err := r.rd.Peek(2)
	if err != nil {
		return nil, err
	}
	if crlf[0] != '\r' || crlf[1] != '\n' {
		return nil, fmt.Errorf("%w: bulk string not terminated", errProtocol)
	}
	_, _ = r.rd.Discard(2)
	return dst, nil
}

// skip reads and discards one element (bulk string, integer or simple string).
func (r *respReader) skip() error {
	t, n, _, err := r.header()
	if err != nil {
		return err
	}
	if t == '$' && n >= 0 {
		_, err = r.rd.Discard(int(n) + 2)
	}
	if t == '*' {
		for i := int64(0); i < n && err == nil; i++ {
			err = r.skip()
		}
	}
	return err
}

// integer reads an integer element.
func (r *respReader) integer() (int64, error) {
	t, n, _, err := r.header()
	if err != nil {
		return 0, err
	}
	if t != ':' {
		return 0, fmt.Errorf("%w: expected an integer, got %q", errProtocol, t)
	}
	return n, nil
}

// appendCommand appends a RESP array of bulk strings: name followed by args.
func appendCommand(buf []byte, name string, args []string) []byte {
	buf = append(buf, '*')
	buf = strconv.AppendInt(buf, int64(1+len(args)), 10)
	buf = append(buf, '\r', '\n')
	buf = appendBulk(buf, name)
	for _, a := range args {
		buf = appendBulk(buf, a)
	}
	return buf
}

func appendBulk(buf []byte, s string) []byte {
	buf = append(buf, '$')
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, '\r', '\n')
	buf = append(buf, s...)
	return append(buf, '\r', '\n')
}

// arena hands out payload memory: one allocation sized to what the read buffer holds serves
// every payload in it, across batches. Handed-out slices are capped and never written again.
// A payload kept by a slow consumer keeps its arena alive; an arena is about the read
// buffer's size, so this costs little.
type arena struct {
	buf []byte
}

// take returns n bytes of fresh memory; hint is how many bytes are waiting to be read.
func (a *arena) take(n, hint int) []byte {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(n, hint, minArena))
	}
	start := len(a.buf)
	a.buf = a.buf[:start+n]
	return a.buf[start : start+n : start+n]
}

// minArena keeps a trickle of tiny messages from costing one allocation each.
const minArena = 512

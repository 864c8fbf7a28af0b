package wsraw

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/huleedu/websocket-service/internal/rfc6455"
)

// defaultMaxFrame bounds the payload ReadFrame accepts, so a misbehaving server cannot make the
// test process allocate without limit.
const defaultMaxFrame = 64 << 20

// Options adjust a dial and its handshake. The zero value is a well-behaved client.
type Options struct {
	// Header holds request header fields sent besides the handshake's own (Origin,
	// Sec-WebSocket-Protocol, X-Forwarded-For...). A field the handshake sets is replaced.
	Header http.Header
	Key    string // Sec-WebSocket-Key; a random one when empty
	NoKey  bool   // send no Sec-WebSocket-Key: a request the server must refuse
	// Extra is written right behind the request, in the same write: frames that reach the
	// server with its handshake.
	Extra []byte
	// Timeout bounds the dial and the handshake (not what follows); 5 s when zero.
	Timeout time.Duration
	// Dialer makes the TCP connection when set (a local address, a Control function).
	Dialer *net.Dialer
	// ReceiveBuffer, when positive, is the socket's SO_RCVBUF, set before connecting: with a
	// small one, a client that does not read fills up quickly.
	ReceiveBuffer int
	// MaxFrame bounds the payload of a frame ReadFrame accepts; 64 MiB when zero.
	MaxFrame uint64
}

// Conn is a raw client connection. Reads go through its buffer, so bytes the server sent
// right behind the handshake response are not lost.
type Conn struct {
	net.Conn
	// Response is the server's answer to the upgrade request, once read; a refusal's body is
	// left unread.
	Response *http.Response

	o   Options
	key string
	br  *bufio.Reader
}

// HandshakeError is an upgrade the server refused with an HTTP status.
type HandshakeError struct {
	Status int
	Body   string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("handshake refused: HTTP %d %s", e.Status, strings.TrimSpace(e.Body))
}

// Dial connects to addr (host:port) and upgrades target (path and query, "/ws?token=…"). It
// returns the connection whatever the server answered, its answer in Response (see Upgraded);
// an error means no answer came. It is safe to call off the test goroutine.
func Dial(addr, target string, o Options) (*Conn, error) {
	c, err := Connect(addr, o)
	if err != nil {
		return nil, err
	}
	if err := c.SendRequest(target); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.ReadResponse(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Connect opens the TCP connection and sends nothing, for a test that writes the handshake
// when it chooses (SendRequest) or not at all.
func Connect(addr string, o Options) (*Conn, error) {
	var d net.Dialer
	if o.Dialer != nil {
		d = *o.Dialer
	}
	d.Timeout = o.timeout()
	if o.ReceiveBuffer > 0 {
		d.Control = receiveBuffer(o.ReceiveBuffer, d.Control)
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return &Conn{Conn: nc, o: o, br: bufio.NewReader(nc)}, nil
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 5 * time.Second
}

// NewRequest is the upgrade request for url (ws:// or http://), for a test that sends it
// with an http.Client or hands it to a handler.
func NewRequest(url string, o Options) (*http.Request, error) {
	if rest, ok := strings.CutPrefix(url, "ws://"); ok {
		url = "http://" + rest
	}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("upgrade request: %w", err)
	}
	setHeader(req.Header, o, o.key())
	return req, nil
}

func (o Options) key() string {
	if o.Key != "" || o.NoKey {
		return o.Key
	}
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	return base64.StdEncoding.EncodeToString(nonce[:])
}

// setHeader fills h with the handshake's fields (RFC 6455 §4.1), then o.Header's.
func setHeader(h http.Header, o Options, key string) {
	h.Set("Upgrade", "websocket")
	h.Set("Connection", "Upgrade")
	h.Set("Sec-WebSocket-Version", "13")
	if !o.NoKey {
		h.Set("Sec-WebSocket-Key", key)
	}
	for k, vs := range o.Header {
		h[k] = vs
	}
}

// Head is an upgrade request head for target with the sample key of RFC 6455 §1.3 and the
// header lines extra ("Name: value\r\n" each) before its blank line, for a test that writes
// the bytes itself: in pieces, behind another request, or broken on purpose.
func Head(target string, extra ...string) string {
	return "GET " + target + " HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + strings.Join(extra, "") + "\r\n"
}

// SendRequest writes the upgrade request for target, and Options.Extra in the same write. It
// does not wait for the answer.
func (c *Conn) SendRequest(target string) error {
	c.key = c.o.key()
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", target, c.RemoteAddr())
	h := http.Header{}
	setHeader(h, c.o, c.key)
	if err := h.Write(&b); err != nil {
		return fmt.Errorf("upgrade request: %w", err)
	}
	b.WriteString("\r\n")
	b.Write(c.o.Extra)
	_ = c.SetWriteDeadline(time.Now().Add(c.o.timeout()))
	defer c.SetWriteDeadline(time.Time{})
	if _, err := c.Conn.Write(b.Bytes()); err != nil {
		return fmt.Errorf("write upgrade request: %w", err)
	}
	return nil
}

// ReadResponse reads the server's answer to the upgrade request into Response. A 101 must
// carry the Sec-WebSocket-Accept that the key calls for (RFC 6455 §4.1).
func (c *Conn) ReadResponse() (*http.Response, error) {
	_ = c.SetReadDeadline(time.Now().Add(c.o.timeout()))
	defer c.SetReadDeadline(time.Time{})
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("read upgrade response: %w", err)
	}
	c.Response = resp
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), rfc6455.Accept(c.key); got != want {
			return resp, fmt.Errorf("Sec-WebSocket-Accept %q, want %q", got, want)
		}
	}
	return resp, nil
}

// Upgraded returns nil when the server switched protocols, else a *HandshakeError with the
// status and the start of the body.
func (c *Conn) Upgraded() error {
	if c.Response == nil {
		return errors.New("no upgrade response read")
	}
	if c.Response.StatusCode == http.StatusSwitchingProtocols {
		return nil
	}
	_ = c.SetReadDeadline(time.Now().Add(c.o.timeout()))
	body, _ := io.ReadAll(io.LimitReader(c.Response.Body, 4096))
	return &HandshakeError{Status: c.Response.StatusCode, Body: string(body)}
}

// Read reads through the connection's buffer.
func (c *Conn) Read(p []byte) (int, error) { return c.br.Read(p) }

// Send writes frames back to back, in one write.
func (c *Conn) Send(frames ...Frame) error {
	_, err := c.Write(Encode(frames...))
	return err
}

// ReadFrame reads the next frame the server sends, waiting until deadline; a zero deadline
// leaves the connection's read deadline as it is. A frame no server may send (reserved bits,
// a mask, a long or fragmented control frame, a payload over Options.MaxFrame) is a
// *Violation, and the stream is not read past its header.
func (c *Conn) ReadFrame(deadline time.Time) (ServerFrame, error) {
	if !deadline.IsZero() {
		_ = c.SetReadDeadline(deadline)
	}
	head, err := c.br.Peek(2)
	if err != nil {
		return ServerFrame{}, err
	}
	f := ServerFrame{Fin: head[0]&rfc6455.FinBit != 0, Op: head[0] & rfc6455.OpBits}
	switch {
	case head[0]&rfc6455.RSVBits != 0:
		return f, violation("reserved bits set")
	case head[1]&rfc6455.MaskBit != 0:
		return f, violation("a masked frame")
	}
	if head, err = c.br.Peek(rfc6455.HeaderSize(head)); err != nil {
		return f, err
	}
	h, _ := rfc6455.ParseHeader(head)
	switch {
	case rfc6455.IsControl(h.Op) && (h.Length > rfc6455.MaxControlPayload || !h.Fin):
		return f, violation("a fragmented or oversized control frame")
	case h.Length > c.maxFrame():
		return f, violation("a frame of %d bytes", h.Length)
	}
	_, _ = c.br.Discard(h.Size)
	f.Payload = make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, f.Payload); err != nil {
		return f, err
	}
	return f, nil
}

func (c *Conn) maxFrame() uint64 {
	if c.o.MaxFrame > 0 {
		return c.o.MaxFrame
	}
	return defaultMaxFrame
}

// ReadUntilClose reads (and never answers) frames until a close frame, the end of the
// connection or deadline; it returns every frame read, the close frame last when there was
// one, and the error that ended the reading otherwise.
func (c *Conn) ReadUntilClose(deadline time.Time) ([]ServerFrame, error) {
	var frames []ServerFrame
	for {
		f, err := c.ReadFrame(deadline)
		if err != nil {
			return frames, err
		}
		frames = append(frames, f)
		if f.Op == rfc6455.OpClose {
			return frames, nil
		}
	}
}

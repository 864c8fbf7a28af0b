// Package wsclient is the high-level test client of the service (protocol v1): a gws client that
// records every message, ping and close it receives, for tests of one engine (gwsengine/, eventloop/)
// and of the whole service (e2e/, through internal/servicetest). Raw frames are internal/wsraw's;
// protocol notifications.v2 is internal/v2client's.
package wsclient

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// Message is one message a client received.
type Message struct {
	Binary bool
	Data   string
}

// Client is a gws client that records what it receives and how it was closed.
type Client struct {
	Conn     *gws.Conn
	Response *http.Response
	messages chan Message
	pings    chan string

	mu     sync.Mutex
	closed chan struct{}
	code   uint16 // 1006 when no close frame arrived
	reason string
	at     time.Time
}

// DialOptions adjust a Dial.
type DialOptions struct {
	Header       http.Header
	Subprotocols []string
}

// Dial connects to url (a /ws URL with its token) and starts reading.
func Dial(t testing.TB, url string, opts ...DialOptions) *Client {
	t.Helper()
	c, err := TryDial(url, opts...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Conn.NetConn().Close() })
	return c
}

// TryDial is Dial that returns the handshake error instead of failing the test.
func TryDial(url string, opts ...DialOptions) (*Client, error) {
	h := http.Header{}
	if len(opts) > 0 {
		for k, v := range opts[0].Header {
			h[k] = v
		}
		if len(opts[0].Subprotocols) > 0 {
			h.Set("Sec-WebSocket-Protocol", strings.Join(opts[0].Subprotocols, ", "))
		}
	}
	c := &Client{messages: make(chan Message, 4096), pings: make(chan string, 64), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr: url, RequestHeader: h, HandshakeTimeout: 5 * time.Second,
		ReadMaxPayloadSize: 16 << 20, CheckUtf8Enabled: true,
	})
	if err != nil {
		return nil, err
	}
	c.Conn, c.Response = conn, resp
	go conn.ReadLoop()
	return c, nil
}

// OnOpen implements gws.Event.
func (c *Client) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event.
func (c *Client) OnClose(_ *gws.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.code, c.at = 1006, time.Now()
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.code, c.reason = ce.Code, string(ce.Reason)
	}
	close(c.closed)
}

// OnPing implements gws.Event: answer like a browser does.
func (c *Client) OnPing(socket *gws.Conn, payload []byte) {
	_ = socket.WritePong(payload)
	select {
	case c.pings <- string(payload):
	default:
	}
}

// OnPong implements gws.Event.
func (c *Client) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event.
func (c *Client) OnMessage(_ *gws.Conn, m *gws.Message) {
	c.messages <- Message{Binary: m.Opcode == gws.OpcodeBinary, Data: string(m.Bytes())}
	m.Close()
}

// Next waits for the next message.
func (c *Client) Next(t testing.TB, timeout time.Duration) Message {
	t.Helper()
	select {
	case m := <-c.messages:
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
	}
	return Message{}
}

// NextText waits for the next message and returns its text.
func (c *Client) NextText(t testing.TB, timeout time.Duration) string {
	t.Helper()
	return c.Next(t, timeout).Data
}

// Quiet asserts that no message arrives within d.
func (c *Client) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-c.messages:
		t.Fatalf("unexpected message %q", m.Data)
	case <-time.After(d):
	}
}

// Ping waits for a server ping.
func (c *Client) Ping(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case p := <-c.pings:
		return p
	case <-time.After(timeout):
		t.Fatalf("no ping within %v", timeout)
	}
	return ""
}

// Send sends a text message.
func (c *Client) Send(t testing.TB, text string) {
	t.Helper()
	if err := c.Conn.WriteString(text); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// WaitClose waits for the connection to end and returns the close code the server sent
// (1006 when none) and its reason.
func (c *Client) WaitClose(t testing.TB, timeout time.Duration) (uint16, string) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(timeout):
		t.Fatalf("connection not closed within %v", timeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.reason
}

// ClosedAt is when the connection ended (zero while open).
func (c *Client) ClosedAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.closed }

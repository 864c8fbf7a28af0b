// Package v2client is a small Go client of the notifications.v2 protocol (docs/PROTOCOL.md)
// for tests: it dials with the v2 subprotocol, sends a resume with saved cursors, decodes
// every frame, and keeps per stream the cursor a real client would save. The engine tests
// and the end-to-end acceptance tests share it.
package v2client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

// Subprotocol is the protocol the client offers.
const Subprotocol = "notifications.v2"

// Frame is one decoded server frame. Raw keeps the bytes as received.
type Frame struct {
	Type      string          `json:"type"`
	Stream    string          `json:"stream,omitempty"`
	Cursor    *string         `json:"cursor,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Recovered *bool           `json:"recovered,omitempty"`
	Replayed  *int64          `json:"replayed,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Missed    *int64          `json:"missed,omitempty"`
	Code      string          `json:"code,omitempty"`
	Message   string          `json:"message,omitempty"`
	Exp       int64           `json:"exp,omitempty"`
	Raw       string          `json:"-"`
	Binary    bool            `json:"-"`
}

// IsSync reports whether f is a sync frame.
func (f Frame) IsSync() bool { return f.Type == "sync" }

// IsRecovered reports whether f is a sync saying the stream is continuous.
func (f Frame) IsRecovered() bool { return f.Recovered != nil && *f.Recovered }

// CursorString is the frame's cursor, "" for none or null.
func (f Frame) CursorString() string {
	if f.Cursor == nil {
		return ""
	}
	return *f.Cursor
}

// DataString returns data decoded as a JSON string, or its raw JSON text when it is not one.
func (f Frame) DataString() string {
	var s string
	if json.Unmarshal(f.Data, &s) == nil {
		return s
	}
	return string(f.Data)
}

// Options adjust a Dial.
type Options struct {
	Header http.Header
	// Subprotocols replaces the offered list (default: notifications.v2 only).
	Subprotocols []string
	// NoResume: do not send the resume frame on open (the test sends its own, or none).
	NoResume bool
}

// Client is one v2 connection.
type Client struct {
	Conn     *gws.Conn
	Response *http.Response

	// arrived has a token while queue may hold a frame nobody has been woken for.
	arrived chan struct{}
	mu      sync.Mutex
	// queue holds the frames received and not yet read, oldest first. It is unbounded, so
	// the read loop never waits for the test; a fixed buffer big enough for that cost every
	// client megabytes, too much for the thousand clients of the acceptance tests.
	queue   []Frame
	cursors map[string]string
	closed  chan struct{}
	code    uint16
}

// Dial connects to url (a /ws URL with its token) and, unless opts says not to, sends
// {"type":"resume","streams":cursors} (nil cursors: a fresh start).
func Dial(url string, cursors map[string]string, opts ...Options) (*Client, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	h := http.Header{}
	for k, v := range o.Header {
		h[k] = v
	}
	protos := o.Subprotocols
	if protos == nil {
		protos = []string{Subprotocol}
	}
	h.Set("Sec-WebSocket-Protocol", strings.Join(protos, ", "))
	c := &Client{arrived: make(chan struct{}, 1), cursors: map[string]string{}, closed: make(chan struct{})}
	for k, v := range cursors {
		c.cursors[k] = v
	}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr: url, RequestHeader: h, HandshakeTimeout: 10 * time.Second,
		ReadMaxPayloadSize: 16 << 20, CheckUtf8Enabled: true,
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", strings.Split(url, "?")[0], err)
	}
	c.Conn, c.Response = conn, resp
	go conn.ReadLoop()
	if !o.NoResume {
		if err := c.Resume(cursors); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Resume sends a resume frame with cursors.
func (c *Client) Resume(cursors map[string]string) error {
	if cursors == nil {
		cursors = map[string]string{}
	}
	b, err := json.Marshal(map[string]any{"type": "resume", "streams": cursors})
	if err != nil {
		return fmt.Errorf("encode resume: %w", err)
	}
	return c.SendText(string(b))
}

// SendText sends a text frame.
func (c *Client) SendText(s string) error {
	if err := c.Conn.WriteString(s); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// Selected is the subprotocol the server selected.
func (c *Client) Selected() string { return c.Response.Header.Get("Sec-WebSocket-Protocol") }

// OnOpen implements gws.Event.
func (c *Client) OnOpen(*gws.Conn) {}

// OnPing implements gws.Event.
func (c *Client) OnPing(s *gws.Conn, p []byte) { _ = s.WritePong(p) }

// OnPong implements gws.Event.
func (c *Client) OnPong(*gws.Conn, []byte) {}

// OnClose implements gws.Event.
func (c *Client) OnClose(_ *gws.Conn, err error) {
	c.mu.Lock()
	c.code = 1006
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.code = ce.Code
	}
	c.mu.Unlock()
	close(c.closed)
}

// OnMessage implements gws.Event: decode, save the cursor as a client would, queue.
func (c *Client) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	f := Frame{Raw: string(m.Bytes()), Binary: m.Opcode == gws.OpcodeBinary}
	decoded := !f.Binary && json.Unmarshal(m.Bytes(), &f) == nil
	c.mu.Lock()
	switch {
	case decoded && (f.Type == "message" || f.Type == "sync") && f.Cursor != nil:
		c.cursors[f.Stream] = *f.Cursor
	case f.Type == "unsubscribed":
		delete(c.cursors, f.Stream)
	}
	c.queue = append(c.queue, f)
	c.mu.Unlock()
	c.wake()
}

// wake leaves a token in arrived unless one is there already.
func (c *Client) wake() {
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

// pop takes the oldest queued frame, if any.
func (c *Client) pop() (Frame, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return Frame{}, false
	}
	f := c.queue[0]
	c.queue[0] = Frame{}
	c.queue = c.queue[1:]
	if len(c.queue) > 0 {
		c.wake() // for another reader waiting meanwhile
	}
	return f, true
}

// Cursors returns the cursors saved so far, per stream.
func (c *Client) Cursors() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(c.cursors))
	for k, v := range c.cursors {
		out[k] = v
	}
	return out
}

// ErrTimeout is returned when no frame arrives in time.
var ErrTimeout = errors.New("no frame in time")

// Next returns the next frame, or ErrTimeout.
func (c *Client) Next(timeout time.Duration) (Frame, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if f, ok := c.wait(timer.C, nil); ok {
		return f, nil
	}
	return Frame{}, ErrTimeout
}

// Read returns the next frame, waiting as long as the connection lasts; false once it has
// ended and every frame it brought has been read.
func (c *Client) Read() (Frame, bool) { return c.wait(nil, c.closed) }

// wait returns the next frame, waiting for one until timeout fires or until ended is closed
// and nothing is left to read (a nil channel never fires).
func (c *Client) wait(timeout <-chan time.Time, ended <-chan struct{}) (Frame, bool) {
	for {
		if f, ok := c.pop(); ok {
			return f, true
		}
		select {
		case <-c.arrived:
		case <-timeout:
			return Frame{}, false
		case <-ended:
			return c.pop() // OnClose comes after the last OnMessage
		}
	}
}

// Syncs reads frames until it has one sync for each of n distinct streams and returns every
// frame read (replays included), in order.
func (c *Client) Syncs(n int, timeout time.Duration) ([]Frame, error) {
	deadline := time.Now().Add(timeout)
	var out []Frame
	seen := map[string]bool{}
	for len(seen) < n {
		f, err := c.Next(time.Until(deadline))
		if err != nil {
			return out, fmt.Errorf("%d of %d syncs: %w", len(seen), n, err)
		}
		out = append(out, f)
		if f.IsSync() {
			seen[f.Stream] = true
		}
	}
	return out, nil
}

// Close closes the connection at once (no close handshake), as a dropped network would.
func (c *Client) Close() { _ = c.Conn.NetConn().Close() }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.closed }

// CloseCode is the close code the server sent (1006 for none); valid after Done.
func (c *Client) CloseCode() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code
}

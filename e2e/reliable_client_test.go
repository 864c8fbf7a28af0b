package e2e_test

// A client for the reliable-delivery tests: it records, per channel, the sequenced messages it
// receives (internal/seqtest) and, on notifications.v2, the sync frames, and saves its cursors
// so that a later connection, to any node, resumes where the last one stopped.

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/huleedu/websocket-service/internal/seqtest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/internal/v2client"
)

const protoV2 = v2client.Subprotocol

// syncFrame is a v2 sync frame as received (Missed -1 for null).
type syncFrame struct {
	Stream    string
	Recovered bool
	Reason    string
	Missed    int
	Replayed  int
}

// relClient is one user's client across its connections.
type relClient struct {
	sub    string
	groups []string
	v2     bool
	rec    *seqtest.Recorder

	mu      sync.Mutex
	cursors map[string]string // stream → cursor of the last message or sync processed
	syncs   [][]syncFrame     // per connection, in order
	errs    []string          // protocol violations seen
	conn    *relConn
}

func newRelClient(sub string, v2 bool, groups ...string) *relClient {
	return &relClient{sub: sub, groups: groups, v2: v2, rec: seqtest.NewRecorder(), cursors: map[string]string{}}
}

// streams are the v2 streams the client reads.
func (c *relClient) streams() []string {
	s := []string{"user", "broadcast"}
	for _, g := range c.groups {
		s = append(s, "group:"+g)
	}
	return s
}

// channels are the Redis channels of its streams (the default prefixes).
func (c *relClient) channels() []string {
	out := make([]string, 0, len(c.groups)+2)
	for _, s := range c.streams() {
		out = append(out, c.channel(s))
	}
	return out
}

func (c *relClient) channel(stream string) string {
	switch {
	case stream == "user":
		return "ws:" + c.sub
	case stream == "broadcast":
		return "ws-broadcast"
	case strings.HasPrefix(stream, "group:"):
		return "ws-group:" + strings.TrimPrefix(stream, "group:")
	}
	return ""
}

// relConn is one connection of a relClient, and the goroutine that records its frames.
type relConn struct {
	ws     *v2client.Client
	index  int
	pumped chan struct{} // closed once every frame of the connection is recorded

	// Only the pump touches these: per stream, whether its sync came, and the last message.
	synced map[string]bool
	last   map[string]string
}

// connect opens a connection to url (a /ws URL with the token) and, on v2, resumes from the
// cursors of the frames recorded so far. It is safe off the test goroutine; the previous
// connection must have ended.
func (c *relClient) connect(url string) (*relConn, error) {
	c.mu.Lock()
	prev := c.conn
	c.mu.Unlock()
	if prev != nil {
		<-prev.ws.Done()
		<-prev.pumped // its last frames recorded before any of the new connection's
	}
	c.mu.Lock()
	cursors := maps.Clone(c.cursors)
	c.mu.Unlock()
	opts := v2client.Options{}
	if !c.v2 {
		opts = v2client.Options{Subprotocols: []string{"notifications.v1"}, NoResume: true}
	}
	ws, err := v2client.Dial(url, cursors, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.sub, err)
	}
	rc := &relConn{ws: ws, pumped: make(chan struct{}), synced: map[string]bool{}, last: map[string]string{}}
	if want := opts.Subprotocols; c.v2 && ws.Selected() != protoV2 || !c.v2 && ws.Selected() != want[0] {
		ws.Close()
		return nil, fmt.Errorf("%s: server selected subprotocol %q (v2 %v)", c.sub, ws.Selected(), c.v2)
	}
	c.mu.Lock()
	rc.index = len(c.syncs) // connections that failed to open do not count
	c.syncs = append(c.syncs, nil)
	c.conn = rc
	c.mu.Unlock()
	if rc.index > 0 {
		c.rec.NewConnection()
	}
	go c.pump(rc)
	return rc, nil
}

// pump records the connection's frames until it has ended and every frame is read.
func (c *relClient) pump(rc *relConn) {
	defer close(rc.pumped)
	for f, ok := rc.ws.Read(); ok; f, ok = rc.ws.Read() {
		c.record(rc, f)
	}
}

// closed is closed when the current connection has ended; code is its close code then.
func (c *relClient) closed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.ws.Done()
}

func (c *relClient) code() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.ws.CloseCode()
}

// synced reports whether the connection of index got a sync for every stream.
func (c *relClient) synced(index int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return index < len(c.syncs) && len(c.syncs[index]) >= len(c.streams())
}

// failures lists every recovered:false after the first connection's syncs, and every
// protocol violation.
func (c *relClient) failures() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]string(nil), c.errs...)
	for i, conn := range c.syncs {
		for j, s := range conn {
			if s.Recovered || i == 0 && j < len(c.streams()) && s.Reason == "new" {
				continue
			}
			out = append(out, fmt.Sprintf("%s connection %d: %s recovered:false reason %q missed %d", c.sub, i, s.Stream, s.Reason, s.Missed))
		}
	}
	return out
}

// current is the current connection (nil before the first).
func (c *relClient) current() *relConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// close ends the current connection abruptly, as a dropped network does.
func (c *relClient) close() {
	if rc := c.current(); rc != nil {
		rc.ws.Close()
	}
}

func (c *relClient) violation(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.errs) < 10 {
		c.errs = append(c.errs, c.sub+": "+fmt.Sprintf(format, args...))
	}
}

// record handles one frame as the app of a reference client would: a message is handed over
// once and its cursor saved; a sync's cursor is saved, a recovered:false is a hole.
func (c *relClient) record(rc *relConn, f v2client.Frame) {
	if !c.v2 {
		ch, seq, err := seqtest.Parse([]byte(f.Raw))
		if err != nil {
			c.violation("%v", err)
			return
		}
		c.rec.Message(ch, seq)
		return
	}
	ch := c.channel(f.Stream)
	switch f.Type {
	case "message":
		got, seq, err := seqtest.Parse(f.Data)
		if err != nil || got != ch {
			c.violation("message on stream %q: %.100q (%v)", f.Stream, f.Raw, err)
			return
		}
		// Said where it came from, so that a duplicate can be told a replay's or a live one's.
		where := fmt.Sprintf("#%d cursor %s %s", seq, f.CursorString(), map[bool]string{true: "live", false: "replayed"}[rc.synced[f.Stream]])
		if prev, ok := rc.last[f.Stream]; ok && c.rec.Last(ch) >= seq {
			c.violation("connection %d, %s: %s after %s", rc.index, f.Stream, where, prev)
		}
		rc.last[f.Stream] = where
		c.rec.Message(ch, seq)
	case "sync":
		rc.synced[f.Stream] = true
		s := syncFrame{Stream: f.Stream, Recovered: f.IsRecovered(), Reason: f.Reason, Missed: -1}
		if f.Missed != nil {
			s.Missed = int(*f.Missed)
		}
		if f.Replayed != nil {
			s.Replayed = int(*f.Replayed)
		}
		c.mu.Lock()
		c.syncs[rc.index] = append(c.syncs[rc.index], s)
		c.mu.Unlock()
		if !s.Recovered {
			c.rec.Hole(seqtest.Gap{Channel: ch, Reason: s.Reason, Missed: s.Missed})
		}
	default:
		c.violation("unexpected frame %.100q", f.Raw)
		return
	}
	if cur := f.CursorString(); cur != "" {
		c.mu.Lock()
		c.cursors[f.Stream] = cur
		c.mu.Unlock()
	}
}

// waitAll polls cond over clients until it holds for all or timeout passes; it returns the
// clients for which it does not hold.
func waitAll(clients []*relClient, timeout time.Duration, cond func(*relClient) bool) []*relClient {
	var pending []*relClient
	testenv.Until(timeout, func() bool {
		pending = pending[:0]
		for _, c := range clients {
			if !cond(c) {
				pending = append(pending, c)
			}
		}
		return len(pending) == 0
	})
	return pending
}

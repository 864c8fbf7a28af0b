package bench

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/lxzan/gws"
)

// ReconnectPolicy is how a client whose connection the server dropped comes back: as the
// reference JavaScript client (client/) does, after a delay drawn uniformly from
// [0, min(Max, Initial·2^attempt)) — exponential backoff with full jitter — plus Throttle
// when the server refused it as full or rate limited. The harness reconnects to a node other
// than the one that dropped it, at random, as a load balancer that has removed a dead pod
// would send it.
type ReconnectPolicy struct {
	Initial  time.Duration `json:"initial"`
	Max      time.Duration `json:"max"`
	Throttle time.Duration `json:"throttle"`
}

// DefaultReconnectPolicy is the reference client's: 1 s first ceiling, 30 s cap, 10 s more
// after a refusal for load.
func DefaultReconnectPolicy() ReconnectPolicy {
	return ReconnectPolicy{Initial: time.Second, Max: 30 * time.Second, Throttle: 10 * time.Second}
}

// delay is the wait before reconnect attempt number attempt (0 for the first); random
// returns a float in [0, 1).
func (r ReconnectPolicy) delay(attempt int, throttled bool, random func() float64) time.Duration {
	ceiling := r.Max
	if attempt < 40 {
		ceiling = min(r.Max, r.Initial<<attempt)
	}
	d := time.Duration(random() * float64(ceiling))
	if throttled {
		d += r.Throttle
	}
	return d
}

// resumer is what a reconnecting client asks for of the messages it missed while away. The
// v1 protocol has no way to ask (freshStart): a reconnect starts afresh and the gap counts as
// lost. A v2 resume mode (protocol notifications.v2, docs/PROTOCOL.md) implements it by
// presenting the client's saved cursors on the reconnect and counting what the server
// replays as recovered, so the storm report can put lost and recovered side by side.
type resumer interface {
	// dialOptions adjusts every dial of c, the first and the reconnects.
	dialOptions(c *client, opt *gws.ClientOption)
	// opened runs once the handshake of c succeeded, before its read loop starts.
	opened(c *client, socket *gws.Conn) error
}

// freshStart is v1: nothing to resume.
type freshStart struct{}

func (freshStart) dialOptions(*client, *gws.ClientOption) {}
func (freshStart) opened(*client, *gws.Conn) error        { return nil }

// reconnect brings c back after the server dropped it: backoff, then a handshake to another
// node, until one succeeds or the fleet is closing.
func (f *fleet) reconnect(c *client) {
	pol := *f.p.Reconnect
	throttled := false
	for attempt := 0; ; attempt++ {
		t := time.NewTimer(pol.delay(attempt, throttled, rand.Float64))
		select {
		case <-f.stopping:
			t.Stop()
			close(c.closed)
			return
		case <-t.C:
		}
		c.mu.Lock()
		from := c.node
		c.mu.Unlock()
		node := f.otherNode(from)
		start := time.Now()
		socket, err := f.handshakeTo(c, f.p.URLs[node])
		if err != nil {
			f.redialFailures.Add(1)
			var de dialError
			throttled = errors.As(err, &de) && (de.status == http.StatusServiceUnavailable || de.status == http.StatusTooManyRequests)
			continue
		}
		f.redial.RecordDuration(time.Since(start))
		f.reconnects.Add(1)
		setMax(&f.lastReconnect, time.Now().UnixNano())
		c.mu.Lock()
		c.node, c.socket = node, socket
		c.reconnects++
		c.synced = false
		closing := c.closing
		c.mu.Unlock()
		f.readLoop(socket)
		if closing {
			// c.close ran during the handshake, on the old socket: close this one, whose
			// OnClose then ends the connection.
			_ = socket.WriteClose(1000, nil)
		}
		return
	}
}

// otherNode picks a node other than from, at random (from itself when it is the only one).
func (f *fleet) otherNode(from int) int {
	n := len(f.p.URLs)
	if n < 2 {
		return 0
	}
	return (from + 1 + rand.IntN(n-1)) % n
}

// reconnected counts the connections that reconnected at least once.
func (f *fleet) reconnected() int {
	n := 0
	for _, c := range f.conns {
		if c != nil {
			c.mu.Lock()
			if c.reconnects > 0 {
				n++
			}
			c.mu.Unlock()
		}
	}
	return n
}

// lostReconnected is what the connections that reconnected did not receive, in all and the
// most one of them lost.
func (f *fleet) lostReconnected() (sum, most int64) {
	for _, c := range f.conns {
		if c != nil {
			c.mu.Lock()
			if c.reconnects > 0 {
				lost := c.tally.lost()
				sum += lost
				most = max(most, lost)
			}
			c.mu.Unlock()
		}
	}
	return sum, most
}

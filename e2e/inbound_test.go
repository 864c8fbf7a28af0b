package e2e_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// What a client may send: the inbound frame rate, the token refresh rate, and what a refresh
// does to the connection's groups.

// floodNode starts a node with INBOUND_RATE_PER_CONNECTION=rate and a raw connection for u1.
func floodNode(t *testing.T, engine string, rate int) (*node, *rawConn) {
	t.Helper()
	n := startNode(t, engine, embedded, map[string]string{"INBOUND_RATE_PER_CONNECTION": strconv.Itoa(rate)})
	return n, rawDial(t, n.Addr, "/ws?token="+n.Token(t, "u1"), rawOptions{})
}

// burst sends count copies of one frame in a single write.
func (c *rawConn) burst(t *testing.T, op byte, payload string, count int) {
	t.Helper()
	var b bytes.Buffer
	for range count {
		b.Write(encodeFrame(true, op, []byte(payload), true))
	}
	c.write(t, b.Bytes())
}

// expectRateLimited reads what the server sends after a flood: answers (of answerOp), then the
// RATE_LIMITED ErrorMessage and a close frame with 1008.
func expectRateLimited(t *testing.T, c *rawConn, answerOp byte) {
	t.Helper()
	frames, err := c.readUntilClose(2 * wait)
	if code := lastClose(frames); code != 1008 {
		t.Fatalf("got %d frames ending with close %d (read error %v), want RATE_LIMITED then close 1008", len(frames), code, err)
	}
	if len(frames) < 2 || frames[len(frames)-2].Op != opText {
		t.Fatalf("no ErrorMessage before the close frame (%d frames)", len(frames))
	}
	checkErrorMessage(t, string(frames[len(frames)-2].Payload), "RATE_LIMITED")
	for i, f := range frames[:len(frames)-2] {
		if f.Op != answerOp {
			t.Fatalf("frame %d before the refusal has opcode %#x, want %#x", i, f.Op, answerOp)
		}
	}
}

// expectAnswers reads count frames of op, each carrying want.
func expectAnswers(t *testing.T, c *rawConn, op byte, want string, count int) {
	t.Helper()
	deadline := time.Now().Add(2 * wait)
	for i := range count {
		f, err := c.readFrame(deadline)
		if err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, count, err)
		}
		if f.Op != op || string(f.Payload) != want {
			t.Fatalf("answer %d: opcode %#x %.80q, want %#x %q", i+1, f.Op, f.Payload, op, want)
		}
	}
}

func TestFloodingTextFramesOverTheInboundRateClosesWithRateLimited(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n, c := floodNode(t, engine, 10) // bursts of 20
		c.burst(t, opText, "x", 200)
		expectRateLimited(t, c, opText)
		n.WaitMetric(t, `websocket_disconnects_total{code="1008"}`, 1, wait)
		n.WaitMetric(t, `websocket_messages_dropped_total{reason="rate_limited"}`, 1, wait)
	})
}

func TestFloodingPingsOverTheInboundRateClosesWithRateLimited(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		_, c := floodNode(t, engine, 10)
		c.burst(t, opPing, "p", 200)
		expectRateLimited(t, c, opPong)
	})
}

func TestFloodingFragmentsOverTheInboundRateClosesWithRateLimited(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		_, c := floodNode(t, engine, 10)
		var b bytes.Buffer
		b.Write(encodeFrame(false, opText, []byte("a"), true))
		for range 200 {
			b.Write(encodeFrame(false, 0, []byte("a"), true))
		}
		c.write(t, b.Bytes())
		expectRateLimited(t, c, opText)
	})
}

func TestFramesWithinTheInboundRateAreAllAnswered(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n, c := floodNode(t, engine, 100) // the default: bursts of 200
		c.burst(t, opText, "x", 90)
		c.burst(t, opPing, "p", 90)
		expectAnswers(t, c, opText, "Echo: x", 90)
		expectAnswers(t, c, opPong, "p", 90)
		if got := n.Metric(t, `websocket_messages_dropped_total{reason="rate_limited"}`); got != 0 {
			t.Fatalf("%v frames counted as rate limited", got)
		}
	})
}

func TestInboundRateZeroIsNoLimit(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		_, c := floodNode(t, engine, 0)
		c.burst(t, opText, "x", 1000)
		expectAnswers(t, c, opText, "Echo: x", 1000)
		c.burst(t, opPing, "p", 1000)
		expectAnswers(t, c, opPong, "p", 1000)
	})
}

// refreshFrame is a token refresh as a client sends it.
func refreshFrame(token string) string { return `{"type":"auth","token":"` + token + `"}` }

func TestRefreshBurstClosesWithRateLimitedWhateverTheInboundRate(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n, c := floodNode(t, engine, 0)
		c.burst(t, opText, refreshFrame(n.Token(t, "u1")), 20)
		frames, err := c.readUntilClose(2 * wait)
		if code := lastClose(frames); code != 1008 || len(frames) < 2 {
			t.Fatalf("got %d frames ending with close %d (read error %v), want RATE_LIMITED then close 1008", len(frames), code, err)
		}
		checkErrorMessage(t, string(frames[len(frames)-2].Payload), "RATE_LIMITED")
		if ok := len(frames) - 2; ok > 3 {
			t.Fatalf("%d refreshes of a burst were accepted, want at most 3", ok)
		}
	})
}

func TestRefreshingOnceASecondIsAllowed(t *testing.T) {
	eachEngine(t, func(t *testing.T, engine string) {
		n := startNode(t, engine, embedded, nil)
		c := dial(t, n.Service, "u1")
		for i := range 3 {
			if i > 0 {
				time.Sleep(1200 * time.Millisecond) // the pace under test, not a wait for an event
			}
			c.Send(t, refreshFrame(n.Token(t, "u1")))
			expectAuthOK(t, c)
		}
		stillOpen(t, c)
	})
}

// expectAuthOK checks that the next message is an auth_ok.
func expectAuthOK(t *testing.T, c *servicetest.Client) {
	t.Helper()
	text := c.NextText(t, wait)
	var ok struct {
		Type string `json:"type"`
		Exp  int64  `json:"exp"`
	}
	if err := json.Unmarshal([]byte(text), &ok); err != nil || ok.Type != "auth_ok" || ok.Exp == 0 {
		t.Fatalf("got %q, want an auth_ok", text)
	}
}

func TestRefreshWithOtherGroupsChangesWhatTheConnectionReceives(t *testing.T) {
	eachEngineAndBackplane(t, func(t *testing.T, engine, backplane string) {
		n := startNode(t, engine, backplane, nil)
		c := dial(t, n.Service, "u1", "classA", "classX")
		waitActive(t, n.Service, 1)
		n.WaitMetric(t, "backplane_subscriptions_active", 4, wait) // ws:u1, two groups, broadcast

		c.Send(t, refreshFrame(n.Token(t, "u1", "classB")))
		expectAuthOK(t, c)

		// Removed: a message to classA published after the auth_ok never arrives; the marker
		// to the user's own channel, published after it, does.
		n.publish(t, group("classA"), `{"n":"A"}`)
		n.publish(t, user("u1"), `{"n":"marker"}`)
		expectText(t, c, `{"n":"marker"}`)
		// Added: a message to classB published after the auth_ok arrives.
		n.publish(t, group("classB"), `{"n":"B"}`)
		expectText(t, c, `{"n":"B"}`)

		// The channels of removed groups are released (after the linger).
		n.WaitMetric(t, "backplane_subscriptions_active", 3, 2*wait)
		if n.rdb != nil {
			eventually(t, 2*wait, "PUBSUB CHANNELS without the removed groups", func() bool {
				chans := n.subscriptions(t)
				return slices.Contains(chans, "ws-group:classB") &&
					!slices.Contains(chans, "ws-group:classA") && !slices.Contains(chans, "ws-group:classX")
			})
		}
		// And whatever the connection holds goes back when it closes.
		_ = c.Conn.WriteClose(1000, nil)
		n.WaitMetric(t, "backplane_subscriptions_active", 0, 2*wait)
	})
}

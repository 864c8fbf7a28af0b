package enginetest_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

// A message of MaxMessageSize is echoed; a larger one, whole, in fragments each under the
// limit, or announced by a frame header alone, gets MESSAGE_TOO_LARGE and 1009.
func TestMessageOverMaxMessageSizeCloses1009(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, func(o *session.Options) { o.MaxMessageSize = 1024 })
		t.Run("whole", func(t *testing.T) {
			c := servicetest.Dial(t, r.UserURL("whole"))
			c.Send(t, strings.Repeat("a", 1024))
			if m := c.NextText(t, enginetest.Wait); m != message.EchoPrefix+strings.Repeat("a", 1024) {
				t.Fatalf("a message of exactly the limit: got %d bytes", len(m))
			}
			c.Send(t, strings.Repeat("b", 1025))
			expectRefusal(t, c, message.CodeMessageTooLarge, message.CloseMessageTooBig)
		})
		for name, frames := range map[string][][]byte{
			"fragments": {
				enginetest.Frame(false, 0, enginetest.OpText, bytes.Repeat([]byte("a"), 600), true),
				enginetest.Frame(false, 0, enginetest.OpContinuation, bytes.Repeat([]byte("a"), 600), true),
				enginetest.Frame(true, 0, enginetest.OpContinuation, bytes.Repeat([]byte("a"), 600), true),
			},
			// Only the header of a 2^40-byte frame: refused from the header.
			"frame header": {{0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4}},
		} {
			t.Run(name, func(t *testing.T) {
				c := r.DialRaw(t, name)
				c.Send(frames...)
				code, before := c.UntilClose(enginetest.Wait)
				if code != message.CloseMessageTooBig || len(before) != 1 || errorCode(t, string(before[0].Payload)) != message.CodeMessageTooLarge {
					t.Fatalf("close %d after %d frames, want MESSAGE_TOO_LARGE then 1009", code, len(before))
				}
			})
		}
		for _, c := range r.Hooks.WaitCalls(t, 3, enginetest.Wait) {
			if c.Code != message.CloseMessageTooBig {
				t.Fatalf("Hooks.Closed %+v, want 1009", c)
			}
		}
	})
}

// burst is count copies of a masked frame in one write.
func burst(op byte, payload string, count int) []byte {
	return bytes.Repeat(enginetest.Msg(op, payload), count)
}

// expectRateLimited reads what the server sends after a flood: answers of answerOp, then the
// RATE_LIMITED ErrorMessage and a close frame with 1008.
func expectRateLimited(t *testing.T, c *enginetest.Raw, answerOp byte) {
	t.Helper()
	code, before := c.UntilClose(2 * enginetest.Wait)
	if code != message.ClosePolicyViolation || len(before) == 0 || before[len(before)-1].Op != enginetest.OpText {
		t.Fatalf("close %d after %d frames, want RATE_LIMITED then close 1008", code, len(before))
	}
	if got := errorCode(t, string(before[len(before)-1].Payload)); got != message.CodeRateLimited {
		t.Fatalf("error %s, want %s", got, message.CodeRateLimited)
	}
	for i, f := range before[:len(before)-1] {
		if f.Op != answerOp {
			t.Fatalf("frame %d before the refusal has opcode %#x, want %#x", i, f.Op, answerOp)
		}
	}
}

// expectAnswers reads count frames of op, each carrying want.
func expectAnswers(t *testing.T, c *enginetest.Raw, op byte, want string, count int) {
	t.Helper()
	for i := range count {
		if f := c.Next(2 * enginetest.Wait); f.Op != op || string(f.Payload) != want {
			t.Fatalf("answer %d: opcode %#x %.80q, want %#x %q", i+1, f.Op, f.Payload, op, want)
		}
	}
}

// InboundRate bounds the frames a connection may send per second (bursts of twice the rate):
// a flood of data frames, pings or fragments over it gets RATE_LIMITED and 1008, frames within
// it are all answered, and a rate of zero is no limit. A burst of refreshes is refused
// whatever the inbound rate.
func TestInboundRateLimits(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		limited := enginetest.New(t, k, func(o *session.Options) { o.InboundRate = 10 })
		t.Run("text", func(t *testing.T) {
			c := limited.DialRaw(t, "text")
			c.Send(burst(enginetest.OpText, "x", 200))
			expectRateLimited(t, c, enginetest.OpText)
			if code := limited.Hooks.WaitUser(t, "text", enginetest.Wait); code != message.ClosePolicyViolation {
				t.Fatalf("Hooks.Closed code %d, want 1008", code)
			}
			testenv.Eventually(t, enginetest.Wait, "a rate_limited drop", func() bool {
				return limited.Dropped(telemetry.DropRateLimited) >= 1
			})
		})
		t.Run("pings", func(t *testing.T) {
			c := limited.DialRaw(t, "pings")
			c.Send(burst(enginetest.OpPing, "p", 200))
			expectRateLimited(t, c, enginetest.OpPong)
		})
		t.Run("fragments", func(t *testing.T) {
			c := limited.DialRaw(t, "fragments")
			var b bytes.Buffer
			b.Write(enginetest.Frame(false, 0, enginetest.OpText, []byte("a"), true))
			for range 200 {
				b.Write(enginetest.Frame(false, 0, enginetest.OpContinuation, []byte("a"), true))
			}
			c.Send(b.Bytes())
			expectRateLimited(t, c, enginetest.OpText)
		})

		t.Run("within the rate", func(t *testing.T) {
			r := enginetest.New(t, k, func(o *session.Options) { o.InboundRate = 100 })
			c := r.DialRaw(t, "within")
			c.Send(burst(enginetest.OpText, "x", 90), burst(enginetest.OpPing, "p", 90))
			expectAnswers(t, c, enginetest.OpText, "Echo: x", 90)
			expectAnswers(t, c, enginetest.OpPong, "p", 90)
			if got := r.Dropped(telemetry.DropRateLimited); got > 0 {
				t.Fatalf("%d frames counted as rate limited", got)
			}
		})
		unlimited := enginetest.New(t, k, nil) // InboundRate 0
		t.Run("zero is no limit", func(t *testing.T) {
			c := unlimited.DialRaw(t, "zero")
			c.Send(burst(enginetest.OpText, "x", 1000))
			expectAnswers(t, c, enginetest.OpText, "Echo: x", 1000)
			c.Send(burst(enginetest.OpPing, "p", 1000))
			expectAnswers(t, c, enginetest.OpPong, "p", 1000)
		})
		t.Run("refresh burst", func(t *testing.T) {
			c := unlimited.DialRaw(t, "refresher")
			c.Send(burst(enginetest.OpText, `{"type":"auth","token":"`+unlimited.Token("refresher", time.Hour)+`"}`, 20))
			code, before := c.UntilClose(2 * enginetest.Wait)
			if code != message.ClosePolicyViolation || len(before) < 1 {
				t.Fatalf("close %d after %d frames, want RATE_LIMITED then close 1008", code, len(before))
			}
			if got := errorCode(t, string(before[len(before)-1].Payload)); got != message.CodeRateLimited {
				t.Fatalf("error %s, want %s", got, message.CodeRateLimited)
			}
			if ok := len(before) - 1; ok > 3 {
				t.Fatalf("%d refreshes of a burst were accepted, want at most 3", ok)
			}
		})
	})
}

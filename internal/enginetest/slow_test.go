package enginetest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/session"
	"github.com/huleedu/websocket-service/telemetry"
)

func slowLimit(o *session.Options) { o.SendQueueLimit = 256 << 10 }

// A client that never reads is closed 1013 once its queue passes SendQueueLimit, while one
// that reads gets every message, in order, and stays open.
func TestSlowConsumerClosed1013WhileOthersReceiveEverythingInOrder(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, slowLimit)
		slow := r.DialRawWith(t, "slow", enginetest.RawOptions{ReceiveBuffer: 4096}, "room") // never reads
		fast := servicetest.Dial(t, r.UserURL("fast", "room"))
		r.WaitAccepted(t, 2)

		// 8 MiB: more than the socket buffers hold. The reading client never has more than
		// window messages (128 KiB) in flight, so it keeps up however slowly this machine runs
		// the engine and the client: only the client that never reads may pass the limit.
		const total, size, window = 1000, 8 << 10, 16
		pad := strings.Repeat("n", size)
		received := 0
		receive := func() {
			want := fmt.Sprintf("%04d%s", received, pad)
			if m := fast.NextText(t, enginetest.Wait); m != want {
				t.Fatalf("message %d is %.40q…, want seq %04d", received, m, received)
			}
			received++
		}
		start := time.Now()
		for i := range total {
			if i >= window {
				receive()
			}
			r.Deliver(registry.Group, "room", fmt.Sprintf("%04d%s", i, pad))
		}
		for received < total {
			receive()
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("the reading client took %v for its messages", d)
		}
		if code := r.Hooks.WaitUser(t, "slow", enginetest.Wait); code != message.CloseTryAgainLater {
			t.Fatalf("slow client Closed %d, want 1013", code)
		}
		if codes := r.Hooks.CodesFor("fast"); len(codes) != 0 {
			t.Fatalf("the reading client was closed: %v", codes)
		}
		if got := r.Dropped(telemetry.DropSlowConsumer); got < 1 || k.SlowDrops > 0 && got != k.SlowDrops {
			t.Fatalf(`websocket_messages_dropped_total{reason="slow_consumer"} = %d, want %d (0: any > 0)`, got, k.SlowDrops)
		}
		slow.ExpectEOF(enginetest.Wait) // reading at last, it finds its connection ended
	})
}

// A client that stopped reading long enough to be dropped, and then reads again, finds whole
// frames (never one cut in the middle), the SLOW_CONSUMER ErrorMessage and then the close
// frame with 1013: a browser tab that was frozen and resumes can tell why it was dropped.
func TestSlowConsumerReadingLateSeesWhy(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, slowLimit)
		slow := r.DialRawWith(t, "slow", enginetest.RawOptions{ReceiveBuffer: 4096})
		r.WaitAccepted(t, 1)
		pad := strings.Repeat("z", 8<<10)
		deadline := time.Now().Add(enginetest.Wait)
		for i := 0; r.Dropped(telemetry.DropSlowConsumer) < 1; i++ {
			if time.Now().After(deadline) {
				t.Fatalf("%d messages of 8 KiB delivered, the connection that reads nothing is still open", i)
			}
			r.Deliver(registry.User, "slow", fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, i, pad))
		}
		code, before := slow.UntilClose(enginetest.Wait) // fails on a cut frame
		if code != message.CloseTryAgainLater {
			t.Fatalf("close code %d, want 1013", code)
		}
		if len(before) == 0 || errorCode(t, string(before[len(before)-1].Payload)) != message.CodeSlowConsumer {
			t.Fatalf("the last of %d frames before the close is not SLOW_CONSUMER", len(before))
		}
		for i, f := range before[:len(before)-1] {
			if !f.Fin || !strings.HasPrefix(string(f.Payload), `{"seq":`) {
				t.Fatalf("frame %d before the ErrorMessage: fin %v %.40q", i, f.Fin, f.Payload)
			}
		}
	})
}

package enginetest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/enginetest"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
	"github.com/huleedu/websocket-service/message"
	"github.com/huleedu/websocket-service/session"
)

// Drain closes every connection with 1001, the i-th of n no earlier than window·i/n after it
// began; meanwhile Accept refuses with 503.
//
// The bounds are the engine's own promise, so load cannot break them: a close can only come
// late, never early, and the spread is checked from below. One shard: the epoll engine
// spreads each shard's connections over the window separately.
func TestDrainSpreadsClosesOverTheWindow(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, func(o *session.Options) { o.Shards = 1 })
		const n = 10
		const window = time.Second
		clients := make([]*servicetest.Client, n)
		for i := range clients {
			clients[i] = servicetest.Dial(t, r.UserURL(fmt.Sprintf("d%d", i)))
		}
		r.WaitAccepted(t, n)
		testenv.Eventually(t, enginetest.Wait, "every connection registered", func() bool {
			return r.Metrics.ConnectionsActive.Get() == n
		})
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 4*enginetest.Wait)
		defer cancel()
		if err := r.Engine.Drain(ctx, window); err != nil {
			t.Fatal(err)
		}
		calls := r.Hooks.WaitCalls(t, n, enginetest.Wait)
		at := make([]time.Duration, n)
		for i, c := range calls {
			if c.Code != message.CloseGoingAway {
				t.Fatalf("Hooks.Closed %+v, want 1001", c)
			}
			at[i] = c.At.Sub(start)
		}
		slices.Sort(at)
		for i, d := range at {
			if early := window * time.Duration(i) / n; d < early {
				t.Fatalf("close %d of %d after %v, before its turn at %v: %v", i, n, d, early, at)
			}
		}
		if spread := at[n-1] - at[0]; spread < window/2 {
			t.Fatalf("closes spread over %v, want about %v: %v", spread, window*(n-1)/n, at)
		}
		for _, c := range clients {
			if code, _ := c.WaitClose(t, enginetest.Wait); code != message.CloseGoingAway {
				t.Fatalf("client saw %d, want 1001", code)
			}
		}
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/ws", nil)
		if err := r.Engine.Accept(w, req, session.Admission{}); !errors.Is(err, k.ErrClosed) {
			t.Fatalf("Accept while draining: %v, want %v", err, k.ErrClosed)
		}
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("Accept while draining answered %d, want 503", w.Code)
		}
	})
}

// Drain returns the context's error once it ends, connections or not.
func TestDrainReturnsWhenContextEnds(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		r.DialRaw(t, "stays") // never answers the close frame
		r.WaitAccepted(t, 1)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		if err := r.Engine.Drain(ctx, 10*time.Second); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Drain = %v, want deadline exceeded", err)
		}
	})
}

// Accept after Close answers 503 and registers nothing.
func TestAcceptAfterCloseRefused(t *testing.T) {
	each(t, func(t *testing.T, k enginetest.Kind) {
		r := enginetest.New(t, k, nil)
		if err := r.Engine.Close(); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		if err := r.Engine.Accept(w, httptest.NewRequest(http.MethodGet, "/ws", nil), session.Admission{}); !errors.Is(err, k.ErrClosed) {
			t.Fatalf("Accept after Close = %v, want %v", err, k.ErrClosed)
		}
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", w.Code)
		}
	})
}

package resume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// A client that reconnects while a publisher keeps publishing sees every message of the
// stream exactly once, in order, across the disconnect: what was published during its resume
// is held, and what the replay already carried is dropped from it.
func TestResumeWhilePublishing(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		cl := newCluster(t, engine, bp, nil)
		a := cl.node(t)
		b := a
		if bp == redisBP {
			b = cl.node(t)
		}
		var published atomic.Int64
		stop := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), wait)
				_, err := a.App.Server().Publish(ctx, groupT, fmt.Appendf(nil, `{"n":%d}`, i))
				cancel()
				if err != nil {
					done <- err
					return
				}
				published.Store(int64(i + 1))
				time.Sleep(time.Millisecond) // a steady rate, not a flood
			}
		}()
		want := 0
		check := func(data json.RawMessage) {
			t.Helper()
			var m struct{ N int }
			if err := json.Unmarshal(data, &m); err != nil || m.N != want {
				t.Fatalf("got %s, want n %d", data, want)
			}
			want++
		}
		c := dialV2(t, a, nil, "u1", "class7")
		// The cursors of what the test has processed (the client saves those of everything
		// it has received, which may be ahead).
		cursors := map[string]string{}
		for stream, fs := range syncs(t, c, "user", "group:class7", "broadcast") {
			cursors[stream] = fs[len(fs)-1].CursorString()
		}
		var seen int
		for round := range 4 {
			for seen = 0; seen < 20; {
				f := next(t, c)
				if f.Stream == "group:class7" && f.Type == "message" {
					if want == 0 {
						var m struct{ N int }
						_ = json.Unmarshal(f.Data, &m)
						want = m.N
					}
					check(f.Data)
					cursors[f.Stream] = f.CursorString()
					seen++
				}
			}
			c.Close()
			node := a
			if round%2 == 1 {
				node = b
			}
			c = dialV2(t, node, cursors, "u1", "class7")
			for _, f := range syncs(t, c, "user", "group:class7", "broadcast")["group:class7"] {
				cursors[f.Stream] = f.CursorString()
				if f.Type == "message" {
					check(f.Data)
				} else if !f.IsRecovered() {
					t.Fatalf("round %d: %s, want recovered", round, f.Raw)
				}
			}
		}
		close(stop)
		if err := <-done; err != nil {
			t.Fatalf("publisher: %v", err)
		}
		last := int(published.Load())
		for want < last {
			f := next(t, c)
			if f.Stream == "group:class7" && f.Type == "message" {
				check(f.Data)
			}
		}
		if f, err := c.Next(500 * time.Millisecond); err == nil {
			t.Fatalf("after the last message: %s", f.Raw)
		}
	})
}

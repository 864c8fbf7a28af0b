package resume_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/v2client"
)

// userSync reconnects u1 (no groups) to s with cursors and returns the frames of the user
// stream, its sync last.
func userSync(t *testing.T, s *servicetest.Service, cursors map[string]string) (*v2client.Client, []v2client.Frame) {
	t.Helper()
	c := dialV2(t, s, cursors, "u1")
	return c, syncs(t, c, "user", "broadcast")["user"]
}

// freshCursors connects u1 once and returns the cursors of its first syncs.
func freshCursors(t *testing.T, s *servicetest.Service) map[string]string {
	t.Helper()
	c, _ := userSync(t, s, nil)
	cur := c.Cursors()
	c.Close()
	waitActive(t, s, 0)
	return cur
}

func expectNotRecovered(t *testing.T, fs []v2client.Frame, reason string, missed int64) {
	t.Helper()
	if len(fs) != 1 {
		t.Fatalf("got %s, want no replay, only the sync", raws(fs))
	}
	f := fs[0]
	if f.IsRecovered() || f.Reason != reason || f.CursorString() == "" {
		t.Fatalf("got %s, want recovered:false reason %s with a cursor", f.Raw, reason)
	}
	switch {
	case missed < 0 && f.Missed != nil:
		t.Fatalf("got %s, want missed null", f.Raw)
	case missed >= 0 && (f.Missed == nil || *f.Missed != missed):
		t.Fatalf("got %s, want missed %d", f.Raw, missed)
	}
}

// More missed than RECOVERY_MAX_MESSAGES: nothing is replayed, reason limit with the count.
func TestResumeOverTheLimit(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, map[string]string{"RECOVERY_MAX_MESSAGES": "3"}).node(t)
		cur := freshCursors(t, s)
		publishN(t, s, userT, 0, 5)
		_, fs := userSync(t, s, cur)
		expectNotRecovered(t, fs, "limit", 5)
		if got := s.Metric(t, `websocket_recovery_total{result="limit"}`); got != 1 {
			t.Fatalf("websocket_recovery_total{result=\"limit\"} = %v, want 1", got)
		}
	})
}

// Messages after the cursor pushed out by HISTORY_SIZE: reason trimmed with the count.
func TestResumeTrimmed(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, map[string]string{"HISTORY_SIZE": "4"}).node(t)
		cur := freshCursors(t, s)
		publishN(t, s, userT, 0, 6)
		_, fs := userSync(t, s, cur)
		expectNotRecovered(t, fs, "trimmed", 6)
	})
}

// Messages dropped by HISTORY_TTL: reason expired. A cursor at the top of a stream stays
// continuous however long the stream was quiet.
func TestResumeExpiredAndQuiet(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, map[string]string{"HISTORY_TTL": "1"}).node(t)
		before := freshCursors(t, s)
		publishN(t, s, userT, 0, 2)
		c, fs := userSync(t, s, before)
		if len(fs) != 3 || !fs[2].IsRecovered() {
			t.Fatalf("right after publishing: %s, want both replayed", raws(fs))
		}
		top := c.Cursors()
		c.Close()
		waitActive(t, s, 0)
		// Poll until the history has expired (1 s after the last publish).
		deadline := time.Now().Add(wait)
		for {
			c, fs = userSync(t, s, before)
			c.Close()
			waitActive(t, s, 0)
			if len(fs) == 1 && !fs[0].IsRecovered() {
				expectNotRecovered(t, fs, "expired", 2)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("history never expired: %s", raws(fs))
			}
			time.Sleep(200 * time.Millisecond) // poll interval: each poll is a connection and a sync
		}
		_, fs = userSync(t, s, top)
		if len(fs) != 1 || !fs[0].IsRecovered() || *fs[0].Replayed != 0 || fs[0].CursorString() != top["user"] {
			t.Fatalf("quiet stream resumed from its top: %s, want recovered:true replayed:0 at the same cursor", raws(fs))
		}
	})
}

// A cursor from a history that was lost (Redis flushed; another embedded process) is never
// taken as continuous: reason epoch, missed unknown.
func TestResumeAfterHistoryLoss(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		cl := newCluster(t, engine, bp, nil)
		a := cl.node(t)
		cur := freshCursors(t, a)
		publishN(t, a, userT, 0, 3)
		c, _ := userSync(t, a, cur)
		cur = c.Cursors()
		c.Close()
		waitActive(t, a, 0)
		b := a
		if cl.rdb != nil {
			if err := cl.rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			publishN(t, a, userT, 10, 4) // a new history, at least as long as the old one
		} else {
			b = cl.node(t) // another process: another epoch
		}
		_, fs := userSync(t, b, cur)
		expectNotRecovered(t, fs, "epoch", -1)
	})
}

// Bad cursors count as none (reason new); streams the connection does not read are ignored.
func TestResumeBadCursorsAndForeignStreams(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, nil).node(t)
		c := dialV2(t, s, map[string]string{"user": "not-a-cursor", "group:other": "1.1.1.1", "broadcast": strings.Repeat("x", 100)}, "u1")
		got := syncs(t, c, "user", "broadcast")
		for _, st := range []string{"user", "broadcast"} {
			expectNotRecovered(t, got[st], "new", -1)
		}
		if len(got) != 2 {
			t.Fatalf("frames for streams %v, want only user and broadcast", got)
		}
	})
}

// Until the resume frame comes, deliveries are held: a first frame that is not a resume is an
// empty resume and is answered as usual; a later resume is ignored; with no frame at all the
// resume starts after 5 s as if empty, and what was held follows the syncs.
func TestResumeFrameRules(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, nil).node(t)
		c, err := v2client.Dial(s.DialURL(s.Token(t, "u1")), nil, v2client.Options{NoResume: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.SendText("hi"); err != nil {
			t.Fatal(err)
		}
		// The echo is not a stream frame: it may come before the syncs or after them.
		frames, err := c.Syncs(2, wait)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(raws(frames), `{"type":"echo","data":"hi"}`) {
			if f := next(t, c); f.Raw != `{"type":"echo","data":"hi"}` {
				t.Fatalf("after %s: got %s, want the echo", raws(frames), f.Raw)
			}
		}
		_ = c.Resume(nil)
		_ = c.SendText("again")
		if f := next(t, c); f.Raw != `{"type":"echo","data":"again"}` {
			t.Fatalf("a later resume was answered: %s", f.Raw)
		}

		late, err := v2client.Dial(s.DialURL(s.Token(t, "u2")), nil, v2client.Options{NoResume: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(late.Close)
		opened := time.Now()
		waitActive(t, s, 2)
		s.Publish(t, broadcastT, `{"held":true}`)
		frames, err = late.Syncs(2, wait)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(opened); d < 4*time.Second {
			t.Fatalf("resumed %v after open without a resume frame, want after 5 s", d)
		}
		for _, f := range frames {
			if f.Reason != "new" {
				t.Fatalf("resume on timeout: %s, want syncs reason new", raws(frames))
			}
			// The message held meanwhile is at or before the broadcast sync's cursor (the
			// history was read after it): it is part of the state the client loads, not sent.
			if pos, err := history.ParseCursor(f.CursorString()); f.Stream == "broadcast" && (err != nil || pos.Seq != 1) {
				t.Fatalf("broadcast sync %s, want the cursor of the message published", f.Raw)
			}
		}
		if f, err := late.Next(time.Second); err == nil {
			t.Fatalf("after the syncs: %s, want nothing (the held message is covered by the sync)", f.Raw)
		}
	})
}

// What a connection holds while its resume is pending counts against SEND_QUEUE_LIMIT: over
// it the connection is closed 1013 after SLOW_CONSUMER.
func TestHeldOverTheSendQueueLimit(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, map[string]string{"SEND_QUEUE_LIMIT": "4096"}).node(t)
		c, err := v2client.Dial(s.DialURL(s.Token(t, "u1")), nil, v2client.Options{NoResume: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		waitActive(t, s, 1)
		body := fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", 1000))
		for range 6 {
			s.Publish(t, userT, body)
		}
		f := next(t, c)
		if f.Type != "error" || f.Code != "SLOW_CONSUMER" {
			t.Fatalf("got %s, want SLOW_CONSUMER", f.Raw)
		}
		select {
		case <-c.Done():
		case <-time.After(wait):
			t.Fatal("not closed")
		}
		if code := c.CloseCode(); code != 1013 {
			t.Fatalf("closed %d, want 1013", code)
		}
	})
}

// With HISTORY_SIZE=0 nothing is kept: v2 still works, live messages carry cursors, and every
// resume reports recovered:false (docs/PROTOCOL.md): trimmed, with the count of what was missed
// — none, for a client that missed nothing, which still reloads: no history, no continuity.
func TestResumeWithoutHistory(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		s := newCluster(t, engine, bp, map[string]string{"HISTORY_SIZE": "0"}).node(t)
		cur := freshCursors(t, s)
		publishN(t, s, userT, 0, 2)
		c, fs := userSync(t, s, cur)
		expectNotRecovered(t, fs, "trimmed", 2)
		s.Publish(t, userT, `{"live":true}`)
		if f := next(t, c); string(f.Data) != `{"live":true}` || f.CursorString() == "" {
			t.Fatalf("live: %s, want the message with a cursor", f.Raw)
		}
		cur = c.Cursors()
		c.Close()
		waitActive(t, s, 0)
		_, fs = userSync(t, s, cur)
		expectNotRecovered(t, fs, "trimmed", 0)
	})
}

package resume_test

import (
	"fmt"
	"testing"

	"github.com/huleedu/websocket-service/history"
	"github.com/huleedu/websocket-service/internal/v2client"
)

// A fresh v2 client gets one sync per stream, recovered:false reason new, each with a cursor
// even though nothing was ever published; then live messages carry stream and cursor, data is
// the payload itself for JSON objects and arrays and a JSON string otherwise, a text message
// is answered with an echo frame.
func TestFreshConnectSyncsEveryStreamThenLive(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		cl := newCluster(t, engine, bp, nil)
		s := cl.node(t)
		c := dialV2(t, s, nil, "u1", "class7")
		got := syncs(t, c, "user", "group:class7", "broadcast")
		for stream, fs := range got {
			f := fs[0]
			if len(fs) != 1 || f.IsRecovered() || f.Reason != "new" || f.Missed != nil || f.CursorString() == "" {
				t.Errorf("stream %s: %s, want one sync recovered:false reason new with a cursor and missed null", stream, raws(fs))
			}
			if _, err := history.ParseCursor(f.CursorString()); err != nil {
				t.Errorf("stream %s: cursor %q: %v", stream, f.CursorString(), err)
			}
		}
		s.Publish(t, userT, `{"a":[1,2]}`)
		s.Publish(t, groupT, `[1, 2]`)
		s.Publish(t, broadcastT, `just text`)
		s.Publish(t, userT, `"a json string"`)
		// Order holds per stream only: streams are separate channels.
		want := map[string][]string{"user": {`{"a":[1,2]}`, `"\"a json string\""`}, "group:class7": {`[1, 2]`}, "broadcast": {`"just text"`}}
		got2 := map[string][]string{}
		for range 4 {
			f := next(t, c)
			if f.Type != "message" || f.CursorString() == "" {
				t.Fatalf("got %s, want a message with a cursor", f.Raw)
			}
			got2[f.Stream] = append(got2[f.Stream], string(f.Data))
		}
		if fmt.Sprint(got2) != fmt.Sprint(want) {
			t.Fatalf("data by stream %v, want %v", got2, want)
		}
		if err := c.SendText("hello"); err != nil {
			t.Fatal(err)
		}
		if f := next(t, c); f.Raw != `{"type":"echo","data":"hello"}` {
			t.Fatalf("echo: got %s", f.Raw)
		}
		if bp == redisBP {
			cl.plainPublish(t, s, groupT, `{"plain":true}`)
			if f := next(t, c); f.Raw != `{"type":"message","stream":"group:class7","cursor":null,"data":{"plain":true}}` {
				t.Fatalf("plain PUBLISH: got %s", f.Raw)
			}
		}
	})
}

// A client that reconnects with its saved cursors, to the same node or to another on the same
// Redis, gets exactly what it missed on each stream, in order, then sync recovered:true with
// the count, then live messages.
func TestReconnectReplaysWhatWasMissed(t *testing.T) {
	each(t, func(t *testing.T, engine, bp string) {
		cl := newCluster(t, engine, bp, nil)
		a := cl.node(t)
		nodes := []string{"same node"}
		if bp == redisBP {
			nodes = append(nodes, "second node")
		}
		b := a
		c := dialV2(t, a, nil, "u1", "class7")
		syncs(t, c, "user", "group:class7", "broadcast")
		for round, where := range nodes {
			if where == "second node" {
				b = cl.node(t)
			}
			cursors := c.Cursors()
			c.Close()
			waitActive(t, a, 0)
			const n = 5
			base := round * 100
			publishN(t, a, userT, base, n)
			publishN(t, a, groupT, base+10, n)
			publishN(t, a, broadcastT, base+20, n)
			c = dialV2(t, b, cursors, "u1", "class7")
			got := syncs(t, c, "user", "group:class7", "broadcast")
			for stream, first := range map[string]int{"user": base, "group:class7": base + 10, "broadcast": base + 20} {
				fs := got[stream]
				if len(fs) != n+1 {
					t.Fatalf("%s, %s: %s, want %d replayed then the sync", where, stream, raws(fs), n)
				}
				for i := range n {
					if want := fmt.Sprintf(`{"n":%d}`, first+i); fs[i].Type != "message" || string(fs[i].Data) != want {
						t.Fatalf("%s, %s: replay %d is %s, want data %s", where, stream, i, fs[i].Raw, want)
					}
				}
				sync := fs[n]
				if !sync.IsRecovered() || sync.Replayed == nil || *sync.Replayed != n || sync.CursorString() != fs[n-1].CursorString() {
					t.Fatalf("%s, %s: sync %s, want recovered:true replayed:%d at the last replayed cursor", where, stream, sync.Raw, n)
				}
			}
			if round == 0 {
				for series, want := range map[string]float64{
					`websocket_recovery_total{result="recovered"}`: 3, `websocket_recovery_total{result="new"}`: 3,
					"websocket_recovery_replayed_messages_total": 3 * n,
				} {
					if got := a.Metric(t, series); got != want {
						t.Fatalf("%s = %v, want %v", series, got, want)
					}
				}
			}
			s := b
			s.Publish(t, groupT, `{"live":1}`)
			if f := next(t, c); f.Stream != "group:class7" || string(f.Data) != `{"live":1}` {
				t.Fatalf("%s: live message %s", where, f.Raw)
			}
			waitActive(t, b, 1)
			if b != a {
				c.Close()
				waitActive(t, b, 0)
				c = dialV2(t, a, c.Cursors(), "u1", "class7")
				for _, f := range syncs(t, c, "user", "group:class7", "broadcast") {
					if len(f) != 1 || !f[0].IsRecovered() {
						t.Fatalf("back on the first node: %s, want only a recovered sync", raws(f))
					}
				}
			}
		}
		_ = v2client.Subprotocol
	})
}

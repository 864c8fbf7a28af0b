package resume

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/history"
)

// The per-connection merge, over random interleavings: for each stream a client cursor c, a
// history read that saw the stream up to top (c ≤ top), and live deliveries held from some
// position s ≤ top+1 on (the connection subscribed before the read began, so nothing after top
// is missing from what is held; some held ones may also be in the replay) mixed with messages
// without a position and with other streams. Whatever the budgets the engine pulls with, the
// client sees per stream the replay, the sync, then every later position exactly once, in
// order, and every message without a position.
func TestMergeProperty(t *testing.T) {
	const epoch = 7
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 1))
		streams := []string{"user", "group:a", "broadcast"}
		var st State
		st.Begin()
		var out []Outcome
		type plan struct{ cursor, top, last uint64 }
		plans := map[string]plan{}
		var held []held
		plainWant := map[string]int{}
		for _, name := range streams {
			c := uint64(r.IntN(5))
			top := c + uint64(r.IntN(6))
			last := top + uint64(r.IntN(6))
			s := c + 1 + uint64(r.IntN(int(top-c)+1)) // first held position, ≤ top+1
			plans[name] = plan{c, top, last}
			var entries []history.Entry
			for p := c + 1; p <= top; p++ {
				entries = append(entries, history.Entry{Position: pos(epoch, p), Payload: payload(name, p)})
			}
			out = append(out, Outcome{Stream: name, Result: history.Result{Entries: entries, Recovered: true, Cursor: pos(epoch, top)}})
			for p := s; p <= last; p++ {
				held = append(held, item(name, pos(epoch, p)))
			}
			for range r.IntN(3) {
				held = append(held, item(name, history.Position{}))
				plainWant[name]++
			}
		}
		r.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
		// Keep each stream's positioned messages in publish order (a channel is ordered).
		sortPerStream(held)
		half := len(held) / 2
		for _, h := range held[:half] {
			st.Hold(h.stream, h.pos, h.frame)
		}
		if !st.Ready(out, func() {}) {
			t.Fatal("Ready refused a reading state")
		}
		var got []map[string]any
		rest := held[half:]
		for done := false; !done; {
			// A delivery may arrive between two pulls: it is held behind what is held.
			if len(rest) > 0 && r.IntN(2) == 0 {
				st.Hold(rest[0].stream, rest[0].pos, rest[0].frame)
				rest = rest[1:]
			}
			var frames [][]byte
			frames, done = st.Next(nil, 1+r.IntN(400), r.IntN(100), func(b []byte) []byte { return b })
			if done { // live: later deliveries go straight out unless stale
				for _, h := range rest {
					if !st.Stale(h.stream, h.pos) {
						frames = append(frames, h.frame)
					}
				}
			}
			for _, f := range frames {
				var m map[string]any
				if err := json.Unmarshal(f, &m); err != nil {
					t.Fatalf("seed %d: frame %s: %v", seed, f, err)
				}
				got = append(got, m)
			}
		}
		for _, name := range streams {
			p := plans[name]
			next, synced, plain := p.cursor+1, false, 0
			for _, m := range got {
				if m["stream"] != name {
					continue
				}
				switch {
				case m["type"] == "sync":
					if synced || next != p.top+1 || m["replayed"] != float64(p.top-p.cursor) {
						t.Fatalf("seed %d, %s: sync %v at position %d (plan %+v)", seed, name, m, next, p)
					}
					synced = true
				case m["cursor"] == nil:
					if !synced {
						t.Fatalf("seed %d, %s: a message without a position before the sync", seed, name)
					}
					plain++
				default:
					want := pos(epoch, next).Cursor()
					if m["cursor"] != want || (next > p.top) != synced {
						t.Fatalf("seed %d, %s: got %v, want position %d (synced %v, plan %+v)", seed, name, m, next, synced, p)
					}
					next++
				}
			}
			if !synced || next != p.last+1 || plain != plainWant[name] {
				t.Fatalf("seed %d, %s: ended at %d (synced %v, %d plain), want %d and %d plain", seed, name, next, synced, plain, p.last+1, plainWant[name])
			}
		}
		if !st.Live() || st.HeldBytes() != 0 {
			t.Fatalf("seed %d: not live after the merge", seed)
		}
	}
}

func pos(epoch, seq uint64) history.Position {
	return history.Position{Epoch: epoch, Seq: seq, Tag: uint32(seq*2654435761%1000 + 1)}
}

func payload(stream string, seq uint64) []byte {
	return fmt.Appendf(nil, `{"s":%q,"n":%d}`, stream, seq)
}

func item(stream string, p history.Position) held {
	return held{stream: stream, pos: p, frame: MessageFrame(stream, p, payload(stream, p.Seq))}
}

// sortPerStream puts each stream's positioned items back in position order, in the slots
// they occupy, leaving the interleaving between streams random.
func sortPerStream(hs []held) {
	slots := map[string][]int{}
	for i, h := range hs {
		if !h.pos.IsZero() {
			slots[h.stream] = append(slots[h.stream], i)
		}
	}
	for _, idx := range slots {
		vals := make([]held, len(idx))
		for k, i := range idx {
			vals[k] = hs[i]
		}
		for a := 1; a < len(vals); a++ {
			for b := a; b > 0 && vals[b].pos.Seq < vals[b-1].pos.Seq; b-- {
				vals[b], vals[b-1] = vals[b-1], vals[b]
			}
		}
		for k, i := range idx {
			hs[i] = vals[k]
		}
	}
}

// A stream a refresh removes during the resume sends nothing more: neither what was held nor
// its replay and sync, whether the verdicts came before the refresh or after it.
func TestForgetRemovedStream(t *testing.T) {
	for _, before := range []bool{true, false} {
		var st State
		st.Begin()
		out := []Outcome{
			{Stream: "group:a", Result: history.Result{Entries: []history.Entry{{Position: pos(1, 1), Payload: payload("group:a", 1)}}, Recovered: true, Cursor: pos(1, 1)}},
			{Stream: "group:b", Result: history.Result{Recovered: true, Cursor: pos(1, 0)}},
		}
		st.Hold("group:a", pos(1, 2), item("group:a", pos(1, 2)).frame)
		st.Hold("group:b", pos(1, 1), item("group:b", pos(1, 1)).frame)
		if before {
			st.Forget("group:a")
			st.Ready(out, func() {})
		} else {
			st.Ready(out, func() {})
			st.Forget("group:a")
		}
		frames, done := st.Next(nil, 1<<20, 0, func(b []byte) []byte { return b })
		if !done || len(frames) != 2 {
			t.Fatalf("forgotten before the verdicts %v: frames %q, want group:b's sync and message", before, frames)
		}
		for _, f := range frames {
			if strings.Contains(string(f), "group:a") {
				t.Fatalf("forgotten before the verdicts %v: %s", before, f)
			}
		}
	}
}

// A stream a refresh added to a live connection is checked like a resumed one: a message at or
// before the cursor its sync announced (published before the group was added, still on its way
// through the backplane) is stale; the first later one ends the check. A connection still
// resuming is left to its resume.
func TestFloorOfAStreamARefreshAdded(t *testing.T) {
	heads := []Outcome{{Stream: "group:c", Result: history.Result{Reason: history.ReasonNew, Cursor: pos(1, 1)}}}
	for _, tc := range []struct {
		name string
		st   State
	}{{"live", liveState(t)}, {"let go", Floors(nil)}} {
		st := tc.st
		if !st.Floor(heads) || !st.Floors() {
			t.Fatalf("%s: no floor after a refresh added group:c", tc.name)
		}
		if !st.Stale("group:c", pos(1, 1)) {
			t.Fatalf("%s: the message at the sync's cursor is not stale", tc.name)
		}
		if st.Stale("group:c", pos(1, 2)) || st.Floors() {
			t.Fatalf("%s: the next message is stale, or the check goes on after it", tc.name)
		}
	}
	var resuming State
	resuming.Begin()
	if resuming.Floor(heads) {
		t.Fatal("a connection still resuming took a floor")
	}
}

// liveState is a State whose resume is done and whose floors are dropped.
func liveState(t *testing.T) State {
	t.Helper()
	var st State
	st.Begin()
	st.Ready(nil, func() {})
	if _, done := st.Next(nil, 1<<20, 0, func(b []byte) []byte { return b }); !done || !st.Live() {
		t.Fatal("an empty resume did not go live")
	}
	st.DropFloors()
	return st
}

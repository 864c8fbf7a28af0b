package history

import (
	"strconv"
	"testing"

	"github.com/huleedu/websocket-service/internal/hashslot"
)

func TestKeysShareTheChannelsSlot(t *testing.T) {
	for _, ch := range []string{
		"ws:u1", "ws-group:class7", "ws-broadcast", // the default channels
		"ws:{a}b", "{x}", "ws:{}b", "ws:{a", "ws:a}", "ws:}{", "ws:a}b{c}", "}", "{}", "ws:{{a}}",
	} {
		h, m := Keys(ch)
		want := hashslot.Of(ch)
		if hashslot.Of(h) != want || hashslot.Of(m) != want {
			t.Errorf("Keys(%q) = %q (slot %d), %q (slot %d); channel slot %d", ch, h, hashslot.Of(h), m, hashslot.Of(m), want)
		}
		if h == m {
			t.Errorf("Keys(%q): both keys are %q", ch, h)
		}
	}
	if h, m := Keys("ws:u1"); h != "wsh:h:{ws:u1}" || m != "wsh:m:{ws:u1}" {
		t.Errorf("Keys(ws:u1) = %q, %q; docs/PROTOCOL.md shows wsh:h:{ws:u1}, wsh:m:{ws:u1}", h, m)
	}
}

// slotTag must find a tag for every slot, and quickly: below 200,000 for all of them.
func TestEverySlotHasASmallDecimalTag(t *testing.T) {
	var seen [hashslot.Count]bool
	left := hashslot.Count
	n := 0
	for ; left > 0 && n < 200_000; n++ {
		if s := hashslot.Of(strconv.Itoa(n)); !seen[s] {
			seen[s] = true
			left--
		}
	}
	if left > 0 {
		t.Fatalf("%d slots have no decimal tag below 200,000", left)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	for _, p := range []Position{
		{Epoch: 1, Seq: 0, Tag: 0},
		{Epoch: 1765000000123456, Seq: 42, Tag: 4294967295},
		{Epoch: 1<<64 - 1, Seq: 1<<64 - 1, Tag: 1<<32 - 1},
	} {
		c := p.Cursor()
		if len(c) > 64 {
			t.Errorf("cursor %q is %d bytes", c, len(c))
		}
		got, err := ParseCursor(c)
		if err != nil || got != p {
			t.Errorf("ParseCursor(%q) = %+v, %v; want %+v", c, got, err, p)
		}
	}
	for _, bad := range []string{"x", "1.0.1.1", "2.1.1.1", "1.a.b", "1.1.1.zzzzzzzzz", "1.-1.1.1"} {
		if _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) accepted", bad)
		}
	}
	if p, err := ParseCursor(""); err != nil || !p.IsZero() {
		t.Errorf(`ParseCursor("") = %+v, %v`, p, err)
	}
}

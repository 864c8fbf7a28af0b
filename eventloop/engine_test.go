//go:build linux

package eventloop

import (
	"strings"
	"testing"
	"time"
)

func TestSmokeEcho(t *testing.T) {
	h := newHarness(t, nil)
	rc := h.dialRaw(t, "u1", cf(opText, "behind"))
	op, p := rc.expectFrame(2 * time.Second)
	if op != opText || string(p) != "Echo: behind" {
		t.Fatalf("got %d %q", op, p)
	}
	rc.send(cf(opText, "hello"))
	op, p = rc.expectFrame(2 * time.Second)
	if op != opText || !strings.HasPrefix(string(p), "Echo: hello") {
		t.Fatalf("got %d %q", op, p)
	}
	rc.send(cf(opClose, "\x03\xe8"))
	code, _ := rc.expectClose(2 * time.Second)
	if code != 1000 {
		t.Fatalf("close %d", code)
	}
	rc.expectEOF(2 * time.Second)
	calls := h.hooks.waitCalls(t, 1, 2*time.Second)
	if calls[0].code != 1000 {
		t.Fatalf("hook code %d", calls[0].code)
	}
}

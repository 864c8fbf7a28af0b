package server

import (
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCredentials(t *testing.T) {
	for _, tc := range []struct {
		name        string
		query       string
		protocols   []string // Sec-WebSocket-Protocol header values
		token, want string   // token found, subprotocol selected
	}{
		{name: "query token", query: "?token=abc", token: "abc"},
		{name: "no token", query: "", token: ""},
		{name: "bearer subprotocol", protocols: []string{"notifications.v1, bearer.abc"}, token: "abc", want: "notifications.v1"},
		{name: "bearer first", protocols: []string{"bearer.abc, notifications.v1"}, token: "abc", want: "notifications.v1"},
		{name: "separate header values", protocols: []string{"notifications.v1", "bearer.abc"}, token: "abc", want: "notifications.v1"},
		{name: "bearer without notifications.v1 selects nothing", protocols: []string{"bearer.abc"}, token: "abc", want: ""},
		{name: "notifications.v1 only", protocols: []string{"notifications.v1"}, token: "", want: "notifications.v1"},
		{name: "unknown subprotocol not selected", protocols: []string{"chat, bearer.abc"}, token: "abc", want: ""},
		{name: "query wins over bearer", query: "?token=fromquery", protocols: []string{"notifications.v1, bearer.fromproto"}, token: "fromquery", want: "notifications.v1"},
		{name: "first bearer wins", protocols: []string{"bearer.one, bearer.two"}, token: "one"},
		{name: "empty bearer", protocols: []string{"notifications.v1, bearer."}, token: "", want: "notifications.v1"},
		{name: "token among other params", query: "?a=1&token=abc&b=2", token: "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws"+tc.query, nil)
			for _, p := range tc.protocols {
				r.Header.Add("Sec-WebSocket-Protocol", p)
			}
			token, sub := credentials(r)
			if token != tc.token || sub != tc.want {
				t.Fatalf("credentials = %q, %q; want %q, %q", token, sub, tc.token, tc.want)
			}
			if strings.HasPrefix(sub, "bearer.") {
				t.Fatalf("selected the bearer entry %q", sub)
			}
		})
	}
}

func TestIPRateAllowsABurstThenRefuses(t *testing.T) {
	l := newIPRate(3)
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !l.allow("10.0.0.1", now) {
			t.Fatalf("handshake %d of a burst of 3 refused", i+1)
		}
	}
	if l.allow("10.0.0.1", now) {
		t.Fatal("fourth handshake in the same instant allowed")
	}
	if !l.allow("10.0.0.2", now) {
		t.Fatal("another address was limited by the first")
	}
}

func TestIPRateRefillsOverTime(t *testing.T) {
	l := newIPRate(2)
	now := time.Unix(1000, 0)
	l.allow("a", now)
	l.allow("a", now)
	if l.allow("a", now) {
		t.Fatal("over the burst allowed")
	}
	if !l.allow("a", now.Add(500*time.Millisecond)) {
		t.Fatal("one token did not refill after half a second at 2/s")
	}
	if l.allow("a", now.Add(500*time.Millisecond)) {
		t.Fatal("a second token appeared from nowhere")
	}
	// A long pause refills only up to the burst.
	later := now.Add(time.Hour)
	if first, second, third := l.allow("a", later), l.allow("a", later), l.allow("a", later); !first || !second || third {
		t.Fatal("refill is not capped at the burst")
	}
}

func TestIPRateBelowOnePerSecondStillAllowsOne(t *testing.T) {
	l := newIPRate(0.5)
	now := time.Unix(1000, 0)
	if !l.allow("a", now) {
		t.Fatal("first handshake refused")
	}
	if l.allow("a", now.Add(time.Second)) {
		t.Fatal("second handshake after 1 s allowed at 0.5/s")
	}
	if !l.allow("a", now.Add(2*time.Second+time.Millisecond)) {
		t.Fatal("handshake after 2 s refused at 0.5/s")
	}
}

func TestIPRateSweepsIdleAddresses(t *testing.T) {
	l := newIPRate(1)
	now := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		l.allow(strings.Repeat("x", i+1), now)
	}
	l.allow("late", now.Add(time.Minute))
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d buckets after a sweep, want 1", n)
	}
}

func TestIPRateIsSafeForConcurrentUse(t *testing.T) {
	l := newIPRate(100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	now := time.Unix(1000, 0)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if l.allow("one", now) {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d handshakes allowed in one instant, want the burst of 100", allowed)
	}
}

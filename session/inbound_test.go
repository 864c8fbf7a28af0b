package session

import (
	"reflect"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/message"
)

func TestBucketAllowsTheBurstThenTheSteadyRate(t *testing.T) {
	r := FrameRate(10) // 10 a second, bursts of 20
	var b Bucket
	now := int64(time.Hour) // any origin
	for i := range 20 {
		if !b.Take(r, now, 1) {
			t.Fatalf("frame %d of the burst refused", i+1)
		}
	}
	if b.Take(r, now, 1) {
		t.Fatal("frame 21 of a burst of 20 allowed")
	}
	now += int64(100 * time.Millisecond) // one interval refills one frame
	if !b.Take(r, now, 1) || b.Take(r, now, 1) {
		t.Fatal("one interval did not refill exactly one frame")
	}
	now += int64(time.Hour) // an idle connection gets its burst back, no more
	if !b.Take(r, now, 20) || b.Take(r, now, 1) {
		t.Fatal("an idle bucket does not hold exactly the burst")
	}
}

func TestBucketRefusesAnOversizedBatchWithoutSpendingIt(t *testing.T) {
	r := FrameRate(10)
	var b Bucket
	if b.Take(r, 0, 21) {
		t.Fatal("21 frames at once allowed with a burst of 20")
	}
	if !b.Take(r, 0, 20) {
		t.Fatal("a refused batch was spent")
	}
}

func TestZeroRateIsNoLimit(t *testing.T) {
	var b Bucket
	for i := range 100000 {
		if !b.Take(FrameRate(0), 0, 1) {
			t.Fatalf("frame %d refused without a limit", i)
		}
	}
}

func TestBucketTakeAllocatesNothing(t *testing.T) {
	r := FrameRate(100)
	var b Bucket
	now := int64(0)
	if n := testing.AllocsPerRun(1000, func() { now += 1e7; b.Take(r, now, 1) }); n != 0 {
		t.Fatalf("%v allocations per Take", n)
	}
}

func TestRefreshesAreLimitedToAboutOneASecond(t *testing.T) {
	p, m := policy(t)
	var in Inbound
	auth := []byte(`{"type":"auth","token":"` + mint(t, m, "u1", time.Hour) + `"}`)
	now := int64(time.Minute)
	for i := range 2 {
		if a := p.OnText(&Identity{User: "u1"}, &in, now, auth); !a.Refresh {
			t.Fatalf("refresh %d of a burst of 2: %+v", i+1, a)
		}
	}
	a := p.OnText(&Identity{User: "u1"}, &in, now, auth)
	if a.Close != message.ClosePolicyViolation || errorCode(t, a.Reply) != message.CodeRateLimited {
		t.Fatalf("third refresh at once: %+v, want RATE_LIMITED + 1008", a)
	}
	if a := p.OnText(&Identity{User: "u1"}, &in, now+int64(time.Second), auth); !a.Refresh {
		t.Fatalf("refresh a second later: %+v", a)
	}
	if a := p.OnText(&Identity{User: "u1"}, &in, now+int64(time.Second), []byte("hi")); string(a.Reply) != "Echo: hi" {
		t.Fatalf("ordinary text is not a refresh: %+v", a)
	}
}

func TestRefreshCarriesTheNewTokensGroups(t *testing.T) {
	p, m := policy(t)
	tok, err := m.Mint("u1", []string{"b", "c"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := p.OnText(&Identity{User: "u1", Groups: []string{"a", "b"}}, &Inbound{}, 0, []byte(`{"type":"auth","token":"`+tok+`"}`))
	if !a.Refresh || !reflect.DeepEqual(a.Groups, []string{"b", "c"}) {
		t.Fatalf("%+v", a)
	}
	rg := NewRegroup([]string{"a", "b"}, a)
	if !reflect.DeepEqual(rg.Added, []string{"c"}) || !reflect.DeepEqual(rg.Removed, []string{"a"}) ||
		!reflect.DeepEqual(rg.Groups, []string{"b", "c"}) || string(rg.Reply) != string(a.Reply) || !rg.Changes() {
		t.Fatalf("%+v", rg)
	}
	if same := NewRegroup([]string{"c", "b"}, a); same.Changes() {
		t.Fatalf("the same groups in another order change something: %+v", same)
	}
}

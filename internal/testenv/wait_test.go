package testenv

import (
	"testing"
	"time"
)

func TestUntilReportsAConditionThatComesToHold(t *testing.T) {
	calls := 0
	if !Until(time.Minute, func() bool { calls++; return calls == 5 }) {
		t.Fatal("Until gave up on a condition that held at the fifth call")
	}
	if calls != 5 {
		t.Fatalf("cond called %d times, want 5 (no call after it held)", calls)
	}
}

func TestUntilGivesUpAtItsDeadline(t *testing.T) {
	start := time.Now()
	if Until(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never held")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("gave up after %v, before the 50ms deadline", d)
	}
}

package testenv

import (
	"testing"
	"time"
)

// Polling starts fast, so that a condition that holds almost at once costs almost nothing,
// and slows down to maxPoll, so that a long wait does not busy a machine shared with the
// code under test (a 2-core CI runner).
const (
	firstPoll = 50 * time.Microsecond
	maxPoll   = 20 * time.Millisecond
)

// Until calls cond until it returns true or within has passed, and reports whether it did.
// It is for a condition the test can observe (a metric, a count, a status) but not wait on
// directly; cond runs on the caller's goroutine, so it may call t.Fatal.
func Until(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	pause := firstPoll
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		pause = min(2*pause, maxPoll)
	}
	return true
}

// Eventually ends the test when cond does not hold within the given time, naming what was
// awaited.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(within, cond) {
		t.Fatalf("not within %v: %s", within, what)
	}
}

// Package heaptest measures what connections cost the Go heap, for tests that bound the
// memory a client can make the server hold. It measures live heap after a collection, so
// garbage does not count; the bounds tests use are generous, since other goroutines of the
// test process allocate too.
package heaptest

import (
	"runtime"
	"testing"
)

// Live is the live heap after full collections, in bytes. Two: a sync.Pool's objects
// survive the first one (its victim cache).
func Live() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// PerItem fails t when the live heap grew by more than limit bytes per item since before
// (a Live reading) for n items, and logs the figure either way.
func PerItem(t testing.TB, before int64, n int, limit int64, what string) {
	t.Helper()
	per := (Live() - before) / int64(n)
	t.Logf("%s: %d bytes of heap each (%d of them)", what, per, n)
	if per > limit {
		t.Fatalf("%s: %d bytes of heap each, want at most %d", what, per, limit)
	}
}

package gwsengine

import "testing"

// The limit bounds what waits behind the frame being written: an idle connection takes a
// frame of any size, what follows it is counted without it, and written frames settle in order.
func TestSendQueueExcludesTheFrameBeingWritten(t *testing.T) {
	const limit = 1000
	var q sendQueue
	if !q.admit(5000, limit) {
		t.Fatal("an idle connection refused a frame larger than the limit")
	}
	if !q.admit(600, limit) || !q.admit(400, limit) {
		t.Fatal("frames behind the large one refused while within the limit")
	}
	if q.admit(1, limit) {
		t.Fatal("a frame past the limit behind the one being written was admitted")
	}
	if q.fits(1, limit) {
		t.Fatal("fits reports room in a full queue")
	}
	q.settle() // the large frame is written; the 600 is being written now
	if !q.admit(600, limit) {
		t.Fatal("refused although 400 bytes wait behind the frame being written")
	}
	for range 3 {
		q.settle()
	}
	q.settle() // one too many: harmless
	if q.total != 0 || q.head != 0 || len(q.costs) != 0 {
		t.Fatalf("after settling everything: total %d head %d len %d", q.total, q.head, len(q.costs))
	}
}

// A burst's bookkeeping is released once the queue is empty again.
func TestSendQueueReleasesABurstsBookkeeping(t *testing.T) {
	var q sendQueue
	for range 10 * keepCosts {
		q.admit(1, 1<<30)
	}
	for range 10 * keepCosts {
		q.settle()
	}
	if cap(q.costs) > keepCosts {
		t.Fatalf("an empty queue keeps an array of %d", cap(q.costs))
	}
}

package backplane

import (
	"testing"
	"time"
)

func TestRefcountSubscribesOnFirstReferenceAndLingersAfterLast(t *testing.T) {
	rc := newRefcount(time.Second)
	t0 := time.Now()
	if !rc.acquire("a") || rc.acquire("a") {
		t.Fatal("only the first reference asks for a subscription")
	}
	var gone []string
	expire := func(at time.Time) { rc.expire(at, func(ch string) { gone = append(gone, ch) }) }

	rc.release("a", t0)
	rc.release("a", t0)
	rc.release("a", t0) // one too many: ignored
	if rc.active != 0 || !rc.held("a") {
		t.Fatalf("active %d held %v, want 0 and lingering", rc.active, rc.held("a"))
	}
	expire(t0.Add(500 * time.Millisecond))
	if len(gone) != 0 {
		t.Fatal("expired before the linger")
	}
	if rc.acquire("a") { // back within the linger: still subscribed
		t.Fatal("re-reference within the linger asked for a new subscription")
	}
	expire(t0.Add(2 * time.Second))
	if len(gone) != 0 || rc.active != 1 {
		t.Fatal("a re-referenced channel expired")
	}
	rc.release("a", t0.Add(3*time.Second))
	expire(t0.Add(4 * time.Second))
	if len(gone) != 1 || rc.held("a") {
		t.Fatalf("gone %v, want [a]", gone)
	}
}

func TestRefcountWithoutLingerReleasesAtOnce(t *testing.T) {
	rc := newRefcount(-1)
	rc.acquire("a")
	if !rc.release("a", time.Now()) || rc.held("a") {
		t.Fatal("without linger the last release must unsubscribe at once")
	}
}

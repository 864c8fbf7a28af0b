package redistest

import (
	"context"
	"testing"
)

func TestStartWithAppendOnlyKeepsDataAcrossAKill(t *testing.T) {
	s := StartWith(t, "--appendonly", "yes", "--appendfsync", "always")
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if got := c.Get(ctx, "k").Val(); got != "kept" {
		t.Fatalf("GET k after a kill and restart = %q, want kept", got)
	}
}

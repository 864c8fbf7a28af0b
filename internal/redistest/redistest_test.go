package redistest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartServesOnItsOwnPort(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") || strings.HasSuffix(s.Addr(), ":6379") {
		t.Fatalf("unexpected address %s / %s", s.Addr(), s.URL())
	}
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("GET k = %q", got)
	}
}

func TestStopThenRestartKeepsThePort(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	c := s.Client(t)
	ctx := context.Background()
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded while stopped")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("address changed: %s → %s", addr, s.Addr())
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after restart: %v", err)
	}
}

func TestStartClusterFormsAWorkingCluster(t *testing.T) {
	cl := StartCluster(t, 3)
	if n := len(strings.Split(cl.URL(), ",")); n != 3 {
		t.Fatalf("URL %q lists %d addresses", cl.URL(), n)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer c.Close()
	ctx := context.Background()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	if err := c.SPublish(ctx, "ch", "x").Err(); err != nil {
		t.Fatalf("SPUBLISH: %v", err)
	}
}

func TestFreezeStallsTheServerUntilThawed(t *testing.T) {
	s := Start(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ReadTimeout: 5 * time.Second})
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	thaw := s.Freeze()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := c.Ping(short).Err(); err == nil {
		t.Fatal("PING answered while frozen")
	}
	thaw()
	thaw()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after thaw: %v", err)
	}
}

package bench

import (
	"slices"
	"strings"
	"testing"
)

func TestServerEnvDropsInheritedServiceVariables(t *testing.T) {
	t.Setenv("WEBSOCKET_SERVICE_ENGINE", "gws")
	t.Setenv("WEBSOCKET_SERVICE_MAX_CONNECTIONS", "5")
	env := serverEnv(map[string]string{"ENGINE": "epoll", "PORT": "1234"})
	var ours []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "WEBSOCKET_SERVICE_") {
			ours = append(ours, kv)
		}
	}
	slices.Sort(ours)
	if want := []string{"WEBSOCKET_SERVICE_ENGINE=epoll", "WEBSOCKET_SERVICE_PORT=1234"}; !slices.Equal(ours, want) {
		t.Fatalf("service variables %v, want %v", ours, want)
	}
}

func TestSuiteRedisStartsOnAFreePortAndStops(t *testing.T) {
	if _, err := lookRedis(); err != nil {
		t.Skip(err)
	}
	rs, err := startRedis(t.Context(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if rs.port == 6379 || !strings.HasPrefix(rs.url(), "redis://127.0.0.1:") || !rs.alive() {
		t.Fatalf("redis on %s alive %v", rs.url(), rs.alive())
	}
	rs.stop()
	if rs.alive() {
		t.Fatal("redis-server still running after stop")
	}
}

func TestSuiteStepsFitTheMachine(t *testing.T) {
	c := MachineCapacity()
	for _, full := range []bool{false, true} {
		for _, st := range steps(full) {
			p := st.params
			p.URL, p.Run, p.PublishVia, p.RedisURL = "ws://127.0.0.1:1/ws", "r", "redis", "redis://127.0.0.1:1/0"
			if err := p.Normalize(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if err := c.Check(peakOpen(&p), p.Procs, len(p.Src)); err != nil {
				t.Fatalf("%s (full %v): %v", st.name, full, err)
			}
		}
	}
}

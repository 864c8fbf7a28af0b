package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// StormResume is what a v2 storm (StormOptions.Protocol v2) measures of the resumes: the
// killed node's clients reconnect with their cursors and each stream of theirs ends its
// replay with a sync.
type StormResume struct {
	// SyncAllSeconds is from the kill until the last reconnected client got its sync (the
	// clients' own clock); 0 when none did.
	SyncAllSeconds float64 `json:"sync_all_seconds"`
	// Synced is how many reconnected clients got a sync since their last reconnect.
	Synced int `json:"synced"`
	// Unrecovered counts recovered:false syncs by reason over every client of the run.
	Unrecovered map[string]int `json:"unrecovered"`
	// Recoveries is how many stream resumes the survivors counted (websocket_recovery_total)
	// from the kill until they stopped counting.
	Recoveries int64 `json:"recoveries"`
	// RedisCommands is what Redis executed (INFO commandstats, every node) over the same span,
	// less the publisher's steady share measured before the kill; per resuming client below,
	// and by command (commands run inside a function count too).
	RedisCommands          int64            `json:"redis_commands"`
	RedisCommandsPerClient float64          `json:"redis_commands_per_client"`
	RedisCommandsByName    map[string]int64 `json:"redis_commands_by_name"`
}

// redisCalls reads the calls of each command in INFO commandstats, summed over addrs (the
// commands a function runs count besides the FCALL itself).
func redisCalls(ctx context.Context, addrs []string) (map[string]int64, error) {
	total := map[string]int64{}
	for _, a := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: a})
		info, err := rdb.Info(ctx, "commandstats").Result()
		rdb.Close()
		if err != nil {
			return nil, fmt.Errorf("redis %s: INFO commandstats: %w", a, err)
		}
		if err := addCommandCalls(total, info); err != nil {
			return nil, fmt.Errorf("redis %s: %w", a, err)
		}
	}
	return total, nil
}

// addCommandCalls adds "calls=N" of each cmdstat_<name> line of INFO commandstats to calls.
func addCommandCalls(calls map[string]int64, info string) error {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := sc.Text()
		name, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, stats, _ := strings.Cut(name, ":")
		n, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return fmt.Errorf("commandstats line %q: %w", line, err)
		}
		calls[name] += v
	}
	return sc.Err()
}

// callSample is Redis's command counts at one time.
type callSample struct {
	at    time.Time
	calls map[string]int64
}

func sampleCalls(ctx context.Context, addrs []string) (callSample, error) {
	n, err := redisCalls(ctx, addrs)
	return callSample{at: time.Now(), calls: n}, err
}

// awaitRecoveries waits, after the survivors hold every connection again, until their
// websocket_recovery_total stops growing for a second (the resumes are done), then returns
// how many resumes they counted since before and Redis's command count then.
func awaitRecoveries(ctx context.Context, survivors nodeSet, before []nodeCounts, addrs []string, limit time.Duration) (int64, callSample, error) {
	deadline := time.Now().Add(limit)
	var last int64 = -1
	lastChange := time.Now()
	for {
		var n int64
		for k, s := range survivors {
			c, err := scrapeCounts(ctx, s.addr)
			if err != nil {
				return 0, callSample{}, err
			}
			n += c.recoveries - before[k].recoveries
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		if (n > 0 && time.Since(lastChange) >= time.Second) || time.Now().After(deadline) || ctx.Err() != nil {
			s, err := sampleCalls(ctx, addrs)
			return n, s, err
		}
		sleep(ctx, 50*time.Millisecond)
	}
}

// stormCommands is what Redis executed from atKill to done beyond the publisher's steady
// rate, taken from start to atKill, by command (those that rounded to at least one call).
func stormCommands(start, atKill, done callSample) map[string]int64 {
	out := map[string]int64{}
	steady := atKill.at.Sub(start.at).Seconds()
	storm := done.at.Sub(atKill.at).Seconds()
	for name, n := range done.calls {
		base := float64(atKill.calls[name]-start.calls[name]) / steady
		if extra := int64(float64(n-atKill.calls[name]) - base*storm); extra > 0 {
			out[name] = extra
		}
	}
	return out
}

// perClient formats commands per resuming client, the most first.
func perClient(cmds map[string]int64, clients int) string {
	names := slices.SortedFunc(maps.Keys(cmds), func(a, b string) int { return cmp.Compare(cmds[b], cmds[a]) })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.2f", n, ratio(float64(cmds[n]), float64(clients)))
	}
	return strings.Join(parts, ", ")
}

// peakKiB is the process's peak resident memory (VmHWM).
func peakKiB(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	return kibField(b, "VmHWM:")
}

// deploymentMemoryLimitMiB reads the container memory limit of k8s/deployment.yaml (the
// "memory:" under "limits:"), which a survivor's peak must stay inside.
func deploymentMemoryLimitMiB() (int64, error) {
	root, err := moduleRoot()
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(root, "k8s", "deployment.yaml"))
	if err != nil {
		return 0, fmt.Errorf("memory limit: %w", err)
	}
	return parseMemoryLimitMiB(b)
}

// deploymentEngine is the engine the pods of k8s/ run: WEBSOCKET_SERVICE_ENGINE from
// k8s/configmap.yaml, else the service's default on Linux (epoll). The memory limit is sized
// for it (deployment.yaml says to raise memory before switching engines), so a survivor of
// another engine is reported but not held to that limit.
func deploymentEngine() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "k8s", "configmap.yaml"))
	if err != nil {
		return "", fmt.Errorf("deployed engine: %w", err)
	}
	return parseEngine(b), nil
}

func parseEngine(configmap []byte) string {
	_, rest, ok := bytes.Cut(configmap, []byte("WEBSOCKET_SERVICE_ENGINE:"))
	if !ok {
		return "epoll"
	}
	v, _, _ := bytes.Cut(rest, []byte("\n"))
	return strings.Trim(strings.TrimSpace(string(v)), `"'`)
}

func parseMemoryLimitMiB(yaml []byte) (int64, error) {
	_, rest, ok := bytes.Cut(yaml, []byte("limits:"))
	if !ok {
		return 0, fmt.Errorf("k8s/deployment.yaml: no resources limits")
	}
	_, rest, ok = bytes.Cut(rest, []byte("memory:"))
	if !ok {
		return 0, fmt.Errorf("k8s/deployment.yaml: no memory limit")
	}
	v, _, _ := bytes.Cut(rest, []byte("\n"))
	s := strings.TrimSpace(string(v))
	for suffix, mib := range map[string]int64{"Mi": 1, "Gi": 1024} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			x, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("k8s/deployment.yaml: memory limit %q: %w", s, err)
			}
			return x * mib, nil
		}
	}
	return 0, fmt.Errorf("k8s/deployment.yaml: memory limit %q is not in Mi or Gi", s)
}

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	// less the publisher's steady share measured before the kill; per resuming client below.
	RedisCommands          int64   `json:"redis_commands"`
	RedisCommandsPerClient float64 `json:"redis_commands_per_client"`
}

// redisCalls sums the calls of every command in INFO commandstats over addrs (the commands a
// function runs count besides the FCALL itself).
func redisCalls(ctx context.Context, addrs []string) (int64, error) {
	var total int64
	for _, a := range addrs {
		rdb := redis.NewClient(&redis.Options{Addr: a})
		info, err := rdb.Info(ctx, "commandstats").Result()
		rdb.Close()
		if err != nil {
			return 0, fmt.Errorf("redis %s: INFO commandstats: %w", a, err)
		}
		n, err := sumCommandCalls(info)
		if err != nil {
			return 0, fmt.Errorf("redis %s: %w", a, err)
		}
		total += n
	}
	return total, nil
}

// sumCommandCalls adds up "calls=N" over the cmdstat_ lines of INFO commandstats.
func sumCommandCalls(info string) (int64, error) {
	var total int64
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		_, stats, _ := strings.Cut(line, ":")
		calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("commandstats line %q: %w", line, err)
		}
		total += n
	}
	return total, sc.Err()
}

// callSample is Redis's command count at one time.
type callSample struct {
	at    time.Time
	calls int64
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
// rate, taken from start to atKill.
func stormCommands(start, atKill, done callSample) int64 {
	base := float64(atKill.calls-start.calls) / atKill.at.Sub(start.at).Seconds()
	extra := float64(done.calls-atKill.calls) - base*done.at.Sub(atKill.at).Seconds()
	return max(0, int64(extra))
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

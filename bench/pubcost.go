package bench

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/history"
)

// PubCostOptions configure `wsbench pubcost`: what publishing with history costs Redis. The
// same steady stream of messages goes to Streams channels, once with plain PUBLISH (live
// only) and once with the service's function (FCALL ws_publish: appended to the stream's
// history, then published), on a fresh redis-server with no subscribers, so the difference
// is the history's.
type PubCostOptions struct {
	Streams     int     // channels the messages go round-robin over
	Messages    int     // per mode
	Rate        float64 // messages per second, steadily
	Payload     int     // payload bytes (padded)
	History     history.Limits
	RedisServer string
	JSONOut     string
}

// PubCostResult is both modes of one run.
type PubCostResult struct {
	Date         string        `json:"date"`
	Streams      int           `json:"streams"`
	Payload      int           `json:"payload_bytes"`
	HistorySize  int           `json:"history_size"`
	HistoryTTLMs int64         `json:"history_ttl_ms"`
	Modes        []PubCostMode `json:"modes"`
}

// PubCostMode is one publishing mode's cost.
type PubCostMode struct {
	Via       string  `json:"via"` // "redis" (PUBLISH) or "fcall" (FCALL ws_publish)
	Published int64   `json:"published"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	// RedisCPUPerMessageUs is Redis's user+system CPU (INFO cpu) over the run per message.
	RedisCPUPerMessageUs float64 `json:"redis_cpu_per_message_us"`
	// Stored is how many messages the history holds afterwards (XLEN over the streams).
	Stored int64 `json:"stored"`
	// KeyBytesPerStored is MEMORY USAGE of every stream's history and meta key per stored
	// message; UsedMemoryPerStored is INFO used_memory's growth per stored message.
	KeyBytesPerStored   float64 `json:"key_bytes_per_stored"`
	UsedMemoryPerStored float64 `json:"used_memory_per_stored"`
}

// RunPubCost starts a redis-server, installs the service's function library and measures
// both modes.
func RunPubCost(ctx context.Context, o PubCostOptions, progress io.Writer) (*PubCostResult, error) {
	if o.Streams < 1 || o.Messages < 1 || o.Rate <= 0 {
		return nil, fmt.Errorf("--streams, --messages and --rate must be above 0")
	}
	dir, err := os.MkdirTemp("", "wsbench-pubcost-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	rs, err := startRedis(ctx, o.RedisServer, dir)
	if err != nil {
		return nil, err
	}
	defer rs.stop()
	rdb := redis.NewClient(&redis.Options{Addr: rs.addr()})
	defer rdb.Close()
	lib, err := history.NewRedis(rdb, false, o.History)
	if err != nil {
		return nil, err
	}
	if _, err := lib.Load(ctx); err != nil {
		return nil, fmt.Errorf("install the service's function library: %w", err)
	}
	res := &PubCostResult{Date: time.Now().UTC().Format(time.RFC3339), Streams: o.Streams, Payload: o.Payload,
		HistorySize: o.History.Size, HistoryTTLMs: o.History.TTL.Milliseconds()}
	for i, via := range []string{"redis", "fcall"} {
		p := Params{Scenario: ScenarioFanout, Conns: o.Streams, Users: o.Streams, Messages: o.Messages, Payload: o.Payload,
			PublishVia: via, RedisURL: rs.url(), PublishRate: o.Rate, Publishers: 1, Pipeline: 256,
			Run: "pc" + strconv.Itoa(i)}
		if err := p.Normalize(); err != nil {
			return res, err
		}
		fmt.Fprintf(progress, "-- %s: %d messages to %d streams at %.0f/s\n", via, o.Messages, o.Streams, o.Rate)
		m, err := pubCostOnce(ctx, rdb, &p)
		if err != nil {
			return res, fmt.Errorf("%s: %w", via, err)
		}
		res.Modes = append(res.Modes, m)
	}
	return res, nil
}

// pubCostOnce publishes p's plan and reads what it cost Redis.
func pubCostOnce(ctx context.Context, rdb *redis.Client, p *Params) (PubCostMode, error) {
	m := PubCostMode{Via: p.PublishVia}
	cpu0, mem0, err := redisCPUAndMemory(ctx, rdb)
	if err != nil {
		return m, err
	}
	st, err := Publish(ctx, p)
	if err != nil {
		return m, err
	}
	cpu1, mem1, err := redisCPUAndMemory(ctx, rdb)
	if err != nil {
		return m, err
	}
	m.Published, m.Errors, m.Seconds = st.Published, st.Errors, st.Seconds
	m.RedisCPUPerMessageUs = ratio((cpu1-cpu0)*1e6, float64(st.Published))
	var keyBytes int64
	for _, t := range p.Targets() {
		h, meta := history.Keys(t.Channel)
		n, err := rdb.XLen(ctx, h).Result()
		if err != nil && err != redis.Nil {
			return m, fmt.Errorf("XLEN %s: %w", h, err)
		}
		m.Stored += n
		for _, k := range []string{h, meta} {
			b, err := rdb.MemoryUsage(ctx, k, 0).Result()
			if err != nil && err != redis.Nil {
				return m, fmt.Errorf("MEMORY USAGE %s: %w", k, err)
			}
			keyBytes += b
		}
	}
	m.KeyBytesPerStored = ratio(float64(keyBytes), float64(m.Stored))
	m.UsedMemoryPerStored = ratio(float64(mem1-mem0), float64(m.Stored))
	return m, nil
}

// redisCPUAndMemory reads used_cpu_user+used_cpu_sys (seconds) and used_memory (bytes).
func redisCPUAndMemory(ctx context.Context, rdb *redis.Client) (cpu float64, mem int64, err error) {
	info, err := rdb.Info(ctx, "cpu", "memory").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("INFO cpu memory: %w", err)
	}
	found := 0
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch name {
		case "used_cpu_user", "used_cpu_sys":
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("INFO %s: %w", name, err)
			}
			cpu += v
			found++
		case "used_memory":
			if mem, err = strconv.ParseInt(value, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("INFO %s: %w", name, err)
			}
			found++
		}
	}
	if found != 3 {
		return 0, 0, fmt.Errorf("INFO cpu memory: no used_cpu_user, used_cpu_sys and used_memory")
	}
	return cpu, mem, nil
}

// WritePubCostTable prints both modes and the history's cost over plain publishing.
func WritePubCostTable(w io.Writer, res *PubCostResult) {
	fmt.Fprintf(w, "publish cost %s: %d streams, %d-byte payloads, HISTORY_SIZE %d, HISTORY_TTL %s, no subscribers\n\n",
		res.Date, res.Streams, res.Payload, res.HistorySize, time.Duration(res.HistoryTTLMs)*time.Millisecond)
	lines := [][]string{{"publish", "messages", "errors", "msgs/s", "redis CPU µs/msg", "stored", "key bytes/stored", "used_memory Δ/stored"}}
	for _, m := range res.Modes {
		verb := "PUBLISH"
		if m.Via == "fcall" {
			verb = "FCALL ws_publish"
		}
		lines = append(lines, []string{verb, fmt.Sprint(m.Published), fmt.Sprint(m.Errors), fmt.Sprintf("%.0f", ratio(float64(m.Published), m.Seconds)),
			fmt.Sprintf("%.2f", m.RedisCPUPerMessageUs), fmt.Sprint(m.Stored), fmt.Sprintf("%.0f", m.KeyBytesPerStored),
			fmt.Sprintf("%.0f", m.UsedMemoryPerStored)})
	}
	writeColumns(w, lines)
	if len(res.Modes) == 2 {
		fmt.Fprintf(w, "\nFCALL ws_publish costs Redis %.2f× the CPU of PUBLISH per message\n",
			safeRatio(res.Modes[1].RedisCPUPerMessageUs, res.Modes[0].RedisCPUPerMessageUs))
	}
}

// runPubCostCommand is `wsbench pubcost`.
func runPubCostCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench pubcost", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaults, err := config.FromMap(map[string]string{})
	if err != nil {
		fmt.Fprintf(stderr, "wsbench pubcost: default history limits: %v\n", err)
		return 2
	}
	o := PubCostOptions{History: defaults.History()}
	fs.IntVar(&o.Streams, "streams", 1000, "streams (channels) the messages go round-robin over")
	fs.IntVar(&o.Messages, "messages", 100000, "messages per mode")
	fs.Float64Var(&o.Rate, "rate", 5000, "messages per second, steadily")
	fs.IntVar(&o.Payload, "payload", 200, "payload bytes (padded)")
	fs.IntVar(&o.History.Size, "history-size", o.History.Size, "HISTORY_SIZE the function library is installed with")
	fs.DurationVar(&o.History.TTL, "history-ttl", o.History.TTL, "HISTORY_TTL the function library is installed with")
	fs.StringVar(&o.RedisServer, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&o.JSONOut, "json-out", "", "also write the result as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res, err := RunPubCost(ctx, o, stderr)
	if res != nil && len(res.Modes) > 0 {
		WritePubCostTable(stdout, res)
		writeJSON(o.JSONOut, res, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsbench pubcost: %v\n", err)
		return 2
	}
	for _, m := range res.Modes {
		if m.Errors > 0 || m.Published != int64(o.Messages) {
			return 1
		}
	}
	return 0
}

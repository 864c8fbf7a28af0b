package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// PublishStats is what the publisher did.
type PublishStats struct {
	Published     int64   `json:"published"`
	Errors        int64   `json:"errors"`
	NoSubscribers int64   `json:"no_subscribers"` // Redis PUBLISH answered 0: no node listened
	Seconds       float64 `json:"seconds"`
	start, end    time.Time
}

// message is one planned publish: message m of the run goes to target m mod T with
// sequence m div T, so every target's messages are interleaved evenly and numbered from 0.
func message(m, targets int) (target, seq int) { return m % targets, m / targets }

// totalMessages is how many messages the plan publishes.
func totalMessages(ts []Target) int {
	n := 0
	for _, t := range ts {
		n += t.Count
	}
	return n
}

// pacer spaces messages at rate per second (no spacing when rate is 0).
type pacer struct {
	start time.Time
	rate  float64
}

func (p pacer) wait(ctx context.Context, m int) error {
	if p.rate <= 0 {
		return ctx.Err()
	}
	due := p.start.Add(time.Duration(float64(m) / p.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return ctx.Err()
}

// Publish sends the plan's messages through Redis or the publish API.
func Publish(ctx context.Context, p *Params) (PublishStats, error) {
	targets := p.Targets()
	if p.PublishVia == "api" {
		return publishAPI(ctx, p, targets)
	}
	return publishRedis(ctx, p, targets)
}

// publishRedis sends PUBLISH commands over p.Publishers connections: streamed over plain
// RESP (rawPublisher), or for TLS or on request in go-redis pipelines of p.Pipeline, each
// payload stamped just before its pipeline is sent. A target's messages always go through
// the same connection, so their publish order is the plan's order.
func publishRedis(ctx context.Context, p *Params, targets []Target) (PublishStats, error) {
	if p.RedisCluster {
		return publishCluster(ctx, p, targets)
	}
	opt, err := redis.ParseURL(p.RedisURL)
	if err != nil {
		return PublishStats{}, fmt.Errorf("redis URL: %w", err)
	}
	if opt.TLSConfig == nil && !p.LibraryPublisher {
		return rawPublisher{opt: opt}.publish(ctx, p, targets)
	}
	if p.PublishVia == "fcall" {
		return PublishStats{}, fmt.Errorf("--publish fcall streams plain RESP: it needs a redis:// URL and no --library-publisher")
	}
	conns := max(1, min(p.Publishers, len(targets)))
	opt.PoolSize = conns
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return PublishStats{}, fmt.Errorf("redis %s: %w", opt.Addr, err)
	}
	total := totalMessages(targets)
	st := PublishStats{start: time.Now()}
	pace := pacer{start: st.start, rate: p.PublishRate}
	batch := p.Pipeline
	if p.PublishRate > 0 && p.PublishRate < float64(batch*conns) {
		batch = max(1, int(p.PublishRate/10)/conns) // keep pacing smooth at low rates
	}
	err = inParallel(&st, conns, func(k int) (PublishStats, error) {
		var mine PublishStats
		err := publishShare(ctx, rdb, p, targets, total, k, conns, batch, pace, &mine)
		return mine, err
	})
	return st, err
}

// inParallel runs one publishing connection per k in [0, conns), sums their counts into st
// and closes st's span.
func inParallel(st *PublishStats, conns int, publish func(k int) (PublishStats, error)) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for k := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine, err := publish(k)
			mu.Lock()
			defer mu.Unlock()
			errs[k] = err
			st.Published += mine.Published
			st.Errors += mine.Errors
			st.NoSubscribers += mine.NoSubscribers
		}()
	}
	wg.Wait()
	st.end = time.Now()
	st.Seconds = st.end.Sub(st.start).Seconds()
	return errors.Join(errs...)
}

// publishShare publishes the messages whose target is k modulo conns, in plan order.
func publishShare(ctx context.Context, rdb *redis.Client, p *Params, targets []Target, total, k, conns, batch int,
	pace pacer, st *PublishStats) error {
	buf := make([]byte, 0, 256+p.Payload)
	cmds := make([]*redis.IntCmd, 0, batch)
	m := 0
	for m < total {
		pipe := rdb.Pipeline()
		cmds = cmds[:0]
		for ; len(cmds) < batch && m < total; m++ {
			j, seq := message(m, len(targets))
			if j%conns != k {
				continue
			}
			if err := pace.wait(ctx, m); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			buf = AppendPayload(buf[:0], Stamp{Run: p.Run, Target: j, Seq: seq, SentNs: time.Now().UnixNano()}, p.Payload)
			cmds = append(cmds, pipe.Publish(ctx, targets[j].Channel, string(buf)))
		}
		if len(cmds) == 0 {
			break
		}
		_, _ = pipe.Exec(ctx)
		for _, c := range cmds {
			switch n, err := c.Result(); {
			case err != nil:
				st.Errors++
			case n == 0:
				st.NoSubscribers++
				st.Published++
			default:
				st.Published++
			}
		}
	}
	return ctx.Err()
}

// apiInFlight is how many publish requests run at once. Requests to one target may then
// overtake each other, which the receivers count as reordered, not lost.
const apiInFlight = 8

// publishAPI posts each message to POST /api/publish.
func publishAPI(ctx context.Context, p *Params, targets []Target) (PublishStats, error) {
	total := totalMessages(targets)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: apiInFlight, MaxConnsPerHost: apiInFlight},
	}
	defer client.CloseIdleConnections()
	st := PublishStats{start: time.Now()}
	pace := pacer{start: st.start, rate: p.PublishRate}
	var published, failed atomic.Int64
	var firstErr sync.Once
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range apiInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				m := int(next.Add(1) - 1)
				if m >= total || pace.wait(ctx, m) != nil {
					return
				}
				j, seq := message(m, len(targets))
				buf = AppendPayload(buf[:0], Stamp{Run: p.Run, Target: j, Seq: seq, SentNs: time.Now().UnixNano()}, p.Payload)
				if err := postPublish(ctx, client, p, targets[j].Channel, buf); err != nil {
					failed.Add(1)
					firstErr.Do(func() { logf("publish API: %v", err) })
					continue
				}
				published.Add(1)
			}
		}()
	}
	wg.Wait()
	st.end = time.Now()
	st.Seconds = st.end.Sub(st.start).Seconds()
	st.Published, st.Errors = published.Load(), failed.Load()
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("publish: %w", err)
	}
	return st, nil
}

// apiBody is the publish API's request: one of user_id, group or broadcast, and the message.
type apiBody struct {
	UserID    string          `json:"user_id,omitempty"`
	Group     string          `json:"group,omitempty"`
	Broadcast bool            `json:"broadcast,omitempty"`
	Message   json.RawMessage `json:"message"`
}

func postPublish(ctx context.Context, client *http.Client, p *Params, channel string, payload []byte) error {
	body := apiBody{Message: payload}
	switch {
	case channel == p.Channels.Broadcast:
		body.Broadcast = true
	case strings.HasPrefix(channel, p.Channels.GroupPrefix):
		body.Group = strings.TrimPrefix(channel, p.Channels.GroupPrefix)
	default:
		body.UserID = strings.TrimPrefix(channel, p.Channels.UserPrefix)
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode publish request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.APIURL, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("publish request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", p.APIURL, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", p.APIURL, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

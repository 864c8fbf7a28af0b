package history

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed library.lua
var librarySource string

var libraryTemplate = template.Must(template.New("library").Parse(librarySource))

// Names of the functions of the library (docs/PROTOCOL.md "Publishing").
const (
	LibraryName     = "websocket_service"
	PublishFunction = "ws_publish"
	historyFunction = "ws_history"
)

// readTimeout bounds one coalesced read of a stream's history.
const readTimeout = 5 * time.Second

// Redis keeps history in Redis through the service's function library: Append runs
// ws_publish (append and publish in one step), Read runs ws_history. The library carries the
// limits and the Pub/Sub command (PUBLISH, or SPUBLISH on a cluster) written into its source,
// so that callers of FCALL in other languages need not know them; the last node to load it
// sets them for everyone, so every node of a deployment must run with the same limits.
type Redis struct {
	client  redis.UniversalClient
	cluster bool
	limits  Limits
	source  string
	reads   *coalescer
}

// NewRedis prepares a store on client (a *redis.ClusterClient when cluster). It loads nothing
// until Load or the first call that finds the library missing.
func NewRedis(client redis.UniversalClient, cluster bool, limits Limits) (*Redis, error) {
	if err := limits.Validate(); err != nil {
		return nil, err
	}
	pub := "PUBLISH"
	if cluster {
		pub = "SPUBLISH"
	}
	var b bytes.Buffer
	err := libraryTemplate.Execute(&b, map[string]any{
		"Size":      limits.Size,
		"TTLMillis": max(limits.TTL.Milliseconds(), 1),
		"Publish":   pub,
	})
	if err != nil {
		return nil, fmt.Errorf("history library: %w", err)
	}
	r := &Redis{client: client, cluster: cluster, limits: limits, source: b.String()}
	r.reads = newCoalescer(limits.Size, readTimeout, r.fetch)
	return r, nil
}

// Load installs the library (FUNCTION LOAD REPLACE) on the server, or on every primary of a
// cluster: Redis Cluster does not propagate functions between primaries. It returns the
// addresses where it replaced a different version of the library: another node of the
// deployment runs with other limits, or another version of the service.
func (r *Redis) Load(ctx context.Context) (replaced []string, err error) {
	var mu sync.Mutex // ForEachMaster loads every primary at once
	load := func(ctx context.Context, c *redis.Client) error {
		addr := c.Options().Addr
		libs, err := c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: LibraryName, WithCode: true}).Result()
		if err != nil {
			return fmt.Errorf("list functions on %s: %w", addr, err)
		}
		if len(libs) > 0 && libs[0].Code != r.source {
			mu.Lock()
			replaced = append(replaced, addr)
			mu.Unlock()
		}
		if err := c.FunctionLoadReplace(ctx, r.source).Err(); err != nil {
			return fmt.Errorf("load function library on %s: %w", addr, err)
		}
		return nil
	}
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, load)
	case *redis.Client:
		err = load(ctx, c)
	default:
		return nil, fmt.Errorf("load function library: unsupported client %T", r.client)
	}
	return replaced, err
}

// Append appends payload to channel's history and publishes it on channel, in one atomic
// step, and returns its position. It is never retried after a timeout or a lost connection
// (the function may have run); only when Redis answers that the function is missing (a
// restart without persistence, a new primary) is the library loaded and the call made once
// more, since it did not run.
func (r *Redis) Append(ctx context.Context, channel string, payload []byte, traceparent string) (Position, error) {
	h, m := Keys(channel)
	args := []any{channel, payload}
	if traceparent != "" {
		args = append(args, traceparent)
	}
	v, err := r.call(ctx, PublishFunction, []string{h, m}, args...)
	if err != nil {
		return Position{}, fmt.Errorf("publish to %s with history: %w", channel, err)
	}
	vals, ok := v.([]any)
	if !ok || len(vals) != 3 {
		return Position{}, fmt.Errorf("publish to %s with history: unexpected reply %v", channel, v)
	}
	p, err := parsePosition(vals[0], vals[1], vals[2])
	if err != nil {
		return Position{}, fmt.Errorf("publish to %s with history: %w", channel, err)
	}
	return p, nil
}

// Read answers a reader of channel at after. Concurrent reads of one channel share store
// reads (see coalescer).
func (r *Redis) Read(ctx context.Context, channel string, after Position, limit int) (Result, error) {
	s, err := r.reads.read(ctx, channel, after, limit)
	if err != nil {
		return Result{Reason: ReasonUnavailable, Missed: -1}, fmt.Errorf("read history of %s: %w", channel, err)
	}
	return s.judge(after, limit, r.limits.Size), nil
}

// fetch runs ws_history for one coalesced read.
func (r *Redis) fetch(ctx context.Context, channel string, n need) (snapshot, error) {
	h, m := Keys(channel)
	v, err := r.call(ctx, historyFunction, []string{h, m}, strconv.FormatUint(n.from, 10), n.count)
	if err != nil {
		return snapshot{}, err
	}
	return parseSnapshot(v)
}

// call runs a function of the library once; when Redis answers that it is missing, it loads
// the library and runs it once more.
func (r *Redis) call(ctx context.Context, fn string, keys []string, args ...any) (any, error) {
	v, err := r.fcall(ctx, fn, keys, args)
	if err == nil || !missingFunction(err) {
		return v, err
	}
	if _, lerr := r.Load(ctx); lerr != nil {
		return nil, fmt.Errorf("%w (and reloading the library failed: %w)", err, lerr)
	}
	return r.fcall(ctx, fn, keys, args)
}

// onceCmd is a command go-redis must not retry: its own retries, on a timeout or a lost
// connection, would run a publish twice.
type onceCmd struct{ *redis.Cmd }

func (onceCmd) NoRetry() bool { return true }

func (r *Redis) fcall(ctx context.Context, fn string, keys []string, args []any) (any, error) {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, "fcall", fn, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	cmd.SetFirstKeyPos(3)
	if err := r.client.Process(ctx, onceCmd{cmd}); err != nil {
		return nil, err
	}
	return cmd.Val(), nil
}

// missingFunction reports Redis's answer to FCALL of a function it does not have.
func missingFunction(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(err.Error(), "Function not found")
}

func parsePosition(e, s, t any) (Position, error) {
	es, _ := e.(string)
	ss, _ := s.(string)
	ts, _ := t.(string)
	epoch, err1 := strconv.ParseUint(es, 10, 64)
	seq, err2 := strconv.ParseUint(ss, 10, 64)
	tag, err3 := strconv.ParseUint(ts, 10, 32)
	if err := errors.Join(err1, err2, err3); err != nil || epoch == 0 {
		return Position{}, fmt.Errorf("bad position %v/%v/%v from redis", e, s, t)
	}
	return Position{Epoch: epoch, Seq: seq, Tag: uint32(tag)}, nil
}

// parseSnapshot decodes ws_history's reply: {epoch, seq, tag, held, entries}.
func parseSnapshot(v any) (snapshot, error) {
	vals, ok := v.([]any)
	if !ok || len(vals) != 5 {
		return snapshot{}, fmt.Errorf("unexpected ws_history reply %T", v)
	}
	top, err := parsePosition(vals[0], vals[1], vals[2])
	if err != nil {
		return snapshot{}, err
	}
	held, ok := vals[3].(int64)
	if !ok || held < 0 {
		return snapshot{}, fmt.Errorf("unexpected history length %v", vals[3])
	}
	raw, _ := vals[4].([]any)
	s := snapshot{top: top, held: uint64(held), entries: make([]Entry, 0, len(raw))}
	for _, x := range raw {
		e, err := parseEntry(top.Epoch, x)
		if err != nil {
			return snapshot{}, err
		}
		s.entries = append(s.entries, e)
	}
	return s, nil
}

// parseEntry decodes one XRANGE item: ["<seq>-<tag>", ["d", payload, "p", prev, ("t", tp)]].
func parseEntry(epoch uint64, x any) (Entry, error) {
	item, ok := x.([]any)
	if !ok || len(item) != 2 {
		return Entry{}, fmt.Errorf("unexpected history entry %T", x)
	}
	id, _ := item[0].(string)
	seq, tag, ok := strings.Cut(id, "-")
	if !ok {
		return Entry{}, fmt.Errorf("bad history entry id %q", id)
	}
	p, err := parsePosition(strconv.FormatUint(epoch, 10), seq, tag)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Position: p}
	fields, _ := item[1].([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "d":
			e.Payload = []byte(v)
		case "p":
			prev, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return Entry{}, fmt.Errorf("bad previous tag %q in entry %s", v, id)
			}
			e.Prev = uint32(prev)
		case "t":
			e.Traceparent = v
		}
	}
	return e, nil
}

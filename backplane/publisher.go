package backplane

import (
	"context"
	"fmt"

	"github.com/huleedu/websocket-service/history"
	"github.com/redis/go-redis/v9"
)

// Publisher publishes to Redis channels: sequenced (appended to the stream's history and
// published in one step by the history's Redis function), or plain with PUBLISH, or SPUBLISH
// on a cluster (sharded Pub/Sub, which only the node serving the channel's slot relays). The
// Redis backplane publishes through one; the CLI's publish command and the load harness use
// their own.
type Publisher struct {
	client  redis.UniversalClient
	cluster bool
	history *history.Redis
}

// NewPublisher connects lazily to url (a redis:// or rediss:// URL; with cluster, a comma
// list of them) with go-redis's default pool size. limits are the deployment's history
// limits (HISTORY_SIZE, HISTORY_TTL): they matter only when this publisher has to load the
// function library because Redis lost it.
func NewPublisher(url string, cluster bool, limits history.Limits) (*Publisher, error) {
	e, err := parseEndpoint(url, cluster)
	if err != nil {
		return nil, err
	}
	return newPublisher(e, 0, limits)
}

func newPublisher(e *endpoint, poolSize int, limits history.Limits) (*Publisher, error) {
	c := e.client(poolSize)
	h, err := history.NewRedis(c, e.cluster, limits)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return &Publisher{client: c, cluster: e.cluster, history: h}, nil
}

// PublishSequenced appends payload to channel's history and publishes it, in one atomic step,
// and returns its position. It is never retried after a timeout (it may have run).
func (p *Publisher) PublishSequenced(ctx context.Context, channel string, payload []byte, traceparent string) (history.Position, error) {
	return p.history.Append(ctx, channel, payload, traceparent)
}

// History reads the streams' history in this publisher's Redis.
func (p *Publisher) History() *history.Redis { return p.history }

// Publish sends payload to channel, live only: it gets no position and no history.
func (p *Publisher) Publish(ctx context.Context, channel string, payload []byte) error {
	var err error
	if p.cluster {
		err = p.client.SPublish(ctx, channel, payload).Err()
	} else {
		err = p.client.Publish(ctx, channel, payload).Err()
	}
	if err != nil {
		return fmt.Errorf("publish to %s: %w", channel, err)
	}
	return nil
}

// publishChunk bounds how many commands one pipeline round trip carries.
const publishChunk = 1024

// PublishMany sends msgs in order, pipelined (a round trip per 1,024 messages). On a cluster
// the pipeline is split by node, and order is kept per channel.
func (p *Publisher) PublishMany(ctx context.Context, msgs []Message) error {
	for len(msgs) > 0 {
		n := min(len(msgs), publishChunk)
		cmds, err := p.client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, m := range msgs[:n] {
				if p.cluster {
					pipe.SPublish(ctx, m.Channel, m.Payload)
				} else {
					pipe.Publish(ctx, m.Channel, m.Payload)
				}
			}
			return nil
		})
		if err != nil {
			for _, c := range cmds {
				if c.Err() != nil {
					return fmt.Errorf("publish %d messages: %w", len(msgs), c.Err())
				}
			}
			return fmt.Errorf("publish %d messages: %w", len(msgs), err)
		}
		msgs = msgs[n:]
	}
	return nil
}

// Ping checks that Redis answers.
func (p *Publisher) Ping(ctx context.Context) error {
	if err := p.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Close closes the publisher's connections.
func (p *Publisher) Close() error {
	if err := p.client.Close(); err != nil {
		return fmt.Errorf("close publisher: %w", err)
	}
	return nil
}

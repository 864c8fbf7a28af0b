package resume

import (
	"sync"

	"github.com/huleedu/websocket-service/history"
)

// replayCacheSize bounds the replay frames a node keeps for sharing; at the bound the cache
// starts over (a storm's connections resume the same few streams at once, so recent frames
// are what is shared).
const replayCacheSize = 4096

// replayCache shares the frames of replayed entries between the connections that replay them.
// Connections resuming one stream together share one history read, and so the same Entry
// values (history.Result.Entries are shared, never copied): the entry's address identifies
// the frame. Only the engine's own wrap of the frame is kept, and a node runs one engine.
type replayCache struct {
	mu     sync.Mutex
	frames map[*history.Entry][]byte
}

// frame returns the wrapped message frame of e, entry of stream, building it once.
func (c *replayCache) frame(stream string, e *history.Entry, wrap func([]byte) []byte) []byte {
	c.mu.Lock()
	f, ok := c.frames[e]
	c.mu.Unlock()
	if ok {
		return f
	}
	f = wrap(MessageFrame(stream, e.Position, e.Payload))
	c.mu.Lock()
	if c.frames == nil || len(c.frames) >= replayCacheSize {
		c.frames = make(map[*history.Entry][]byte, 64)
	}
	c.frames[e] = f
	c.mu.Unlock()
	return f
}

package sequence

import (
	"log/slog"
	"sync"
)

// maxLoggedChannels bounds the channels whose invalid UTF-8 the node remembers having logged:
// a backend publishing binary garbage to ever new channels must not grow the set (or the log)
// without end. Past the cap nothing more is logged; the drops are still counted.
const maxLoggedChannels = 1024

// utf8Log logs a channel's first non-UTF-8 payload once, not once per message: one broken
// publisher would otherwise flood the log at its publish rate. The router calls it under its
// own lock, and it keeps one of its own so that it stands alone.
type utf8Log struct {
	mu     sync.Mutex
	logged map[string]struct{}
	full   bool // the cap was reached and said so
}

// note logs the first invalid payload seen on channel.
func (u *utf8Log) note(log *slog.Logger, channel string, size int) {
	if log == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.logged[channel]; ok || u.full {
		return
	}
	if len(u.logged) == maxLoggedChannels {
		u.full = true
		log.Warn("backplane payloads that are not UTF-8 on more channels; no longer logged per channel", "channels", maxLoggedChannels)
		return
	}
	if u.logged == nil {
		u.logged = map[string]struct{}{}
	}
	u.logged[channel] = struct{}{}
	log.Warn("dropping backplane payloads that are not UTF-8 (a text frame must be); logged once per channel",
		"channel", channel, "bytes", size)
}

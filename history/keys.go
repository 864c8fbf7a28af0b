package history

import (
	"strconv"
	"strings"

	"github.com/huleedu/websocket-service/internal/hashslot"
)

// KeyPrefix starts the name of every key the history keeps in Redis.
const KeyPrefix = "wsh:"

// Keys names a stream's two Redis keys: its history (a Stream of the recent messages) and its
// meta (a small hash: epoch, top position and top tag). Both hash to the slot of the channel
// itself, so that on a Redis Cluster the function that appends and publishes touches one
// slot, as Redis requires of a function and of the SPUBLISH inside it. The rule, which any
// caller of ws_publish applies (docs/PROTOCOL.md "Publishing"):
//
//   - a channel that has a hash tag (a non-empty "{…}") keeps it: "wsh:h:" + channel;
//   - else, one without "}" becomes its own tag: "wsh:h:{" + channel + "}" — the default
//     channels "ws:<user>", "ws-group:<group>" and "ws-broadcast" all take this form;
//   - else (no tag but a "}", so it cannot be wrapped), the tag is the smallest decimal
//     number that hashes to the channel's slot: "wsh:h:{" + n + "}" + channel.
//
// The meta key is the same with "wsh:m:".
func Keys(channel string) (history, meta string) {
	t := tagged(channel)
	return KeyPrefix + "h:" + t, KeyPrefix + "m:" + t
}

func tagged(channel string) string {
	if _, ok := hashslot.Tag(channel); ok {
		return channel
	}
	if !strings.Contains(channel, "}") {
		return "{" + channel + "}"
	}
	return "{" + slotTag(hashslot.Of(channel)) + "}" + channel
}

// slotTag returns the smallest decimal number whose hash slot is slot. Every slot has one
// below 200,000 (the test checks all of them); the search costs about 16,000 checksums, paid
// only for channel names with a stray "}".
func slotTag(slot uint16) string {
	for n := 0; ; n++ {
		s := strconv.Itoa(n)
		if hashslot.Of(s) == slot {
			return s
		}
	}
}

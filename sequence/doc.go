// Package sequence turns what the backplane receives into what the engine delivers: it maps
// each channel to its audience and puts every stream's sequenced messages in order, so that the
// engine sees, per stream, a contiguous run of positions or an explicit gap notice exactly where
// the hole is (docs/DESIGN.md "Gap repair").
//
// A message that follows the last one delivered passes through at the cost of a few
// comparisons. One already delivered (a repair overlapping live traffic) is dropped. A jump in
// positions, or a subscription the backplane resumed after losing it, holds that stream's
// later messages while its history is read on a repair goroutine (never on the backplane's
// receive goroutine); the missing messages are delivered, then the held ones. When the history
// cannot fill the hole (trimmed, expired, another epoch, unavailable, too many) the stream
// gets one registry.Delivery with a Gap in the hole's place and continues.
//
// It knows nothing of connections or frames: v1 and v2 connections alike receive what it
// delivers, and the engines decide how a gap notice is shown (v2: a sync frame, v1: nothing).
package sequence

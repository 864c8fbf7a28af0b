package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/huleedu/websocket-service/history"
)

// rawPublisher streams PUBLISH commands over plain RESP connections: a writer fills the
// socket continuously while a reader counts the replies, so the publisher never waits a
// round trip per batch the way a client-library pipeline does. On a small machine that
// shares its cores with the service, go-redis pipelines (about 10 µs of client CPU per
// message here) bounded per-user fan-out at the publisher's speed rather than the
// service's. It serves redis:// URLs; rediss:// goes through go-redis.
type rawPublisher struct {
	opt *redis.Options
}

// rawReplyWait bounds how long the reader waits for the replies of what was written.
const rawReplyWait = 30 * time.Second

func (rp rawPublisher) publish(ctx context.Context, p *Params, targets []Target) (PublishStats, error) {
	conns := max(1, min(p.Publishers, len(targets)))
	routes := make([]route, conns)
	for k := range routes {
		routes[k] = route{addr: rp.opt.Addr, owns: func(j int) bool { return j%conns == k }}
	}
	return rp.publishRoutes(ctx, p, targets, routes, publishVerb(p, "PUBLISH"))
}

// route is one publishing connection: the Redis node it talks to and the targets it carries
// (a target always goes through one route, so its messages keep their publish order).
type route struct {
	addr string
	owns func(target int) bool
}

// publishRoutes opens one connection per route and streams verb (PUBLISH or SPUBLISH) for
// every planned message over the route that owns its target.
func (rp rawPublisher) publishRoutes(ctx context.Context, p *Params, targets []Target, routes []route, verb string) (PublishStats, error) {
	total := totalMessages(targets)
	socks := make([]net.Conn, 0, len(routes))
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for _, r := range routes {
		c, err := rp.dial(ctx, r.addr)
		if err != nil {
			return PublishStats{}, err
		}
		socks = append(socks, c)
	}
	st := PublishStats{start: time.Now()}
	pace := pacer{start: st.start, rate: p.PublishRate}
	err := inParallel(&st, len(routes), func(k int) (PublishStats, error) {
		return rp.stream(ctx, socks[k], p, targets, total, routes[k], verb, pace)
	})
	return st, err
}

// dial connects and authenticates one RESP connection.
func (rp rawPublisher) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	var setup [][]string
	if rp.opt.Password != "" {
		if rp.opt.Username != "" {
			setup = append(setup, []string{"AUTH", rp.opt.Username, rp.opt.Password})
		} else {
			setup = append(setup, []string{"AUTH", rp.opt.Password})
		}
	}
	if rp.opt.DB != 0 {
		setup = append(setup, []string{"SELECT", strconv.Itoa(rp.opt.DB)})
	}
	setup = append(setup, []string{"PING"})
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for _, cmd := range setup {
		if _, err := c.Write(appendCommand(nil, cmd...)); err != nil {
			c.Close()
			return nil, fmt.Errorf("redis %s: %s: %w", addr, cmd[0], err)
		}
		line, err := r.ReadString('\n')
		if err != nil || len(line) == 0 || line[0] == '-' {
			c.Close()
			return nil, fmt.Errorf("redis %s: %s: %q %v", addr, cmd[0], line, err)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// stream writes the messages of the route's targets, in plan order, while a reader
// goroutine counts the replies.
func (rp rawPublisher) stream(ctx context.Context, c net.Conn, p *Params, targets []Target, total int, r route, verb string, pace pacer) (PublishStats, error) {
	var st PublishStats
	var sent atomic.Int64
	written := make(chan int64, 1) // how many commands the writer sent, once it is done
	replies := make(chan error, 1)
	go func() { replies <- readReplies(c, &sent, written, &st) }()

	w := bufio.NewWriterSize(c, 16<<10)
	payload := make([]byte, 0, 256+p.Payload)
	cmd := make([]byte, 0, 512+p.Payload)
	keys := make([]historyKeys, len(targets))
	var n int64
	var werr error
	for m := 0; m < total && werr == nil; m++ {
		j, seq := message(m, len(targets))
		if !r.owns(j) {
			continue
		}
		if p.PublishRate > 0 {
			// Paced: what is buffered goes out before waiting for the next slot.
			if werr = w.Flush(); werr != nil {
				break
			}
			if werr = pace.wait(ctx, m); werr != nil {
				break
			}
		}
		payload = AppendPayload(payload[:0], Stamp{Run: p.Run, Target: j, Seq: seq, SentNs: time.Now().UnixNano()}, p.Payload)
		if verb == verbFCall {
			cmd = appendFCall(cmd[:0], &keys[j], targets[j].Channel, payload)
		} else {
			cmd = appendPublish(cmd[:0], verb, targets[j].Channel, payload)
		}
		if _, werr = w.Write(cmd); werr == nil {
			n++
			sent.Store(n)
		}
	}
	if werr == nil {
		werr = w.Flush()
	}
	if werr != nil {
		// Unflushed commands will never be answered: end the reader's wait now.
		_ = c.Close()
	}
	if werr == nil {
		werr = ctx.Err()
	}
	_ = c.SetReadDeadline(time.Now().Add(rawReplyWait))
	written <- n
	rerr := <-replies
	if werr != nil {
		return st, fmt.Errorf("publish to redis %s: %w", r.addr, werr)
	}
	if rerr != nil {
		return st, fmt.Errorf("publish to redis %s: replies: %w", r.addr, rerr)
	}
	return st, nil
}

// readReplies counts integer replies (subscriber counts) and error replies until it has
// read as many as the writer reports sending. sent is how many commands the writer has
// handed to its buffer so far (each reaches the socket by the next flush, at the latest
// the final one).
func readReplies(c net.Conn, sent *atomic.Int64, written <-chan int64, st *PublishStats) error {
	r := bufio.NewReaderSize(c, 16<<10)
	var got int64
	want := int64(-1)
	for want < 0 || got < want {
		if want < 0 && got >= sent.Load() {
			// Caught up with the writer: wait for more commands or for its total.
			select {
			case want = <-written:
			case <-time.After(time.Millisecond):
			}
			continue
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			if want < 0 {
				want = <-written
			}
			st.Errors += want - got
			return fmt.Errorf("after %d replies: %w", got, err)
		}
		got++
		switch {
		case len(line) > 0 && line[0] == '*':
			// FCALL ws_publish answers the message's position: an array of bulk strings.
			if err := skipBulks(r, line); err != nil {
				return fmt.Errorf("after %d replies: %w", got, err)
			}
			st.Published++
		case len(line) > 0 && line[0] == ':':
			st.Published++
			if string(line) == ":0\r\n" {
				st.NoSubscribers++
			}
		default:
			st.Errors++
		}
	}
	return nil
}

// appendPublish appends verb (PUBLISH or SPUBLISH) channel payload in RESP.
func appendPublish(dst []byte, verb, channel string, payload []byte) []byte {
	dst = append(dst, "*3\r\n$"...)
	dst = strconv.AppendInt(dst, int64(len(verb)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, verb...)
	dst = append(dst, "\r\n$"...)
	dst = strconv.AppendInt(dst, int64(len(channel)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, channel...)
	dst = append(dst, "\r\n$"...)
	dst = strconv.AppendInt(dst, int64(len(payload)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, payload...)
	return append(dst, "\r\n"...)
}

// appendBulk appends a as a RESP bulk string.
func appendBulk(dst []byte, a string) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(a)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, a...)
	return append(dst, "\r\n"...)
}

// appendCommand appends a RESP array of bulk strings.
func appendCommand(dst []byte, args ...string) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, "\r\n"...)
	for _, a := range args {
		dst = appendBulk(dst, a)
	}
	return dst
}

// verbFCall is the command that publishes through the service's Redis function.
const verbFCall = "FCALL"

// publishVerb is verb (PUBLISH or SPUBLISH) for plain publishing, FCALL for p's sequenced one.
func publishVerb(p *Params, verb string) string {
	if p.PublishVia == "fcall" {
		return verbFCall
	}
	return verb
}

// historyKeys are a channel's history and meta keys, derived once per target.
type historyKeys struct{ h, m string }

// appendFCall appends FCALL ws_publish 2 <history key> <meta key> channel payload in RESP
// (docs/PROTOCOL.md "Publishing"); k caches the channel's keys.
func appendFCall(dst []byte, k *historyKeys, channel string, payload []byte) []byte {
	if k.h == "" {
		k.h, k.m = history.Keys(channel)
	}
	dst = append(dst, "*7\r\n"...)
	for _, a := range []string{verbFCall, history.PublishFunction, "2", k.h, k.m, channel} {
		dst = appendBulk(dst, a)
	}
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(payload)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, payload...)
	return append(dst, "\r\n"...)
}

// skipBulks reads the elements of the array whose header line is head, each a bulk string
// (or nil) on two lines.
func skipBulks(r *bufio.Reader, head []byte) error {
	n, err := strconv.Atoi(strings.TrimSpace(string(head[1:])))
	if err != nil {
		return fmt.Errorf("array header %q: %w", head, err)
	}
	for range n {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) > 0 && line[0] == '$' && !strings.HasPrefix(string(line), "$-1") {
			if _, err := r.ReadSlice('\n'); err != nil {
				return err
			}
		}
	}
	return nil
}

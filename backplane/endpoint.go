package backplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// endpoint is where Redis is and how to log in, parsed from REDIS_URL: one redis:// or
// rediss:// URL, or with a cluster a comma list of them (credentials and TLS from the first).
// The database number matters only to the command client: Pub/Sub channels are global to a
// server.
type endpoint struct {
	addrs   []string
	cluster bool
	opts    *redis.Options
}

func parseEndpoint(raw string, cluster bool) (*endpoint, error) {
	e := &endpoint{cluster: cluster}
	parts := strings.Split(raw, ",")
	if !cluster && len(parts) > 1 {
		return nil, errors.New("redis URL lists several addresses but cluster mode is off")
	}
	for i, p := range parts {
		o, err := redis.ParseURL(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("redis URL %d: %w", i+1, redactURL(err))
		}
		if i == 0 {
			e.opts = o
		}
		e.addrs = append(e.addrs, o.Addr)
	}
	return e, nil
}

// redactURL drops the URL (which may carry a password) from a url.Error.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// dialTimeout bounds connecting and logging in to one node.
const dialTimeout = 5 * time.Second

// dial opens a raw connection for Pub/Sub to addr and authenticates it.
func (e *endpoint) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if e.opts.TLSConfig != nil {
		cfg := e.opts.TLSConfig.Clone()
		if e.cluster || cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	if e.opts.Password != "" {
		if err := e.auth(ctx, conn); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("auth on %s: %w", addr, err)
		}
	}
	return conn, nil
}

func (e *endpoint) auth(ctx context.Context, conn net.Conn) error {
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{})
	args := []string{e.opts.Password}
	if e.opts.Username != "" {
		args = []string{e.opts.Username, e.opts.Password}
	}
	if _, err := conn.Write(appendCommand(nil, "AUTH", args)); err != nil {
		return err
	}
	// Nothing but the AUTH reply can arrive yet, so a throwaway reader loses no bytes.
	rr := respReader{rd: bufio.NewReaderSize(conn, 512)}
	t, _, line, err := rr.header()
	if err != nil {
		return err
	}
	if t == '-' {
		// The error line names no secret ("WRONGPASS invalid username-password pair").
		return errorReply(line)
	}
	return nil
}

// client makes a go-redis client for commands (PUBLISH, PING). poolSize caps its connections
// per node (0 keeps go-redis's default).
func (e *endpoint) client(poolSize int) redis.UniversalClient {
	off := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if e.cluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                    e.addrs,
			Username:                 e.opts.Username,
			Password:                 e.opts.Password,
			TLSConfig:                e.opts.TLSConfig,
			PoolSize:                 poolSize,
			MaxActiveConns:           poolSize,
			MaxIdleConns:             poolSize,
			MaintNotificationsConfig: off,
		})
	}
	o := *e.opts
	o.PoolSize, o.MaxActiveConns, o.MaxIdleConns, o.MinIdleConns = poolSize, poolSize, poolSize, 0
	o.MaintNotificationsConfig = off
	return redis.NewClient(&o)
}

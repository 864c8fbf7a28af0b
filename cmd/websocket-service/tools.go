package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/backplane"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/registry"
	"github.com/huleedu/websocket-service/server"
)

// token mints a JWT the configured server accepts.
func token(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "user id (the sub claim); required")
	groups := fs.String("groups", "", "comma-separated group ids for the groups claim")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	keyFile := fs.String("private-key", "", "PEM private key for RS*/ES*/EdDSA (HS* use JWT_SECRET_KEY)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *sub == "" {
		fmt.Fprintln(stderr, "token: --sub is required")
		return 2
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	var key any = []byte(cfg.JWTSecretKey)
	if !strings.HasPrefix(cfg.JWTAlgorithm, "HS") {
		if *keyFile == "" {
			fmt.Fprintf(stderr, "token: %s needs --private-key (the server only holds the public key)\n", cfg.JWTAlgorithm)
			return 2
		}
		if key, err = readPrivateKey(*keyFile); err != nil {
			fmt.Fprintln(stderr, "token:", err)
			return 1
		}
	}
	m, err := auth.NewMinter(cfg.JWTAlgorithm, key, cfg.JWTIssuer, cfg.JWTAudience, cfg.JWTGroupsClaim)
	if err != nil {
		fmt.Fprintln(stderr, "token:", err)
		return 1
	}
	var gs []string
	for _, g := range strings.Split(*groups, ",") {
		if g = strings.TrimSpace(g); g != "" {
			gs = append(gs, g)
		}
	}
	t, err := m.Mint(*sub, gs, *ttl)
	if err != nil {
		fmt.Fprintln(stderr, "token:", err)
		return 1
	}
	fmt.Fprintln(stdout, t)
	return 0
}

func readPrivateKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	var k any
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key of type %T cannot sign", path, k)
	}
	return s, nil
}

// publish sends one payload to a user, a group or everyone: through Redis when REDIS_URL is
// set (every node receives it), else through the running server's POST /api/publish.
func publish(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "user id")
	group := fs.String("group", "", "group id")
	all := fs.Bool("broadcast", false, "every connection")
	url := fs.String("url", "", "base URL of a server for the HTTP API (default http://127.0.0.1:$PORT); forces the HTTP API")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var targets []registry.Target
	if *user != "" {
		targets = append(targets, registry.Target{Kind: registry.User, ID: *user})
	}
	if *group != "" {
		targets = append(targets, registry.Target{Kind: registry.Group, ID: *group})
	}
	if *all {
		targets = append(targets, registry.Target{Kind: registry.Broadcast})
	}
	if len(targets) != 1 || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: publish (--user u1 | --group g | --broadcast) '<payload>'")
		return 2
	}
	payload := fs.Arg(0)
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reply []byte
	if cfg.RedisURL != "" && *url == "" {
		reply, err = publishRedis(ctx, cfg, targets[0], payload)
	} else {
		base := *url
		if base == "" {
			base = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))
		}
		reply, err = publishHTTP(ctx, base, cfg.PublishAPIKey, targets[0], payload)
	}
	if err != nil {
		fmt.Fprintln(stderr, "publish:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", reply)
	return 0
}

// publishRedis publishes with a position, as the server's API does, and returns the API's
// reply body.
func publishRedis(ctx context.Context, cfg config.Config, t registry.Target, payload string) ([]byte, error) {
	p, err := backplane.NewPublisher(cfg.RedisURL, cfg.RedisCluster, cfg.History())
	if err != nil {
		return nil, err
	}
	defer p.Close()
	topics := registry.Topics{UserPrefix: cfg.UserChannelPrefix, GroupPrefix: cfg.GroupChannelPrefix, Broadcast: cfg.BroadcastChannel}
	ch := topics.Channel(t)
	pos, err := p.PublishSequenced(ctx, ch, []byte(payload), "")
	if err != nil {
		return nil, err
	}
	return json.Marshal(server.PublishResponse{Channel: ch, Stream: t.Stream(), Cursor: pos.Cursor()})
}

// publishHTTP posts to the server's publish API and returns its reply body.
func publishHTTP(ctx context.Context, base, key string, t registry.Target, payload string) ([]byte, error) {
	if key == "" {
		return nil, errors.New("the HTTP API needs WEBSOCKET_SERVICE_PUBLISH_API_KEY (the same key the server runs with; only development has a default), or set WEBSOCKET_SERVICE_REDIS_URL to publish through Redis")
	}
	msg := json.RawMessage(payload)
	if !json.Valid(msg) {
		b, _ := json.Marshal(payload) // plain text travels as a JSON string
		msg = b
	}
	body := map[string]any{"message": msg}
	switch t.Kind {
	case registry.User:
		body["user_id"] = t.ID
	case registry.Group:
		body["group"] = t.ID
	default:
		body["broadcast"] = true
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+server.PathPublish, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", server.PathPublish, err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusAccepted {
		return nil, fmt.Errorf("POST %s: %s: %s", server.PathPublish, resp.Status, bytes.TrimSpace(text))
	}
	return bytes.TrimSpace(text), nil
}

// healthcheck is for container HEALTHCHECKs in images without curl.
func healthcheck(stderr io.Writer) int {
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	host := cfg.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Port)) + server.PathHealthz)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "healthcheck:", resp.Status)
		return 1
	}
	return 0
}

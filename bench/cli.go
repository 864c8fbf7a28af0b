package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// Main is wsbench's command line: `wsbench SCENARIO [flags]`, `wsbench suite --quick|--full`
// or the internal worker mode. It returns the process exit status: 0 clean, 1 a run with
// problems (loss, duplicates, failed connections), 2 a usage or setup error.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case WorkerArg:
		if err := Worker(ctx, stdin, stdout); err != nil {
			fmt.Fprintf(stderr, "wsbench worker: %v\n", err)
			return 2
		}
		return 0
	case "suite":
		return runSuiteCommand(ctx, args[1:], stdout, stderr)
	case "fleet":
		return runFleetCommand(ctx, args[1:], stdout, stderr)
	case "storm":
		return runStormCommand(ctx, args[1:], stdout, stderr)
	case "rollout":
		return runRolloutCommand(ctx, args[1:], stdout, stderr)
	case "pubcost":
		return runPubCostCommand(ctx, args[1:], stdout, stderr)
	}
	p, asJSON, err := parseScenario(args[0], args[1:], stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "wsbench: %v\n", err)
		return 2
	}
	rep, err := Run(ctx, p)
	if err != nil {
		fmt.Fprintf(stderr, "wsbench %s: %v\n", p.Scenario, err)
		return 2
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "wsbench: write report: %v\n", err)
			return 2
		}
	} else {
		rep.Write(stdout)
	}
	if len(rep.Problems) > 0 {
		return 1
	}
	return 0
}

const usage = `wsbench: load harness for websocket-service (loopback)

usage:
  wsbench idle      --url ws://127.0.0.1:8004/ws --secret S --conns N [--hold 5s] [--pid SERVER_PID]
  wsbench fanout    --conns N --users U --messages M (--redis URL | --api-key K) [--drop-consumers K]
                    (any scenario: --protocol v2 for notifications.v2 clients, --publish fcall
                    to publish with FCALL ws_publish)
  wsbench classroom --groups C --size S [--repeat R] (--redis URL | --api-key K)
  wsbench broadcast --conns N [--repeat R] (--redis URL | --api-key K)
  wsbench churn     --rate R --duration D [--churn-hold H] [--pid SERVER_PID]
  wsbench echo      --conns N --duration D
  wsbench suite     --quick | --full      build and start the service (both engines) and a
                                          private redis-server, run the standard scenarios,
                                          print a side-by-side table; --protocol both runs
                                          the group fan-out with v1 and v2 clients side by side
  wsbench fleet     [--nodes 1,2,4] [--backends redis,cluster] [--conns-per-node 2000]
                                          N service processes on one Redis and on a 3-master
                                          Redis Cluster; classroom, burst and broadcast on both
                                          engines; one table of cost against N
  wsbench storm     [--nodes 4] [--conns-per-node 2500] [--engines gws,epoll]
                                          kill one node of a fleet under a steady publisher;
                                          its clients reconnect to the others (backoff, full
                                          jitter): time until all are back, handshakes/s per
                                          survivor, messages lost; --protocol v2: clients
                                          resume with their cursors: time until all synced,
                                          Redis commands per resume, peak memory vs limit
  wsbench pubcost   [--streams 1000] [--messages 100000] [--rate 5000]
                                          Redis CPU per message and bytes per stored message
                                          of FCALL ws_publish (history) against PUBLISH
  wsbench rollout   [--clients 1000] [--engines epoll,gws] [--restart-redis]
                                          reference clients (client/, in Node) on node A of
                                          two; A drained (SIGTERM), they resume on B: every
                                          stream exactly once in order, recovered:false count,
                                          time until all resumed
Common flags: --src 127.0.0.2,127.0.0.3 (source addresses), --procs K (worker processes),
--concurrency (dials in flight per process), --json (machine-readable report).
Run 'wsbench SCENARIO -h' for every flag.
`

// parseScenario reads a scenario's flags into Params.
func parseScenario(name string, args []string, stderr io.Writer) (Params, bool, error) {
	fs := flag.NewFlagSet("wsbench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	p := Params{Scenario: name, Channels: DefaultNames()}
	var src string
	var asJSON bool
	fs.StringVar(&p.URL, "url", "ws://127.0.0.1:8004/ws", "WebSocket endpoint")
	fs.StringVar(&p.Label, "label", "", "label shown in the report (e.g. the engine)")
	fs.StringVar(&p.Run, "run", "", "run id naming users, groups and payloads (default: random)")
	fs.StringVar(&p.Tokens.Secret, "secret", os.Getenv("WEBSOCKET_SERVICE_JWT_SECRET_KEY"), "HMAC secret to mint tokens (default $WEBSOCKET_SERVICE_JWT_SECRET_KEY)")
	fs.StringVar(&p.Tokens.KeyFile, "key-file", "", "file with a PEM private key (RS/ES/EdDSA) or an HMAC secret")
	fs.StringVar(&p.Tokens.File, "token-file", "", "file with ready tokens, one per line (idle, churn, echo only)")
	fs.StringVar(&p.Tokens.Algorithm, "alg", "", "JWT algorithm (default HS256, or what the key file implies)")
	fs.StringVar(&p.Tokens.Issuer, "iss", "", "iss claim")
	fs.StringVar(&p.Tokens.Audience, "aud", "", "aud claim")
	fs.StringVar(&p.Tokens.GroupsClaim, "groups-claim", "groups", "claim listing group ids")
	fs.DurationVar(&p.Tokens.TTL, "ttl", time.Hour, "token lifetime")
	fs.IntVar(&p.Conns, "conns", 1000, "connections N (churn: size of the identity pool)")
	fs.IntVar(&p.Users, "users", 0, "fanout: users U the connections are spread over (default N)")
	fs.IntVar(&p.Groups, "groups", 10, "classroom: groups C")
	fs.IntVar(&p.Size, "size", 30, "classroom: members per group S")
	fs.IntVar(&p.Messages, "messages", 10000, "fanout: messages M, round-robin over the users")
	fs.IntVar(&p.Repeat, "repeat", 1, "classroom/broadcast: publishes per group / broadcasts")
	fs.IntVar(&p.Payload, "payload", 0, "pad payloads to this many bytes")
	fs.StringVar(&p.PublishVia, "publish", "", "redis (PUBLISH), fcall (FCALL ws_publish, with history) or api (default: redis when --redis is set, else api)")
	fs.StringVar(&p.Protocol, "protocol", ProtocolV1, "clients' protocol: v1, or v2 (notifications.v2: resume frame, stream and cursor per message)")
	fs.StringVar(&p.RedisURL, "redis", "", "Redis URL the service listens on, e.g. redis://127.0.0.1:16379/0")
	fs.StringVar(&p.APIKey, "api-key", os.Getenv("WEBSOCKET_SERVICE_PUBLISH_API_KEY"), "PUBLISH_API_KEY for POST /api/publish")
	fs.StringVar(&p.APIURL, "api-url", "", "publish API URL (default: derived from --url)")
	fs.Float64Var(&p.PublishRate, "publish-rate", 0, "messages per second (0: as fast as possible)")
	fs.IntVar(&p.Pipeline, "pipeline", 256, "messages per go-redis pipeline (with --go-redis)")
	fs.BoolVar(&p.LibraryPublisher, "go-redis", false, "publish with go-redis pipelines instead of streaming RESP")
	fs.IntVar(&p.Publishers, "publishers", 4, "Redis connections publishing in parallel (a target always uses the same one)")
	fs.IntVar(&p.Drop, "drop-consumers", 0, "close this many consumers after half their messages (a deliberately lossy run)")
	fs.StringVar(&p.Channels.UserPrefix, "user-prefix", p.Channels.UserPrefix, "WEBSOCKET_CHANNEL_PREFIX")
	fs.StringVar(&p.Channels.GroupPrefix, "group-prefix", p.Channels.GroupPrefix, "GROUP_CHANNEL_PREFIX")
	fs.StringVar(&p.Channels.Broadcast, "broadcast-channel", p.Channels.Broadcast, "BROADCAST_CHANNEL")
	fs.DurationVar(&p.Hold, "hold", 3*time.Second, "idle: hold the connections this long before reading memory")
	fs.DurationVar(&p.Duration, "duration", 10*time.Second, "churn, echo: how long")
	fs.Float64Var(&p.Rate, "rate", 200, "churn: connections per second")
	fs.DurationVar(&p.ChurnHold, "churn-hold", 100*time.Millisecond, "churn: how long each connection stays")
	fs.DurationVar(&p.Wait, "wait", 30*time.Second, "longest wait for deliveries after publishing")
	fs.DurationVar(&p.Quiet, "quiet", 3*time.Second, "stop waiting after this long without a delivery")
	fs.IntVar(&p.Concurrency, "concurrency", 64, "dials in flight per process")
	fs.StringVar(&src, "src", "", "comma-separated source addresses (127.0.0.2,127.0.0.3,…)")
	fs.IntVar(&p.ReadBuffer, "read-buffer", 1024, "client read buffer bytes per connection")
	fs.IntVar(&p.Procs, "procs", 1, "worker processes to spread the connections over")
	fs.IntVar(&p.PID, "pid", 0, "server pid: read its memory (Pss, Rss), CPU time and fds from /proc")
	fs.IntVar(&p.RedisPID, "redis-pid", 0, "redis-server pid: report its CPU time during delivery")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return Params{}, false, err
	}
	if fs.NArg() > 0 {
		return Params{}, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if src != "" {
		p.Src = strings.Split(src, ",")
	}
	if p.PublishVia == "" {
		p.PublishVia = "api"
		if p.RedisURL != "" {
			p.PublishVia = "redis"
		}
	}
	if p.APIURL == "" {
		u, err := APIURL(p.URL)
		if err != nil {
			return Params{}, false, err
		}
		p.APIURL = u
	}
	if err := p.Normalize(); err != nil {
		return Params{}, false, err
	}
	return p, asJSON, nil
}

// APIURL derives the publish endpoint from the WebSocket URL: same host, http(s).
func APIURL(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", fmt.Errorf("--url: %w", err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("--url %q: want ws:// or wss://", wsURL)
	}
	u.Path, u.RawQuery = "/api/publish", ""
	return u.String(), nil
}

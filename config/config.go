// Package config is the service's one source of configuration: every WEBSOCKET_SERVICE_*
// variable of the README's configuration table, its default, and every cross-field rule,
// checked in one place so that a bad deployment fails before it listens, naming each bad
// variable. Nothing else in the service reads the environment.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/joho/godotenv"

	"github.com/huleedu/websocket-service/history"
)

// Prefix is prepended to every variable name.
const Prefix = "WEBSOCKET_SERVICE_"

// DefaultJWTSecret is the development placeholder secret (README); production refuses it.
const DefaultJWTSecret = "your-secret-key-here"

// DevPublishAPIKey is the publish API key of ENVIRONMENT=development when PUBLISH_API_KEY is
// unset, for the server and the publish command alike, so the README's tour works from any
// terminal. Staging and production refuse it: it is in the README.
const DevPublishAPIKey = "dev-publish-key"

// minProductionSecret is the shortest HMAC secret production accepts (RFC 7518 §3.2 asks for
// a key at least as long as the hash output; 32 bytes covers HS256).
const minProductionSecret = 32

// maxInboundRate bounds INBOUND_RATE_PER_CONNECTION: above a million frames a second per
// connection the limit would no longer limit anything a socket can carry (use 0 for none).
const maxInboundRate = 1_000_000

// Engines that can serve connections.
const (
	EngineEpoll = "epoll"
	EngineGWS   = "gws"
)

// Config is the whole configuration. Field tags name the variable (without Prefix) and its
// default; durations given in seconds use Seconds.
type Config struct {
	ServiceName string `env:"SERVICE_NAME" envDefault:"websocket_service"`
	Environment string `env:"ENVIRONMENT" envDefault:"development"`
	Host        string `env:"HOST" envDefault:"0.0.0.0"`
	Port        int    `env:"PORT" envDefault:"8004"`
	LogLevel    string `env:"LOG_LEVEL" envDefault:"INFO"`

	RedisURL     string `env:"REDIS_URL"`
	RedisCluster bool   `env:"REDIS_CLUSTER" envDefault:"false"`

	UserChannelPrefix  string `env:"WEBSOCKET_CHANNEL_PREFIX" envDefault:"ws:"`
	GroupChannelPrefix string `env:"GROUP_CHANNEL_PREFIX" envDefault:"ws-group:"`
	BroadcastChannel   string `env:"BROADCAST_CHANNEL" envDefault:"ws-broadcast"`

	JWTSecretKey   string `env:"JWT_SECRET_KEY" envDefault:"your-secret-key-here"`
	JWTAlgorithm   string `env:"JWT_ALGORITHM" envDefault:"HS256"`
	JWTPublicKey   string `env:"JWT_PUBLIC_KEY"`
	JWTIssuer      string `env:"JWT_ISSUER"`
	JWTAudience    string `env:"JWT_AUDIENCE"`
	JWTGroupsClaim string `env:"JWT_GROUPS_CLAIM" envDefault:"groups"`

	AllowedOrigins Origins `env:"ALLOWED_ORIGINS" envDefault:"http://localhost:3000"`

	HeartbeatInterval Seconds `env:"WEBSOCKET_HEARTBEAT_INTERVAL" envDefault:"30"`
	ConnectionTimeout Seconds `env:"WEBSOCKET_CONNECTION_TIMEOUT" envDefault:"60"`

	// Engine defaults to epoll on Linux and gws elsewhere (see Load).
	Engine string `env:"ENGINE"`
	// Shards defaults to GOMAXPROCS when 0.
	Shards int `env:"SHARDS" envDefault:"0"`

	MaxConnections        int     `env:"MAX_CONNECTIONS" envDefault:"0"`
	MaxConnectionsPerUser int     `env:"MAX_CONNECTIONS_PER_USER" envDefault:"16"`
	MaxMessageSize        int     `env:"MAX_MESSAGE_SIZE" envDefault:"65536"`
	SendQueueLimit        int     `env:"SEND_QUEUE_LIMIT" envDefault:"1048576"`
	HandshakeRatePerIP    float64 `env:"HANDSHAKE_RATE_PER_IP" envDefault:"0"`
	ShutdownDrainTimeout  Seconds `env:"SHUTDOWN_DRAIN_TIMEOUT" envDefault:"30"`

	// TrustedProxies are the peers (ingress, load balancer) whose X-Forwarded-For names the
	// client; from any other peer the header is ignored, since anyone can set it.
	TrustedProxies Prefixes `env:"TRUSTED_PROXIES"`

	// PublishAPIKey enables POST /api/publish. Unset in development: DevPublishAPIKey (see
	// FromMap); set empty there to turn the API off.
	PublishAPIKey string `env:"PUBLISH_API_KEY"`

	// InboundRatePerConnection is the inbound frames a connection may send per second (bursts
	// of twice that), control frames included; 0 is no limit.
	InboundRatePerConnection int `env:"INBOUND_RATE_PER_CONNECTION" envDefault:"100"`

	// History kept per stream for resume (docs/PROTOCOL.md).
	HistorySize         int     `env:"HISTORY_SIZE" envDefault:"256"`
	HistoryTTL          Seconds `env:"HISTORY_TTL" envDefault:"600"`
	RecoveryMaxMessages int     `env:"RECOVERY_MAX_MESSAGES" envDefault:"1000"`

	// JWTPublicKeyPEM is JWTPublicKey resolved: the PEM itself, read from the file when the
	// variable was "@/path". Filled by Load.
	JWTPublicKeyPEM []byte `env:"-"`
}

// Addr is the listen address.
func (c Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// History is the history kept per stream, as the history stores take it.
func (c Config) History() history.Limits {
	return history.Limits{Size: c.HistorySize, TTL: c.HistoryTTL.D()}
}

// Production reports whether the stricter production rules apply.
func (c Config) Production() bool { return c.Environment == "production" }

// Seconds is a duration given in (possibly fractional) seconds, as the README's variables are.
type Seconds time.Duration

// UnmarshalText parses "30" or "0.5" as seconds.
func (s *Seconds) UnmarshalText(b []byte) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
	if err != nil {
		return fmt.Errorf("want a number of seconds, got %q", b)
	}
	if f < 0 {
		return fmt.Errorf("want a non-negative number of seconds, got %q", b)
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// D returns the value as a time.Duration.
func (s Seconds) D() time.Duration { return time.Duration(s) }

// Origins is the browser origin allow-list: a comma list or a JSON list of strings.
type Origins []string

// listItems splits a list variable given as `a,b` or as a JSON list `["a","b"]`; entries are
// trimmed, empty ones dropped.
func listItems(b []byte) ([]string, error) {
	s := strings.TrimSpace(string(b))
	var list []string
	if strings.HasPrefix(s, "[") {
		if err := json.Unmarshal([]byte(s), &list); err != nil {
			return nil, fmt.Errorf("not a JSON list of strings: %v", err)
		}
	} else {
		list = strings.Split(s, ",")
	}
	out := list[:0]
	for _, e := range list {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out, nil
}

// UnmarshalText accepts `a,b` and `["a","b"]`.
func (o *Origins) UnmarshalText(b []byte) error {
	list, err := listItems(b)
	if err != nil {
		return err
	}
	out := make(Origins, 0, len(list))
	for _, e := range list {
		e = strings.TrimRight(e, "/")
		if e == "" {
			continue
		}
		if e != "*" {
			u, err := url.Parse(e)
			if err != nil || u.Scheme == "" || u.Host == "" {
				return fmt.Errorf("origin %q is not scheme://host[:port]", e)
			}
			e = strings.ToLower(e)
		}
		out = append(out, e)
	}
	*o = out
	return nil
}

// Any reports whether every origin is allowed.
func (o Origins) Any() bool {
	for _, e := range o {
		if e == "*" {
			return true
		}
	}
	return false
}

// Allows reports whether a browser Origin header value is allowed. An empty origin (a
// non-browser client sends none) is the caller's decision, not this list's.
func (o Origins) Allows(origin string) bool {
	origin = strings.ToLower(strings.TrimRight(origin, "/"))
	for _, e := range o {
		if e == "*" || e == origin {
			return true
		}
	}
	return false
}

// Prefixes is a list of address ranges in CIDR notation (a bare address is a range of one),
// given like Origins: a comma list or a JSON list.
type Prefixes []netip.Prefix

// UnmarshalText parses `10.0.0.0/8, 192.0.2.1` or `["10.0.0.0/8","fd00::/8"]`, naming the
// first entry that is not a CIDR range.
func (p *Prefixes) UnmarshalText(b []byte) error {
	list, err := listItems(b)
	if err != nil {
		return err
	}
	out := make(Prefixes, 0, len(list))
	for _, e := range list {
		pfx, err := netip.ParsePrefix(e)
		if err != nil {
			addr, aerr := netip.ParseAddr(e)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR range (like 10.0.0.0/8) or an address", e)
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, pfx.Masked())
	}
	*p = out
	return nil
}

// Contains reports whether addr lies in one of the ranges (an IPv4 address written as
// IPv6, ::ffff:a.b.c.d, counts as IPv4).
func (p Prefixes) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, pfx := range p {
		if pfx.Contains(addr) {
			return true
		}
	}
	return false
}

// Load reads the configuration from the process environment, with a .env file in the working
// directory underneath it (the real environment wins), and validates it.
func Load() (Config, error) {
	vars := map[string]string{}
	if fileVars, err := godotenv.Read(".env"); err == nil {
		for k, v := range fileVars {
			vars[k] = v
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("read .env: %w", err)
	}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return FromMap(vars)
}

// FromMap parses and validates the configuration from vars (full names, with Prefix). Every
// problem is reported, each naming its variable, joined into one error.
func FromMap(vars map[string]string) (Config, error) {
	var c Config
	err := env.ParseWithOptions(&c, env.Options{Environment: vars, Prefix: Prefix})
	var errs []error
	if err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) {
			for _, e := range agg.Errors {
				errs = append(errs, namedParseError(e))
			}
		} else {
			errs = append(errs, namedParseError(err))
		}
	}
	if c.Engine == "" {
		c.Engine = EngineGWS
		if runtime.GOOS == "linux" {
			c.Engine = EngineEpoll
		}
	}
	if c.Shards == 0 {
		c.Shards = runtime.GOMAXPROCS(0)
	}
	if _, set := vars[Prefix+"PUBLISH_API_KEY"]; !set && c.Environment == "development" {
		c.PublishAPIKey = DevPublishAPIKey
	}
	errs = append(errs, c.validate()...)
	if len(errs) > 0 {
		return c, fmt.Errorf("invalid configuration:\n%w", errors.Join(errs...))
	}
	return c, nil
}

// namedParseError rewrites the env library's parse error, which names the Go struct field
// ("parse error on field \"MaxConnections\""), into one that names the variable the operator
// set, as every other configuration error does.
func namedParseError(err error) error {
	var pe env.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	f, ok := reflect.TypeOf(Config{}).FieldByName(pe.Name)
	if !ok {
		return err
	}
	name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
	return bad(name, "%v", pe.Err)
}

func bad(name, format string, args ...any) error {
	return fmt.Errorf("%s%s: %s", Prefix, name, fmt.Sprintf(format, args...))
}

// validate checks ranges and cross-field rules; each error names its variable.
func (c *Config) validate() []error {
	var errs []error
	switch c.Environment {
	case "development", "staging", "production":
	default:
		errs = append(errs, bad("ENVIRONMENT", "%q is not one of development, staging, production", c.Environment))
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, bad("PORT", "%d is not a port (1-65535)", c.Port))
	}
	if ip := net.ParseIP(c.Host); ip == nil && c.Host != "localhost" && c.Host != "" {
		errs = append(errs, bad("HOST", "%q is not an IP address", c.Host))
	}
	c.LogLevel = strings.ToUpper(c.LogLevel)
	switch c.LogLevel {
	case "DEBUG", "INFO", "WARNING", "WARN", "ERROR":
	default:
		errs = append(errs, bad("LOG_LEVEL", "%q is not one of DEBUG, INFO, WARNING, ERROR", c.LogLevel))
	}
	if c.RedisURL != "" {
		if err := checkRedisURL(c.RedisURL, c.RedisCluster); err != nil {
			errs = append(errs, bad("REDIS_URL", "%v", err))
		}
	} else if c.RedisCluster {
		errs = append(errs, bad("REDIS_CLUSTER", "is true but REDIS_URL is unset"))
	}
	for name, v := range map[string]string{
		"WEBSOCKET_CHANNEL_PREFIX": c.UserChannelPrefix,
		"GROUP_CHANNEL_PREFIX":     c.GroupChannelPrefix,
		"BROADCAST_CHANNEL":        c.BroadcastChannel,
		"JWT_GROUPS_CLAIM":         c.JWTGroupsClaim,
	} {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, bad(name, "must not be empty"))
		}
	}
	if c.UserChannelPrefix != "" && c.UserChannelPrefix == c.GroupChannelPrefix {
		errs = append(errs, bad("GROUP_CHANNEL_PREFIX", "must differ from WEBSOCKET_CHANNEL_PREFIX (%q)", c.UserChannelPrefix))
	}
	if c.BroadcastChannel != "" && ((c.UserChannelPrefix != "" && strings.HasPrefix(c.BroadcastChannel, c.UserChannelPrefix)) ||
		(c.GroupChannelPrefix != "" && strings.HasPrefix(c.BroadcastChannel, c.GroupChannelPrefix))) {
		errs = append(errs, bad("BROADCAST_CHANNEL", "%q must not start with a user or group channel prefix", c.BroadcastChannel))
	}
	errs = append(errs, c.validateJWT()...)
	if len(c.AllowedOrigins) == 0 {
		errs = append(errs, bad("ALLOWED_ORIGINS", "must list at least one origin (or *)"))
	}
	if c.Production() && c.AllowedOrigins.Any() {
		errs = append(errs, bad("ALLOWED_ORIGINS", "* is refused in production; list the frontend origins"))
	}
	if c.HeartbeatInterval.D() <= 0 {
		errs = append(errs, bad("WEBSOCKET_HEARTBEAT_INTERVAL", "must be greater than 0"))
	}
	if c.ConnectionTimeout.D() <= 0 {
		errs = append(errs, bad("WEBSOCKET_CONNECTION_TIMEOUT", "must be greater than 0"))
	} else if c.ConnectionTimeout.D() <= c.HeartbeatInterval.D() {
		errs = append(errs, bad("WEBSOCKET_CONNECTION_TIMEOUT", "(%v) must exceed WEBSOCKET_HEARTBEAT_INTERVAL (%v), or a healthy idle client is closed before it can answer a ping",
			c.ConnectionTimeout.D(), c.HeartbeatInterval.D()))
	}
	switch c.Engine {
	case EngineEpoll:
		if runtime.GOOS != "linux" {
			errs = append(errs, bad("ENGINE", "epoll is only available on Linux; use gws"))
		}
	case EngineGWS:
	default:
		errs = append(errs, bad("ENGINE", "%q is not one of epoll, gws", c.Engine))
	}
	if c.Shards < 1 || c.Shards > 1024 {
		errs = append(errs, bad("SHARDS", "%d is not between 1 and 1024", c.Shards))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, bad("MAX_CONNECTIONS", "must be 0 (no limit) or positive"))
	}
	if c.MaxConnectionsPerUser < 0 {
		errs = append(errs, bad("MAX_CONNECTIONS_PER_USER", "must be 0 (no limit) or positive"))
	}
	if c.MaxMessageSize < 125 {
		errs = append(errs, bad("MAX_MESSAGE_SIZE", "%d is below 125 bytes (the largest control frame)", c.MaxMessageSize))
	}
	if c.SendQueueLimit < 1024 {
		errs = append(errs, bad("SEND_QUEUE_LIMIT", "%d is below 1024 bytes", c.SendQueueLimit))
	}
	if c.HandshakeRatePerIP < 0 {
		errs = append(errs, bad("HANDSHAKE_RATE_PER_IP", "must be 0 (off) or positive"))
	}
	if c.PublishAPIKey == DevPublishAPIKey && (c.Environment == "staging" || c.Production()) {
		errs = append(errs, bad("PUBLISH_API_KEY", "is the development key %q, which %s refuses; set a secret key or leave it unset (no publish API)", DevPublishAPIKey, c.Environment))
	}
	if c.InboundRatePerConnection < 0 || c.InboundRatePerConnection > maxInboundRate {
		errs = append(errs, bad("INBOUND_RATE_PER_CONNECTION", "%d is not 0 (off) or a rate up to %d frames per second", c.InboundRatePerConnection, maxInboundRate))
	}
	errs = append(errs, c.validateHistory()...)
	return errs
}

// maxHistorySize bounds HISTORY_SIZE: a replay is read from Redis in one reply and the
// embedded backplane keeps a ring of this many entries per stream.
const maxHistorySize = 100_000

func (c *Config) validateHistory() []error {
	var errs []error
	if c.HistorySize < 0 || c.HistorySize > maxHistorySize {
		errs = append(errs, bad("HISTORY_SIZE", "%d is not between 0 (no history) and %d", c.HistorySize, maxHistorySize))
	}
	if c.HistorySize > 0 && c.HistoryTTL.D() < time.Second {
		errs = append(errs, bad("HISTORY_TTL", "%v is below 1 second; history would expire before a client could resume", c.HistoryTTL.D()))
	}
	if c.RecoveryMaxMessages < 0 {
		errs = append(errs, bad("RECOVERY_MAX_MESSAGES", "must be 0 (replay nothing) or positive"))
	}
	return errs
}

func checkRedisURL(raw string, cluster bool) error {
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil {
			return fmt.Errorf("not a URL: %v", redactErr(err))
		}
		if u.Scheme != "redis" && u.Scheme != "rediss" {
			return fmt.Errorf("scheme %q is not redis:// or rediss://", u.Scheme)
		}
		if u.Host == "" {
			return errors.New("has no host")
		}
		if !cluster && strings.Contains(raw, ",") {
			return errors.New("lists several addresses; set REDIS_CLUSTER=true for a cluster")
		}
	}
	return nil
}

// redactErr drops the URL (which may carry a password) from a url.Error.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Config) validateJWT() []error {
	var errs []error
	switch c.JWTAlgorithm {
	case "HS256", "HS384", "HS512":
		if c.JWTSecretKey == "" {
			errs = append(errs, bad("JWT_SECRET_KEY", "must not be empty for %s", c.JWTAlgorithm))
		}
		if c.Production() {
			if c.JWTSecretKey == DefaultJWTSecret {
				errs = append(errs, bad("JWT_SECRET_KEY", "is the default placeholder; production needs a real secret"))
			} else if len(c.JWTSecretKey) < minProductionSecret {
				errs = append(errs, bad("JWT_SECRET_KEY", "is %d bytes; production needs at least %d", len(c.JWTSecretKey), minProductionSecret))
			}
		}
	case "RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA":
		pem, err := c.resolvePublicKey()
		if err != nil {
			errs = append(errs, bad("JWT_PUBLIC_KEY", "%v", err))
		}
		c.JWTPublicKeyPEM = pem
	default:
		errs = append(errs, bad("JWT_ALGORITHM", "%q is not one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, EdDSA", c.JWTAlgorithm))
	}
	return errs
}

// resolvePublicKey returns the PEM text, reading it from a file for "@/path". The key itself is
// parsed by the auth package, which knows which type each algorithm needs.
func (c *Config) resolvePublicKey() ([]byte, error) {
	v := strings.TrimSpace(c.JWTPublicKey)
	if v == "" {
		return nil, fmt.Errorf("is required for %s", c.JWTAlgorithm)
	}
	if path, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read key file: %w", err)
		}
		return b, nil
	}
	// A PEM in an env var often arrives with literal \n sequences.
	return []byte(strings.ReplaceAll(v, `\n`, "\n")), nil
}

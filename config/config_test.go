package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vars builds a FromMap input from names without the prefix.
func vars(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[Prefix+kv[i]] = kv[i+1]
	}
	return m
}

func mustLoad(t *testing.T, m map[string]string) Config {
	t.Helper()
	c, err := FromMap(m)
	if err != nil {
		t.Fatalf("FromMap: %v", err)
	}
	return c
}

func TestEveryVariableHasItsSpecDefault(t *testing.T) {
	c := mustLoad(t, map[string]string{})
	wantEngine := EngineGWS
	if runtime.GOOS == "linux" {
		wantEngine = EngineEpoll
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"SERVICE_NAME", c.ServiceName, "websocket_service"},
		{"ENVIRONMENT", c.Environment, "development"},
		{"HOST", c.Host, "0.0.0.0"},
		{"PORT", c.Port, 8004},
		{"LOG_LEVEL", c.LogLevel, "INFO"},
		{"REDIS_URL", c.RedisURL, ""},
		{"REDIS_CLUSTER", c.RedisCluster, false},
		{"WEBSOCKET_CHANNEL_PREFIX", c.UserChannelPrefix, "ws:"},
		{"GROUP_CHANNEL_PREFIX", c.GroupChannelPrefix, "ws-group:"},
		{"BROADCAST_CHANNEL", c.BroadcastChannel, "ws-broadcast"},
		{"JWT_SECRET_KEY", c.JWTSecretKey, DefaultJWTSecret},
		{"JWT_ALGORITHM", c.JWTAlgorithm, "HS256"},
		{"JWT_PUBLIC_KEY", c.JWTPublicKey, ""},
		{"JWT_ISSUER", c.JWTIssuer, ""},
		{"JWT_AUDIENCE", c.JWTAudience, ""},
		{"JWT_GROUPS_CLAIM", c.JWTGroupsClaim, "groups"},
		{"ALLOWED_ORIGINS", []string(c.AllowedOrigins), []string{"http://localhost:3000"}},
		{"WEBSOCKET_HEARTBEAT_INTERVAL", c.HeartbeatInterval.D(), 30 * time.Second},
		{"WEBSOCKET_CONNECTION_TIMEOUT", c.ConnectionTimeout.D(), 60 * time.Second},
		{"ENGINE", c.Engine, wantEngine},
		{"SHARDS", c.Shards, runtime.GOMAXPROCS(0)},
		{"MAX_CONNECTIONS", c.MaxConnections, 0},
		{"MAX_CONNECTIONS_PER_USER", c.MaxConnectionsPerUser, 16},
		{"MAX_MESSAGE_SIZE", c.MaxMessageSize, 65536},
		{"SEND_QUEUE_LIMIT", c.SendQueueLimit, 1048576},
		{"HANDSHAKE_RATE_PER_IP", c.HandshakeRatePerIP, 0.0},
		{"SHUTDOWN_DRAIN_TIMEOUT", c.ShutdownDrainTimeout.D(), 30 * time.Second},
		{"PUBLISH_API_KEY", c.PublishAPIKey, DevPublishAPIKey},
		{"INBOUND_RATE_PER_CONNECTION", c.InboundRatePerConnection, 100},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s default = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
	if c.Addr() != "0.0.0.0:8004" {
		t.Errorf("Addr() = %q, want 0.0.0.0:8004", c.Addr())
	}
	if c.Production() {
		t.Error("the default environment counts as production")
	}
}

func TestEveryVariableIsReadWithThePrefix(t *testing.T) {
	c := mustLoad(t, vars(
		"SERVICE_NAME", "svc", "ENVIRONMENT", "staging", "HOST", "127.0.0.1", "PORT", "9000",
		"LOG_LEVEL", "debug", "REDIS_URL", "redis://127.0.0.1:1/0",
		"WEBSOCKET_CHANNEL_PREFIX", "u:", "GROUP_CHANNEL_PREFIX", "g:", "BROADCAST_CHANNEL", "all",
		"JWT_SECRET_KEY", "s3cret", "JWT_ALGORITHM", "HS512", "JWT_ISSUER", "iss", "JWT_AUDIENCE", "aud",
		"JWT_GROUPS_CLAIM", "classes", "ALLOWED_ORIGINS", "https://a.example",
		"WEBSOCKET_HEARTBEAT_INTERVAL", "5", "WEBSOCKET_CONNECTION_TIMEOUT", "12.5",
		"ENGINE", "gws", "SHARDS", "3", "MAX_CONNECTIONS", "100", "MAX_CONNECTIONS_PER_USER", "2",
		"MAX_MESSAGE_SIZE", "4096", "SEND_QUEUE_LIMIT", "2048", "HANDSHAKE_RATE_PER_IP", "2.5",
		"SHUTDOWN_DRAIN_TIMEOUT", "0.25", "PUBLISH_API_KEY", "k",
		"INBOUND_RATE_PER_CONNECTION", "7",
		"HISTORY_SIZE", "64", "HISTORY_TTL", "1.5", "RECOVERY_MAX_MESSAGES", "10",
	))
	want := Config{
		ServiceName: "svc", Environment: "staging", Host: "127.0.0.1", Port: 9000, LogLevel: "DEBUG",
		RedisURL: "redis://127.0.0.1:1/0", UserChannelPrefix: "u:", GroupChannelPrefix: "g:", BroadcastChannel: "all",
		JWTSecretKey: "s3cret", JWTAlgorithm: "HS512", JWTIssuer: "iss", JWTAudience: "aud", JWTGroupsClaim: "classes",
		AllowedOrigins:    Origins{"https://a.example"},
		HeartbeatInterval: Seconds(5 * time.Second), ConnectionTimeout: Seconds(12500 * time.Millisecond),
		Engine: "gws", Shards: 3, MaxConnections: 100, MaxConnectionsPerUser: 2, MaxMessageSize: 4096,
		SendQueueLimit: 2048, HandshakeRatePerIP: 2.5, ShutdownDrainTimeout: Seconds(250 * time.Millisecond),
		PublishAPIKey: "k", InboundRatePerConnection: 7,
		HistorySize: 64, HistoryTTL: Seconds(1500 * time.Millisecond), RecoveryMaxMessages: 10,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestVariablesWithoutThePrefixAreIgnored(t *testing.T) {
	c := mustLoad(t, map[string]string{"PORT": "1234", "JWT_SECRET_KEY": "x"})
	if c.Port != 8004 || c.JWTSecretKey != DefaultJWTSecret {
		t.Fatalf("unprefixed variables were read: port %d secret %q", c.Port, c.JWTSecretKey)
	}
}

func TestAllowedOriginsAcceptsCommaAndJSONLists(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"http://localhost:3000", []string{"http://localhost:3000"}},
		{"https://a.example, https://B.example:8443/ ,", []string{"https://a.example", "https://b.example:8443"}},
		{`["https://a.example","http://localhost:3000"]`, []string{"https://a.example", "http://localhost:3000"}},
		{` [ "https://a.example/" ] `, []string{"https://a.example"}},
		{"*", []string{"*"}},
		{`["*"]`, []string{"*"}},
	} {
		c := mustLoad(t, vars("ALLOWED_ORIGINS", tc.in))
		if !reflect.DeepEqual([]string(c.AllowedOrigins), tc.want) {
			t.Errorf("ALLOWED_ORIGINS=%q parsed as %q, want %q", tc.in, c.AllowedOrigins, tc.want)
		}
	}
}

func TestAllowedOriginsRejectsMalformedLists(t *testing.T) {
	for _, in := range []string{`["https://a.example"`, `[1,2]`, "localhost:3000", "not a url", ",", `[]`} {
		_, err := FromMap(vars("ALLOWED_ORIGINS", in))
		if err == nil || !strings.Contains(err.Error(), Prefix+"ALLOWED_ORIGINS") {
			t.Errorf("ALLOWED_ORIGINS=%q: err = %v, want one naming %sALLOWED_ORIGINS", in, err, Prefix)
		}
	}
}

func TestOriginsAllowsMatchesCaseAndTrailingSlashInsensitively(t *testing.T) {
	o := Origins{"https://app.example", "http://localhost:3000"}
	for origin, want := range map[string]bool{
		"https://app.example":       true,
		"HTTPS://APP.EXAMPLE/":      true,
		"http://localhost:3000":     true,
		"http://localhost:3001":     false,
		"https://app.example.evil":  false,
		"https://evil.example":      false,
		"http://app.example":        false,
		"null":                      false,
		"https://app.example:443/x": false,
	} {
		if got := o.Allows(origin); got != want {
			t.Errorf("Allows(%q) = %v, want %v", origin, got, want)
		}
	}
	if o.Any() {
		t.Error("Any() without *")
	}
	star := Origins{"*"}
	if !star.Any() || !star.Allows("https://anything.example") {
		t.Error("* does not allow every origin")
	}
}

func TestTrustedProxiesAcceptsCommaAndJSONListsOfRanges(t *testing.T) {
	if c := mustLoad(t, vars()); len(c.TrustedProxies) != 0 {
		t.Fatalf("TRUSTED_PROXIES defaults to %v, want none", c.TrustedProxies)
	}
	for _, in := range []string{
		"10.0.0.0/8, 192.0.2.7 ,fd00::/8,",
		`["10.0.0.0/8","192.0.2.7/32","fd00::/8"]`,
	} {
		c := mustLoad(t, vars("TRUSTED_PROXIES", in))
		if got := fmt.Sprint(c.TrustedProxies); got != "[10.0.0.0/8 192.0.2.7/32 fd00::/8]" {
			t.Errorf("TRUSTED_PROXIES=%q parsed as %s", in, got)
		}
		for addr, want := range map[string]bool{
			"10.1.2.3": true, "::ffff:10.1.2.3": true, "192.0.2.7": true, "192.0.2.8": false,
			"fd00::1": true, "2001:db8::1": false, "11.0.0.1": false,
		} {
			if got := c.TrustedProxies.Contains(netip.MustParseAddr(addr)); got != want {
				t.Errorf("TRUSTED_PROXIES=%q: Contains(%s) = %v, want %v", in, addr, got, want)
			}
		}
	}
}

func TestTrustedProxiesNamesTheInvalidRange(t *testing.T) {
	for _, tc := range []struct{ value, bad string }{
		{"192.0.2.0/24,10.0.0.0/33", "10.0.0.0/33"},
		{"10.0.0/8", "10.0.0/8"},
		{`["192.0.2.0/24","ingress"]`, "ingress"},
		{`["10.0.0.0/8"`, ""}, // not a JSON list at all
	} {
		_, err := FromMap(vars("TRUSTED_PROXIES", tc.value))
		wantNamed(t, err, "TRUSTED_PROXIES")
		if err != nil && tc.bad != "" && !strings.Contains(err.Error(), strconv.Quote(tc.bad)) {
			t.Errorf("TRUSTED_PROXIES=%s: the error does not name %q: %v", tc.value, tc.bad, err)
		}
	}
}

func TestSecondsAcceptsFractionsAndRefusesNegativesAndText(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"30": 30 * time.Second, "0.2": 200 * time.Millisecond, " 1.5 ": 1500 * time.Millisecond, "0": 0,
	} {
		var s Seconds
		if err := s.UnmarshalText([]byte(in)); err != nil || s.D() != want {
			t.Errorf("Seconds(%q) = %v, %v; want %v", in, s.D(), err, want)
		}
	}
	for _, in := range []string{"-1", "abc", "", "30s"} {
		var s Seconds
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("Seconds(%q) accepted as %v", in, s.D())
		}
	}
}

func TestFractionalHeartbeatAndTimeoutAreAccepted(t *testing.T) {
	c := mustLoad(t, vars("WEBSOCKET_HEARTBEAT_INTERVAL", "0.2", "WEBSOCKET_CONNECTION_TIMEOUT", "0.6"))
	if c.HeartbeatInterval.D() != 200*time.Millisecond || c.ConnectionTimeout.D() != 600*time.Millisecond {
		t.Fatalf("heartbeat %v timeout %v", c.HeartbeatInterval.D(), c.ConnectionTimeout.D())
	}
}

// wantNamed checks that err names every variable in names.
func wantNamed(t *testing.T, err error, names ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one naming %v", names)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), Prefix+n) {
			t.Errorf("error does not name %s%s:\n%v", Prefix, n, err)
		}
	}
}

func TestInvalidValueNamesItsVariable(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"PORT", "http"},
		{"PORT", "0"},
		{"PORT", "70000"},
		{"HOST", "not-a-host"},
		{"ENVIRONMENT", "prod"},
		{"LOG_LEVEL", "LOUD"},
		{"REDIS_URL", "http://127.0.0.1:6380"},
		{"REDIS_URL", "redis://"},
		{"REDIS_URL", "redis://a:1,redis://b:2"},
		{"REDIS_CLUSTER", "maybe"},
		{"WEBSOCKET_CHANNEL_PREFIX", " "},
		{"BROADCAST_CHANNEL", "ws:all"},
		{"JWT_ALGORITHM", "none"},
		{"JWT_ALGORITHM", "HS1"},
		{"JWT_GROUPS_CLAIM", " "},
		{"WEBSOCKET_HEARTBEAT_INTERVAL", "soon"},
		{"WEBSOCKET_HEARTBEAT_INTERVAL", "-3"},
		{"WEBSOCKET_CONNECTION_TIMEOUT", "0"},
		{"ENGINE", "netty"},
		{"SHARDS", "-1"},
		{"SHARDS", "5000"},
		{"MAX_CONNECTIONS", "-1"},
		{"MAX_CONNECTIONS", "many"},
		{"MAX_CONNECTIONS_PER_USER", "-2"},
		{"MAX_MESSAGE_SIZE", "100"},
		{"SEND_QUEUE_LIMIT", "10"},
		{"HANDSHAKE_RATE_PER_IP", "-1"},
		{"HANDSHAKE_RATE_PER_IP", "fast"},
		{"SHUTDOWN_DRAIN_TIMEOUT", "-5"},
		{"INBOUND_RATE_PER_CONNECTION", "-1"},
		{"INBOUND_RATE_PER_CONNECTION", "2000000"},
		{"INBOUND_RATE_PER_CONNECTION", "fast"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			_, err := FromMap(vars(tc.name, tc.value))
			wantNamed(t, err, tc.name)
		})
	}
}

func TestHistoryVariables(t *testing.T) {
	c := mustLoad(t, map[string]string{})
	if c.HistorySize != 256 || c.HistoryTTL.D() != 600*time.Second || c.RecoveryMaxMessages != 1000 {
		t.Errorf("history defaults %d, %v, %d; want 256, 10m, 1000", c.HistorySize, c.HistoryTTL.D(), c.RecoveryMaxMessages)
	}
	for _, tc := range []struct{ name, value string }{
		{"HISTORY_SIZE", "-1"},
		{"HISTORY_SIZE", "100001"},
		{"HISTORY_SIZE", "many"},
		{"HISTORY_TTL", "0"},
		{"HISTORY_TTL", "0.5"},
		{"HISTORY_TTL", "-1"},
		{"RECOVERY_MAX_MESSAGES", "-1"},
	} {
		_, err := FromMap(vars(tc.name, tc.value))
		wantNamed(t, err, tc.name)
	}
	// No history needs no TTL; no replay at all is allowed.
	mustLoad(t, vars("HISTORY_SIZE", "0", "HISTORY_TTL", "0", "RECOVERY_MAX_MESSAGES", "0"))
}

func TestTimeoutMustExceedHeartbeat(t *testing.T) {
	_, err := FromMap(vars("WEBSOCKET_HEARTBEAT_INTERVAL", "10", "WEBSOCKET_CONNECTION_TIMEOUT", "10"))
	wantNamed(t, err, "WEBSOCKET_CONNECTION_TIMEOUT")
}

func TestRedisClusterNeedsRedisURL(t *testing.T) {
	_, err := FromMap(vars("REDIS_CLUSTER", "true"))
	wantNamed(t, err, "REDIS_CLUSTER")
	c := mustLoad(t, vars("REDIS_CLUSTER", "true", "REDIS_URL", "redis://127.0.0.1:7000,redis://127.0.0.1:7001"))
	if !c.RedisCluster {
		t.Fatal("REDIS_CLUSTER not read")
	}
}

func TestRedisURLErrorDoesNotLeakThePassword(t *testing.T) {
	_, err := FromMap(vars("REDIS_URL", "redis://user:hunter2@127.0.0.1:6379/0\x7f"))
	wantNamed(t, err, "REDIS_URL")
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error shows the Redis password: %v", err)
	}
}

func TestEveryBadVariableIsNamedAtOnce(t *testing.T) {
	_, err := FromMap(vars(
		"PORT", "-1", "ENGINE", "x", "MAX_MESSAGE_SIZE", "1", "LOG_LEVEL", "chatty",
		"WEBSOCKET_HEARTBEAT_INTERVAL", "abc", "MAX_CONNECTIONS", "lots", "JWT_ALGORITHM", "XX999",
	))
	wantNamed(t, err, "PORT", "ENGINE", "MAX_MESSAGE_SIZE", "LOG_LEVEL", "WEBSOCKET_HEARTBEAT_INTERVAL",
		"MAX_CONNECTIONS", "JWT_ALGORITHM")
}

func TestLogLevelIsCaseInsensitive(t *testing.T) {
	for _, in := range []string{"debug", "Info", "warning", "ERROR"} {
		c := mustLoad(t, vars("LOG_LEVEL", in))
		if c.LogLevel != strings.ToUpper(in) {
			t.Errorf("LOG_LEVEL=%q → %q", in, c.LogLevel)
		}
	}
}

func TestProductionRefusesTheDefaultSecret(t *testing.T) {
	_, err := FromMap(vars("ENVIRONMENT", "production", "ALLOWED_ORIGINS", "https://app.example"))
	wantNamed(t, err, "JWT_SECRET_KEY")
}

func TestProductionRefusesAShortSecret(t *testing.T) {
	_, err := FromMap(vars("ENVIRONMENT", "production", "ALLOWED_ORIGINS", "https://app.example",
		"JWT_SECRET_KEY", strings.Repeat("k", 31)))
	wantNamed(t, err, "JWT_SECRET_KEY")
	if strings.Contains(err.Error(), strings.Repeat("k", 31)) {
		t.Fatalf("error shows the secret: %v", err)
	}
}

func TestProductionRefusesAnyOrigin(t *testing.T) {
	_, err := FromMap(vars("ENVIRONMENT", "production", "ALLOWED_ORIGINS", "https://app.example,*",
		"JWT_SECRET_KEY", strings.Repeat("k", 32)))
	wantNamed(t, err, "ALLOWED_ORIGINS")
}

func TestProductionAcceptsAStrongSecretAndListedOrigins(t *testing.T) {
	c := mustLoad(t, vars("ENVIRONMENT", "production", "ALLOWED_ORIGINS", "https://app.example",
		"JWT_SECRET_KEY", strings.Repeat("k", 32)))
	if !c.Production() {
		t.Fatal("Production() is false")
	}
}

func TestDevelopmentAcceptsTheDefaultSecretAndAnyOrigin(t *testing.T) {
	c := mustLoad(t, vars("ALLOWED_ORIGINS", "*"))
	if !c.AllowedOrigins.Any() || c.JWTSecretKey != DefaultJWTSecret {
		t.Fatalf("origins %v secret %q", c.AllowedOrigins, c.JWTSecretKey)
	}
}

func TestUnsetPublishAPIKeyIsTheDevelopmentKeyOnlyInDevelopment(t *testing.T) {
	strong := strings.Repeat("k", 32)
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{vars(), DevPublishAPIKey},
		{vars("ENVIRONMENT", "development"), DevPublishAPIKey},
		{vars("PUBLISH_API_KEY", ""), ""}, // set empty: the API is off
		{vars("PUBLISH_API_KEY", "mine"), "mine"},
		{vars("ENVIRONMENT", "staging"), ""},
		{vars("ENVIRONMENT", "production", "JWT_SECRET_KEY", strong, "ALLOWED_ORIGINS", "https://app.example"), ""},
	} {
		if c := mustLoad(t, tc.env); c.PublishAPIKey != tc.want {
			t.Errorf("%v: PUBLISH_API_KEY = %q, want %q", tc.env, c.PublishAPIKey, tc.want)
		}
	}
}

func TestStagingAndProductionRefuseTheDevelopmentPublishKey(t *testing.T) {
	for _, env := range []string{"staging", "production"} {
		_, err := FromMap(vars("ENVIRONMENT", env, "PUBLISH_API_KEY", DevPublishAPIKey,
			"JWT_SECRET_KEY", strings.Repeat("k", 32), "ALLOWED_ORIGINS", "https://app.example"))
		wantNamed(t, err, "PUBLISH_API_KEY")
	}
}

func TestEngineValidation(t *testing.T) {
	c := mustLoad(t, vars("ENGINE", "gws"))
	if c.Engine != EngineGWS {
		t.Fatalf("ENGINE=gws → %q", c.Engine)
	}
	_, err := FromMap(vars("ENGINE", "epoll"))
	if runtime.GOOS == "linux" && err != nil {
		t.Fatalf("ENGINE=epoll refused on linux: %v", err)
	}
	if runtime.GOOS != "linux" {
		wantNamed(t, err, "ENGINE")
	}
	_, err = FromMap(vars("ENGINE", "EPOLL"))
	wantNamed(t, err, "ENGINE")
}

func TestAsymmetricAlgorithmNeedsAPublicKey(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		_, err := FromMap(vars("JWT_ALGORITHM", alg))
		wantNamed(t, err, "JWT_PUBLIC_KEY")
	}
}

func TestPublicKeyIsReadInlineWithEscapedNewlinesOrFromAFile(t *testing.T) {
	pemText := "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
	c := mustLoad(t, vars("JWT_ALGORITHM", "RS256", "JWT_PUBLIC_KEY", strings.ReplaceAll(pemText, "\n", `\n`)))
	if string(c.JWTPublicKeyPEM) != pemText {
		t.Fatalf("inline PEM resolved to %q", c.JWTPublicKeyPEM)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, []byte(pemText), 0o600); err != nil {
		t.Fatal(err)
	}
	c = mustLoad(t, vars("JWT_ALGORITHM", "ES256", "JWT_PUBLIC_KEY", "@"+path))
	if string(c.JWTPublicKeyPEM) != pemText {
		t.Fatalf("PEM file resolved to %q", c.JWTPublicKeyPEM)
	}
	_, err := FromMap(vars("JWT_ALGORITHM", "EdDSA", "JWT_PUBLIC_KEY", "@"+path+".missing"))
	wantNamed(t, err, "JWT_PUBLIC_KEY")
}

// The Load tests change the process environment and working directory, so they do not run
// in parallel with anything.

func TestLoadReadsDotEnvInTheWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	env := Prefix + "PORT=9123\n" + Prefix + "SERVICE_NAME=from-dotenv\n# comment\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Port != 9123 || c.ServiceName != "from-dotenv" {
		t.Fatalf(".env not read: port %d service %q", c.Port, c.ServiceName)
	}
}

func TestLoadRealEnvironmentWinsOverDotEnv(t *testing.T) {
	dir := t.TempDir()
	env := Prefix + "PORT=9123\n" + Prefix + "SERVICE_NAME=from-dotenv\n"
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv(Prefix+"PORT", "9555")
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Port != 9555 {
		t.Fatalf("PORT = %d, want the real environment's 9555", c.Port)
	}
	if c.ServiceName != "from-dotenv" {
		t.Fatalf("SERVICE_NAME = %q, want the .env value for a variable the environment lacks", c.ServiceName)
	}
}

func TestLoadWithoutDotEnvUsesDefaults(t *testing.T) {
	t.Chdir(t.TempDir())
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Port != 8004 {
		t.Fatalf("PORT = %d", c.Port)
	}
}

func TestLoadReportsInvalidEnvironment(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv(Prefix+"PORT", "eighty")
	t.Setenv(Prefix+"ENGINE", "bogus")
	_, err := Load()
	wantNamed(t, err, "PORT", "ENGINE")
}

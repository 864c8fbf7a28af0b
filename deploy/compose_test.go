package deploy

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/huleedu/websocket-service/config"
)

// composeService is the part of a Compose service that docker-compose.yml uses. Decoding is
// strict: a field added to the file must be added here, where it can be checked.
type composeService struct {
	Image string `json:"image,omitempty"`
	Build *struct {
		Context    string            `json:"context"`
		Dockerfile string            `json:"dockerfile"`
		Args       map[string]string `json:"args,omitempty"`
	} `json:"build,omitempty"`
	ContainerName string   `json:"container_name,omitempty"`
	Restart       string   `json:"restart,omitempty"`
	Command       []string `json:"command,omitempty"`
	DependsOn     map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on,omitempty"`
	Networks    []string          `json:"networks,omitempty"`
	Ports       []string          `json:"ports,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	Healthcheck *struct {
		Test        []string `json:"test"`
		Interval    string   `json:"interval,omitempty"`
		Timeout     string   `json:"timeout,omitempty"`
		Retries     int      `json:"retries,omitempty"`
		StartPeriod string   `json:"start_period,omitempty"`
	} `json:"healthcheck,omitempty"`
	StopGracePeriod string `json:"stop_grace_period,omitempty"`
}

type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Networks map[string]struct {
		Name string `json:"name,omitempty"`
	} `json:"networks,omitempty"`
}

// Service names in docker-compose.yml.
const (
	composeServiceName = "websocket_service"
	composeRedisName   = "redis"
)

// interpolation is Compose's ${VAR:-default} (or ${VAR-default}) form.
var interpolation = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}`)

// checkCompose checks docker-compose.yml against the service: every variable is a config
// variable and the values (with interpolation defaults) pass validation, REDIS_URL points at
// the Redis service, the published port is the service's port, both healthchecks work in
// their images, and the stop grace period covers the drain.
func checkCompose(data []byte) error {
	var f composeFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return fmt.Errorf("docker-compose.yml: %w", err)
	}
	var p problems
	svc, ok := f.Services[composeServiceName]
	if !ok {
		return fmt.Errorf("docker-compose.yml: no service %q", composeServiceName)
	}
	redis, ok := f.Services[composeRedisName]
	if !ok {
		p.addf("docker-compose.yml: no service %q", composeRedisName)
	}
	known := configVarNames()
	vars := map[string]string{}
	for _, k := range sortedKeys(keysOf(svc.Environment)) {
		if err := checkVarName(known, "docker-compose.yml environment", k); err != nil {
			p = append(p, err)
		}
		vars[k] = interpolation.ReplaceAllString(svc.Environment[k], "$1")
	}
	cfg, err := config.FromMap(vars)
	if err != nil {
		return append(p, fmt.Errorf("docker-compose.yml: the service would refuse its environment: %w", err)).err()
	}
	if cfg.RedisURL == "" {
		p.addf("docker-compose.yml: %sREDIS_URL is unset; the compose file exists to run with Redis", config.Prefix)
	} else if u, err := url.Parse(cfg.RedisURL); err == nil && u.Hostname() != composeRedisName {
		p.addf("docker-compose.yml: %sREDIS_URL host %q is not the %q service", config.Prefix, u.Hostname(), composeRedisName)
	}
	if d, ok := svc.DependsOn[composeRedisName]; !ok || d.Condition != "service_healthy" {
		p.addf("docker-compose.yml: %s must depend on %s with condition service_healthy", composeServiceName, composeRedisName)
	}
	if !slices.ContainsFunc(svc.Ports, func(m string) bool { return containerSide(m) == strconv.Itoa(cfg.Port) }) {
		p.addf("docker-compose.yml: ports %v do not publish the service's port %d", svc.Ports, cfg.Port)
	}
	if svc.Build == nil || svc.Build.Dockerfile != "Dockerfile" || svc.Build.Context != "." {
		p.addf("docker-compose.yml: %s must build ./Dockerfile from the repository root", composeServiceName)
	}
	if svc.Healthcheck == nil || !slices.Equal(svc.Healthcheck.Test, []string{"CMD", binaryPath, "healthcheck"}) {
		p.addf("docker-compose.yml: %s healthcheck must be [CMD, %s, healthcheck]: the image has no shell or curl", composeServiceName, binaryPath)
	}
	if redis.Healthcheck == nil || !slices.Equal(redis.Healthcheck.Test, []string{"CMD", "redis-cli", "ping"}) {
		p.addf("docker-compose.yml: %s healthcheck must be [CMD, redis-cli, ping]", composeRedisName)
	}
	if tag := imageTag(redis.Image); tag == "" || tag == "latest" {
		p.addf("docker-compose.yml: redis image %q is not pinned to a version", redis.Image)
	}
	grace := 10 * time.Second // Compose's default
	if svc.StopGracePeriod != "" {
		if grace, err = time.ParseDuration(svc.StopGracePeriod); err != nil {
			p.addf("docker-compose.yml: stop_grace_period %q: %v", svc.StopGracePeriod, err)
		}
	}
	if need := cfg.ShutdownDrainTimeout.D() + shutdownMargin; grace < need {
		p.addf("docker-compose.yml: stop_grace_period %v is less than SHUTDOWN_DRAIN_TIMEOUT %v + %v", grace, cfg.ShutdownDrainTimeout.D(), shutdownMargin)
	}
	return p.err()
}

// containerSide is the container port of a Compose short port mapping
// ("8004", "8004:8004", "127.0.0.1:8004:8004/tcp").
func containerSide(mapping string) string {
	mapping, _, _ = strings.Cut(mapping, "/")
	return mapping[strings.LastIndex(mapping, ":")+1:]
}

func TestComposeRunsTheServiceWithRedisAsConfigured(t *testing.T) {
	if err := checkCompose(readFile(t, path("docker-compose.yml"))); err != nil {
		t.Errorf("docker-compose.yml drifted from the code:%s", describe(err))
	}
}

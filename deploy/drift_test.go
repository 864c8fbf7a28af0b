package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// drift is one deliberate break of a real file: replace old with new in file, and the checks
// must fail naming want.
type drift struct {
	name     string
	file     string
	old, new string
	want     string
}

// apply returns data with the drift applied, failing the test when old is not in the file
// (a drift that changes nothing would prove nothing).
func (d drift) apply(t *testing.T, data []byte) []byte {
	t.Helper()
	if !strings.Contains(string(data), d.old) {
		t.Fatalf("%s no longer contains %q; update the drift case", d.file, d.old)
	}
	return []byte(strings.Replace(string(data), d.old, d.new, 1))
}

// copyK8s copies the real manifests into a temporary directory.
func copyK8s(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), readFile(t, filepath.Join(k8sDir, e.Name())), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// expectFinding fails unless err names want.
func expectFinding(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the checks accepted the drifted file; want a finding containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("the checks failed, but not on the drift: want %q in:%s", want, describe(err))
	}
}

func TestManifestChecksCatchDrift(t *testing.T) {
	for _, d := range []drift{
		{"unknown field", "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriod: 45", `unknown field "terminationGracePeriod"`},
		{"misspelt probe field", "deployment.yaml", "path: /healthz", "pathh: /healthz", `unknown field`},
		{"wrongly typed value", "deployment.yaml", "runAsUser: 65532\n        runAsGroup", "runAsUser: nonroot\n        runAsGroup", "runAsUser"},
		{"readiness probe path", "deployment.yaml", "path: /readyz", "path: /ready", `readinessProbe path "/ready" is not the server's route "/readyz"`},
		{"liveness probe path", "deployment.yaml", "path: /healthz", "path: /health", `livenessProbe path "/health"`},
		{"probe port", "deployment.yaml", "path: /readyz\n              port: http", "path: /readyz\n              port: 9000", "readinessProbe port 9000"},
		{"container port", "deployment.yaml", "containerPort: 8004", "containerPort: 8080", "containerPort 8080 is not the service's default PORT 8004"},
		{"metrics annotation", "deployment.yaml", "prometheus.io/path: /metrics", "prometheus.io/path: /prometheus", "prometheus.io/path"},
		{"unknown variable in ConfigMap", "configmap.yaml", "WEBSOCKET_SERVICE_REDIS_URL:", "WEBSOCKET_SERVICE_REDIS_ADDR:", "WEBSOCKET_SERVICE_REDIS_ADDR is not a variable of config.Config"},
		{"unknown variable in env", "deployment.yaml", "name: WEBSOCKET_SERVICE_PUBLISH_API_KEY", "name: WEBSOCKET_SERVICE_PUBLISH_KEY", "WEBSOCKET_SERVICE_PUBLISH_KEY is not a variable of config.Config"},
		{"invalid value", "configmap.yaml", `WEBSOCKET_SERVICE_SHUTDOWN_DRAIN_TIMEOUT: "30"`, `WEBSOCKET_SERVICE_SHUTDOWN_DRAIN_TIMEOUT: "30s"`, "SHUTDOWN_DRAIN_TIMEOUT"},
		{"wildcard origin in production", "configmap.yaml", "WEBSOCKET_SERVICE_ALLOWED_ORIGINS: https://app.example.com", `WEBSOCKET_SERVICE_ALLOWED_ORIGINS: "*"`, "ALLOWED_ORIGINS"},
		{"no connection cap", "configmap.yaml", `WEBSOCKET_SERVICE_MAX_CONNECTIONS: "20000"`, `WEBSOCKET_SERVICE_MAX_CONNECTIONS: "0"`, "MAX_CONNECTIONS is unlimited"},
		{"drain longer than grace period", "configmap.yaml", `WEBSOCKET_SERVICE_SHUTDOWN_DRAIN_TIMEOUT: "30"`, `WEBSOCKET_SERVICE_SHUTDOWN_DRAIN_TIMEOUT: "40"`, "the drain would be cut by SIGKILL"},
		{"overlapping rollout drains", "deployment.yaml", "minReadySeconds: 30", "minReadySeconds: 5", "a rollout would drain several pods at once"},
		{"shell preStop", "deployment.yaml", "sleep:\n                seconds: 5", "exec:\n                command: [\"sleep\", \"5\"]", "has no shell or sleep binary"},
		{"JWT key in ConfigMap", "configmap.yaml", "WEBSOCKET_SERVICE_JWT_ALGORITHM: HS256", "WEBSOCKET_SERVICE_JWT_ALGORITHM: HS256\n  WEBSOCKET_SERVICE_JWT_SECRET_KEY: not-a-secret-anymore-not-a-secret-anymore", "belongs in the Secret"},
		{"wrong Secret key", "deployment.yaml", "key: jwt-secret-key", "key: jwt-key", `refers to key "jwt-key"`},
		{"writable root filesystem", "deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem is not true"},
		{"capabilities kept", "deployment.yaml", `drop: ["ALL"]`, `drop: ["NET_RAW"]`, "do not drop ALL"},
		{"latest image", "deployment.yaml", "image: huleedu/websocket-service:0.1.0", "image: huleedu/websocket-service:latest", "is not pinned"},
		{"replicas fixed", "deployment.yaml", "  revisionHistoryLimit: 5", "  replicas: 3\n  revisionHistoryLimit: 5", "replicas is set"},
		{"service target port", "service.yaml", "targetPort: http", "targetPort: web", "targetPort web does not reach"},
		{"service selector", "service.yaml", "  selector:\n    app.kubernetes.io/name: websocket-service", "  selector:\n    app.kubernetes.io/name: websocket", "service.yaml: selector"},
		{"fast scale-down", "hpa.yaml", "stabilizationWindowSeconds: 600", "stabilizationWindowSeconds: 30", "stabilizationWindowSeconds must be at least 300"},
		{"HPA on another target", "hpa.yaml", "    name: websocket-service\n  # Two", "    name: websocket\n  # Two", "scaleTargetRef"},
		{"manifest left out of kustomization", "kustomization.yaml", "  - pdb.yaml\n", "", "pdb.yaml is not listed in resources"},
	} {
		t.Run(d.name, func(t *testing.T) {
			dir := copyK8s(t)
			f := filepath.Join(dir, d.file)
			if err := os.WriteFile(f, d.apply(t, readFile(t, f)), 0o600); err != nil {
				t.Fatal(err)
			}
			m, err := loadManifests(dir)
			if err == nil {
				err = checkManifests(m)
			}
			expectFinding(t, err, d.want)
		})
	}
}

func TestDockerfileChecksCatchDrift(t *testing.T) {
	real := readFile(t, path("Dockerfile"))
	m := loadReal(t)
	for _, d := range []drift{
		{"exposed port", "Dockerfile", "EXPOSE 8004", "EXPOSE 8080", "want exactly the default PORT 8004"},
		{"root user", "Dockerfile", "USER 65532:65532", "USER root", "runs as USER root"},
		{"uid differs from the Deployment", "Dockerfile", "USER 65532:65532", "USER 1000:1000", "differs from the Deployment's runAsUser 65532"},
		{"no user", "Dockerfile", "USER 65532:65532\n", "", "has no USER"},
		{"latest tag", "Dockerfile", "FROM golang:1.26 AS builder", "FROM golang:latest AS builder", "FROM golang:latest is not pinned"},
		{"old Go", "Dockerfile", "FROM golang:1.26 AS builder", "FROM golang:1.22 AS builder", "older than go.mod"},
		{"old Go patch", "Dockerfile", "FROM golang:1.26 AS builder", "FROM golang:1.26.0-bookworm AS builder", "older than go.mod"},
		{"no healthcheck", "Dockerfile", "HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \\\n    CMD [\"/websocket-service\", \"healthcheck\"]\n", "", "no HEALTHCHECK"},
		{"curl healthcheck", "Dockerfile", `CMD ["/websocket-service", "healthcheck"]`, "CMD curl -f http://localhost:8004/healthz", "HEALTHCHECK"},
		{"shell entrypoint", "Dockerfile", `ENTRYPOINT ["/websocket-service"]`, "ENTRYPOINT /websocket-service serve", "JSONArgsRecommended"},
		{"single stage", "Dockerfile", "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=builder /out/websocket-service /websocket-service\n", "", "want a builder stage and a runtime stage"},
		{"cgo", "Dockerfile", "CGO_ENABLED=0 ", "", "CGO_ENABLED=0"},
		{"no version", "Dockerfile", "-X main.commit=${COMMIT}", "", "-X main.commit="},
		{"no build cache", "Dockerfile", "--mount=type=cache,target=/root/.cache/go-build", "", "target=/root/.cache/go-build"},
		{"inconsistent casing", "Dockerfile", "WORKDIR /src", "workdir /src", "ConsistentInstructionCasing"},
	} {
		t.Run(d.name, func(t *testing.T) {
			expectFinding(t, checkDockerfile(d.apply(t, real), goDirective(t), runAsUser(m)), d.want)
		})
	}
	inputs := []string{"go.mod", "go.sum", "cmd/websocket-service/main.go", "server/server.go"}
	for _, d := range []drift{
		{"dockerignore lets .env in", ".dockerignore", "\n.env\n", "\n", "does not exclude .env"},
		{"dockerignore drops sources", ".dockerignore", "\ndocs/\n", "\ndocs/\nserver/\n", `"server" excludes server/server.go`},
		{"dockerignore drops go.sum", ".dockerignore", "\n*.md\n", "\n*.md\ngo.*\n", `"go.*" excludes go.sum`},
	} {
		t.Run(d.name, func(t *testing.T) {
			expectFinding(t, checkDockerignore(d.apply(t, readFile(t, path(".dockerignore"))), inputs), d.want)
		})
	}
}

func TestComposeChecksCatchDrift(t *testing.T) {
	real := readFile(t, path("docker-compose.yml"))
	for _, d := range []drift{
		{"unknown variable", "docker-compose.yml", "WEBSOCKET_SERVICE_LOG_LEVEL:", "WEBSOCKET_SERVICE_LOGLEVEL:", "WEBSOCKET_SERVICE_LOGLEVEL is not a variable of config.Config"},
		{"unknown field", "docker-compose.yml", "stop_grace_period:", "stop_grace:", "unknown field"},
		{"redis host", "docker-compose.yml", "redis://redis:6379/0", "redis://localhost:6379/0", `host "localhost" is not the "redis" service`},
		{"curl healthcheck", "docker-compose.yml", `test: ["CMD", "/websocket-service", "healthcheck"]`, `test: ["CMD", "curl", "-f", "http://localhost:8004/healthz"]`, "healthcheck must be"},
		{"published port", "docker-compose.yml", `"8004:8004"`, `"8004:8080"`, "do not publish the service's port 8004"},
		{"grace shorter than drain", "docker-compose.yml", "stop_grace_period: 15s", "stop_grace_period: 5s", "stop_grace_period 5s"},
	} {
		t.Run(d.name, func(t *testing.T) {
			expectFinding(t, checkCompose(d.apply(t, real)), d.want)
		})
	}
}

# syntax=docker/dockerfile:1

# websocket-service image: a static Go binary on distroless, running as the distroless
# "nonroot" user. Build:
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t websocket-service:dev .
# deploy/dockerfile_test.go checks this file against the code (port, user, healthcheck,
# entrypoint, pinned tags); change both together.

# The builder's Go must be at least go.mod's go directive (checked by deploy/).
FROM golang:1.26 AS builder
WORKDIR /src

# Modules first, so a source-only change reuses the download layer; the cache mounts keep
# the module and build caches across builds without putting them in any layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

ARG VERSION=dev
ARG COMMIT=none
COPY . .
# CGO off: the runtime image has no libc. -trimpath and -s -w keep paths of the build
# machine and debug tables out of the binary; version and commit land in package main.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/websocket-service ./cmd/websocket-service

# distroless static: no shell, no package manager, CA certificates and tzdata only. That is
# why the healthcheck and the Kubernetes preStop hook use the binary and a sleep action, not
# a shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /out/websocket-service /websocket-service
# 65532 is distroless's "nonroot"; k8s/deployment.yaml runs as the same uid.
USER 65532:65532
EXPOSE 8004
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/websocket-service", "healthcheck"]
ENTRYPOINT ["/websocket-service"]

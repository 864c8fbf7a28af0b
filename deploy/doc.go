// Package deploy holds no production code. Its tests keep the deployment artefacts —
// Dockerfile, .dockerignore, docker-compose.yml and the Kubernetes manifests in k8s/ — from
// drifting away from the service: every manifest is decoded strictly into the Kubernetes API
// types, and ports, probe paths, variable names and timeouts are compared with the server's
// routes (package server) and the configuration definition (package config). The drift tests
// feed deliberately broken copies to the same checks to prove they fail.
package deploy

// Package server is the service's HTTP face: the `/ws` upgrade (origin allow-list, per-IP
// handshake rate, connection limits, JWT, backplane subscription) before it hands a connection
// to an engine, plus `/healthz`, `/readyz`, `/metrics`, `POST /api/publish` and the drain on
// shutdown. It routes backplane messages to the engine but never touches a socket after the
// upgrade: that is the engine's job.
package server

// Package server is the service's HTTP face: the `/ws` upgrade (origin allow-list, per-IP
// handshake rate, connection limits, JWT, backplane subscription) before it hands a connection
// to an engine, plus `/healthz`, `/readyz`, `/metrics`, `POST /api/publish` and the drain on
// shutdown. Members gives back what an upgrade took when the engine reports the connection
// closed. The server never touches a socket after the upgrade (the engine's job) and never
// sees a backplane message (sequence.Router routes them to the engine); it uses the engine
// and the backplane through the interfaces it declares (contracts.go), and neither builds,
// starts nor closes them: app/ does.
package server

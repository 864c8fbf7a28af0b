// Package conformance checks websocket-service's WebSocket endpoint from the outside, over
// both engines: the server-side cases of the Autobahn|Testsuite fuzzing client, replayed by a
// raw TCP client that writes exactly the frames of each case (autobahn_*_test.go); hostile
// clients (slowloris, slow consumers, floods, oversized headers and frames); and independent
// client implementations (github.com/coder/websocket and Node's ws package).
//
// The non-test code here (wire.go) is the event reader over the project's raw client,
// internal/wsraw: wsraw puts any byte sequence on the wire — masked or not, with reserved bits
// or lengths a real client never sends — and wire.go reassembles what the server answers into
// events, flagging anything no server may send. It is not a WebSocket library for production
// use.
//
// docs/CONFORMANCE.md holds the pass/fail table of the last full run; regenerate it with
//
//	go test ./conformance -run TestAutobahnCases -count=1 -args -report ../docs/CONFORMANCE.md
package conformance

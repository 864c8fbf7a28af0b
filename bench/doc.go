// Package bench is the load harness behind cmd/wsbench: it opens many authenticated
// WebSocket connections to a running websocket-service, drives one scenario (idle, fanout,
// classroom, broadcast, churn, echo) through Redis or the publish API, and reports rates,
// latency percentiles, loss, duplicates and the server's memory per connection. It also runs
// the standard suite that compares the epoll engine with the gws baseline, the fleet bench
// (several service processes on one Redis or a Redis Cluster) and the reconnect storm (one
// node of a fleet killed, its clients reconnecting to the others) and the rollout (the
// reference client, client/, in Node or in a Chromium page, resuming on one node while the
// other is drained). Its clients speak v1 or notifications.v2 (resume frame, stream and
// cursor per message, resume with saved cursors after a reconnect), so the suite sets v2
// against v1 in the group fan-out, the storm measures a v2 resume storm, and pubcost what
// publishing with history (FCALL ws_publish) costs Redis. It is not used by the service
// itself.
package bench

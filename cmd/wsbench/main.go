// Command wsbench is the load harness of websocket-service: it holds, feeds and churns many
// WebSocket connections against a running service and reports rates, latency, loss and the
// server's memory per connection; `wsbench suite` compares the two engines. The logic lives
// in package bench.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/huleedu/websocket-service/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Command websocket-service runs the notification gateway (`serve`, the default) and offers
// the tools to try it: `token` mints a JWT with the configured key, `publish` sends a message
// through Redis or the HTTP API, `healthcheck` probes /healthz for container runtimes that
// have no curl. Configuration comes from WEBSOCKET_SERVICE_* variables (and .env).
package main

import (
	"fmt"
	"io"
	"os"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "none"
)

const usage = `usage: websocket-service [command] [flags]

commands:
  serve        run the service (default)
  token        mint a JWT: token --sub u1 [--groups a,b] [--ttl 1h] [--private-key key.pem]
  publish      publish a message: publish (--user u1 | --group g | --broadcast) '<payload>'
  healthcheck  exit 0 when GET /healthz on the configured port answers 200
  version      print the version

Configuration: WEBSOCKET_SERVICE_* environment variables (see README.md); a .env file in
the working directory is read too, the real environment wins.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "publish":
		return publish(args, stdout, stderr)
	case "healthcheck":
		return healthcheck(stderr)
	case "version":
		fmt.Fprintf(stdout, "websocket-service %s (%s)\n", version, commit)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return 2
}

// Package client holds no Go code: the directory is the reference JavaScript client of protocol
// notifications.v2 (notifications-client.js, published to npm as it stands; see README.md).
// The package exists so that `go test ./...` runs the client's own unit tests (`node --test`)
// with every other test of the repository.
package client

// Package testenv holds the project's rule for tests that need a tool the machine may lack
// (redis-server, node, Chromium): without it the test skips and says what to install, except
// under CI=true, where .ci/run has installed everything and a missing piece is a failure.
package testenv

import (
	"os"
	"testing"
)

// Missing ends the test because a required tool is absent: t.Skip(msg) on a developer's
// machine, t.Fatal(msg) under CI=true.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

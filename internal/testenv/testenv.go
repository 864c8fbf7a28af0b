// Package testenv holds what the project's tests share about the machine they run on: the
// rule for a tool the machine may lack (redis-server, node, Chromium: without it the test
// skips and says what to install, except under CI=true, where .ci/run has installed
// everything and a missing piece is a failure), and waiting for a condition with a deadline
// instead of sleeping for a guess that a loaded machine outlasts.
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

//go:build !linux

package bench

import "os/exec"

// dieWithParent has no portable equivalent outside Linux; children are stopped by the
// deferred cleanups only.
func dieWithParent(*exec.Cmd) {}

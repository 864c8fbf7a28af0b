package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill a child (worker, server, redis-server) when wsbench
// itself dies, even by SIGKILL, so no load generator or server is left running behind it.
// (Strictly the signal follows the OS thread that started the child; the Go runtime does
// not end its threads, so in practice that is the process.)
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

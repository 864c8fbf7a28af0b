package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// fdReserve is how many descriptors a harness process keeps for itself (stdio, Redis and
// HTTP clients, the Go runtime's epoll, /proc reads) beside its connections.
const fdReserve = 1000

// Capacity is what this machine lets one run hold.
type Capacity struct {
	FilesPerProc int // RLIMIT_NOFILE hard limit (Go raises the soft limit to it at start)
	PortsPerSrc  int // ephemeral ports per source address (ip_local_port_range)
}

// MachineCapacity reads the limits of this machine and process.
func MachineCapacity() Capacity {
	c := Capacity{FilesPerProc: 1024, PortsPerSrc: 28232}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Max > 0 && rl.Max < 1<<31 {
		c.FilesPerProc = int(rl.Max)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			lo, err1 := strconv.Atoi(f[0])
			hi, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && hi >= lo {
				c.PortsPerSrc = hi - lo + 1
			}
		}
	}
	return c
}

// PerProc is the largest number of connections one harness process may hold.
func (c Capacity) PerProc() int { return c.FilesPerProc - fdReserve }

// Check refuses a run the limits cannot hold, saying why and what to do instead. open is
// how many connections are open at once at the peak (N, or for churn the sockets still
// holding a port); procs and srcs are the worker processes and source addresses.
func (c Capacity) Check(open, procs, srcs int) error {
	if procs < 1 {
		procs = 1
	}
	if srcs < 1 {
		srcs = 1
	}
	perProc := (open + procs - 1) / procs
	if perProc > c.PerProc() {
		need := (open + c.PerProc() - 1) / c.PerProc()
		return fmt.Errorf("%d connections over %d process(es) is %d per process, but a process may hold at most %d "+
			"(open-files hard limit %d, %d kept in reserve): use --procs %d or more",
			open, procs, perProc, c.PerProc(), c.FilesPerProc, fdReserve, need)
	}
	// Every connection to the one server address needs its own (source address, port) pair.
	if ports := c.PortsPerSrc * srcs; open > ports {
		need := (open + c.PortsPerSrc - 1) / c.PortsPerSrc
		return fmt.Errorf("%d connections need %d source ports, but %d source address(es) × %d ephemeral ports give %d: "+
			"give %d or more addresses with --src 127.0.0.2,127.0.0.3,…",
			open, open, srcs, c.PortsPerSrc, ports, need)
	}
	return nil
}

// serverReserve is how many descriptors a server keeps beside its connections (listener,
// Redis, epoll, logs, /metrics scrapes).
const serverReserve = 100

// CheckServer refuses a run that would take the server at pid past its open-files limit,
// which would show up as failed handshakes rather than as a clear error. It reads the
// soft limit from /proc/PID/limits (the Go runtime raises it to the hard limit at start).
func CheckServer(pid, open int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return fmt.Errorf("read limits of server pid %d: %w", pid, err)
	}
	limit, ok := openFilesLimit(string(b))
	if !ok || open+serverReserve <= limit {
		return nil
	}
	return fmt.Errorf("%d connections need about %d open files in the server (pid %d), whose limit is %d: "+
		"hold at most %d connections per server, or raise its limit (ulimit -n) and restart it",
		open, open+serverReserve, pid, limit, limit-serverReserve)
}

// openFilesLimit reads the soft "Max open files" limit from /proc/PID/limits text.
func openFilesLimit(limits string) (int, bool) {
	for _, line := range strings.Split(limits, "\n") {
		rest, ok := strings.CutPrefix(line, "Max open files")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || f[0] == "unlimited" {
			return 0, false
		}
		n, err := strconv.Atoi(f[0])
		return n, err == nil
	}
	return 0, false
}

// PortHint warns when the connections would use more than half of each source address's
// ephemeral ports: the kernel then searches longer for a free port on every connect (and
// TIME_WAIT sockets of earlier runs count too), which the harness pays in CPU and shows as a
// lower handshake rate. Measured here: ~400 µs of harness CPU per connect instead of ~75 at
// 19,000 connections from one address.
func (c Capacity) PortHint(open, srcs int) string {
	srcs = max(srcs, 1)
	if open/srcs <= c.PortsPerSrc/2 {
		return ""
	}
	return fmt.Sprintf("%d connections from %d source address(es) use over half of each one's %d ephemeral ports: "+
		"connects get slower; spread them with --src 127.0.0.2,127.0.0.3,… (need %d or more)",
		open, srcs, c.PortsPerSrc, (2*open+c.PortsPerSrc-1)/c.PortsPerSrc)
}

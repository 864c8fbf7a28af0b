package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// ProcMem is a process's memory as the kernel accounts it, in KiB. Pss (proportional set
// size) charges shared pages to each sharer in part, so it is the fairest figure of what one
// more server process costs; Rss (VmRSS) counts shared pages in full.
type ProcMem struct {
	RssKiB int64 `json:"rss_kib"`
	PssKiB int64 `json:"pss_kib"`
	FDs    int   `json:"fds"`
	// CPUSeconds is the user plus system CPU time the process has used so far.
	CPUSeconds float64 `json:"cpu_seconds"`
}

// ReadProcMem reads VmRSS from /proc/PID/status, Pss from /proc/PID/smaps_rollup (left 0
// where the kernel lacks it), the CPU time from /proc/PID/stat, and counts /proc/PID/fd.
func ReadProcMem(pid int) (ProcMem, error) {
	var m ProcMem
	dir := "/proc/" + strconv.Itoa(pid)
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return ProcMem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	if m.RssKiB, err = kibField(status, "VmRSS:"); err != nil {
		return ProcMem{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if b, err := os.ReadFile(dir + "/smaps_rollup"); err == nil {
		m.PssKiB, _ = kibField(b, "Pss:")
	}
	fds, err := CountFDs(pid)
	if err != nil {
		return ProcMem{}, err
	}
	m.FDs = fds
	if m.CPUSeconds, err = ReadCPU(pid); err != nil {
		return ProcMem{}, err
	}
	return m, nil
}

// readProcMems sums ReadProcMem over several processes (a fleet of servers).
func readProcMems(pids []int) (ProcMem, error) {
	var sum ProcMem
	for _, pid := range pids {
		m, err := ReadProcMem(pid)
		if err != nil {
			return ProcMem{}, err
		}
		sum.RssKiB += m.RssKiB
		sum.PssKiB += m.PssKiB
		sum.FDs += m.FDs
		sum.CPUSeconds += m.CPUSeconds
	}
	return sum, nil
}

// sumCPU sums ReadCPU over several processes (0 for none).
func sumCPU(pids []int) (float64, error) { return sumOver(pids, ReadCPU) }

// sumRunTime sums ReadRunTime over several processes (0 for none).
func sumRunTime(pids []int) (float64, error) { return sumOver(pids, ReadRunTime) }

// sumOver sums read over several processes.
func sumOver(pids []int, read func(pid int) (float64, error)) (float64, error) {
	var sum float64
	for _, pid := range pids {
		c, err := read(pid)
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

// ReadRunTime returns the CPU seconds pid's live threads have run, from each thread's
// schedstat (nanoseconds). A fleet run costs Redis a few milliseconds, which ReadCPU's 10 ms
// ticks read as 0 or 10 ms; this resolves it. Threads that have exited are not counted, so it
// suits processes whose threads live as long as they do (redis-server's).
func ReadRunTime(pid int) (float64, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("read threads of pid %d: %w", pid, err)
	}
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended meanwhile
		}
		if err != nil {
			return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
		}
		run, err := parseSchedstat(b)
		if err != nil {
			return 0, fmt.Errorf("pid %d thread %s: %w", pid, t.Name(), err)
		}
		ns += run
	}
	return float64(ns) / 1e9, nil
}

// parseSchedstat reads the first field of a schedstat line: nanoseconds spent running.
func parseSchedstat(b []byte) (int64, error) {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("empty schedstat")
	}
	run, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("malformed schedstat %q: %w", bytes.TrimSpace(b), err)
	}
	return run, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux ABI Go
// supports (the kernel fixes it for userspace regardless of CONFIG_HZ).
const clockTicks = 100

// ReadCPU returns the user plus system CPU seconds pid has used (10 ms resolution).
func ReadCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a /proc/PID/stat line. The
// command name in parentheses may hold spaces, so fields are counted after the last ')'.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed utime/stime in /proc stat line")
	}
	return float64(utime+stime) / clockTicks, nil
}

// CountFDs counts the open file descriptors of pid.
func CountFDs(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, fmt.Errorf("open fd table of pid %d: %w", pid, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return 0, fmt.Errorf("list fds of pid %d: %w", pid, err)
	}
	return len(names), nil
}

// kibField finds a line "Name:   1234 kB" and returns 1234.
func kibField(b []byte, name string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		f := strings.Fields(line[len(name):])
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("field %s: %w", name, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("field %s not found", name)
}

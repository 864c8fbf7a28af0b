package client

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/testenv"
)

// minNode is the oldest Node whose test runner (`node --test` discovering tests/*.test.js,
// --test-reporter) and globals (atob, TextDecoder, queueMicrotask) the client and its tests
// rely on; Debian 12's nodejs (18.19) is newer.
var minNode = [2]int{18, 15}

// TestJavaScriptClient runs the client's unit tests with `node --test` in this directory: a
// fake clock and an in-process fake server drive the client through backoff, close codes,
// cursors and token refresh. It fails if any of them fails, or if none ran.
func TestJavaScriptClient(t *testing.T) {
	node := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap")
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	total, fail := tapCount(out.String(), "tests"), tapCount(out.String(), "fail")
	if err != nil || fail != 0 {
		t.Fatalf("node --test: %v (%d of %d failed)\n%s", err, fail, total, failures(out.String()))
	}
	if total == 0 {
		t.Fatalf("node --test ran no tests; output:\n%s", out.String())
	}
	t.Logf("node --test: %d tests passed", total)
}

// tapCount reads a summary line such as "# tests 56" of node's TAP output; -1 when absent.
func tapCount(out, name string) int {
	m := regexp.MustCompile(`(?m)^# ` + name + ` (\d+)$`).FindStringSubmatch(out)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// failures keeps what a reader needs from a failed run: each failing test with its YAML
// diagnostics, or the whole output when there is no such line (node itself failed).
func failures(out string) string {
	var b strings.Builder
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		if !strings.Contains(line, "not ok ") {
			continue
		}
		b.WriteString(line + "\n")
		for _, diag := range lines[i+1:] {
			if strings.Contains(diag, "ok ") || strings.HasPrefix(diag, "# ") {
				break
			}
			b.WriteString(diag + "\n")
		}
	}
	if b.Len() == 0 {
		return out
	}
	return b.String()
}

// requireNode returns the node binary when it is recent enough; otherwise the test skips
// saying what to install, except under CI=true where that is a failure (see internal/testenv).
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found: apt-get install nodejs")
		return ""
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	version := strings.TrimSpace(string(out))
	var major, minor int
	if _, err := fmt.Sscanf(version, "v%d.%d", &major, &minor); err != nil {
		t.Fatalf("node --version: unexpected %q", version)
	}
	if major < minNode[0] || major == minNode[0] && minor < minNode[1] {
		testenv.Missing(t, fmt.Sprintf("node %s is too old: the client's tests need node >= %d.%d", version, minNode[0], minNode[1]))
	}
	return node
}

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/internal/servicetest"
	"github.com/huleedu/websocket-service/internal/testenv"
)

// README.md's "Five minutes with it", run as a new user would: the commands are read from the
// README itself, so a README change that does not work fails here. The first terminal runs
// `make run`; the second is a fresh shell that knows nothing of make's variables.
//
// One deviation, for a shared machine: the server listens on a free loopback port instead of
// 8004 (WEBSOCKET_SERVICE_HOST/PORT in both terminals, `localhost:8004` rewritten in the
// commands), since tests never rely on a fixed port being free.

var (
	fence        = regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")
	assignment   = regexp.MustCompile(`^([A-Z_][A-Z0-9_]*)=\$\(`) // VAR=$(command): the shell keeps VAR
	singleQuoted = regexp.MustCompile(`'([^']*)'`)
	// The first `new WebSocket(...)` URL of the tour's client code, a JS template literal.
	jsSocketURL = regexp.MustCompile("new WebSocket\\(`([^`]+)`")
	jsEcho      = regexp.MustCompile(`ws\.send\('([^']*)'\);\s*// → "([^"]*)"`)
)

// tourStep is one fenced block of the tour.
type tourStep struct{ lang, body string }

// readmeTour returns the fenced blocks of the "Five minutes with it" section, in order.
func readmeTour(t *testing.T, readme string) []tourStep {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Five minutes with it\n")
	if !ok {
		t.Fatal(`README.md has no "## Five minutes with it" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var steps []tourStep
	for _, m := range fence.FindAllStringSubmatch(section, -1) {
		steps = append(steps, tourStep{lang: m[1], body: m[2]})
	}
	if len(steps) == 0 {
		t.Fatal("the tour has no code blocks")
	}
	return steps
}

// shellCommands splits a shell block into its commands: continuation lines joined, comments
// and blank lines dropped.
func shellCommands(block string) []string {
	var cmds []string
	var cur strings.Builder
	for _, line := range strings.Split(block, "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if body, more := strings.CutSuffix(trimmed, `\`); more {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmds = append(cmds, cur.String())
		cur.Reset()
	}
	return cmds
}

// publishedPayload is what a client should receive from a publish command: the message of a
// curl body, else the command's last single-quoted argument.
func publishedPayload(t *testing.T, cmd string) string {
	t.Helper()
	quoted := singleQuoted.FindAllStringSubmatch(cmd, -1)
	if len(quoted) == 0 {
		t.Fatalf("cannot tell what %q publishes", cmd)
	}
	if !strings.HasPrefix(cmd, "curl ") {
		return quoted[len(quoted)-1][1]
	}
	for _, q := range quoted {
		var body struct {
			Message json.RawMessage `json:"message"`
		}
		if json.Unmarshal([]byte(q[1]), &body) == nil && body.Message != nil {
			return string(body.Message)
		}
	}
	t.Fatalf("cannot find the message of %q", cmd)
	return ""
}

// sameJSON compares two texts as JSON values when both are JSON, else as text.
func sameJSON(a, b string) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, []byte(a)) != nil || json.Compact(&cb, []byte(b)) != nil {
		return a == b
	}
	return ca.String() == cb.String()
}

// terminalEnv is the environment of a fresh terminal: this process's, without any
// WEBSOCKET_SERVICE_* variable and without what make passes to its children.
func terminalEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, config.Prefix) || strings.HasPrefix(k, "MAKE") || k == "MFLAGS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// shell runs one command line with bash in dir and returns its standard output.
func shell(t *testing.T, dir string, env []string, timeout time.Duration, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", script, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// startMakeRun runs the tour's server command in its own process group (make, go run and the
// service), waits until /healthz answers, and stops the group when the test ends.
func startMakeRun(t *testing.T, dir string, env []string, command, addr string) {
	t.Helper()
	cmd := exec.Command("bash", "-c", command)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// SIGINT, as Ctrl-C in the terminal would: the service drains (no connection is left)
		// and exits; whatever remains of the group after that is killed.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(40 * time.Second):
			t.Errorf("%s did not stop within 40 s of SIGINT", command)
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", command, out.String())
		}
	})
	// go run compiles the service first; on a loaded machine from a cold cache that is slow.
	awaitOK(t, "http://"+addr+"/healthz", 5*time.Minute, exited, out.String)
}

func TestReadmeFiveMinuteTourWorksAsWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the service several times through go run")
	}
	for _, tool := range []string{"make", "bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, "the README tour needs "+tool)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, ".env")); err == nil {
		t.Skip("a .env in the repository root would configure the tour; the test needs a clean checkout")
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(freePort(t))
	addr := "127.0.0.1:" + port
	listen := []string{config.Prefix + "HOST=127.0.0.1", config.Prefix + "PORT=" + port}
	local := func(s string) string { return strings.ReplaceAll(s, "localhost:8004", "localhost:"+port) }

	vars := map[string]string{} // shell variables the second terminal has set so far
	secondTerminal := func() []string {
		env := terminalEnv(listen...)
		for k, v := range vars {
			env = append(env, k+"="+v)
		}
		return env
	}
	var client *servicetest.Client
	published := 0
	serverStarted := false
	for _, step := range readmeTour(t, string(readme)) {
		switch step.lang {
		case "sh":
			for _, cmd := range shellCommands(step.body) {
				cmd = local(cmd)
				switch {
				case !serverStarted:
					if cmd != "make run" {
						t.Fatalf("the tour's first command is %q; this test expects make run", cmd)
					}
					startMakeRun(t, root, terminalEnv(listen...), cmd, addr)
					serverStarted = true
				case assignment.MatchString(cmd):
					name := assignment.FindStringSubmatch(cmd)[1]
					vars[name] = strings.TrimSpace(shell(t, root, secondTerminal(), 5*time.Minute, cmd+"\nprintf '%s' \"$"+name+"\""))
					if vars[name] == "" {
						t.Fatalf("%s left %s empty", cmd, name)
					}
				default:
					if client == nil {
						t.Fatalf("%q publishes before the tour connects a client", cmd)
					}
					want := publishedPayload(t, cmd)
					shell(t, root, secondTerminal(), 5*time.Minute, cmd)
					if got := client.NextText(t, 2*wait); !sameJSON(got, want) {
						t.Fatalf("after %q the client received %q, want %q", cmd, got, want)
					}
					published++
				}
			}
		case "js":
			m := jsSocketURL.FindStringSubmatch(step.body)
			if m == nil {
				t.Fatal("the tour's client code has no new WebSocket(`...`) URL")
			}
			url := local(m[1])
			for k, v := range vars {
				url = strings.ReplaceAll(url, "${"+k+"}", v)
			}
			client = servicetest.Dial(t, url)
			if echo := jsEcho.FindStringSubmatch(step.body); echo != nil {
				client.Send(t, echo[1])
				if got := client.NextText(t, 2*wait); got != echo[2] {
					t.Fatalf("sent %q, received %q, want %q", echo[1], got, echo[2])
				}
			}
		}
	}
	if published == 0 {
		t.Fatal("the tour publishes nothing")
	}
	// Closed before make run is stopped, so the drain has nothing to spread over its window.
	_ = client.Conn.WriteClose(1000, nil)
	client.WaitClose(t, wait)
}

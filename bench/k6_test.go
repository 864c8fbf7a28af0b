package bench

import (
	"fmt"
	"github.com/huleedu/websocket-service/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The k6 script is not run with k6 here (not installed, and not ours to install); node
// parses it as an ES module and runs one iteration with the k6 modules replaced by shims
// (bench/k6/check), which catches syntax errors, misspelt names and broken accounting.

// k6Shims maps each k6 module the script may import to the body of its stand-in.
func k6Shims() map[string]string {
	return map[string]string{
		"k6":          "export * from './shims.mjs';\nimport s from './shims.mjs';\nexport default s;\n",
		"k6/ws":       "import { ws } from './shims.mjs';\nexport default ws;\n",
		"k6/metrics":  "export { Counter, Trend, Rate, Gauge } from './shims.mjs';\n",
		"k6/encoding": "import { encoding } from './shims.mjs';\nexport default encoding;\n",
		"k6/crypto":   "import { crypto } from './shims.mjs';\nexport default crypto;\n",
	}
}

// checkK6Script parses script with node and runs it against the shims.
func checkK6Script(t *testing.T, node, script string) error {
	t.Helper()
	src, err := os.ReadFile(script)
	if err != nil {
		return err
	}
	dir := t.TempDir()
	// A .mjs name makes node parse it as a module; --check only parses.
	plain := filepath.Join(dir, "script.mjs")
	if err := os.WriteFile(plain, src, 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(node, "--check", plain).CombinedOutput(); err != nil {
		return fmt.Errorf("node --check: %v\n%s", err, out)
	}
	shims := k6Shims()
	k6Import := regexp.MustCompile(`from\s+'(k6(?:/[a-z]+)?)'`)
	var missing []string
	rewritten := k6Import.ReplaceAllStringFunc(string(src), func(m string) string {
		mod := k6Import.FindStringSubmatch(m)[1]
		if _, ok := shims[mod]; !ok {
			missing = append(missing, mod)
		}
		return "from './" + strings.ReplaceAll(mod, "/", "-") + ".mjs'"
	})
	if len(missing) > 0 {
		return fmt.Errorf("no shim for %v: add one to k6Shims and bench/k6/check/shims.mjs", missing)
	}
	for mod, body := range shims {
		if err := os.WriteFile(filepath.Join(dir, strings.ReplaceAll(mod, "/", "-")+".mjs"), []byte(body), 0o600); err != nil {
			return err
		}
	}
	for _, f := range []string{"shims.mjs", "run.mjs"} {
		b, err := os.ReadFile(filepath.Join("k6", "check", f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return err
		}
	}
	shimmed := filepath.Join(dir, "shimmed.mjs")
	if err := os.WriteFile(shimmed, []byte(rewritten), 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(node, filepath.Join(dir, "run.mjs"), shimmed).CombinedOutput(); err != nil {
		return fmt.Errorf("shimmed run: %v\n%s", err, out)
	}
	return nil
}

func nodeBinary(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node not found: apt-get install nodejs")
	}
	return node
}

func TestK6ScriptParsesAndCounts(t *testing.T) {
	node := nodeBinary(t)
	if err := checkK6Script(t, node, filepath.Join("k6", "notifications.js")); err != nil {
		t.Fatal(err)
	}
}

// TestK6CheckCatchesBrokenScripts proves the check above can fail.
func TestK6CheckCatchesBrokenScripts(t *testing.T) {
	node := nodeBinary(t)
	src, err := os.ReadFile(filepath.Join("k6", "notifications.js"))
	if err != nil {
		t.Fatal(err)
	}
	breakages := map[string]func(string) string{
		"syntax error": func(s string) string { return s + "\nexport default function ( {\n" },
		"undefined name": func(s string) string {
			return strings.Replace(s, "notifications.add(1);\n  if", "notificationz.add(1);\n  if", 1)
		},
		"unshimmed module": func(s string) string { return "import http from 'k6/http';\n" + s },
		"counts nothing":   func(s string) string { return strings.ReplaceAll(s, "notifications.add(1);", "") },
	}
	for name, breakIt := range breakages {
		broken := breakIt(string(src))
		if broken == string(src) {
			t.Fatalf("%s: the breakage did not change the script", name)
		}
		path := filepath.Join(t.TempDir(), "broken.js")
		if err := os.WriteFile(path, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := checkK6Script(t, node, path); err == nil {
			t.Errorf("%s: the check passed a broken script", name)
		}
	}
}

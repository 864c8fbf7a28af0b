package deploy

import (
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/huleedu/websocket-service/config"
)

// repoRoot is the module root: the tests run in deploy/.
const repoRoot = ".."

// runtimeVars are environment variables that are not the service's configuration but are
// read by the Go runtime; a manifest may set them without being drift.
var runtimeVars = map[string]bool{
	"GOMAXPROCS": true,
	"GOMEMLIMIT": true,
	"GOGC":       true,
	"GODEBUG":    true,
	"TZ":         true,
}

// configVarNames returns every variable config.Config reads, with config.Prefix, by
// reflecting over its `env` tags: the same definition the service parses, so a renamed or
// removed variable is noticed here without a second list to maintain.
func configVarNames() map[string]bool {
	names := map[string]bool{}
	collectEnvTags(reflect.TypeOf(config.Config{}), config.Prefix, names)
	return names
}

func collectEnvTags(t reflect.Type, prefix string, names map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("env")
		name, _, _ := strings.Cut(tag, ",")
		if f.Type.Kind() == reflect.Struct && f.Type.NumMethod() == 0 && (!ok || name == "") {
			// A nested struct groups variables (caarlos0/env: envPrefix on the field).
			collectEnvTags(f.Type, prefix+f.Tag.Get("envPrefix"), names)
			continue
		}
		if !ok || name == "" || name == "-" {
			continue
		}
		names[prefix+name] = true
	}
}

// checkVarName reports a name that is neither a configuration variable nor a Go runtime
// variable. where says which file and field it came from.
func checkVarName(known map[string]bool, where, name string) error {
	if strings.HasPrefix(name, config.Prefix) {
		if !known[name] {
			return fmt.Errorf("%s: %s is not a variable of config.Config (known: %s)", where, name, strings.Join(sortedKeys(known), ", "))
		}
		return nil
	}
	if !runtimeVars[name] {
		return fmt.Errorf("%s: %s has no %s prefix and is not a Go runtime variable: the service ignores it", where, name, config.Prefix)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// path joins p to the repository root.
func path(p ...string) string { return filepath.Join(append([]string{repoRoot}, p...)...) }

func TestConfigReflectionSeesEveryVariable(t *testing.T) {
	// Guards the reflection itself: if config.Config changed shape (say, nested structs)
	// and the walk missed variables, every name check below would be vacuous.
	known := configVarNames()
	for _, want := range []string{"PORT", "SHUTDOWN_DRAIN_TIMEOUT", "JWT_SECRET_KEY", "REDIS_URL", "ALLOWED_ORIGINS"} {
		if !known[config.Prefix+want] {
			t.Errorf("reflection over config.Config missed %s%s; found %v", config.Prefix, want, sortedKeys(known))
		}
	}
	if n := reflect.TypeOf(config.Config{}).NumField(); len(known) < n/2 {
		t.Errorf("found %d variables in %d fields of config.Config", len(known), n)
	}
}

package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/huleedu/websocket-service/config"
)

// binaryPath is where the image keeps the service binary; ENTRYPOINT and HEALTHCHECK run it.
const binaryPath = "/websocket-service"

// mainPackage is the package the image must build.
const mainPackage = "./cmd/websocket-service"

// dockerfile is a parsed Dockerfile.
type dockerfile struct {
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand
	// lint holds the findings of buildkit's lint rules, "RuleName: message (line N)".
	lint []string
}

// parseDockerfile parses data with buildkit's parser and instruction parser, running the
// lint rules buildkit applies while parsing and, by hand, the stage-level rules it applies
// while converting to LLB (dockerfile2llb is too heavy a dependency for a test).
func parseDockerfile(data []byte) (*dockerfile, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	df := &dockerfile{}
	warn := func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		df.lint = append(df.lint, fmt.Sprintf("%s: %s (line %d)", rule, msg, line))
	}
	for _, w := range res.Warnings {
		var loc []parser.Range
		if w.Location != nil {
			loc = []parser.Range{*w.Location}
		}
		warn(w.URL, "", "", w.Short, loc)
	}
	lint := linter.New(&linter.Config{Warn: warn})
	df.stages, df.metaArgs, err = instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, fmt.Errorf("instructions: %w", err)
	}
	lintStages(df.stages, lint)
	return df, nil
}

// lintStages applies buildkit's rules that dockerfile2llb runs, with buildkit's own rule
// definitions and messages: consistent instruction casing, stage names, exec-form CMD and
// ENTRYPOINT, one CMD/ENTRYPOINT/HEALTHCHECK per stage, key=value ENV/LABEL, absolute WORKDIR.
func lintStages(stages []instructions.Stage, lint *linter.Linter) {
	names := map[string]bool{}
	var upper, lower int
	for _, st := range stages {
		for _, n := range append([]string{st.OrigCmd}, cmdNames(st)...) {
			switch n {
			case strings.ToUpper(n):
				upper++
			case strings.ToLower(n):
				lower++
			}
		}
	}
	majority, casing := strings.ToUpper, "uppercase"
	if lower > upper {
		majority, casing = strings.ToLower, "lowercase"
	}
	for _, st := range stages {
		if st.OrigCmd != majority(st.OrigCmd) {
			lint.Run(&linter.RuleConsistentInstructionCasing, st.Location, linter.RuleConsistentInstructionCasing.Format(st.OrigCmd, casing))
		}
		if st.Name != "" {
			if st.Name == "scratch" || st.Name == "context" {
				lint.Run(&linter.RuleReservedStageName, st.Location, linter.RuleReservedStageName.Format(st.Name))
			}
			if names[st.Name] {
				lint.Run(&linter.RuleDuplicateStageName, st.Location, linter.RuleDuplicateStageName.Format(st.Name))
			}
			names[st.Name] = true
		}
		once := map[string]bool{}
		workdirAbsolute := false
		for _, c := range st.Commands {
			if c.Name() != majority(c.Name()) {
				lint.Run(&linter.RuleConsistentInstructionCasing, c.Location(), linter.RuleConsistentInstructionCasing.Format(c.Name(), casing))
			}
			switch c := c.(type) {
			case *instructions.CmdCommand, *instructions.EntrypointCommand, *instructions.HealthCheckCommand:
				name := strings.ToUpper(c.Name())
				if once[name] {
					lint.Run(&linter.RuleMultipleInstructionsDisallowed, c.Location(), linter.RuleMultipleInstructionsDisallowed.Format(c.Name()))
				}
				once[name] = true
			}
			switch c := c.(type) {
			case *instructions.CmdCommand:
				if c.PrependShell {
					lint.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
				}
			case *instructions.EntrypointCommand:
				if c.PrependShell {
					lint.Run(&linter.RuleJSONArgsRecommended, c.Location(), linter.RuleJSONArgsRecommended.Format(c.Name()))
				}
			case *instructions.EnvCommand:
				for _, e := range c.Env {
					if e.NoDelim {
						lint.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
					}
				}
			case *instructions.LabelCommand:
				for _, l := range c.Labels {
					if l.NoDelim {
						lint.Run(&linter.RuleLegacyKeyValueFormat, c.Location(), linter.RuleLegacyKeyValueFormat.Format(c.Name()))
					}
				}
			case *instructions.WorkdirCommand:
				if strings.HasPrefix(c.Path, "/") {
					workdirAbsolute = true
				} else if !workdirAbsolute {
					lint.Run(&linter.RuleWorkdirRelativePath, c.Location(), linter.RuleWorkdirRelativePath.Format(c.Path))
				}
			}
		}
	}
}

func cmdNames(st instructions.Stage) []string {
	out := make([]string, 0, len(st.Commands))
	for _, c := range st.Commands {
		out = append(out, c.Name())
	}
	return out
}

// checkDockerfile checks the image definition against the service: a multi-stage build of
// the static binary with version information, on a pinned non-root runtime image that
// exposes the default PORT, health-checks with the binary and runs the binary as ENTRYPOINT.
// runAsUser, when not nil, is the Deployment's uid, which must be the image's USER.
func checkDockerfile(data []byte, goDirective string, runAsUser *int64) error {
	df, err := parseDockerfile(data)
	if err != nil {
		return fmt.Errorf("Dockerfile: %w", err)
	}
	var p problems
	for _, l := range df.lint {
		p.addf("Dockerfile: lint %s", l)
	}
	if len(df.stages) < 2 {
		return errors.Join(append(p, fmt.Errorf("Dockerfile: %d stage(s); want a builder stage and a runtime stage", len(df.stages)))...)
	}
	for _, st := range df.stages {
		if slices.ContainsFunc(df.stages, func(s instructions.Stage) bool { return s.Name != "" && s.Name == st.BaseName }) {
			continue // FROM an earlier stage
		}
		if tag := imageTag(st.BaseName); tag == "" || tag == "latest" {
			p.addf("Dockerfile: FROM %s is not pinned to a version", st.BaseName)
		}
		if strings.Contains(st.BaseName, "$") {
			p.addf("Dockerfile: FROM %s depends on a build argument; the checks need a literal image", st.BaseName)
		}
	}
	p = append(p, checkBuilder(df.stages, goDirective)...)
	p = append(p, checkRuntime(df.stages[len(df.stages)-1], df.stages, runAsUser)...)
	return p.err()
}

// checkBuilder: the stage that builds the binary uses a Go at least as new as go.mod asks
// for, caches modules and builds in cache mounts, and builds mainPackage statically with the
// version variables of package main set.
func checkBuilder(stages []instructions.Stage, goDirective string) problems {
	var p problems
	var build *instructions.RunCommand
	var builder instructions.Stage
	for _, st := range stages {
		for _, c := range st.Commands {
			if r, ok := c.(*instructions.RunCommand); ok && strings.Contains(strings.Join(r.CmdLine, " "), "go build") {
				build, builder = r, st
			}
		}
	}
	if build == nil {
		return append(p, errors.New("Dockerfile: no stage runs `go build`"))
	}
	if !strings.HasPrefix(builder.BaseName, "golang:") {
		p.addf("Dockerfile: the builder stage is FROM %s, not a golang image", builder.BaseName)
	} else if tag := imageTag(builder.BaseName); !goAtLeast(tag, goDirective) {
		p.addf("Dockerfile: builder image %s is older than go.mod's go %s", builder.BaseName, goDirective)
	}
	line := strings.Join(build.CmdLine, " ")
	for _, want := range []string{"CGO_ENABLED=0", mainPackage, "-X main.version=", "-X main.commit=", "-o "} {
		if !strings.Contains(line, want) {
			p.addf("Dockerfile: the go build command lacks %q: %s", want, line)
		}
	}
	var cacheTargets []string
	for _, st := range stages {
		for _, c := range st.Commands {
			if r, ok := c.(*instructions.RunCommand); ok {
				// Mount options are evaluated when the build expands variables; the
				// identity expander does that without build arguments.
				if err := r.Expand(func(w string) (string, error) { return w, nil }); err != nil {
					p.addf("Dockerfile: RUN --mount: %v", err)
					continue
				}
				for _, m := range instructions.GetMounts(r) {
					if m.Type == instructions.MountTypeCache {
						cacheTargets = append(cacheTargets, m.Target)
					}
				}
			}
		}
	}
	for _, want := range []string{"/go/pkg/mod", "/root/.cache/go-build"} {
		if !slices.Contains(cacheTargets, want) {
			p.addf("Dockerfile: no RUN --mount=type=cache,target=%s (cache mounts seen: %v)", want, cacheTargets)
		}
	}
	return p
}

// goAtLeast reports whether a golang image tag can build a module whose go directive is
// directive. The official images set GOTOOLCHAIN=local, so the image's own Go must do. A
// floating tag ("1.26") tracks the newest patch release and satisfies any 1.26.x; a patch
// tag ("1.26.3-bookworm") must be at least the directive's patch.
func goAtLeast(tag, directive string) bool {
	parse := func(v string) ([]int, bool) {
		v, _, _ = strings.Cut(v, "-")
		var out []int
		for _, part := range strings.Split(v, ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				return nil, false
			}
			out = append(out, n)
		}
		return out, len(out) >= 2
	}
	have, ok1 := parse(tag)
	want, ok2 := parse(directive)
	if !ok1 || !ok2 {
		return false
	}
	for i := 0; i < len(have) && i < len(want); i++ {
		if have[i] != want[i] {
			return have[i] > want[i]
		}
	}
	return true
}

// checkRuntime: the final stage copies the binary from a build stage, runs as a non-root
// USER (the Deployment's uid), exposes only the default PORT, health-checks with the binary's
// healthcheck subcommand and has the binary as exec-form ENTRYPOINT.
func checkRuntime(final instructions.Stage, stages []instructions.Stage, runAsUser *int64) problems {
	var p problems
	def, _ := config.FromMap(map[string]string{})
	var user string
	var exposed []string
	var health *instructions.HealthCheckCommand
	var entry *instructions.EntrypointCommand
	var copied bool
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.HealthCheckCommand:
			health = c
		case *instructions.EntrypointCommand:
			entry = c
		case *instructions.CopyCommand:
			if c.From != "" && c.DestPath == binaryPath {
				copied = slices.ContainsFunc(stages[:len(stages)-1], func(s instructions.Stage) bool { return s.Name == c.From })
			}
		}
	}
	if !copied {
		p.addf("Dockerfile: the final stage does not COPY --from=<build stage> the binary to %s", binaryPath)
	}
	uid, _, _ := strings.Cut(user, ":")
	switch {
	case user == "":
		p.addf("Dockerfile: the final stage has no USER; it would run as root")
	case uid == "0" || uid == "root":
		p.addf("Dockerfile: the final stage runs as USER %s", user)
	case runAsUser != nil && uid != strconv.FormatInt(*runAsUser, 10):
		p.addf("Dockerfile: USER %s differs from the Deployment's runAsUser %d", user, *runAsUser)
	}
	if want := strconv.Itoa(def.Port); len(exposed) != 1 || strings.TrimSuffix(exposed[0], "/tcp") != want {
		p.addf("Dockerfile: EXPOSE %v, want exactly the default PORT %s", exposed, want)
	}
	switch {
	case health == nil || health.Health == nil:
		p.addf("Dockerfile: the final stage has no HEALTHCHECK")
	case !slices.Equal(health.Health.Test, []string{"CMD", binaryPath, "healthcheck"}):
		p.addf("Dockerfile: HEALTHCHECK %v, want CMD [%q, \"healthcheck\"] (the image has no shell or curl)", health.Health.Test, binaryPath)
	}
	switch {
	case entry == nil:
		p.addf("Dockerfile: the final stage has no ENTRYPOINT")
	case entry.PrependShell || len(entry.CmdLine) == 0 || entry.CmdLine[0] != binaryPath:
		p.addf("Dockerfile: ENTRYPOINT %v, want exec form [%q]", entry.CmdLine, binaryPath)
	}
	return p
}

// goDirective reads the go directive of go.mod.
func goDirective(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(path("go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(data); m != nil {
		return string(m[1])
	}
	t.Fatal("go.mod has no go directive")
	return ""
}

// checkDockerignore: the build context carries no secrets or VCS data, and none of the
// files the binary is built from (inputs, relative to the module root) is left out.
func checkDockerignore(data []byte, inputs []string) error {
	var p problems
	lines := dockerignoreLines(data)
	for _, must := range []string{".git", ".env"} {
		if ignoredBy(lines, must) == "" {
			p.addf(".dockerignore: does not exclude %s", must)
		}
	}
	for _, f := range inputs {
		if pattern := ignoredBy(lines, f); pattern != "" {
			p.addf(".dockerignore: %q excludes %s, which the build needs", pattern, f)
		}
	}
	return p.err()
}

// ignoredBy returns the .dockerignore line that excludes the slash-separated path rel (or
// one of its parent directories), or "". It follows Docker's rules closely enough for the
// patterns this repository uses: a plain or globbed path from the context root, and a
// leading "**/" matching at any depth.
func ignoredBy(lines []string, rel string) string {
	parts := strings.Split(rel, "/")
	for _, pattern := range lines {
		if strings.HasPrefix(pattern, "!") {
			continue
		}
		for end := 1; end <= len(parts); end++ {
			for start := 0; start < end; start++ {
				if start > 0 && !strings.HasPrefix(pattern, "**/") {
					break
				}
				candidate := strings.Join(parts[start:end], "/")
				if ok, _ := filepath.Match(strings.TrimPrefix(pattern, "**/"), candidate); ok {
					return pattern
				}
			}
		}
	}
	return ""
}

// dockerignoreLines returns the patterns of a .dockerignore, without comments, blank lines or
// leading and trailing slashes.
func dockerignoreLines(data []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, strings.TrimPrefix(strings.TrimSuffix(l, "/"), "/"))
		}
	}
	return lines
}

// buildInputs lists, relative to the module root, go.mod, go.sum and every non-test Go file
// of the module's packages that the service binary is built from.
func buildInputs(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{end}}{{end}}", mainPackage)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", mainPackage, err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{"go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		dir, err := filepath.Rel(root, fields[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields[1:] {
			inputs = append(inputs, filepath.ToSlash(filepath.Join(dir, f)))
		}
	}
	return inputs
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDockerfileBuildsStaticNonRootImageOfTheService(t *testing.T) {
	m := loadReal(t)
	if err := checkDockerfile(readFile(t, path("Dockerfile")), goDirective(t), runAsUser(m)); err != nil {
		t.Errorf("Dockerfile drifted from the code:%s", describe(err))
	}
}

// buildCommand returns the shell command of the Dockerfile's `go build` RUN.
func buildCommand(t *testing.T, df *dockerfile) string {
	t.Helper()
	for _, st := range df.stages {
		for _, c := range st.Commands {
			if r, ok := c.(*instructions.RunCommand); ok && r.PrependShell && strings.Contains(strings.Join(r.CmdLine, " "), "go build") {
				return strings.Join(r.CmdLine, " ")
			}
		}
	}
	t.Fatal("Dockerfile: no shell-form RUN with go build")
	return ""
}

func TestDockerfileBuildCommandStampsVersionIntoTheBinary(t *testing.T) {
	// No Docker engine here, so run the builder's command itself, through sh as the image
	// build would, with the build arguments as environment: it must compile, and the -X
	// flags must land in package main's variables (a renamed variable makes -X a silent
	// no-op and every image reports "dev").
	if testing.Short() {
		t.Skip("builds the binary")
	}
	df, err := parseDockerfile(readFile(t, path("Dockerfile")))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "websocket-service")
	cmdline := buildCommand(t, df)
	out := regexp.MustCompile(`-o \S+`)
	if !out.MatchString(cmdline) {
		t.Fatalf("the build command has no -o: %s", cmdline)
	}
	build := exec.Command("sh", "-c", out.ReplaceAllLiteralString(cmdline, "-o "+bin))
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "VERSION=v9.8.7-test", "COMMIT=0123abc")
	if output, err := build.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build command fails: %v\n%s\n%s", err, cmdline, output)
	}
	version := exec.Command(bin, "version")
	version.Dir = t.TempDir()
	output, err := version.Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	for _, want := range []string{"v9.8.7-test", "0123abc"} {
		if !strings.Contains(string(output), want) {
			t.Errorf("`websocket-service version` printed %q, want it to contain %q from the build arguments", output, want)
		}
	}
}

func TestDockerignoreKeepsSecretsOutAndSourcesIn(t *testing.T) {
	if err := checkDockerignore(readFile(t, path(".dockerignore")), buildInputs(t)); err != nil {
		t.Errorf("%s", describe(err))
	}
}

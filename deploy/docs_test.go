package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/huleedu/websocket-service/auth"
	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/telemetry"
)

// operationsDoc is the operator's guide these checks keep honest; resultsDoc holds the
// measurements it quotes, readmeDoc the user's introduction.
var (
	operationsDoc = path("docs", "OPERATIONS.md")
	resultsDoc    = path("bench", "RESULTS.md")
	readmeDoc     = path("README.md")
)

var (
	// varMention is a configuration variable named in prose or YAML.
	varMention = regexp.MustCompile(regexp.QuoteMeta(config.Prefix) + `[A-Z0-9_]+`)
	// tableVar is a variable documented as a row of the configuration table.
	tableVar = regexp.MustCompile("(?m)^\\| `(" + regexp.QuoteMeta(config.Prefix) + "[A-Z0-9_]+)` \\|")
	// metricMention is a metric of ours (or a process metric of the Go client) with optional
	// label matchers, or with a trailing * a family of them named by a prefix (`backplane_*`).
	metricMention = regexp.MustCompile(`\b((?:websocket|backplane|eventloop|process)_[a-z_]*)(\*)?(\{[^}]*\})?`)
	labelPair     = regexp.MustCompile(`([a-z_]+)="([^"]*)"`)
	heading       = regexp.MustCompile(`(?m)^#{2,4} (.+)$`)
	yamlBlock     = regexp.MustCompile("(?s)## Alert rules.*?```yaml\n(.*?)```")
	// capacitySection is the guide's sizing part, where figures quoted from RESULTS.md are
	// code spans starting with a digit, ≈ or ~.
	capacitySection = regexp.MustCompile(`(?s)\n## Capacity planning\n(.*?)\n## `)
	quotedFigure    = regexp.MustCompile("`([0-9≈~][^`]*)`")
	whitespace      = regexp.MustCompile(`\s+`)
)

// minQuotedFigures guards the figure check against passing vacuously (the marking lost).
const minQuotedFigures = 20

// exportedSeries returns the exposition of a fresh telemetry.Metrics: every series the service
// exports, by metric name, with each line's label pairs.
func exportedSeries() map[string][]string {
	m := telemetry.New()
	// Series that appear only once used: the epoll shard gauges and a histogram observation.
	m.ShardConnections(0, func() float64 { return 0 })
	m.ShardQueueBytes(0, func() float64 { return 0 })
	m.ShardsFailed(func() float64 { return 0 })
	m.Handshake(time.Now())
	var b bytes.Buffer
	m.WritePrometheus(&b)
	series := map[string][]string{}
	for _, line := range strings.Split(b.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(strings.Fields(line)[0], "{")
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			name = strings.TrimSuffix(name, suffix)
		}
		series[name] = append(series[name], rest)
	}
	return series
}

// checkDocVariables: the guide's configuration table has a row for every variable of
// config.Config, and the guide names no variable the service does not read.
func checkDocVariables(doc string) error {
	var p problems
	known := configVarNames()
	documented := map[string]bool{}
	for _, m := range tableVar.FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = true
	}
	for _, v := range sortedKeys(known) {
		if !documented[v] {
			p.addf("OPERATIONS.md: the configuration table has no row for %s", v)
		}
	}
	for _, v := range varMention.FindAllString(doc, -1) {
		if !known[v] {
			p.addf("OPERATIONS.md: mentions %s, which config.Config does not read", v)
		}
	}
	return p.err()
}

// exportedLabelValues returns every label value of series, e.g. backplane_unavailable (a
// result of websocket_connections_total): a word the guide may name on its own that looks
// like a metric but is not one.
func exportedLabelValues(series map[string][]string) map[string]bool {
	values := map[string]bool{}
	for _, lines := range series {
		for _, pair := range labelPair.FindAllStringSubmatch(strings.Join(lines, "\n"), -1) {
			values[pair[2]] = true
		}
	}
	return values
}

// exportsFamily reports whether some exported metric's name starts with prefix.
func exportsFamily(series map[string][]string, prefix string) bool {
	for name := range series {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// checkDocMetrics: every metric the guide (runbook, alert rules) names is exported, with the
// label values it uses; every family it names by prefix has an exported member.
func checkDocMetrics(doc string) error {
	var p problems
	seen := map[string]bool{}
	series := exportedSeries()
	labelValues := exportedLabelValues(series)
	for _, m := range metricMention.FindAllStringSubmatch(doc, -1) {
		name, family, matchers := m[1], m[2] != "", m[3]
		if name == "websocket_service" || seen[m[0]] {
			continue // websocket_service: the default SERVICE_NAME and the Compose service
		}
		seen[m[0]] = true
		if family {
			if !exportsFamily(series, name) {
				p.addf("OPERATIONS.md: no exported metric starts with %s", name)
			}
			continue
		}
		if matchers == "" && labelValues[name] {
			continue // a label value named on its own, not a metric
		}
		lines, ok := exportedMetric(series, name)
		if !ok {
			p.addf("OPERATIONS.md: metric %s is not exported by the service", name)
			continue
		}
		for _, pair := range labelPair.FindAllString(matchers, -1) {
			if !strings.Contains(strings.Join(lines, "\n"), pair) {
				p.addf("OPERATIONS.md: metric %s has no series with %s", name, pair)
			}
		}
	}
	return p.err()
}

// checkDocFigures: every figure the guide's capacity planning quotes appears in RESULTS.md
// as written (line breaks aside), so a re-measured RESULTS.md cannot leave the guide sizing
// pods from numbers nobody measured.
func checkDocFigures(doc, results string) error {
	m := capacitySection.FindStringSubmatch(doc)
	if m == nil {
		return errors.New(`OPERATIONS.md: no "## Capacity planning" section`)
	}
	results = whitespace.ReplaceAllString(results, " ")
	var p problems
	quoted := quotedFigure.FindAllStringSubmatch(m[1], -1)
	for _, q := range quoted {
		if fig := whitespace.ReplaceAllString(q[1], " "); !strings.Contains(results, fig) {
			p.addf("OPERATIONS.md quotes %q, which bench/RESULTS.md does not contain", fig)
		}
	}
	if len(quoted) < minQuotedFigures {
		p.addf("OPERATIONS.md: capacity planning marks %d quoted figures, fewer than %d", len(quoted), minQuotedFigures)
	}
	return p.err()
}

// checkDocLimits: the fixed token limits the docs state are the ones auth enforces.
func checkDocLimits(name, doc string) error {
	var p problems
	for _, want := range []string{
		fmt.Sprintf("%d KiB (%d bytes", auth.MaxTokenLength>>10, auth.MaxTokenLength),
		fmt.Sprintf("%d groups", auth.MaxGroups),
	} {
		if !strings.Contains(doc, want) {
			p.addf("%s does not state the limit %q", name, want)
		}
	}
	return p.err()
}

// alertRules is a Prometheus rule file, as much of it as the guide uses.
type alertRules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// slug is the anchor GitHub gives a heading.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// docAlertRules decodes, strictly, the rule file in the guide's "Alert rules" yaml block.
func docAlertRules(doc string) (alertRules, error) {
	m := yamlBlock.FindStringSubmatch(doc)
	if m == nil {
		return alertRules{}, errors.New(`OPERATIONS.md: no yaml block under "## Alert rules"`)
	}
	var rules alertRules
	if err := yaml.UnmarshalStrict([]byte(m[1]), &rules); err != nil {
		return alertRules{}, fmt.Errorf("OPERATIONS.md: alert rules: %w", err)
	}
	return rules, nil
}

// checkDocAlertRules: the alert rules block parses as a rule file, every rule has an
// expression, a severity and a runbook link to a section that exists.
func checkDocAlertRules(doc string) error {
	rules, err := docAlertRules(doc)
	if err != nil {
		return err
	}
	anchors := map[string]bool{}
	for _, h := range heading.FindAllStringSubmatch(doc, -1) {
		anchors[slug(h[1])] = true
	}
	var p problems
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				p.addf("OPERATIONS.md: alert rule %q has no alert name or expression", r.Alert)
			}
			if r.Labels["severity"] == "" {
				p.addf("OPERATIONS.md: alert %s has no severity label", r.Alert)
			}
			if _, anchor, ok := strings.Cut(r.Annotations["runbook"], "#"); !ok || !anchors[anchor] {
				p.addf("OPERATIONS.md: alert %s runbook %q points at no section", r.Alert, r.Annotations["runbook"])
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					p.addf("OPERATIONS.md: alert %s for: %v", r.Alert, err)
				}
			}
		}
	}
	if n == 0 {
		p.addf("OPERATIONS.md: the alert rules block has no rules")
	}
	return p.err()
}

func TestOperationsGuideDocumentsExactlyTheConfigVariables(t *testing.T) {
	if err := checkDocVariables(string(readFile(t, operationsDoc))); err != nil {
		t.Errorf("docs/OPERATIONS.md drifted from config.Config:%s", describe(err))
	}
}

func TestOperationsGuideNamesOnlyExportedMetrics(t *testing.T) {
	doc := string(readFile(t, operationsDoc)) + string(readFile(t, path("k8s", "hpa.yaml")))
	if err := checkDocMetrics(doc); err != nil {
		t.Errorf("docs/OPERATIONS.md or k8s/hpa.yaml names metrics the service does not export:%s", describe(err))
	}
}

func TestOperationsGuideAlertRulesParseAndLinkTheRunbook(t *testing.T) {
	if err := checkDocAlertRules(string(readFile(t, operationsDoc))); err != nil {
		t.Errorf("%s", describe(err))
	}
}

func TestOperationsGuideQuotesOnlyFiguresInBenchResults(t *testing.T) {
	if err := checkDocFigures(string(readFile(t, operationsDoc)), string(readFile(t, resultsDoc))); err != nil {
		t.Errorf("docs/OPERATIONS.md drifted from bench/RESULTS.md:%s", describe(err))
	}
}

func TestDocsStateTheTokenLimitsAuthEnforces(t *testing.T) {
	for name, p := range map[string]string{"docs/OPERATIONS.md": operationsDoc, "README.md": readmeDoc} {
		if err := checkDocLimits(name, string(readFile(t, p))); err != nil {
			t.Errorf("%s", describe(err))
		}
	}
}

// TestDocMetricMentions: what the metric check takes for a metric. A label value or a family
// named by prefix is not a metric to look up; a name nothing exports, or a family with no
// exported member, is a finding.
func TestDocMetricMentions(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"`backplane_*`, `eventloop_shard_*` and `websocket_recovery*`", ""},
		{"upgrades refused as `backplane_unavailable`", ""},
		{`websocket_connections_total{result="backplane_unavailable"}`, ""},
		{"`backplane_up`", "metric backplane_up is not exported"},
		{"`backplane_unavailable_total`", "metric backplane_unavailable_total is not exported"},
		{"`websocket_nothing_*`", "no exported metric starts with websocket_nothing_"},
		{`websocket_connections_total{result="backplane_up"}`, `no series with result="backplane_up"`},
	} {
		t.Run(c.text, func(t *testing.T) {
			err := checkDocMetrics(c.text)
			if c.want == "" {
				if err != nil {
					t.Fatalf("checkDocMetrics(%q) found:%s", c.text, describe(err))
				}
				return
			}
			expectFinding(t, err, c.want)
		})
	}
}

func TestDocChecksCatchDrift(t *testing.T) {
	doc := readFile(t, operationsDoc)
	results := string(readFile(t, resultsDoc))
	checkFigures := func(doc string) error { return checkDocFigures(doc, results) }
	for _, c := range []struct {
		name  string
		d     drift
		check func(string) error
	}{
		{"undocumented variable", drift{file: "OPERATIONS.md", old: "| `WEBSOCKET_SERVICE_SHARDS` |", new: "| SHARDS |", want: "no row for WEBSOCKET_SERVICE_SHARDS"}, checkDocVariables},
		{"unknown variable", drift{file: "OPERATIONS.md", old: "`WEBSOCKET_SERVICE_REDIS_URL` | unset", new: "`WEBSOCKET_SERVICE_REDIS_HOST` | unset", want: "WEBSOCKET_SERVICE_REDIS_HOST, which config.Config does not read"}, checkDocVariables},
		{"unknown metric", drift{file: "OPERATIONS.md", old: "min by (pod) (backplane_connected)", new: "min by (pod) (backplane_up)", want: "metric backplane_up is not exported"}, checkDocMetrics},
		{"unknown label value", drift{file: "OPERATIONS.md", old: `websocket_disconnects_total{code="1013"}[5m]`, new: `websocket_disconnects_total{code="4013"}[5m]`, want: `no series with code="4013"`}, checkDocMetrics},
		{"broken runbook link", drift{file: "OPERATIONS.md", old: `runbook: "docs/OPERATIONS.md#reconnect-storms"`, new: `runbook: "docs/OPERATIONS.md#storms"`, want: "points at no section"}, checkDocAlertRules},
		{"unknown rule field", drift{file: "OPERATIONS.md", old: "        for: 5m\n", new: "        duration: 5m\n", want: "unknown field"}, checkDocAlertRules},
		{"figure not in RESULTS.md", drift{file: "OPERATIONS.md", old: "`1.5–1.9 KB Pss`", new: "`1.4–1.9 KB Pss`", want: `quotes "1.4–1.9 KB Pss"`}, checkFigures},
		{"figure unmarked", drift{file: "OPERATIONS.md", old: "## Capacity planning\n", new: "## Capacity planning\n\n## Sizing\n", want: "fewer than"}, checkFigures},
		{"token limit", drift{file: "OPERATIONS.md", old: "256 groups", new: "512 groups", want: "does not state the limit"}, func(d string) error { return checkDocLimits("OPERATIONS.md", d) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectFinding(t, c.check(string(c.d.apply(t, doc))), c.d.want)
		})
	}
}

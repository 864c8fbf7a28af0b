package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// monitoringDir holds the optional monitoring objects: they need the Prometheus Operator's
// CRDs and a Grafana, so they are not resources of k8s/kustomization.yaml.
var monitoringDir = path("k8s", "monitoring")

const (
	ruleFile      = "prometheusrule.yaml"
	dashboardFile = "grafana-dashboard.json"
)

// externalMetrics are series the rules may read that the service does not export, each from
// a standard exporter of a Kubernetes cluster. Nothing else outside the service is allowed.
var externalMetrics = map[string]string{
	"kube_pod_status_ready":              "kube-state-metrics",
	"kube_pod_container_resource_limits": "kube-state-metrics",
	"container_memory_working_set_bytes": "cAdvisor",
}

// targetLabels are labels Prometheus attaches when it scrapes a pod; an expression may match
// on them though the exposition does not carry them.
var targetLabels = map[string]bool{"pod": true, "namespace": true, "instance": true, "job": true,
	"container": true, "service": true, "node": true, "endpoint": true}

// histogramSuffixes are the series names a histogram family is queried by.
var histogramSuffixes = []string{"_bucket", "_sum", "_count"}

// exportedMetric returns the exposition lines of metric name: an exported family, or one of
// its _bucket/_sum/_count series when the family is a histogram.
func exportedMetric(series map[string][]string, name string) ([]string, bool) {
	if lines, ok := series[name]; ok {
		return lines, true
	}
	for _, suffix := range histogramSuffixes {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if lines, ok := series[base]; ok && strings.Contains(strings.Join(lines, "\n"), `le="`) {
			return lines, true
		}
	}
	return nil, false
}

// matcher is one label matcher of a selector.
var matcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)

// checkQueries: every metric an expression reads is exported by the service (or one of
// externalMetrics), and every label it matches with = or =~ is one the metric carries, with
// a value it takes, or a scrape target label.
func checkQueries(where string, exprs []string) error {
	series := exportedSeries()
	var p problems
	for _, expr := range exprs {
		sels, err := promqlSelectors(expr)
		if err != nil {
			p.addf("%s: %v", where, err)
			continue
		}
		for _, s := range sels {
			if _, ok := externalMetrics[s.name]; ok {
				continue
			}
			lines, ok := exportedMetric(series, s.name)
			if !ok {
				p.addf("%s: metric %s is not exported by the service (in %q)", where, s.name, expr)
				continue
			}
			text := strings.Join(lines, "\n")
			for _, m := range matcher.FindAllStringSubmatch(s.matchers, -1) {
				label, op, value := m[1], m[2], m[3]
				switch {
				case !strings.Contains(text, label+`="`):
					if !targetLabels[label] {
						p.addf("%s: metric %s has no label %s", where, s.name, label)
					}
				case op == "=" && !strings.Contains(value, "$"):
					if !strings.Contains(text, label+`="`+value+`"`) {
						p.addf("%s: metric %s has no series with %s=%q", where, s.name, label, value)
					}
				case op == "=~" && !strings.ContainsAny(value, `$.*+?()[]\`):
					for _, alt := range strings.Split(value, "|") {
						if !strings.Contains(text, label+`="`+alt+`"`) {
							p.addf("%s: metric %s has no series with %s=%q", where, s.name, label, alt)
						}
					}
				}
			}
		}
	}
	return p.err()
}

// prometheusRule is a monitoring.coreos.com/v1 PrometheusRule, decoded strictly.
type prometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Spec alertRules `json:"spec"`
}

// maxConnectionsRule is the alert whose threshold is the ConfigMap's MAX_CONNECTIONS.
const maxConnectionsRule = "WebsocketConnectionsNearLimit"

var timesNumber = regexp.MustCompile(`\*\s*([0-9]+)\b`)

// checkPrometheusRule: the PrometheusRule decodes strictly, holds exactly the rules of the
// guide's alert rules block, reads only exported metrics, and its connection-limit alert
// uses the ConfigMap's MAX_CONNECTIONS.
func checkPrometheusRule(ruleYAML []byte, doc string, maxConnections string) error {
	var r prometheusRule
	if err := yaml.UnmarshalStrict(ruleYAML, &r); err != nil {
		return fmt.Errorf("%s: %w", ruleFile, err)
	}
	var p problems
	if r.APIVersion != "monitoring.coreos.com/v1" || r.Kind != "PrometheusRule" {
		p.addf("%s: apiVersion %q kind %q, want monitoring.coreos.com/v1 PrometheusRule", ruleFile, r.APIVersion, r.Kind)
	}
	documented, err := docAlertRules(doc)
	if err != nil {
		return err
	}
	if !reflect.DeepEqual(r.Spec, documented) {
		p.addf("%s: spec.groups differ from the alert rules block of OPERATIONS.md (rules %v there, %v here)",
			ruleFile, ruleNames(documented), ruleNames(r.Spec))
	}
	var exprs []string
	found := false
	for _, g := range r.Spec.Groups {
		for _, rule := range g.Rules {
			exprs = append(exprs, rule.Expr)
			if rule.Alert != maxConnectionsRule {
				continue
			}
			found = true
			if n := timesNumber.FindStringSubmatch(rule.Expr); n == nil || n[1] != maxConnections {
				p.addf("%s: %s does not compare with MAX_CONNECTIONS %s of configmap.yaml: %q", ruleFile, maxConnectionsRule, maxConnections, rule.Expr)
			}
		}
	}
	if !found {
		p.addf("%s: no %s alert", ruleFile, maxConnectionsRule)
	}
	if err := checkQueries(ruleFile, exprs); err != nil {
		p = append(p, err)
	}
	return p.err()
}

// checkAlertsExplained: the guide's alert table has a row for every rule of its block, so
// whoever is paged finds what the alert means and what to do.
func checkAlertsExplained(doc string) error {
	rules, err := docAlertRules(doc)
	if err != nil {
		return err
	}
	var p problems
	for _, name := range ruleNames(rules) {
		if !strings.Contains(doc, "\n| `"+name+"` | ") {
			p.addf("OPERATIONS.md: the alert table has no row for %s", name)
		}
	}
	return p.err()
}

func ruleNames(r alertRules) []string {
	var out []string
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			out = append(out, rule.Alert)
		}
	}
	return out
}

// dashboardPanel is as much of a Grafana panel as the checks read.
type dashboardPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashboardPanel `json:"panels"` // a collapsed row's panels
}

// dashboard is as much of a Grafana dashboard as the checks read.
type dashboard struct {
	Title      string           `json:"title"`
	UID        string           `json:"uid"`
	Panels     []dashboardPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// labelValues is a Grafana query variable over a metric's label.
var labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_]+)\s*\)$`)

// checkDashboard: the dashboard parses, every graph panel has a query, and every query (and
// query variable) reads only metrics the service exports.
func checkDashboard(data []byte) error {
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("%s: %w", dashboardFile, err)
	}
	var p problems
	if d.Title == "" || d.UID == "" {
		p.addf("%s: no title or uid", dashboardFile)
	}
	var exprs []string
	var walk func(panels []dashboardPanel)
	walk = func(panels []dashboardPanel) {
		for _, pn := range panels {
			if pn.Type == "row" {
				walk(pn.Panels)
				continue
			}
			if len(pn.Targets) == 0 {
				p.addf("%s: panel %q has no query", dashboardFile, pn.Title)
			}
			for _, t := range pn.Targets {
				if strings.TrimSpace(t.Expr) == "" {
					p.addf("%s: panel %q has an empty query", dashboardFile, pn.Title)
				}
				exprs = append(exprs, t.Expr)
			}
		}
	}
	walk(d.Panels)
	if len(exprs) == 0 {
		p.addf("%s: no panel queries anything", dashboardFile)
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			p.addf("%s: variable %s: query %q is not label_values(metric, label)", dashboardFile, v.Name, v.Definition)
			continue
		}
		exprs = append(exprs, m[1]+`{`+m[2]+`=~".+"}`)
	}
	if err := checkQueries(dashboardFile, exprs); err != nil {
		p = append(p, err)
	}
	return p.err()
}

// monitoringKustomization is k8s/monitoring/kustomization.yaml, decoded strictly.
type monitoringKustomization struct {
	APIVersion       string   `json:"apiVersion"`
	Kind             string   `json:"kind"`
	Resources        []string `json:"resources"`
	GeneratorOptions struct {
		DisableNameSuffixHash bool `json:"disableNameSuffixHash"`
	} `json:"generatorOptions"`
	ConfigMapGenerator []struct {
		Name    string            `json:"name"`
		Files   []string          `json:"files"`
		Options map[string]any    `json:"options,omitempty"`
		Labels  map[string]string `json:"labels,omitempty"`
	} `json:"configMapGenerator"`
}

// checkMonitoringKustomization: it applies the PrometheusRule and ships the dashboard as a
// ConfigMap Grafana's sidecar picks up, and names no file that is not there.
func checkMonitoringKustomization(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return err
	}
	var k monitoringKustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		return fmt.Errorf("k8s/monitoring/kustomization.yaml: %w", err)
	}
	var p problems
	if !slices.Contains(k.Resources, ruleFile) {
		p.addf("k8s/monitoring/kustomization.yaml: %s is not a resource", ruleFile)
	}
	shipped := false
	for _, g := range k.ConfigMapGenerator {
		if slices.Contains(g.Files, dashboardFile) && g.Labels["grafana_dashboard"] == "1" {
			shipped = true
		}
	}
	if !shipped {
		p.addf("k8s/monitoring/kustomization.yaml: no configMapGenerator ships %s with label grafana_dashboard: \"1\"", dashboardFile)
	}
	return p.err()
}

func maxConnectionsOf(t *testing.T) string {
	t.Helper()
	v := loadReal(t).configMap.Data["WEBSOCKET_SERVICE_MAX_CONNECTIONS"]
	if v == "" {
		t.Fatal("configmap.yaml sets no WEBSOCKET_SERVICE_MAX_CONNECTIONS")
	}
	return v
}

func TestPrometheusRuleIsTheGuidesAlertRulesOnExportedMetrics(t *testing.T) {
	rule := readFile(t, filepath.Join(monitoringDir, ruleFile))
	if err := checkPrometheusRule(rule, string(readFile(t, operationsDoc)), maxConnectionsOf(t)); err != nil {
		t.Errorf("%s", describe(err))
	}
}

func TestOperationsGuideExplainsEveryAlert(t *testing.T) {
	if err := checkAlertsExplained(string(readFile(t, operationsDoc))); err != nil {
		t.Errorf("%s", describe(err))
	}
}

func TestGrafanaDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	if err := checkDashboard(readFile(t, filepath.Join(monitoringDir, dashboardFile))); err != nil {
		t.Errorf("%s", describe(err))
	}
}

func TestMonitoringKustomizationShipsRuleAndDashboard(t *testing.T) {
	if err := checkMonitoringKustomization(monitoringDir); err != nil {
		t.Errorf("%s", describe(err))
	}
}

func TestMonitoringChecksCatchDrift(t *testing.T) {
	rule := readFile(t, filepath.Join(monitoringDir, ruleFile))
	dash := readFile(t, filepath.Join(monitoringDir, dashboardFile))
	doc := string(readFile(t, operationsDoc))
	maxConns := maxConnectionsOf(t)
	checkRule := func(r string) error { return checkPrometheusRule([]byte(r), doc, maxConns) }
	checkDash := func(d string) error { return checkDashboard([]byte(d)) }
	for _, c := range []struct {
		name  string
		d     drift
		data  []byte
		check func(string) error
	}{
		{"alert on a metric the service does not export", drift{file: ruleFile, old: "(process_open_fds / process_max_fds)", new: "(process_open_fds / process_fd_limit)", want: "metric process_fd_limit is not exported"}, rule, checkRule},
		{"alert label value never exported", drift{file: ruleFile, old: `{reason="slow_consumer"}`, new: `{reason="slow"}`, want: `no series with reason="slow"`}, rule, checkRule},
		{"rule missing from the guide", drift{file: ruleFile, old: "- alert: WebsocketPodNotReady", new: "- alert: WebsocketPodUnready", want: "differ from the alert rules block"}, rule, checkRule},
		{"limit not the ConfigMap's", drift{file: ruleFile, old: "> 0.9 * " + maxConns, new: "> 0.9 * 30000", want: "does not compare with MAX_CONNECTIONS"}, rule, checkRule},
		{"alert not explained", drift{file: "OPERATIONS.md", old: "| `WebsocketPodNotReady` |", new: "| PodNotReady |", want: "no row for WebsocketPodNotReady"}, []byte(doc), checkAlertsExplained},
		{"panel on a metric the service does not export", drift{file: dashboardFile, old: "websocket_messages_sent_total{", new: "websocket_messages_written_total{", want: "metric websocket_messages_written_total is not exported"}, dash, checkDash},
		{"histogram suffix on a counter", drift{file: dashboardFile, old: "go_goroutines{", new: "go_goroutines_bucket{", want: "metric go_goroutines_bucket is not exported"}, dash, checkDash},
		{"panel label the metric lacks", drift{file: dashboardFile, old: "sum by (code) (rate(websocket_disconnects_total{", new: "sum by (code) (rate(websocket_disconnects_total{reason=\\\"x\\\", ", want: "has no label reason"}, dash, checkDash},
		{"variable on a metric the service does not export", drift{file: dashboardFile, old: "\"definition\": \"label_values(websocket_connections_active, pod)\"", new: "\"definition\": \"label_values(websocket_pods, pod)\"", want: "metric websocket_pods is not exported"}, dash, checkDash},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectFinding(t, c.check(string(c.d.apply(t, c.data))), c.d.want)
		})
	}
}

func TestPromQLSelectorsSkipFunctionsLabelsAndVariables(t *testing.T) {
	got, err := promqlSelectors(`histogram_quantile(0.99, sum by (pod, le) (rate(a_bucket{pod=~"$pod"}[$__rate_interval])))
		/ on (pod) group_left b offset 1h > 1e-9 * c{x="}"} unless max without (shard) (d)`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range got {
		names = append(names, s.name+"{"+s.matchers+"}")
	}
	if want := []string{`a_bucket{pod=~"$pod"}`, "b{}", `c{x="}"}`, "d{}"}; !slices.Equal(names, want) {
		t.Fatalf("selectors %q, want %q", names, want)
	}
}

package conformance

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/internal/servicetest"
)

// The report: docs/CONFORMANCE.md's results section is generated from a run of this package,
//
//	go test ./conformance -count=1 -args -report ../docs/CONFORMANCE.md
//
// from the Autobahn case results and the verdict of every other check per engine.

// reportPath, when set, makes the run rewrite the generated section of that Markdown file.
var reportPath = flag.String("report", "", "rewrite the generated section of this Markdown file with this run's results")

// TestMain runs the tests, then writes the report when -report is given.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if *reportPath != "" {
		if err := ledger.write(*reportPath); err != nil {
			fmt.Fprintf(os.Stderr, "report: %v\n", err)
			code = 1
		} else {
			fmt.Fprintf(os.Stderr, "wrote %s\n", *reportPath)
		}
	}
	os.Exit(code)
}

// ledger collects the run's results for the report. It is test-only state, filled by the
// tests and read once by TestMain after they have all finished.
var ledger = &resultLedger{checks: map[string]map[string]*checkVerdict{}}

// resultLedger is what the report is made of.
type resultLedger struct {
	mu       sync.Mutex
	cases    []autobahnCase
	autobahn map[string]map[string]caseResult // engine -> case id -> result
	checks   map[string]map[string]*checkVerdict
	order    []string // check names in the order they ran
}

// checkVerdict is one engine's result of one non-Autobahn test.
type checkVerdict struct {
	outcome string // PASS, FAIL, SKIP
	known   []string
}

func (l *resultLedger) setAutobahn(cases []autobahnCase, results map[string]map[string]caseResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cases, l.autobahn = cases, results
}

// recordCheck enters the test t (a per-engine subtest) in the report: its verdict is taken
// when it ends.
func recordCheck(t *testing.T, engine string) {
	name := strings.SplitN(t.Name(), "/", 2)[0]
	ledger.mu.Lock()
	if ledger.checks[name] == nil {
		ledger.checks[name] = map[string]*checkVerdict{}
		ledger.order = append(ledger.order, name)
	}
	v := &checkVerdict{}
	ledger.checks[name][engine] = v
	ledger.mu.Unlock()
	t.Cleanup(func() {
		ledger.mu.Lock()
		defer ledger.mu.Unlock()
		switch {
		case t.Failed():
			v.outcome = outcomeFail
		case t.Skipped():
			v.outcome = "SKIP"
		case len(v.known) > 0:
			v.outcome = outcomeFail + " (known)"
		default:
			v.outcome = outcomePass
		}
	})
}

// knownFailure logs a reported engine bug loudly and records it for the report; the test
// goes on (and does not fail because of it).
func knownFailure(t *testing.T, engine, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Logf("KNOWN FAILURE %s: %s", engine, msg)
	name := strings.SplitN(t.Name(), "/", 2)[0]
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	if v := ledger.checks[name][engine]; v != nil {
		v.known = append(v.known, msg)
	}
}

// logSummary logs pass/fail counts per group and engine.
func logSummary(t *testing.T, cases []autobahnCase, results map[string]map[string]caseResult) {
	for _, row := range summarize(cases, results) {
		t.Logf("Autobahn %-4s %-45s %s", row.group, row.title, strings.Join(row.cells, "  "))
	}
}

// summaryRow is one line of the per-group table.
type summaryRow struct {
	group, title string
	cells        []string // one per engine
}

// caseGroups names Autobahn's top-level groups.
var caseGroups = []struct{ id, title string }{
	{"1", "framing (text and binary messages)"},
	{"2", "pings and pongs"},
	{"3", "reserved bits"},
	{"4", "opcodes"},
	{"5", "fragmentation"},
	{"6", "UTF-8 handling"},
	{"7", "close handling and codes"},
	{"9", "limits and performance (scaled down)"},
}

func groupOf(id string) string { return strings.SplitN(id, ".", 2)[0] }

func summarize(cases []autobahnCase, results map[string]map[string]caseResult) []summaryRow {
	var rows []summaryRow
	for _, g := range caseGroups {
		row := summaryRow{group: g.id + ".*", title: g.title}
		for _, engine := range servicetest.Engines() {
			var total, pass, nonStrict, info, fail int
			for _, c := range cases {
				if groupOf(c.id) != g.id {
					continue
				}
				res, ok := results[engine][c.id]
				if !ok {
					continue
				}
				total++
				switch res.outcome {
				case outcomePass:
					pass++
				case outcomeNonStrict:
					pass++
					nonStrict++
				case outcomeInfo:
					info++
				default:
					fail++
				}
			}
			cell := fmt.Sprintf("%s: %d/%d pass", engine, pass, total-info)
			if nonStrict > 0 {
				cell += fmt.Sprintf(" (%d non-strict)", nonStrict)
			}
			if info > 0 {
				cell += fmt.Sprintf(", %d informational", info)
			}
			if fail > 0 {
				cell += fmt.Sprintf(", %d FAIL", fail)
			}
			if total == 0 {
				cell = engine + ": not run"
			}
			row.cells = append(row.cells, cell)
		}
		rows = append(rows, row)
	}
	return rows
}

// Markers around the generated section of the report.
const (
	reportBegin = "<!-- BEGIN GENERATED: go test ./conformance -count=1 -args -report ../docs/CONFORMANCE.md -->"
	reportEnd   = "<!-- END GENERATED -->"
)

// write replaces the generated section of the Markdown file at path (or appends one).
func (l *resultLedger) write(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	cases, results := l.cases, l.autobahn
	var b strings.Builder
	engines := servicetest.Engines()
	fmt.Fprintf(&b, "%s\n\nGenerated by the run of %s UTC (`%s`).\n\n", reportBegin, time.Now().UTC().Format("2006-01-02 15:04"), goVersion())
	b.WriteString("### Summary per case group\n\n| group | what | " + strings.Join(engines, " | ") + " |\n|---|---|" + strings.Repeat("---|", len(engines)) + "\n")
	for _, row := range summarize(cases, results) {
		cells := make([]string, len(row.cells))
		for i, c := range row.cells {
			cells[i] = strings.TrimPrefix(c, engines[i]+": ")
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", row.group, row.title, strings.Join(cells, " | "))
	}
	b.WriteString("\n### Every case\n\nPASS: Autobahn's OK outcome; PASS (non-strict): an outcome Autobahn accepts as NON-STRICT; " +
		"INFO: Autobahn's INFORMATIONAL cases (behaviour recorded, no verdict); FAIL: the expectation was not met (see the note).\n\n")
	b.WriteString("| case | what | " + strings.Join(engines, " | ") + " | notes |\n|---|---|" + strings.Repeat("---|", len(engines)) + "---|\n")
	for _, c := range cases {
		var cells, notes []string
		for _, engine := range engines {
			res, ok := results[engine][c.id]
			if !ok {
				cells = append(cells, "not run")
				continue
			}
			cells = append(cells, fmt.Sprintf("%s (%s)", res.outcome, roundDuration(res.duration)))
			note := res.note
			if res.err != nil {
				note = joinNotes(note, res.err.Error())
			}
			if reason, known := c.knownFailure[engine]; known {
				note = joinNotes(note, "known failure: "+reason)
			}
			if note != "" {
				notes = append(notes, engine+": "+note)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.id, mdEscape(c.desc), strings.Join(cells, " | "), mdEscape(strings.Join(notes, "; ")))
	}
	l.writeChecks(&b, engines)
	b.WriteString("\n" + reportEnd + "\n")

	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	start, end := strings.Index(doc, reportBegin), strings.Index(doc, reportEnd)
	if start >= 0 && end > start {
		doc = doc[:start] + b.String() + strings.TrimPrefix(doc[end+len(reportEnd):], "\n")
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + b.String()
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// roundDuration renders d for the report: milliseconds, or microseconds under one.
func roundDuration(d time.Duration) string {
	if d < time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func goVersion() string { return runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH }

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	if r := []rune(s); len(r) > 300 {
		s = string(r[:300]) + "…"
	}
	return strings.ReplaceAll(s, "\n", " ")
}

// writeChecks renders the verdict of every other check per engine, with known failures.
func (l *resultLedger) writeChecks(b *strings.Builder, engines []string) {
	if len(l.order) == 0 {
		return
	}
	names := append([]string(nil), l.order...)
	sort.Strings(names)
	b.WriteString("\n### Other checks (hostile input, closing handshake, independent clients)\n\n")
	b.WriteString("| test | " + strings.Join(engines, " | ") + " | known failures |\n|---|" + strings.Repeat("---|", len(engines)) + "---|\n")
	for _, name := range names {
		var cells, known []string
		for _, engine := range engines {
			v := l.checks[name][engine]
			if v == nil || v.outcome == "" {
				cells = append(cells, "not run")
				continue
			}
			cells = append(cells, v.outcome)
			for _, k := range v.known {
				known = append(known, engine+": "+k)
			}
		}
		fmt.Fprintf(b, "| `%s` | %s | %s |\n", name, strings.Join(cells, " | "), mdEscape(strings.Join(known, "; ")))
	}
}

package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// row is one line of the side-by-side table: a metric of one step for every engine.
type row struct {
	step, metric string
	value        func(r *Report) (float64, bool)
	format       string // fmt verb for the values
	ratio        bool   // print value/baseline
}

// rowsFor lists the metrics a step's table shows.
func rowsFor(step, scenario string) []row {
	r := func(metric, format string, ratio bool, v func(r *Report) (float64, bool)) row {
		return row{step: step, metric: metric, value: v, format: format, ratio: ratio}
	}
	always := func(f func(r *Report) float64) func(r *Report) (float64, bool) {
		return func(r *Report) (float64, bool) { return f(r), true }
	}
	server := func(f func(s *ServerMem) float64) func(r *Report) (float64, bool) {
		return func(r *Report) (float64, bool) {
			if r.Server == nil {
				return 0, false
			}
			return f(r.Server), true
		}
	}
	switch scenario {
	case ScenarioIdle:
		return []row{
			r("connections open", "%.0f", false, always(func(r *Report) float64 { return float64(r.Connected) })),
			r("handshakes/s", "%.0f", true, always(func(r *Report) float64 { return r.ConnectRate })),
			r("handshake p50 ms", "%.2f", true, always(func(r *Report) float64 { return r.Handshake.P50 })),
			r("handshake p99 ms", "%.2f", true, always(func(r *Report) float64 { return r.Handshake.P99 })),
			r("server Pss/conn B", "%.0f", true, server(func(s *ServerMem) float64 { return s.PssPerConnBytes })),
			r("server Rss/conn B", "%.0f", true, server(func(s *ServerMem) float64 { return s.RssPerConnBytes })),
		}
	case ScenarioFanout, ScenarioClassroom, ScenarioBroadcast:
		return []row{
			r("deliveries/s", "%.0f", true, always(func(r *Report) float64 { return r.DeliveredPerSec })),
			r("delivered", "%.0f", false, always(func(r *Report) float64 { return float64(r.Delivered) })),
			r("lost", "%.0f", false, always(func(r *Report) float64 { return float64(r.Lost) })),
			r("duplicated", "%.0f", false, always(func(r *Report) float64 { return float64(r.Duplicated) })),
			r("latency p50 ms", "%.2f", true, always(func(r *Report) float64 { return r.Latency.P50 })),
			r("latency p99 ms", "%.2f", true, always(func(r *Report) float64 { return r.Latency.P99 })),
			r("latency p999 ms", "%.2f", true, always(func(r *Report) float64 { return r.Latency.P999 })),
		}
	case ScenarioChurn:
		churn := func(f func(c *ChurnReport) float64) func(r *Report) (float64, bool) {
			return func(r *Report) (float64, bool) {
				if r.Churn == nil {
					return 0, false
				}
				return f(r.Churn), true
			}
		}
		return []row{
			r("cycles/s", "%.0f", true, churn(func(c *ChurnReport) float64 { return c.Rate })),
			r("errors", "%.0f", false, churn(func(c *ChurnReport) float64 { return float64(c.Errors) })),
			r("handshake p99 ms", "%.2f", true, always(func(r *Report) float64 { return r.Handshake.P99 })),
			r("server fds before", "%.0f", false, churn(func(c *ChurnReport) float64 { return float64(c.FDsBefore) })),
			r("server fds peak", "%.0f", false, churn(func(c *ChurnReport) float64 { return float64(c.FDsPeak) })),
			r("server fds after", "%.0f", false, churn(func(c *ChurnReport) float64 { return float64(c.FDsAfter) })),
		}
	case ScenarioEcho:
		echo := func(f func(e *EchoReport) float64) func(r *Report) (float64, bool) {
			return func(r *Report) (float64, bool) {
				if r.Echo == nil {
					return 0, false
				}
				return f(r.Echo), true
			}
		}
		return []row{
			r("round trips/s", "%.0f", true, echo(func(e *EchoReport) float64 { return e.PerSec })),
			r("rtt p50 ms", "%.2f", true, echo(func(e *EchoReport) float64 { return e.RTT.P50 })),
			r("rtt p99 ms", "%.2f", true, echo(func(e *EchoReport) float64 { return e.RTT.P99 })),
		}
	}
	return nil
}

// WriteTable prints every step's metrics side by side with, for each engine after the
// first (the baseline), its ratio to the baseline; then the targets, judged from
// the same figures.
func WriteTable(w io.Writer, res *SuiteResult) {
	engines := res.Engines
	header := []string{"step", "metric"}
	header = append(header, engines...)
	for _, e := range engines[1:] {
		header = append(header, e+"/"+engines[0])
	}
	lines := [][]string{header}
	for _, st := range res.Steps {
		byEngine := res.Reports[st]
		scenario := ""
		for _, r := range byEngine {
			scenario = r.Scenario
		}
		for _, rw := range rowsFor(st, scenario) {
			line := []string{rw.step, rw.metric}
			vals := make([]float64, len(engines))
			oks := make([]bool, len(engines))
			for i, e := range engines {
				cell := "-"
				if r := byEngine[e]; r != nil {
					vals[i], oks[i] = rw.value(r)
					if oks[i] {
						cell = fmt.Sprintf(rw.format, vals[i])
					}
				}
				line = append(line, cell)
			}
			for i := 1; i < len(engines); i++ {
				cell := ""
				if rw.ratio && oks[0] && oks[i] && vals[0] != 0 {
					cell = fmt.Sprintf("%.2f", vals[i]/vals[0])
				}
				line = append(line, cell)
			}
			lines = append(lines, line)
		}
	}
	fmt.Fprintf(w, "wsbench suite (%s) %s\n", res.Mode, res.Date)
	writeColumns(w, lines)
	if len(engines) == 2 {
		fmt.Fprintln(w)
		for _, t := range Targets(res, engines[0], engines[1]) {
			fmt.Fprintln(w, t)
		}
	}
}

// writeColumns pads cells into aligned columns; numbers are right-aligned.
func writeColumns(w io.Writer, lines [][]string) {
	widths := map[int]int{}
	for _, l := range lines {
		for i, c := range l {
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, l := range lines {
		var b strings.Builder
		for i, c := range l {
			if i < 2 {
				fmt.Fprintf(&b, "%-*s  ", widths[i], c)
			} else {
				fmt.Fprintf(&b, "%*s  ", widths[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// Targets judges the goals for candidate against baseline: server memory per
// connection at most a quarter of the baseline's and under 3 KiB; fan-out deliveries/s at
// least twice the baseline's with nothing lost; handshakes/s at least the baseline's. A goal
// whose step did not run is reported as not measured.
func Targets(res *SuiteResult, baseline, candidate string) []string {
	get := func(step string) (b, c *Report) {
		m := res.Reports[step]
		if m == nil {
			return nil, nil
		}
		return m[baseline], m[candidate]
	}
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	var out []string
	if b, c := get("idle"); b != nil && c != nil && b.Server != nil && c.Server != nil {
		bp, cp := b.Server.PssPerConnBytes, c.Server.PssPerConnBytes
		out = append(out, fmt.Sprintf("%s  memory/conn: %s %.0f B Pss vs %s %.0f B (ratio %.2f; goal ≤ 0.25 and < 3072 B)",
			verdict(cp <= bp/4 && cp < 3072), candidate, cp, baseline, bp, safeRatio(cp, bp)))
		out = append(out, fmt.Sprintf("%s  handshakes/s: %s %.0f vs %s %.0f (ratio %.2f; goal ≥ 1)",
			verdict(c.ConnectRate >= b.ConnectRate), candidate, c.ConnectRate, baseline, b.ConnectRate, safeRatio(c.ConnectRate, b.ConnectRate)))
	} else {
		out = append(out, "n/a   memory/conn and handshakes/s: idle step not run")
	}
	for _, st := range res.Steps {
		b, c := get(st)
		if b == nil || c == nil || b.Publish == nil || c.Publish == nil {
			continue
		}
		ok := c.DeliveredPerSec >= 2*b.DeliveredPerSec && c.Lost == 0 && c.Duplicated == 0
		out = append(out, fmt.Sprintf("%s  %s deliveries/s: %s %.0f vs %s %.0f (ratio %.2f; goal ≥ 2), %s lost %d dup %d (goal 0)",
			verdict(ok), st, candidate, c.DeliveredPerSec, baseline, b.DeliveredPerSec,
			safeRatio(c.DeliveredPerSec, b.DeliveredPerSec), candidate, c.Lost, c.Duplicated))
	}
	return out
}

func safeRatio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// row is one line of the side-by-side table: a metric of one step for every engine. Over
// several rounds a rate or latency shows its median; a count of failures its total, so one
// bad round cannot hide behind two good ones.
type row struct {
	step, metric string
	value        func(r *Report) (float64, bool)
	format       string // fmt verb for the values
	ratio        bool   // print value/baseline
	sum          bool   // aggregate rounds by sum (failure counts) rather than median
}

// over aggregates the row's value over the rounds of one engine.
func (rw row) over(reports []*Report) (float64, bool) {
	var vals []float64
	for _, r := range reports {
		if v, ok := rw.value(r); ok {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return 0, false
	}
	if rw.sum {
		sum := 0.0
		for _, v := range vals {
			sum += v
		}
		return sum, true
	}
	return median(vals), true
}

// median of a non-empty list (the mean of the middle two for an even length).
func median(vals []float64) float64 {
	v := slices.Clone(vals)
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// rowsFor lists the metrics a step's table shows.
func rowsFor(step, scenario string) []row {
	r := func(metric, format string, ratio bool, v func(r *Report) (float64, bool)) row {
		return row{step: step, metric: metric, value: v, format: format, ratio: ratio}
	}
	total := func(metric string, v func(r *Report) (float64, bool)) row {
		return row{step: step, metric: metric, value: v, format: "%.0f", sum: true}
	}
	always := func(f func(r *Report) float64) func(r *Report) (float64, bool) {
		return func(r *Report) (float64, bool) { return f(r), true }
	}
	server := func(f func(s *ServerStats) float64) func(r *Report) (float64, bool) {
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
			r("server Pss/conn B", "%.0f", true, server(func(s *ServerStats) float64 { return s.PssPerConnBytes })),
			r("server Rss/conn B", "%.0f", true, server(func(s *ServerStats) float64 { return s.RssPerConnBytes })),
			r("server CPU µs/handshake", "%.0f", true, server(func(s *ServerStats) float64 { return s.CPUPerHandshakeUs })),
			r("wsbench CPU µs/handshake", "%.0f", true, always(func(r *Report) float64 { return r.HarnessCPUPerHandshakeUs })),
		}
	case ScenarioFanout, ScenarioClassroom, ScenarioBroadcast:
		return []row{
			r("deliveries/s", "%.0f", true, always(func(r *Report) float64 { return r.DeliveredPerSec })),
			r("server CPU µs/delivery", "%.2f", true, server(func(s *ServerStats) float64 { return s.CPUPerDeliveryUs })),
			r("redis CPU s", "%.2f", true, server(func(s *ServerStats) float64 { return s.RedisCPU })),
			r("wsbench CPU s", "%.2f", true, always(func(r *Report) float64 { return r.HarnessCPU })),
			total("delivered", always(func(r *Report) float64 { return float64(r.Delivered) })),
			total("lost", always(func(r *Report) float64 { return float64(r.Lost) })),
			total("duplicated", always(func(r *Report) float64 { return float64(r.Duplicated) })),
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
			total("errors", churn(func(c *ChurnReport) float64 { return float64(c.Errors) })),
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
		for _, rw := range rowsFor(st, res.scenario(st)) {
			line := []string{rw.step, rw.metric}
			vals := make([]float64, len(engines))
			oks := make([]bool, len(engines))
			for i, e := range engines {
				cell := "-"
				if vals[i], oks[i] = rw.over(res.Reports[st][e]); oks[i] {
					cell = fmt.Sprintf(rw.format, vals[i])
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
	fmt.Fprintf(w, "wsbench suite (%s) %s, %d round(s): rates and latencies are medians over rounds, lost/duplicated totals\n",
		res.Mode, res.Date, res.Rounds)
	writeColumns(w, lines)
	writeProtocolComparison(w, res)
	if len(engines) == 2 {
		fmt.Fprintln(w)
		for _, t := range Targets(res, engines[0], engines[1]) {
			fmt.Fprintln(w, t)
		}
	}
}

// scenario is the scenario a step ran.
func (res *SuiteResult) scenario(step string) string {
	for _, reps := range res.Reports[step] {
		for _, r := range reps {
			return r.Scenario
		}
	}
	return ""
}

// paced reports whether a step published at a set rate.
func (res *SuiteResult) paced(step string) bool {
	for _, reps := range res.Reports[step] {
		for _, r := range reps {
			return r.PublishRate > 0
		}
	}
	return false
}

// metric aggregates one named row of a step for an engine, as the table shows it.
func (res *SuiteResult) metric(step, engine, name string) (float64, bool) {
	for _, rw := range rowsFor(step, res.scenario(step)) {
		if rw.metric == name {
			return rw.over(res.Reports[step][engine])
		}
	}
	return 0, false
}

// writeColumns pads cells into aligned columns; numbers are right-aligned.
func writeColumns(w io.Writer, lines [][]string) {
	widths := map[int]int{}
	for _, l := range lines {
		for i, c := range l {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, l := range lines {
		var b strings.Builder
		for i, c := range l {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			if i < 2 {
				b.WriteString(c + pad + "  ")
			} else {
				b.WriteString(pad + c + "  ")
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// Targets judges the goals for candidate against baseline, from the table's
// figures: server memory per connection at most a quarter of the baseline's and under
// 3 KiB; fan-out deliveries/s at least twice the baseline's with nothing lost or
// duplicated; handshakes/s at least the baseline's. A goal whose step did not run is
// reported as not measured.
func Targets(res *SuiteResult, baseline, candidate string) []string {
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "FAIL"
	}
	var out []string
	bp, ok1 := res.metric("idle", baseline, "server Pss/conn B")
	cp, ok2 := res.metric("idle", candidate, "server Pss/conn B")
	if ok1 && ok2 {
		out = append(out, fmt.Sprintf("%s  memory/conn: %s %.0f B Pss vs %s %.0f B (ratio %.2f; goal ≤ 0.25 and < 3072 B)",
			verdict(cp <= bp/4 && cp < 3072), candidate, cp, baseline, bp, safeRatio(cp, bp)))
	} else {
		out = append(out, "n/a   memory/conn: idle step not run with the server's pid")
	}
	bh, ok1 := res.metric("idle", baseline, "handshakes/s")
	ch, ok2 := res.metric("idle", candidate, "handshakes/s")
	if ok1 && ok2 {
		out = append(out, fmt.Sprintf("%s  handshakes/s: %s %.0f vs %s %.0f (ratio %.2f; goal ≥ 1)",
			verdict(ch >= bh), candidate, ch, baseline, bh, safeRatio(ch, bh)))
		bc, ok1 := res.metric("idle", baseline, "server CPU µs/handshake")
		cc, ok2 := res.metric("idle", candidate, "server CPU µs/handshake")
		if ok1 && ok2 {
			out = append(out, fmt.Sprintf("info  server CPU per handshake: %s %.0f µs vs %s %.0f µs (ratio %.2f; lower is better)",
				candidate, cc, baseline, bc, safeRatio(cc, bc)))
		}
	} else {
		out = append(out, "n/a   handshakes/s: idle step not run")
	}
	for _, st := range res.Steps {
		bd, ok1 := res.metric(st, baseline, "deliveries/s")
		cd, ok2 := res.metric(st, candidate, "deliveries/s")
		if !ok1 || !ok2 {
			continue
		}
		lost, _ := res.metric(st, candidate, "lost")
		dup, _ := res.metric(st, candidate, "duplicated")
		if res.paced(st) {
			// A paced step measures latency at a set rate; its deliveries/s is the pace.
			out = append(out, fmt.Sprintf("%s  %s (paced, latency only): %s lost %.0f dup %.0f (goal 0)",
				verdict(lost == 0 && dup == 0), st, candidate, lost, dup))
			continue
		}
		out = append(out, fmt.Sprintf("%s  %s deliveries/s: %s %.0f vs %s %.0f (ratio %.2f; goal ≥ 2), %s lost %.0f dup %.0f (goal 0)",
			verdict(cd >= 2*bd && lost == 0 && dup == 0), st, candidate, cd, baseline, bd, safeRatio(cd, bd), candidate, lost, dup))
	}
	return out
}

func safeRatio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

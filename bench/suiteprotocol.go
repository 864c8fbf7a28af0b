package bench

import (
	"fmt"
	"io"
	"strings"
)

// protocolBoth runs a group fan-out step with v1 and with v2 clients.
const protocolBoth = "both"

// protocolSteps turns each group fan-out (classroom) step into its protocol variants: for v2
// one step "<name>-v2" with v2 clients; for both, "<name>-v1" and "<name>-v2" in a row. Each
// variant publishes with FCALL ws_publish, so a v1/v2 pair differs only in the clients'
// protocol: a v2 client reads every frame as {"type":"message","stream","cursor","data"} and
// keeps its cursors (the cost measured), a v1 client gets the payload verbatim. Other steps,
// and every step with v1 (the default), are left as they are.
func protocolSteps(all []step, protocol string) ([]step, error) {
	var variants []string
	switch protocol {
	case "", ProtocolV1:
		return all, nil
	case ProtocolV2:
		variants = []string{ProtocolV2}
	case protocolBoth:
		variants = []string{ProtocolV1, ProtocolV2}
	default:
		return nil, fmt.Errorf("--protocol must be v1, v2 or both, not %q", protocol)
	}
	var out []step
	for _, st := range all {
		if st.params.Scenario != ScenarioClassroom {
			out = append(out, st)
			continue
		}
		for _, v := range variants {
			p := st.params
			p.Protocol, p.PublishVia = v, "fcall"
			out = append(out, step{name: st.name + "-" + v, params: p})
		}
	}
	return out, nil
}

// writeProtocolComparison prints, for each group fan-out step run with both protocols, v2
// against v1 on every engine: deliveries/s and server CPU per delivery (goal: v2 within 15%
// of v1 on both).
func writeProtocolComparison(w io.Writer, res *SuiteResult) {
	if res.Protocol != protocolBoth {
		return
	}
	fmt.Fprintln(w, "\nv2 vs v1 clients (same steps, both published with FCALL ws_publish; goal: v2 within 15% of v1)")
	lines := [][]string{{"step", "engine", "deliveries/s v1", "v2", "v2/v1", "server CPU µs/delivery v1", "v2", "v2/v1", "v2 recovered:false", "verdict"}}
	for _, st := range res.Steps {
		base, ok := strings.CutSuffix(st, "-"+ProtocolV2)
		if !ok || res.Reports[base+"-"+ProtocolV1] == nil {
			continue
		}
		v1 := base + "-" + ProtocolV1
		for _, eng := range res.Engines {
			d1, ok1 := res.metric(v1, eng, "deliveries/s")
			d2, ok2 := res.metric(st, eng, "deliveries/s")
			c1, ok3 := res.metric(v1, eng, "server CPU µs/delivery")
			c2, ok4 := res.metric(st, eng, "server CPU µs/delivery")
			if !ok1 || !ok2 || !ok3 || !ok4 {
				lines = append(lines, []string{base, eng, "-", "-", "", "-", "-", "", "", "n/a"})
				continue
			}
			unrecovered := 0
			for _, r := range res.Reports[st][eng] {
				if r.V2 != nil {
					unrecovered += r.V2.unrecoveredTotal()
				}
			}
			verdict := "FAIL"
			if res.paced(st) {
				verdict = "info (paced: deliveries/s is the pace)"
			} else if d2 >= 0.85*d1 && c2 <= 1.15*c1 && unrecovered == 0 {
				verdict = "PASS"
			}
			lines = append(lines, []string{base, eng, fmt.Sprintf("%.0f", d1), fmt.Sprintf("%.0f", d2), fmt.Sprintf("%.2f", safeRatio(d2, d1)),
				fmt.Sprintf("%.2f", c1), fmt.Sprintf("%.2f", c2), fmt.Sprintf("%.2f", safeRatio(c2, c1)), fmt.Sprint(unrecovered), verdict})
		}
	}
	writeColumns(w, lines)
}

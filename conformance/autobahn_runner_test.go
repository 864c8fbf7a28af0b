package conformance

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The vocabulary the case table (autobahn_cases_test.go) is written in, and the runner that
// plays one case against a server. A case is what Autobahn's fuzzing client does: a list of
// actions (frames written in one go, frame by frame, or in chops of a few octets; pauses),
// the messages and pongs expected back in order, and how the connection must end.

// caseRun is one case being played: the connection and the moments the case marked.
type caseRun struct {
	conn      *Conn
	marks     map[string]time.Time
	closedAt  time.Time // when the server's close frame arrived
	closeCode uint16    // the code of the server's close frame
	// tcpClosedAfter is how long the server kept TCP open after its close frame.
	tcpClosedAfter time.Duration
}

// joinNotes joins report notes with "; ", skipping empty ones.
func joinNotes(notes ...string) string {
	var out []string
	for _, n := range notes {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, "; ")
}

// action is one step of a case. Write errors are returned; the runner tolerates them once the
// server may legitimately have closed (a case that expects the connection to fail).
type action func(r *caseRun) error

// closeRule is how a case must end.
type closeRule struct {
	// byServer: the server must fail the connection with one of codes (it sends the close
	// first). Otherwise the connection stays open until the case's own close (clientClosed) or
	// the runner's closing handshake with 1000, which the server must echo with one of codes.
	byServer     bool
	clientClosed bool
	codes        []uint16
}

// autobahnCase is one Autobahn|Testsuite case, mirrored under its Autobahn number.
type autobahnCase struct {
	id   string // Autobahn's case number, e.g. "5.19"
	desc string
	do   []action
	// want are the messages and pongs expected before the connection ends, in order; alt are
	// further accepted sequences (Autobahn's NON-STRICT outcomes).
	want []Event
	alt  [][]Event
	end  closeRule
	// custom replaces do/want for cases that interleave sends and reads (9.7, 9.8); it returns
	// a note for the report.
	custom func(r *caseRun) (string, error)
	// info marks Autobahn's INFORMATIONAL cases: the outcome is recorded, never a failure,
	// though the server must still not crash or hang.
	info bool
	// knownFailure maps an engine to the reason it fails this case: a reported engine bug,
	// logged loudly and listed as FAIL in docs/CONFORMANCE.md, that does not fail the suite.
	knownFailure map[string]string
	// timeout bounds each wait of the case; 3 s when zero.
	timeout time.Duration
}

// Outcomes of a case, as the report prints them.
const (
	outcomePass      = "PASS"
	outcomeNonStrict = "PASS (non-strict)"
	outcomeInfo      = "INFO"
	outcomeFail      = "FAIL"
)

// caseResult is what one case did on one engine.
type caseResult struct {
	outcome  string
	note     string
	err      error
	duration time.Duration
}

// Action constructors.

// send writes frames back to back in one write (Autobahn's default, one chop).
func send(frames ...Frame) action {
	return func(r *caseRun) error { return r.conn.Send(frames...) }
}

// perFrame writes each frame on its own, with a short pause (Autobahn's frame-wise chops).
func perFrame(frames ...Frame) action {
	return func(r *caseRun) error {
		for _, f := range frames {
			if err := r.conn.Send(f); err != nil {
				return err
			}
			time.Sleep(2 * time.Millisecond) // the chop under test: the server reads each frame alone
		}
		return nil
	}
}

// octets writes frames one octet at a time (Autobahn's octet-wise chops, sync=True).
func octets(frames ...Frame) action {
	return func(r *caseRun) error { return r.conn.SendChopped(1, 100*time.Microsecond, frames...) }
}

// chopped writes frames in writes of n octets without pausing.
func chopped(n int, frames ...Frame) action {
	return func(r *caseRun) error { return r.conn.SendChopped(n, 0, frames...) }
}

// pause waits d (Autobahn's continueLater, scaled down).
func pause(d time.Duration) action {
	return func(*caseRun) error { time.Sleep(d); return nil } // the pause under test, not a wait
}

// markLastPart names the moment the last part of a message is sent (6.4.x).
const markLastPart = "last part"

// mark records the moment under name (to tell fail-fast from failing at the message end).
func mark(name string) action {
	return func(r *caseRun) error { r.marks[name] = time.Now(); return nil }
}

// Expectation constructors. Text is echoed with the service's "Echo: " prefix; binary and
// pongs unchanged.

func echoText(s string) Event {
	return Event{Kind: EventMessage, Op: OpText, Data: []byte("Echo: " + s)}
}

func echoBinary(b []byte) Event { return Event{Kind: EventMessage, Op: OpBinary, Data: b} }

func pong(s string) Event { return Event{Kind: EventPong, Data: []byte(s)} }

// Close rules.

// cleanClose: the connection stays open; the runner's close 1000 is echoed.
var cleanClose = closeRule{codes: []uint16{1000}}

// fails: the server fails the connection with one of codes.
func fails(codes ...uint16) closeRule { return closeRule{byServer: true, codes: codes} }

// echoesClose: the case sent a close; the server answers with one of codes.
func echoesClose(codes ...uint16) closeRule { return closeRule{clientClosed: true, codes: codes} }

// play runs c over conn and judges it.
func (c autobahnCase) play(conn *Conn) caseResult {
	started := time.Now()
	r := &caseRun{conn: conn, marks: map[string]time.Time{}}
	res := c.judge(r)
	res.duration = time.Since(started)
	if res.err == nil && r.tcpClosedAfter > promptTCPClose {
		res.outcome = outcomeNonStrict
		res.note = joinNotes(res.note, fmt.Sprintf("TCP closed %v after the close frame, not at once (RFC 6455 §5.5.1)",
			r.tcpClosedAfter.Round(10*time.Millisecond)))
	}
	if res.err != nil {
		res.outcome = outcomeFail
	}
	if c.info {
		res.outcome = outcomeInfo
		if res.err != nil {
			res.note = joinNotes(res.note, res.err.Error())
			res.err = nil
		}
	}
	return res
}

func (c autobahnCase) wait() time.Duration {
	if c.timeout > 0 {
		return c.timeout
	}
	return 3 * time.Second
}

func (c autobahnCase) judge(r *caseRun) caseResult {
	conn := r.conn
	conn.StartReading()
	if c.custom != nil {
		note, err := c.custom(r)
		if err != nil {
			return caseResult{note: note, err: err}
		}
		return caseResult{outcome: outcomePass, note: note, err: c.finish(r, cleanClose, nil)}
	}
	for i, a := range c.do {
		if err := a(r); err != nil && !c.end.byServer && !c.end.clientClosed {
			return caseResult{err: fmt.Errorf("action %d: %w", i+1, err)}
		}
	}
	var got []Event
	if !c.end.byServer && !c.end.clientClosed {
		// Wait for everything expected, then close normally; anything more shows up before
		// the close echo and fails the case there.
		deadline := time.Now().Add(c.wait())
		for len(got) < len(c.want) {
			e, ok := conn.NextData(time.Until(deadline))
			if !ok {
				return caseResult{err: fmt.Errorf("got %s, then nothing within %v; want %s", events(got), c.wait(), events(c.want))}
			}
			if e.Kind == EventClose || e.Kind == EventEOF || e.Kind == EventBad {
				return caseResult{err: fmt.Errorf("got %s, then %s; want %s and an open connection", events(got), e, events(c.want))}
			}
			got = append(got, e)
		}
		if !sameEvents(got, c.want) {
			return caseResult{err: fmt.Errorf("got %s, want %s", events(got), events(c.want))}
		}
		return caseResult{outcome: outcomePass, err: c.finish(r, cleanClose, nil)}
	}
	err := c.finish(r, c.end, &got)
	outcome := outcomePass
	if err == nil && !sameEvents(got, c.want) {
		matched := false
		for _, alt := range c.alt {
			if sameEvents(got, alt) {
				matched, outcome = true, outcomeNonStrict
				break
			}
		}
		if !matched {
			err = fmt.Errorf("got %s before the close, want %s", events(got), events(c.want))
		}
	}
	note := ""
	if c.info {
		note = fmt.Sprintf("events: %s, close %d", events(got), r.closeCode)
	}
	if last, ok := r.marks[markLastPart]; ok && err == nil {
		if r.closedAt.Before(last) {
			note = "failed fast, before the last part was sent"
		} else {
			outcome, note = outcomeNonStrict, "failed at the end of the message, not fast"
		}
	}
	return caseResult{outcome: outcome, note: note, err: err}
}

// finish ends the connection as rule says and checks the server's side of the closing
// handshake: a close frame with an allowed code, nothing after it, then the TCP close. Data
// events seen before the close are appended to got (or fail the case when got is nil).
func (c autobahnCase) finish(r *caseRun, rule closeRule, got *[]Event) error {
	conn := r.conn
	if !rule.byServer && !rule.clientClosed {
		if err := conn.Send(Close(1000, "")); err != nil {
			return fmt.Errorf("send close: %w", err)
		}
	}
	deadline := time.Now().Add(c.wait())
	var closeEv Event
	for {
		e, ok := conn.NextData(time.Until(deadline))
		if !ok {
			return fmt.Errorf("no close frame within %v (the server hangs)", c.wait())
		}
		if e.Kind == EventBad {
			return fmt.Errorf("server broke the protocol: %v", e.Err)
		}
		if e.Kind == EventEOF {
			return fmt.Errorf("TCP closed without a close frame (1006); want close %v", rule.codes)
		}
		if e.Kind == EventClose {
			closeEv, r.closedAt, r.closeCode = e, e.At, e.Code
			break
		}
		if got == nil {
			return fmt.Errorf("unexpected %s before the close echo", e)
		}
		*got = append(*got, e)
	}
	if !slices.Contains(rule.codes, closeEv.Code) {
		return fmt.Errorf("close code %d (%q), want one of %v", closeEv.Code, closeEv.Reason, rule.codes)
	}
	if rule.byServer {
		// Complete the handshake as a client must; the server may already have closed TCP.
		_ = conn.Send(Close(closeEv.Code, ""))
	}
	e, ok := conn.NextData(c.wait())
	switch {
	case !ok:
		return fmt.Errorf("server kept TCP open %v after the closing handshake", c.wait())
	case e.Kind != EventEOF:
		return fmt.Errorf("unexpected %s after the close frame", e)
	}
	r.tcpClosedAfter = e.At.Sub(closeEv.At)
	return nil
}

// promptTCPClose is how soon after the closing handshake the server must close TCP to pass
// strictly (RFC 6455 §5.5.1: at once); later, up to the case's wait, is non-strict.
const promptTCPClose = 500 * time.Millisecond

func sameEvents(a, b []Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || a[i].Op != b[i].Op || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func events(es []Event) string {
	if len(es) == 0 {
		return "[]"
	}
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// roundTrips sends n messages of size bytes one after another, each after the previous echo
// (Autobahn 9.7/9.8), and reports the mean round trip.
func roundTrips(n, size int, binary bool) func(r *caseRun) (string, error) {
	return func(r *caseRun) (string, error) {
		payload := bytes.Repeat([]byte{'*'}, size)
		f, want := Text(string(payload)), echoText(string(payload))
		if binary {
			payload = bytes.Repeat([]byte{0xfe}, size)
			f, want = Binary(payload), echoBinary(payload)
		}
		started := time.Now()
		for i := 0; i < n; i++ {
			if err := r.conn.Send(f); err != nil {
				return "", fmt.Errorf("message %d: %w", i+1, err)
			}
			e, ok := r.conn.NextData(3 * time.Second)
			if !ok {
				return "", fmt.Errorf("message %d: no echo within 3s", i+1)
			}
			if !sameEvents([]Event{e}, []Event{want}) {
				return "", fmt.Errorf("message %d: got %s, want %s", i+1, e, want)
			}
		}
		return fmt.Sprintf("mean round trip %v", (time.Since(started) / time.Duration(n)).Round(time.Microsecond)), nil
	}
}

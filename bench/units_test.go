package bench

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/huleedu/websocket-service/auth"
)

func TestHistogramQuantilesAreWithinOnePercent(t *testing.T) {
	h := NewHistogram()
	for v := int64(1); v <= 100000; v++ {
		h.Record(v * 1000) // 1µs … 100ms, uniform
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		want := q * 100000 * 1000
		got := float64(h.Quantile(q))
		if got < want || got > want*1.01 {
			t.Errorf("q%.3f = %.0f, want within [%.0f, %.0f]", q, got, want, want*1.01)
		}
	}
	if h.Quantile(0) != 1000 {
		t.Errorf("q0 = %d, want the minimum 1000", h.Quantile(0))
	}
	s := h.Summary()
	if s.Count != 100000 || math.Abs(s.Mean-50.0005) > 1e-6 || s.Max != 100 {
		t.Errorf("summary %+v", s)
	}
}

func TestHistogramSmallValuesAreExact(t *testing.T) {
	h := NewHistogram()
	for _, v := range []int64{0, 1, 5, 127} {
		h.Record(v)
	}
	if got := h.Quantile(0.5); got != 1 {
		t.Errorf("median %d, want 1", got)
	}
	if got := h.Quantile(1); got != 127 {
		t.Errorf("max %d, want 127", got)
	}
	empty := NewHistogram()
	if empty.Quantile(0.99) != 0 || empty.Summary() != (Summary{}) {
		t.Error("empty histogram must report zeros")
	}
}

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	for _, v := range []int64{128, 129, 255, 256, 1 << 20, 1<<20 + 12345, 1 << 41, math.MaxInt64} {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("value %d → bucket %d out of range", v, i)
		}
		if v < 1<<(maxExponent+1) && (bucketHigh(i) < v || float64(bucketHigh(i)) > float64(v)*(1+1.0/subCount)) {
			t.Errorf("value %d → bucket %d high %d", v, i, bucketHigh(i))
		}
	}
}

func TestHistogramSurvivesTheWireAndMerges(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := int64(1); i <= 1000; i++ {
		a.Record(i * 1e6)
		b.Record(i * 2e6)
	}
	raw, err := json.Marshal(a.wire())
	if err != nil {
		t.Fatal(err)
	}
	var w wireHistogram
	if err := json.Unmarshal(raw, &w); err != nil {
		t.Fatal(err)
	}
	back, err := w.histogram()
	if err != nil {
		t.Fatal(err)
	}
	if back.Summary() != a.Summary() {
		t.Fatalf("round trip changed the histogram: %+v vs %+v", back.Summary(), a.Summary())
	}
	back.Merge(b)
	if back.Count() != 2000 || back.Summary().Max != 2000 || back.Quantile(0) != 1e6 {
		t.Fatalf("merged %+v", back.Summary())
	}
	if _, err := (wireHistogram{Buckets: [][2]int64{{histBuckets, 1}}}).histogram(); err == nil {
		t.Fatal("a bucket index out of range must be refused")
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	s := Stamp{Run: "bx1", Target: 42, Seq: 7, SentNs: 1732850000123456789}
	for _, size := range []int{0, 200} {
		b := AppendPayload(nil, s, size)
		if !json.Valid(b) {
			t.Fatalf("payload %s is not JSON", b)
		}
		if size > 0 && len(b) != size {
			t.Fatalf("padded payload is %d bytes, want %d", len(b), size)
		}
		run, j, k, ts, ok := ParseStamp(b)
		if !ok || string(run) != s.Run || j != s.Target || k != s.Seq || ts != s.SentNs {
			t.Fatalf("parsed %q %d %d %d %v from %s", run, j, k, ts, ok, b)
		}
		// A server that wraps the payload in an envelope still yields the stamp.
		wrapped := append(append([]byte(`{"type":"notification","data":`), b...), '}')
		if _, _, _, _, ok := ParseStamp(wrapped); !ok {
			t.Fatalf("stamp not found in %s", wrapped)
		}
	}
	if _, _, _, _, ok := ParseStamp([]byte(`{"type":"error","code":"SLOW_CONSUMER"}`)); ok {
		t.Fatal("an error message must not parse as a stamp")
	}
	if code, ok := errorCode([]byte(`{"type":"error","code":"SLOW_CONSUMER","message":"x"}`)); !ok || code != "SLOW_CONSUMER" {
		t.Fatalf("error code %q %v", code, ok)
	}
}

func TestTallyAccountsLossDuplicatesAndStrays(t *testing.T) {
	targets := []Target{{Count: 3}, {Count: 70}}
	ta := newTally([]int{1}, targets)
	if ta.expected() != 70 {
		t.Fatalf("expected %d", ta.expected())
	}
	for _, seq := range []int{0, 1, 65, 64} {
		if got := ta.record(1, seq); got != fresh {
			t.Fatalf("seq %d: %v", seq, got)
		}
	}
	if got := ta.record(1, 65); got != duplicate {
		t.Fatalf("repeat of 65: %v", got)
	}
	if ta.record(0, 0) != unexpected || ta.record(1, 70) != unexpected || ta.record(1, -1) != unexpected {
		t.Fatal("another target's message and out-of-range sequences are unexpected")
	}
	if ta.unique != 4 || ta.dups != 1 || ta.unexpected != 3 || ta.lost() != 66 || ta.reordered != 1 {
		t.Fatalf("unique %d dups %d unexpected %d lost %d reordered %d", ta.unique, ta.dups, ta.unexpected, ta.lost(), ta.reordered)
	}
}

func TestPlanExpectationsAddUp(t *testing.T) {
	p := Params{Scenario: ScenarioFanout, Conns: 10, Users: 4, Messages: 11, Run: "r"}
	if err := p.Normalize(); err == nil {
		t.Fatal("fanout without a publisher must be refused")
	}
	p.PublishVia, p.RedisURL = "redis", "redis://127.0.0.1:1/0"
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	ts := p.Targets()
	if len(ts) != 4 || ts[0].Count != 3 || ts[2].Count != 3 || ts[3].Count != 2 || totalMessages(ts) != 11 {
		t.Fatalf("targets %+v", ts)
	}
	if ts[1].Channel != "ws:r-u1" {
		t.Fatalf("channel %q", ts[1].Channel)
	}
	// Every message lands on the target and sequence the receivers expect.
	seen := map[[2]int]bool{}
	for m := range 11 {
		j, seq := message(m, len(ts))
		if seq >= ts[j].Count || seen[[2]int{j, seq}] {
			t.Fatalf("message %d → target %d seq %d", m, j, seq)
		}
		seen[[2]int{j, seq}] = true
	}
	var expected int
	for i := range p.Conns {
		for _, j := range p.Subscriptions(i) {
			expected += ts[j].Count
		}
	}
	// Users 0,1 have 3 connections, users 2,3 have 2: 3·3+3·3+2·3+2·2.
	if expected != 28 {
		t.Fatalf("expected deliveries %d, want 28", expected)
	}

	c := Params{Scenario: ScenarioClassroom, Groups: 3, Size: 5, Repeat: 2, PublishVia: "api", APIURL: "http://x", APIKey: "k", Run: "r"}
	if err := c.Normalize(); err != nil {
		t.Fatal(err)
	}
	if c.Conns != 15 || c.Identity(7).Groups[0] != "r-g1" || c.Subscriptions(14)[0] != 2 || c.Targets()[2].Channel != "ws-group:r-g2" {
		t.Fatalf("classroom plan: conns %d identity %+v", c.Conns, c.Identity(7))
	}
}

func TestCapacityRefusesWhatTheLimitsCannotHold(t *testing.T) {
	c := Capacity{FilesPerProc: 20000, PortsPerSrc: 28232}
	if err := c.Check(19000, 1, 1); err != nil {
		t.Fatalf("19000 in one process fits: %v", err)
	}
	err := c.Check(19001, 1, 1)
	if err == nil || !strings.Contains(err.Error(), "--procs 2") || !strings.Contains(err.Error(), "20000") {
		t.Fatalf("19001 in one process: %v", err)
	}
	if err := c.Check(38000, 2, 2); err != nil {
		t.Fatalf("38000 over 2 processes and 2 sources fits: %v", err)
	}
	err = c.Check(38000, 2, 1)
	if err == nil || !strings.Contains(err.Error(), "--src") || !strings.Contains(err.Error(), "give 2") {
		t.Fatalf("38000 from one source address: %v", err)
	}
	if m := MachineCapacity(); m.FilesPerProc <= 0 || m.PortsPerSrc <= 0 {
		t.Fatalf("machine capacity %+v", m)
	}
}

func TestRunRefusesTooManyConnectionsBeforeDialing(t *testing.T) {
	p := Params{Scenario: ScenarioIdle, Conns: MachineCapacity().PerProc() + 1, URL: "ws://127.0.0.1:1/ws", Tokens: TokenOptions{Secret: "s"}}
	_, err := Run(t.Context(), p)
	if err == nil || !strings.Contains(err.Error(), "--procs") {
		t.Fatalf("err = %v", err)
	}
}

func TestMintedTokensVerify(t *testing.T) {
	v, err := auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: []byte("sekrit")})
	if err != nil {
		t.Fatal(err)
	}
	tk, err := NewTokens(TokenOptions{Secret: "sekrit"})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tk.Token(3, Identity{User: "u3", Groups: []string{"g1"}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok)
	if err != nil || c.Subject != "u3" || len(c.Groups) != 1 || c.Groups[0] != "g1" || time.Until(c.ExpiresAt) < 50*time.Minute {
		t.Fatalf("claims %+v err %v", c, err)
	}
}

func TestTokensFromKeyFiles(t *testing.T) {
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	rsaFile := filepath.Join(dir, "rsa.pem")
	secretFile := filepath.Join(dir, "secret")
	mustWrite(t, rsaFile, priv)
	mustWrite(t, secretFile, []byte("file-secret\n"))

	tk, err := NewTokens(TokenOptions{KeyFile: rsaFile})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := tk.Token(0, Identity{User: "alice"})
	v, _ := auth.NewVerifier(auth.Settings{Algorithm: "RS256", PublicKeyPEM: pub})
	if c, err := v.Verify(tok); err != nil || c.Subject != "alice" {
		t.Fatalf("RS256 token from key file: %+v %v", c, err)
	}

	tk, err = NewTokens(TokenOptions{KeyFile: secretFile})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ = tk.Token(0, Identity{User: "bob"})
	v, _ = auth.NewVerifier(auth.Settings{Algorithm: "HS256", Secret: []byte("file-secret")})
	if c, err := v.Verify(tok); err != nil || c.Subject != "bob" {
		t.Fatalf("HS256 token from secret file: %+v %v", c, err)
	}

	if _, err := NewTokens(TokenOptions{}); err == nil || !strings.Contains(err.Error(), "--secret") {
		t.Fatalf("no source: %v", err)
	}
}

func TestTokensFromATokenFile(t *testing.T) {
	dir := t.TempDir()
	m, _ := auth.NewMinter("HS256", []byte("s"), "", "", "")
	t1, _ := m.Mint("a", nil, time.Hour)
	t2, _ := m.Mint("b", nil, time.Hour)
	good := filepath.Join(dir, "tokens")
	mustWrite(t, good, []byte("# tokens\n"+t1+"\n\n"+t2+"\n"))
	tk, err := NewTokens(TokenOptions{File: good})
	if err != nil {
		t.Fatal(err)
	}
	if tk.Minted() {
		t.Fatal("a token file is not minted")
	}
	if got, _ := tk.Token(3, Identity{}); got != t2 {
		t.Fatal("connection 3 of 2 tokens must reuse the second")
	}
	bad := filepath.Join(dir, "bad")
	mustWrite(t, bad, []byte(t1+"\nnot-a-token\n"))
	if _, err := NewTokens(TokenOptions{File: bad}); err == nil || !strings.Contains(err.Error(), "token 2") {
		t.Fatalf("bad token file: %v", err)
	}
	p := Params{Scenario: ScenarioFanout, Tokens: TokenOptions{File: good}}
	if _, err := newShare(&p); err == nil {
		t.Fatal("fanout with a token file must be refused: it cannot know who receives what")
	}
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestProcMemOfThisProcess(t *testing.T) {
	m, err := ReadProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RssKiB <= 0 || m.FDs <= 0 {
		t.Fatalf("%+v", m)
	}
	if _, err := ReadProcMem(1 << 30); err == nil {
		t.Fatal("a pid that does not exist must be an error")
	}
	v, err := kibField([]byte("Rss:     1234 kB\nPss:      567 kB\n"), "Pss:")
	if err != nil || v != 567 {
		t.Fatalf("kibField = %d, %v", v, err)
	}
}

func TestPartsAddUp(t *testing.T) {
	h1, h2 := NewHistogram(), NewHistogram()
	h1.Record(1e6)
	h2.Record(3e6)
	a := Part{Conns: 2, Connected: 2, Expected: 10, Delivered: 9, Lost: 1, ConnectStartNs: 200, ConnectEndNs: 300,
		FirstNs: 500, LastNs: 900, Latency: h1.wire(), DialErrors: map[string]int{"timeout": 1}}
	b := Part{Conns: 3, Connected: 3, Expected: 15, Delivered: 16, Duplicated: 1, ConnectStartNs: 100, ConnectEndNs: 250,
		FirstNs: 400, LastNs: 1000, Latency: h2.wire(), DialErrors: map[string]int{"timeout": 2, "refused": 1}}
	var sum Part
	for _, p := range []Part{a, b} {
		if err := sum.add(p); err != nil {
			t.Fatal(err)
		}
	}
	if sum.Conns != 5 || sum.Expected != 25 || sum.Delivered != 25 || sum.Lost != 1 || sum.Duplicated != 1 ||
		sum.ConnectStartNs != 100 || sum.ConnectEndNs != 300 || sum.FirstNs != 400 || sum.LastNs != 1000 ||
		sum.DialErrors["timeout"] != 3 || sum.DialErrors["refused"] != 1 {
		t.Fatalf("sum %+v", sum)
	}
	lat, _ := sum.Latency.histogram()
	if lat.Count() != 2 || lat.Quantile(1) != 3e6 {
		t.Fatalf("latency %+v", lat.Summary())
	}
}

func TestReportArithmetic(t *testing.T) {
	p := Params{Scenario: ScenarioFanout, Conns: 4, Users: 4, Messages: 8, Run: "r", PublishVia: "redis", RedisURL: "redis://x"}
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	start := time.Unix(100, 0)
	pub := &PublishStats{Published: 8, start: start, end: start.Add(time.Second)}
	sum := Part{Conns: 4, Connected: 4, ConnectStartNs: 0, ConnectEndNs: 2e9, Expected: 8, Delivered: 6, Lost: 2,
		LastNs: start.Add(3 * time.Second).UnixNano()}
	r, err := newReport(&p, sum, pub)
	if err != nil {
		t.Fatal(err)
	}
	if r.ConnectRate != 2 || r.DeliverSeconds != 3 || r.DeliveredPerSec != 2 {
		t.Fatalf("connect rate %v deliver seconds %v deliveries/s %v", r.ConnectRate, r.DeliverSeconds, r.DeliveredPerSec)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "2 messages lost of 8") {
		t.Fatalf("problems %v", r.Problems)
	}
	var buf bytes.Buffer
	r.Write(&buf)
	if !strings.Contains(buf.String(), "lost 2  duplicated 0") || !strings.Contains(buf.String(), "PROBLEM") {
		t.Fatalf("report text:\n%s", buf.String())
	}
}

func TestTableShowsRatiosAndJudgesTargets(t *testing.T) {
	idle := func(rate, pss float64) *Report {
		return &Report{Scenario: ScenarioIdle, Connected: 100, ConnectRate: rate,
			Server: &ServerStats{PssPerConnBytes: pss, RssPerConnBytes: pss}}
	}
	fan := func(rate float64, lost int64) *Report {
		return &Report{Scenario: ScenarioFanout, DeliveredPerSec: rate, Lost: lost, Publish: &PublishStats{}}
	}
	// Three rounds: the table shows the median rate and the total loss.
	res := &SuiteResult{Mode: "quick", Rounds: 3, Engines: []string{"gws", "epoll"}, Steps: []string{"idle", "fanout"},
		Reports: map[string]map[string][]*Report{
			"idle": {"gws": {idle(1000, 20000), idle(900, 21000), idle(5000, 19000)},
				"epoll": {idle(1500, 2000), idle(1400, 2100), idle(100, 1900)}},
			"fanout": {"gws": {fan(100000, 0), fan(90000, 0), fan(110000, 0)},
				"epoll": {fan(150000, 0), fan(300000, 3), fan(250000, 0)}},
		}}
	var buf bytes.Buffer
	WriteTable(&buf, res)
	out := buf.String()
	for _, want := range []string{
		"epoll/gws", "handshakes/s", "1.40", "0.10",
		"PASS  memory/conn: epoll 2000 B Pss vs gws 20000 B",
		"PASS  handshakes/s: epoll 1400 vs gws 1000",
		"FAIL  fanout deliveries/s: epoll 250000 vs gws 100000 (ratio 2.50; goal ≥ 2), epoll lost 3 dup 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	res.Steps = append(res.Steps, "paced")
	paced := fan(1000, 0)
	paced.PublishRate = 10
	res.Reports["paced"] = map[string][]*Report{"gws": {paced}, "epoll": {paced}}
	buf.Reset()
	WriteTable(&buf, res)
	if !strings.Contains(buf.String(), "PASS  paced (paced, latency only): epoll lost 0 dup 0") {
		t.Errorf("a paced step is judged on loss only:\n%s", buf.String())
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 1..4 = %v", got)
	}
}

func TestAPIURLFromWebSocketURL(t *testing.T) {
	for in, want := range map[string]string{
		"ws://127.0.0.1:8004/ws":   "http://127.0.0.1:8004/api/publish",
		"wss://example.test/x?y=1": "https://example.test/api/publish",
	} {
		if got, err := APIURL(in); err != nil || got != want {
			t.Errorf("APIURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := APIURL("http://x/ws"); err == nil {
		t.Error("http:// must be refused")
	}
}

func TestCommandLineRefusesBadInput(t *testing.T) {
	var out, errb bytes.Buffer
	cases := map[string][]string{
		"unknown scenario":        {"stampede"},
		"fanout without source":   {"fanout", "--secret", "s", "--api-key", ""},
		"over the per-proc limit": {"idle", "--secret", "s", "--conns", "1000000"},
	}
	for name, args := range cases {
		errb.Reset()
		if code := Main(t.Context(), args, nil, &out, &errb); code != 2 {
			t.Errorf("%s: exit %d, want 2 (stderr %s)", name, code, errb.String())
		}
	}
	errb.Reset()
	Main(t.Context(), []string{"idle", "--secret", "s", "--conns", "1000000"}, nil, &out, &errb)
	if !strings.Contains(errb.String(), "--procs") {
		t.Errorf("refusal does not say what to do: %s", errb.String())
	}
}

func TestStatCPUParsesAroundSpacesInTheName(t *testing.T) {
	line := []byte("4242 (web socket) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 125 0 0 20 0 9 0 100 0 0\n")
	cpu, err := parseStatCPU(line)
	if err != nil || cpu != 3.75 {
		t.Fatalf("cpu %v err %v, want 3.75", cpu, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("a line without ')' must be an error")
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

// ReadRunTime resolves what ReadCPU's 10 ms ticks cannot, and agrees with it over a longer
// span: the redis CPU of a fleet run (a few ms) depends on it.
func TestRunTimeResolvesMillisecondsAndAgreesWithTicks(t *testing.T) {
	if run, err := parseSchedstat([]byte("100835984 281328617 539\n")); err != nil || run != 100835984 {
		t.Fatalf("run %d err %v, want 100835984", run, err)
	}
	if _, err := parseSchedstat([]byte("x 1 2")); err == nil {
		t.Fatal("a malformed schedstat must be an error")
	}
	pid := os.Getpid()
	tick0, _ := ReadCPU(pid)
	run0, err := ReadRunTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	sink := 0
	for {
		for i := range 1 << 20 {
			sink += i
		}
		if tick, _ := ReadCPU(pid); tick-tick0 >= 0.3 {
			break
		}
	}
	tick1, _ := ReadCPU(pid)
	run1, err := ReadRunTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	ticks, run := tick1-tick0, run1-run0
	if run < ticks*0.8-0.02 || run > ticks*1.2+0.02 {
		t.Fatalf("over %.2f s of CPU by ticks, run time says %.4f s (sink %d)", ticks, run, sink)
	}
	t.Logf("%.2f s by ticks, %.6f s by run time", ticks, run)
}

func TestServerLimitRefusesWhatTheServerCannotHold(t *testing.T) {
	limits := "Limit                     Soft Limit           Hard Limit           Units\n" +
		"Max open files            20000                20000                files\n"
	if n, ok := openFilesLimit(limits); !ok || n != 20000 {
		t.Fatalf("limit %d %v", n, ok)
	}
	if _, ok := openFilesLimit("Max open files            unlimited            unlimited            files\n"); ok {
		t.Fatal("unlimited is no limit")
	}
	self, ok := openFilesLimit(string(must(os.ReadFile("/proc/self/limits"))))
	if !ok {
		t.Skip("no open-files limit on this machine")
	}
	if err := CheckServer(os.Getpid(), self-serverReserve); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	err := CheckServer(os.Getpid(), self)
	if err == nil || !strings.Contains(err.Error(), "ulimit -n") {
		t.Fatalf("over the limit: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestPortHintAtHalfTheRange(t *testing.T) {
	c := Capacity{FilesPerProc: 20000, PortsPerSrc: 28232}
	if h := c.PortHint(14000, 1); h != "" {
		t.Fatalf("14000 from one address: %q", h)
	}
	if h := c.PortHint(19000, 1); !strings.Contains(h, "--src") || !strings.Contains(h, "need 2") {
		t.Fatalf("19000 from one address: %q", h)
	}
	if h := c.PortHint(19000, 2); h != "" {
		t.Fatalf("19000 from two addresses: %q", h)
	}
}

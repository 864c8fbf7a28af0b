// Package otlpsink is an OTLP/HTTP trace receiver that runs in-process: it decodes the
// protobuf export requests an OTLP exporter POSTs to /v1/traces. The end-to-end tests read the
// spans it kept; the load harness uses it as the collector of a traced run, counting spans
// without keeping them.
package otlpsink

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened.
type Span struct {
	Name     string
	TraceID  string // hex
	SpanID   string // hex
	ParentID string // hex; "" for a root
	Instance string // the service.instance.id of the process that sent it
	Attrs    map[string]any
	Links    []string // hex span ids
}

// Sink receives spans.
type Sink struct {
	keep    bool
	srv     *http.Server
	ln      net.Listener
	count   atomic.Int64
	mu      sync.Mutex
	spans   []Span
	serving chan struct{}
}

// Start listens on a loopback port; keep says whether spans are kept for Spans (else only
// counted).
func Start(keep bool) (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("otlpsink: listen: %w", err)
	}
	s := &Sink{keep: keep, ln: ln, serving: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", s.export)
	s.srv = &http.Server{Handler: mux}
	go func() {
		defer close(s.serving)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Endpoint is the base URL for OTEL_EXPORTER_OTLP_ENDPOINT.
func (s *Sink) Endpoint() string { return "http://" + s.ln.Addr().String() }

// Close stops the receiver and closes its connections.
func (s *Sink) Close() error {
	err := s.srv.Close()
	<-s.serving
	if err != nil {
		return fmt.Errorf("otlpsink: close: %w", err)
	}
	return nil
}

// Count is how many spans were received.
func (s *Sink) Count() int64 { return s.count.Load() }

// Spans returns a copy of the spans kept so far.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...)
}

func (s *Sink) export(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		instance, _ := value(attrs(rs.GetResource().GetAttributes())["service.instance.id"]).(string)
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				s.count.Add(1)
				if !s.keep {
					continue
				}
				span := Span{
					Name: sp.GetName(), TraceID: hex.EncodeToString(sp.GetTraceId()),
					SpanID: hex.EncodeToString(sp.GetSpanId()), ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Instance: instance, Attrs: map[string]any{},
				}
				for k, v := range attrs(sp.GetAttributes()) {
					span.Attrs[k] = value(v)
				}
				for _, l := range sp.GetLinks() {
					span.Links = append(span.Links, hex.EncodeToString(l.GetSpanId()))
				}
				got = append(got, span)
			}
		}
	}
	if len(got) > 0 {
		s.mu.Lock()
		s.spans = append(s.spans, got...)
		s.mu.Unlock()
	}
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func attrs(kvs []*commonpb.KeyValue) map[string]*commonpb.AnyValue {
	m := make(map[string]*commonpb.AnyValue, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = kv.GetValue()
	}
	return m
}

// value turns an attribute value into a string, int64, float64 or bool (nil for others).
func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	}
	return nil
}

package tracing_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
	"github.com/eventcdc/cdc/tracing"
	"github.com/eventcdc/cdc/tracing/otlptest"
)

func TestParseTraceparent(t *testing.T) {
	const (
		tid = "4bf92f3577b34da6a3ce929d0e0e4736"
		sid = "00f067aa0ba902b7"
	)
	tests := []struct {
		name      string
		in        string
		ok        bool
		sampled   bool
		wantTrace string
	}{
		{name: "sampled", in: "00-" + tid + "-" + sid + "-01", ok: true, sampled: true, wantTrace: tid},
		{name: "not sampled", in: "00-" + tid + "-" + sid + "-00", ok: true, wantTrace: tid},
		{name: "unknown flag bits kept out", in: "00-" + tid + "-" + sid + "-03", ok: true, sampled: true, wantTrace: tid},
		{name: "future version with extra field", in: "cc-" + tid + "-" + sid + "-01-what-the-future-holds", ok: true, sampled: true, wantTrace: tid},
		{name: "future version exact size", in: "01-" + tid + "-" + sid + "-00", ok: true, wantTrace: tid},
		{name: "future version extra without dash", in: "01-" + tid + "-" + sid + "-01x", ok: false},
		{name: "version 00 with extra field", in: "00-" + tid + "-" + sid + "-01-x", ok: false},
		{name: "version ff", in: "ff-" + tid + "-" + sid + "-01", ok: false},
		{name: "uppercase hex", in: "00-" + strings.ToUpper(tid) + "-" + sid + "-01", ok: false},
		{name: "uppercase version", in: "0A-" + tid + "-" + sid + "-01", ok: false},
		{name: "zero trace id", in: "00-" + strings.Repeat("0", 32) + "-" + sid + "-01", ok: false},
		{name: "zero span id", in: "00-" + tid + "-" + strings.Repeat("0", 16) + "-01", ok: false},
		{name: "short trace id", in: "00-" + tid[:31] + "-" + sid + "-01", ok: false},
		{name: "long span id", in: "00-" + tid + "-" + sid + "0-01", ok: false},
		{name: "non-hex", in: "00-" + tid[:31] + "g-" + sid + "-01", ok: false},
		{name: "wrong separator", in: "00_" + tid + "-" + sid + "-01", ok: false},
		{name: "surrounding space", in: " 00-" + tid + "-" + sid + "-01", ok: false},
		{name: "missing flags", in: "00-" + tid + "-" + sid, ok: false},
		{name: "empty", in: "", ok: false},
		{name: "just a trace id", in: tid, ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, ok := tracing.ParseTraceparent([]byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ParseTraceparent(%q) ok = %v, want %v", tt.in, ok, tt.ok)
			}
			if !ok {
				return
			}
			if got := sc.TraceID().String(); got != tt.wantTrace {
				t.Errorf("trace id = %s, want %s", got, tt.wantTrace)
			}
			if got := sc.SpanID().String(); got != sid {
				t.Errorf("span id = %s, want %s", got, sid)
			}
			if sc.IsSampled() != tt.sampled {
				t.Errorf("sampled = %v, want %v", sc.IsSampled(), tt.sampled)
			}
			if sc.TraceFlags()&^trace.FlagsSampled != 0 {
				t.Errorf("flags %v carry bits other than sampled", sc.TraceFlags())
			}
			if !sc.IsRemote() {
				t.Error("span context not marked remote")
			}
		})
	}
	if _, ok := tracing.ParseTraceparent(nil); ok {
		t.Error("nil accepted")
	}
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSetup_OffOrBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantVar string // "" = off without error
	}{
		{name: "nothing set", env: nil},
		{name: "protocol without endpoint", env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}},
		{name: "sdk disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "exporter none", env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "unknown protocol", wantVar: "OTEL_EXPORTER_OTLP_PROTOCOL",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}},
		{name: "unknown traces protocol", wantVar: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
			env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}},
		{name: "unknown protocol without endpoint", wantVar: "OTEL_EXPORTER_OTLP_PROTOCOL",
			env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}},
		{name: "endpoint without scheme", wantVar: "OTEL_EXPORTER_OTLP_ENDPOINT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}},
		{name: "traces endpoint not a url", wantVar: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1"}},
		{name: "endpoint with credentials, without scheme", wantVar: "OTEL_EXPORTER_OTLP_ENDPOINT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "tenant:s3cr3t@collector:4318"}},
		{name: "endpoint with credentials, not a url", wantVar: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tenant:s3cr3t@[::1"}},
		{name: "bad sdk disabled", wantVar: "OTEL_SDK_DISABLED",
			env: map[string]string{"OTEL_SDK_DISABLED": "yes", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "unsupported exporter", wantVar: "OTEL_TRACES_EXPORTER",
			env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}},
		{name: "timeout with a unit", wantVar: "OTEL_EXPORTER_OTLP_TIMEOUT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TIMEOUT": "5s"}},
		{name: "traces timeout negative", wantVar: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1"}},
		{name: "header without a value", wantVar: "OTEL_EXPORTER_OTLP_HEADERS",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t,bad"}},
		{name: "traces header badly encoded", wantVar: "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x=%zz"}},
		{name: "compression", wantVar: "OTEL_EXPORTER_OTLP_COMPRESSION",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}},
		{name: "certificate missing", wantVar: "OTEL_EXPORTER_OTLP_CERTIFICATE",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:1", "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}},
		{name: "sampler", wantVar: "OTEL_TRACES_SAMPLER",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_SAMPLER": "bogus"}},
		{name: "sampler ratio", wantVar: "OTEL_TRACES_SAMPLER_ARG",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}},
		{name: "batch delay", wantVar: "OTEL_BSP_SCHEDULE_DELAY",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_BSP_SCHEDULE_DELAY": "5s"}},
		{name: "sdk settings unread while off", env: map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "5s", "OTEL_TRACES_SAMPLER": "bogus"}},
		{name: "header key not a token", wantVar: "OTEL_EXPORTER_OTLP_HEADERS",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_HEADERS": "my key=v"}},
		{name: "batch export timeout negative", wantVar: "OTEL_BSP_EXPORT_TIMEOUT",
			env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_BSP_EXPORT_TIMEOUT": "-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, shutdown, err := tracing.Setup(context.Background(), envOf(tt.env), "test")
			if tt.wantVar == "" {
				if err != nil {
					t.Fatalf("Setup: %v", err)
				}
			} else {
				var ce *tracing.ConfigError
				if !errors.As(err, &ce) || ce.Var != tt.wantVar || !strings.HasPrefix(err.Error(), tt.wantVar+": ") {
					t.Fatalf("Setup error = %v, want a ConfigError naming %s", err, tt.wantVar)
				}
				if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "tenant") {
					t.Fatalf("Setup error = %v, shows the endpoint's credentials", err)
				}
			}
			if _, ok := tp.(noop.TracerProvider); !ok {
				t.Fatalf("provider is %T, want the no-op provider", tp)
			}
			if err := shutdown(context.Background()); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			collected := false
			_, span := tracing.BatchSpan(context.Background(), tp, 1, 2, "0/1", "0/2", func() [][]byte {
				collected = true
				return [][]byte{[]byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}
			})
			if span.IsRecording() {
				t.Error("span from a no-op provider records")
			}
			if collected {
				t.Error("traceparents collected for a span that is not recorded")
			}
			span.End()
		})
	}
}

// TestSetup_ExportsBatchSpan sends a batch span through each protocol and
// endpoint form to an in-process receiver and checks exactly what arrives.
func TestSetup_ExportsBatchSpan(t *testing.T) {
	tests := []struct {
		name string
		recv func(testing.TB) *otlptest.Receiver
		env  func(endpoint string) map[string]string
	}{
		{name: "http default protocol, base endpoint", recv: otlptest.NewHTTP, env: func(e string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e}
		}},
		{name: "http base endpoint with trailing slash", recv: otlptest.NewHTTP, env: func(e string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e + "/", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
		}},
		{name: "http traces endpoint used as given", recv: otlptest.NewHTTP, env: func(e string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": e + "/v1/traces", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
		}},
		{name: "grpc", recv: otlptest.NewGRPC, env: func(e string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": e, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
		}},
		{name: "grpc via traces variables", recv: otlptest.NewGRPC, env: func(e string) map[string]string {
			return map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": e, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": "cdc-eu"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recv := tt.recv(t)
			env := tt.env(recv.Endpoint)
			tp, shutdown, err := tracing.Setup(context.Background(), envOf(env), "v1.2.3")
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			sdk, ok := tp.(*sdktrace.TracerProvider)
			if !ok {
				t.Fatalf("provider is %T, want the SDK provider", tp)
			}
			tps := [][]byte{
				[]byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
				nil, // a NULL traceparent
				[]byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
				[]byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), // same request again
				[]byte("not a traceparent"),
			}
			_, span := tracing.BatchSpan(context.Background(), tp, 5, 4321, "0/16B3748", "0/16B9A20", func() [][]byte { return tps })
			span.End()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := sdk.ForceFlush(ctx); err != nil {
				t.Fatalf("force flush: %v", err)
			}
			spans := recv.WaitSpans(t, 10*time.Second, "the batch span", func(s []otlptest.Span) bool { return len(s) >= 1 })
			if err := shutdown(ctx); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if p := recv.Problems(); len(p) > 0 {
				t.Fatalf("receiver refused requests: %v", p)
			}
			if len(spans) != 1 {
				t.Fatalf("received %d spans, want 1: %+v", len(spans), spans)
			}
			got := spans[0]
			if got.Name != "cdc.batch" || got.Kind != tracepb.Span_SPAN_KIND_CONSUMER {
				t.Errorf("span %q kind %v, want cdc.batch consumer", got.Name, got.Kind)
			}
			wantAttrs := map[string]any{
				"cdc.batch.rows":          int64(5),
				"cdc.batch.bytes":         int64(4321),
				"cdc.lsn.first":           "0/16B3748",
				"cdc.lsn.last":            "0/16B9A20",
				"cdc.batch.links":         int64(2),
				"cdc.batch.links_dropped": int64(0),
			}
			if !reflect.DeepEqual(got.Attrs, wantAttrs) {
				t.Errorf("attributes = %v, want %v", got.Attrs, wantAttrs)
			}
			// Flags: the low byte is the linked context's trace flags (01 =
			// sampled); 0x300 = "remoteness known" + "remote": the context
			// came from another process.
			wantLinks := []otlptest.Link{
				{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7", Flags: 0x301},
				{TraceID: "0af7651916cd43dd8448eb211c80319c", SpanID: "b7ad6b7169203331", Flags: 0x300},
			}
			if len(got.Links) != len(wantLinks) {
				t.Fatalf("links = %+v, want %+v", got.Links, wantLinks)
			}
			for i, l := range got.Links {
				if l != wantLinks[i] {
					t.Errorf("link %d = %+v, want %+v", i, l, wantLinks[i])
				}
			}
			wantService := "cdc"
			if env["OTEL_SERVICE_NAME"] != "" {
				wantService = env["OTEL_SERVICE_NAME"]
			}
			if got.Resource["service.name"] != wantService || got.Resource["service.version"] != "v1.2.3" {
				t.Errorf("resource = %v, want service.name %s, service.version v1.2.3", got.Resource, wantService)
			}
		})
	}
}

func TestBatchSpan_CapsLinks(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	const n = 200
	var tps [][]byte
	for i := 1; i <= n; i++ {
		tps = append(tps, []byte(fmt.Sprintf("00-%032x-%016x-01", i, i)))
	}
	_, span := tracing.BatchSpan(context.Background(), tp, n, n*100, "0/1", "0/2", func() [][]byte { return tps })
	span.End()

	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1", len(ended))
	}
	s := ended[0]
	if len(s.Links()) != tracing.MaxLinks {
		t.Fatalf("%d links, want %d", len(s.Links()), tracing.MaxLinks)
	}
	// The first MaxLinks, in batch order: the oldest events of the batch.
	for i, l := range s.Links() {
		if want := fmt.Sprintf("%032x", i+1); l.SpanContext.TraceID().String() != want {
			t.Fatalf("link %d to trace %s, want %s", i, l.SpanContext.TraceID(), want)
		}
	}
	if s.DroppedLinks() != 0 {
		t.Errorf("SDK dropped %d links beyond ours", s.DroppedLinks())
	}
	got := map[string]int64{}
	for _, kv := range s.Attributes() {
		got[string(kv.Key)] = kv.Value.AsInt64()
	}
	if got["cdc.batch.links"] != n || got["cdc.batch.links_dropped"] != n-tracing.MaxLinks || got["cdc.batch.rows"] != n {
		t.Errorf("attributes = %v, want links %d, links_dropped %d, rows %d", got, n, n-tracing.MaxLinks, n)
	}
}

// TestSetup_UnreachableCollector: startup never waits for a collector, and
// shutdown gives up when its context does, so a dead collector cannot hold
// the connector's exit hostage.
func TestSetup_UnreachableCollector(t *testing.T) {
	for _, proto := range []string{"http/protobuf", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			tp, shutdown, err := tracing.Setup(context.Background(),
				envOf(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": proto}), "test")
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			_, span := tracing.BatchSpan(context.Background(), tp, 1, 1, "0/1", "0/1", nil)
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			_ = shutdown(ctx) // an error is expected: the span could not be sent
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("shutdown took %s with a 500ms context", d)
			}
		})
	}
}

func TestTraceparents(t *testing.T) {
	text := func(s string) decoder.Value { return decoder.Value{Kind: decoder.ValueText, Data: []byte(s)} }
	null := decoder.Value{Kind: decoder.ValueNull}
	v1 := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id"}, {Name: "traceparent"}}}
	// A column added while streaming moves traceparent to another position.
	v2 := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id"}, {Name: "region"}, {Name: "traceparent"}}}
	without := &decoder.Relation{Name: "outbox", Columns: []decoder.Column{{Name: "id"}}}
	rows := []sink.Row{
		{Relation: v1, Values: []decoder.Value{text("a"), text("tp-1")}},
		{Relation: v1, Values: []decoder.Value{text("b"), null}},
		{Relation: v1, Values: []decoder.Value{text("c"), {Kind: decoder.ValueUnchanged}}},
		{Relation: v2, Values: []decoder.Value{text("d"), text("eu"), text("tp-2")}},
		{Relation: without, Values: []decoder.Value{text("e")}},
		{Relation: v1, Values: []decoder.Value{text("f")}}, // short tuple: no panic
		{Relation: v1, Values: []decoder.Value{text("g"), text("")}},
	}
	got := tracing.Traceparents(rows)
	want := [][]byte{[]byte("tp-1"), []byte("tp-2"), []byte("")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Traceparents = %q, want %q", got, want)
	}
	if got := tracing.Traceparents(nil); got != nil {
		t.Fatalf("Traceparents(nil) = %q, want nil", got)
	}
}

// Well-formed SDK settings pass, and tracing is on.
func TestSetup_TakesWellFormedSDKSettings(t *testing.T) {
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":       "http://127.0.0.1:1",
		"OTEL_EXPORTER_OTLP_TIMEOUT":        "5000",
		"OTEL_EXPORTER_OTLP_HEADERS":        "authorization=Bearer%20abc,x-tenant=7",
		"OTEL_EXPORTER_OTLP_COMPRESSION":    "gzip",
		"OTEL_TRACES_SAMPLER":               "ParentBased_TraceIdRatio",
		"OTEL_TRACES_SAMPLER_ARG":           "0.25",
		"OTEL_BSP_MAX_QUEUE_SIZE":           "4096",
		"OTEL_BSP_EXPORT_TIMEOUT":           "0",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=abc%20def,",
	}
	tp, shutdown, err := tracing.Setup(context.Background(), envOf(env), "test")
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	defer shutdown(context.Background()) //nolint:errcheck // nothing was sent
	if _, ok := tp.(noop.TracerProvider); ok {
		t.Fatal("tracing is off with an endpoint set")
	}
}

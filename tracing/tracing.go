// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and records one span per stored batch, linked to
// the traces of the events in it. Tracing is off unless an OTLP endpoint is
// set: the connector must not try to reach a collector nobody runs.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Protocols accepted in OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// ConfigError is a bad tracing setting; Var names the environment variable
// so the operator knows what to fix (the connector exits 2 on it).
type ConfigError struct {
	Var string
	Err error
}

func (e *ConfigError) Error() string { return e.Var + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// config is what Setup reads from the environment.
type config struct {
	endpoint    string // full URL; for HTTP the path is the one requests go to
	endpointVar string // which variable it came from, for errors
	protocol    string
	serviceName string
}

// Setup builds a tracer provider from the OTEL_* variables read through
// getenv. Tracing is on when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT is set (and neither OTEL_SDK_DISABLED=true
// nor OTEL_TRACES_EXPORTER=none says otherwise); then
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL picks
// "http/protobuf" (default) or "grpc". Otherwise it returns a no-op provider
// and a shutdown that does nothing.
//
// Spans go through a batch span processor; shutdown flushes what is queued
// and stops the exporter, so give it a bounded context. Settings Setup does
// not interpret (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION,
// _CERTIFICATE, OTEL_BSP_*, OTEL_TRACES_SAMPLER) are read by the
// OpenTelemetry SDK itself from the process environment. Nothing is
// connected here: an unreachable collector costs dropped spans, never
// startup.
func Setup(ctx context.Context, getenv func(string) string, serviceVersion string) (trace.TracerProvider, func(context.Context) error, error) {
	nothing := func(context.Context) error { return nil }
	cfg, on, err := readConfig(getenv)
	if err != nil || !on {
		return noop.NewTracerProvider(), nothing, err
	}
	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return noop.NewTracerProvider(), nothing, err
	}
	res := resource.NewWithAttributes("",
		attribute.String("service.name", cfg.serviceName),
		attribute.String("service.version", serviceVersion),
		attribute.String("telemetry.sdk.language", "go"),
		attribute.String("telemetry.sdk.name", "opentelemetry"),
	)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}

func readConfig(getenv func(string) string) (config, bool, error) {
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_SDK_DISABLED"))); v {
	case "true":
		return config{}, false, nil
	case "", "false":
	default:
		return config{}, false, &ConfigError{Var: "OTEL_SDK_DISABLED", Err: fmt.Errorf("want true or false, got %q", v)}
	}
	switch v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v {
	case "none":
		return config{}, false, nil
	case "", "otlp":
	default:
		return config{}, false, &ConfigError{Var: "OTEL_TRACES_EXPORTER", Err: fmt.Errorf("only otlp and none are supported, got %q", v)}
	}

	cfg := config{protocol: ProtocolHTTP, serviceName: "cdc"}
	if v := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); v != "" {
		cfg.serviceName = v
	}
	protoVar := ""
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			cfg.protocol, protoVar = v, name
			break
		}
	}
	// The signal-specific endpoint is used as given; the generic one is a
	// base URL to which HTTP appends the signal path (OTLP exporter spec).
	base := false
	if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); v != "" {
		cfg.endpoint, cfg.endpointVar = v, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	} else if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); v != "" {
		cfg.endpoint, cfg.endpointVar, base = v, "OTEL_EXPORTER_OTLP_ENDPOINT", true
	} else {
		// No endpoint means no tracing; a protocol alone is still checked,
		// so a typo does not wait to surface until an endpoint is added.
		if protoVar != "" && cfg.protocol != ProtocolHTTP && cfg.protocol != ProtocolGRPC {
			return config{}, false, protocolErr(protoVar, cfg.protocol)
		}
		return config{}, false, nil
	}
	if cfg.protocol != ProtocolHTTP && cfg.protocol != ProtocolGRPC {
		if protoVar == "" {
			protoVar = "OTEL_EXPORTER_OTLP_PROTOCOL"
		}
		return config{}, false, protocolErr(protoVar, cfg.protocol)
	}

	u, err := url.Parse(cfg.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return config{}, false, &ConfigError{Var: cfg.endpointVar,
			Err: fmt.Errorf("want a URL like http://collector:4318, got %q", hideUserinfo(cfg.endpoint))}
	}
	if base && cfg.protocol == ProtocolHTTP {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
		cfg.endpoint = u.String()
	}
	if err := checkSDKSettings(getenv); err != nil {
		return config{}, false, err
	}
	return cfg, true, nil
}

// checkSDKSettings checks the variables the OpenTelemetry SDK reads from
// the environment itself once tracing is on. The SDK skips a bad one with
// a plain-text line on stderr (not the connector's JSON log) and runs on
// without it: a header that carries the collector's token, lost so, would
// fail every export. Here it is a configuration error, like the others.
func checkSDKSettings(getenv func(string) string) error {
	for _, sig := range []string{"", "TRACES_"} {
		prefix := "OTEL_EXPORTER_OTLP_" + sig
		if v := strings.TrimSpace(getenv(prefix + "TIMEOUT")); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 0 {
				return &ConfigError{Var: prefix + "TIMEOUT", Err: fmt.Errorf("want whole milliseconds, got %q", v)}
			}
		}
		if v := strings.TrimSpace(getenv(prefix + "HEADERS")); v != "" {
			for _, h := range strings.Split(v, ",") {
				if strings.TrimSpace(h) == "" {
					continue // the SDK skips an empty entry
				}
				k, val, ok := strings.Cut(h, "=")
				key, kerr := url.PathUnescape(strings.TrimSpace(k))
				_, verr := url.PathUnescape(val)
				if !ok || kerr != nil || verr != nil || !headerKey(key) {
					return &ConfigError{Var: prefix + "HEADERS", Err: errors.New("want key=value pairs separated by commas, keys HTTP tokens, values URL-encoded")}
				}
			}
		}
		if v := strings.TrimSpace(getenv(prefix + "COMPRESSION")); v != "" && v != "gzip" && v != "none" {
			return &ConfigError{Var: prefix + "COMPRESSION", Err: fmt.Errorf("want gzip or none, got %q", v)}
		}
		for _, file := range []string{"CERTIFICATE", "CLIENT_CERTIFICATE", "CLIENT_KEY"} {
			if v := strings.TrimSpace(getenv(prefix + file)); v != "" {
				if _, err := os.ReadFile(v); err != nil {
					return &ConfigError{Var: prefix + file, Err: err}
				}
			}
		}
	}
	ratio := false
	switch v := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER"))); v { // the SDK ignores case
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
	case "traceidratio", "parentbased_traceidratio":
		ratio = true
	default:
		return &ConfigError{Var: "OTEL_TRACES_SAMPLER", Err: fmt.Errorf("want always_on, always_off, traceidratio or their parentbased_ forms, got %q", v)}
	}
	if v := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); v != "" && ratio {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f < 0 || f > 1 {
			return &ConfigError{Var: "OTEL_TRACES_SAMPLER_ARG", Err: fmt.Errorf("want a ratio from 0 to 1, got %q", v)}
		}
	}
	for _, name := range []string{"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"} {
		least := 1
		if name == "OTEL_BSP_EXPORT_TIMEOUT" {
			least = 0 // no timeout, to the SDK
		}
		if v := strings.TrimSpace(getenv(name)); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < least {
				return &ConfigError{Var: name, Err: fmt.Errorf("want a whole number of at least %d, got %q", least, v)}
			}
		}
	}
	return nil
}

// headerKey says whether k is an HTTP header name (RFC 9110's token),
// the only kind the SDK sends; it drops any other with a line on stderr.
func headerKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if c > 0x7e || c <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", c) {
			return false
		}
	}
	return true
}

// hideUserinfo is an endpoint as a message may show it: what comes before
// an @ may be a user and a token, and is hidden.
func hideUserinfo(endpoint string) string {
	at := strings.LastIndex(endpoint, "@")
	if at < 0 {
		return endpoint
	}
	start := 0
	if i := strings.Index(endpoint, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return endpoint[:start] + "xxxxx" + endpoint[at:]
}

func protocolErr(name, got string) error {
	return &ConfigError{Var: name, Err: fmt.Errorf("want %s or %s, got %q", ProtocolHTTP, ProtocolGRPC, got)}
}

func newExporter(ctx context.Context, cfg config) (*otlptrace.Exporter, error) {
	var (
		exp *otlptrace.Exporter
		err error
	)
	switch cfg.protocol {
	case ProtocolGRPC:
		// The scheme decides TLS (http = plaintext); the path is ignored.
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.endpoint))
	case ProtocolHTTP:
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(cfg.endpoint))
	default:
		err = errors.New("unreachable: protocol checked by readConfig")
	}
	if err != nil {
		return nil, fmt.Errorf("create otlp %s trace exporter for %s: %w", cfg.protocol, hideUserinfo(cfg.endpoint), err)
	}
	return exp, nil
}

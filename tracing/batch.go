package tracing

import (
	"context"
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventcdc/cdc/decoder"
	"github.com/eventcdc/cdc/sink"
)

// MaxLinks caps the links on one batch span. A batch can hold many
// thousands of events; a span with that many links is costly to export and
// unreadable in any trace UI. It matches the SDK's default link limit
// (OTEL_SPAN_LINK_COUNT_LIMIT), so nothing is silently dropped further on.
const MaxLinks = 128

// Attribute keys on the batch span.
const (
	AttrRows         = "cdc.batch.rows"
	AttrBytes        = "cdc.batch.bytes"
	AttrFirstLSN     = "cdc.lsn.first"
	AttrLastLSN      = "cdc.lsn.last"
	AttrLinks        = "cdc.batch.links"         // distinct valid traceparents in the batch
	AttrLinksDropped = "cdc.batch.links_dropped" // of those, how many were not linked (over MaxLinks)
)

// TraceparentColumn is the outbox column holding each event's W3C
// traceparent.
const TraceparentColumn = "traceparent"

// SpanName is the name of the span covering one batch: store and acknowledge.
const SpanName = "cdc.batch"

const instrumentation = "github.com/eventcdc/cdc/tracing"

// BatchSpan starts the span for one batch of rows events, bytes payload
// bytes, spanning WAL positions firstLSN..lastLSN. Each distinct valid W3C
// traceparent (called for only when the span is recorded) becomes a span
// link (up to MaxLinks), so a trace UI can go
// from a request that wrote an event to the batch that delivered it;
// invalid values are skipped, as the sink does: trace context is advisory.
// The caller ends the span once the batch is stored and acknowledged.
func BatchSpan(ctx context.Context, tp trace.TracerProvider, rows, bytes int, firstLSN, lastLSN string, traceparents func() [][]byte) (context.Context, trace.Span) {
	ctx, span := tp.Tracer(instrumentation).Start(ctx, SpanName,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.Int(AttrRows, rows),
			attribute.Int(AttrBytes, bytes),
			attribute.String(AttrFirstLSN, firstLSN),
			attribute.String(AttrLastLSN, lastLSN),
		))
	// Collect and parse only when the span is recorded: with tracing off
	// (or the span sampled out) this would be wasted work on every batch.
	if span.IsRecording() && traceparents != nil {
		links, total := linksFor(traceparents())
		for _, l := range links {
			span.AddLink(l)
		}
		span.SetAttributes(attribute.Int(AttrLinks, total), attribute.Int(AttrLinksDropped, total-len(links)))
	}
	return ctx, span
}

// linksFor returns links to the distinct valid traceparents, at most
// MaxLinks of them in first-seen order, and how many distinct valid ones
// there were in all.
func linksFor(traceparents [][]byte) ([]trace.Link, int) {
	seen := make(map[[24]byte]struct{}, min(len(traceparents), MaxLinks))
	var links []trace.Link
	total := 0
	for _, tpv := range traceparents {
		sc, ok := ParseTraceparent(tpv)
		if !ok {
			continue
		}
		var key [24]byte
		tid, sid := sc.TraceID(), sc.SpanID()
		copy(key[:16], tid[:])
		copy(key[16:], sid[:])
		if _, dup := seen[key]; dup {
			continue
		}
		seen[key] = struct{}{}
		total++
		if len(links) < MaxLinks {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	return links, total
}

// ParseTraceparent parses a W3C Trace Context traceparent header value:
// "<version>-<32 hex trace id>-<16 hex parent id>-<2 hex flags>", lowercase
// hex. Version ff, all-zero ids and malformed values are invalid. A future
// version may append fields after a '-', as the spec allows; version 00
// must be exactly 55 bytes.
func ParseTraceparent(v []byte) (trace.SpanContext, bool) {
	const size = 55
	if len(v) < size || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return trace.SpanContext{}, false
	}
	var version, flags [1]byte
	var tid trace.TraceID
	var sid trace.SpanID
	if !lowerHex(v[0:2], version[:]) || version[0] == 0xff ||
		!lowerHex(v[3:35], tid[:]) || !lowerHex(v[36:52], sid[:]) || !lowerHex(v[53:55], flags[:]) {
		return trace.SpanContext{}, false
	}
	if version[0] == 0 && len(v) != size || len(v) > size && v[size] != '-' {
		return trace.SpanContext{}, false
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     sid,
		TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled,
		Remote:     true,
	})
	// IsValid rejects all-zero trace and span ids.
	return sc, sc.IsValid()
}

// lowerHex decodes src into dst, refusing uppercase: the spec allows only
// lowercase hex, and a value that breaks it was not written by a tracer.
func lowerHex(src, dst []byte) bool {
	for _, c := range src {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, src)
	return err == nil
}

// Traceparents returns the non-NULL values of each row's traceparent
// column, in row order, for BatchSpan. Rows whose relation has no such
// column (an outbox without it) contribute nothing.
func Traceparents(rows []sink.Row) [][]byte {
	var (
		out [][]byte
		rel *decoder.Relation
		col = -1
	)
	for i := range rows {
		r := &rows[i]
		// A batch nearly always has one relation; look the column up
		// again only when it changes (a column was added meanwhile).
		if r.Relation != rel || i == 0 {
			rel, col = r.Relation, r.Relation.Index(TraceparentColumn)
		}
		if col >= 0 && col < len(r.Values) && r.Values[col].Kind == decoder.ValueText {
			out = append(out, r.Values[col].Data)
		}
	}
	return out
}

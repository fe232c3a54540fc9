// Package metrics defines cdc's Prometheus metrics on a registry the caller
// passes in. Names carry the cdc_ prefix and unit suffixes; no metric has a
// label, so cardinality never grows with traffic.
package metrics

import (
	"math"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics is every metric the connector exports.
type Metrics struct {
	LagBytes       prometheus.Gauge
	EventsWritten  prometheus.Counter
	BatchesWritten prometheus.Counter
	FlushDuration  prometheus.Histogram
	BatchRows      prometheus.Histogram
	BatchBytes     prometheus.Histogram
	SinkErrors     prometheus.Counter
	SinkFailing    prometheus.Gauge
	DeadLetters    prometheus.Counter
	LettersWaiting prometheus.Gauge
	BufferBytes    prometheus.Gauge
	LastFlush      prometheus.Gauge
	SlotActive     prometheus.Gauge
	SlotPollErrors prometheus.Counter
	RetentionHeld  prometheus.Gauge
	Streaming      prometheus.Gauge
	Interruptions  prometheus.Counter

	// Written by the pipeline, read at scrape time.
	oldestPendingNanos atomic.Int64 // commit time of the oldest event not yet stored; 0 when none
	safeWALBytes       atomic.Int64 // math.MinInt64 while unknown or unlimited
	now                func() int64
}

// Option changes how New sets the metrics up.
type Option func(*options)

type options struct {
	batchMaxRows, batchMaxBytes int
}

// BatchLimits makes CDC_BATCH_MAX_ROWS and CDC_BATCH_MAX_BYTES bounds of
// the cdc_batch_rows and cdc_batch_bytes buckets: a quantile read from a
// histogram lies anywhere up to its bucket's bound, and without the
// limits among them the p99 of batches at or under a limit reads above
// it (50,000-row batches read 65,044 with buckets at 16,384 and 65,536).
func BatchLimits(rows, bytes int) Option {
	return func(o *options) { o.batchMaxRows, o.batchMaxBytes = rows, bytes }
}

// sizeBuckets doubles from start, count times, with limit (when positive)
// among the bounds: halving steps keep a quantile within twice the sizes
// observed, where steps of four read a drain's 22,000-row batches as
// 64,000.
func sizeBuckets(start float64, count, limit int) []float64 {
	b := prometheus.ExponentialBuckets(start, 2, count)
	if l := float64(limit); limit > 0 && !slices.Contains(b, l) {
		b = append(b, l)
		slices.Sort(b)
	}
	return b
}

// New registers the metrics, plus Go runtime and process collectors, on reg.
func New(reg prometheus.Registerer, now func() int64, opts ...Option) *Metrics {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	f := promauto.With(reg)
	m := &Metrics{
		LagBytes: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_replication_lag_bytes",
			Help: "Bytes of WAL between the server's current position and the slot's confirmed flush position."}),
		EventsWritten: f.NewCounter(prometheus.CounterOpts{Name: "cdc_events_written_total",
			Help: "Events stored in the sink."}),
		BatchesWritten: f.NewCounter(prometheus.CounterOpts{Name: "cdc_batches_written_total",
			Help: "Batches stored in the sink (one INSERT each; a batch split to set refused rows aside still counts once)."}),
		FlushDuration: f.NewHistogram(prometheus.HistogramOpts{Name: "cdc_flush_duration_seconds",
			Help: "Time to store one batch, retries included.",
			// To 5,243 s: retries through a ClickHouse outage of an hour
			// read as such, not as the top bound (40.96 s at 14 buckets).
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 21)}),
		BatchRows: f.NewHistogram(prometheus.HistogramOpts{Name: "cdc_batch_rows",
			Help:    "Rows per stored batch.",
			Buckets: sizeBuckets(1, 19, o.batchMaxRows)}), // to 262,144
		BatchBytes: f.NewHistogram(prometheus.HistogramOpts{Name: "cdc_batch_bytes",
			Help:    "Payload bytes per stored batch.",
			Buckets: sizeBuckets(1024, 19, o.batchMaxBytes)}), // to 256 MiB
		SinkErrors: f.NewCounter(prometheus.CounterOpts{Name: "cdc_sink_errors_total",
			Help: "Failed attempts to store a batch: its INSERT, or setting aside the rows the sink refused in cdc_dead_letter (each is retried); also each session that could not start because the sink could not say what it holds."}),
		SinkFailing: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_sink_failing_batches",
			Help: "Batches whose storing failed and is being retried (their INSERT, or setting aside their refused rows), plus 1 while sessions cannot start because the sink cannot say what it holds; 0 while storing works. Stays up for as long as a batch keeps failing, however far apart its attempts."}),
		DeadLetters: f.NewCounter(prometheus.CounterOpts{Name: "cdc_dead_letters_total",
			Help: "Rows the sink refused, set aside in cdc_dead_letter (a row already there is not added again)."}),
		LettersWaiting: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_dead_letters_waiting",
			Help: "The pipeline's dead letters in cdc_dead_letter (its slot's and those of no slot; another pipeline's of the database are not counted), waiting for a replay or a delete, counted up to 10,000 and read once a minute; kept at its last reading while the read fails."}),
		BufferBytes: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_buffer_bytes",
			Help: "Payload bytes held in memory: the open batch plus batches waiting for or in the sink."}),
		LastFlush: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_last_flush_timestamp_seconds",
			Help: "Unix time of the last batch stored."}),
		SlotActive: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_slot_active",
			Help: "1 while the replication slot is in use by a connector; 0 when it is not, or when cdc cannot read its state."}),
		SlotPollErrors: f.NewCounter(prometheus.CounterOpts{Name: "cdc_slot_poll_errors_total",
			Help: "Failed reads of the slot's state from pg_replication_slots (or of the retention hold, or of the dead letters waiting); the lag gauges keep their last value meanwhile."}),
		RetentionHeld: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_outbox_retention_held",
			Help: "1 while the retention hold exists (a physical slot <slot>_retention_hold, made when the replication slot was created over an outbox with rows): no cdc run deletes outbox rows until an operator drops it. Also 1 while this process created its slot and could not make the hold: it pauses its own retention until it restarts."}),
		Streaming: f.NewGauge(prometheus.GaugeOpts{Name: "cdc_replication_streaming",
			Help: "1 while this process's replication connection is up and streaming (what /readyz's postgres check reads); 0 while it connects, reconnects or stands by."}),
		Interruptions: f.NewCounter(prometheus.CounterOpts{Name: "cdc_replication_interruptions_total",
			Help: "Replication sessions that streamed and then ended on an error (a lost connection, a silent link, a failed query); the failed attempts to reconnect that follow and a standby's waits for a busy slot do not count."}),
		now: now,
	}
	m.safeWALBytes.Store(math.MinInt64)
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "cdc_replication_lag_seconds",
		Help: "Age of the oldest committed event this process received and has not stored in the sink yet; 0 when caught up, and on a standby that has not streamed. A process whose session ended with events unstored keeps their age, growing, until it streams again or finds another process holding the slot."},
		m.lagSeconds)
	reg.MustRegister(&safeWAL{m: m, desc: prometheus.NewDesc("cdc_slot_safe_wal_bytes",
		"WAL the slot may still retain before PostgreSQL invalidates it (pg_replication_slots.safe_wal_size); absent while max_slot_wal_keep_size is unlimited.", nil, nil)})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetOldestPending records the commit time (Unix nanoseconds) of the oldest
// event received and not yet stored; 0 when everything is stored.
func (m *Metrics) SetOldestPending(nanos int64) { m.oldestPendingNanos.Store(nanos) }

func (m *Metrics) lagSeconds() float64 {
	t := m.oldestPendingNanos.Load()
	if t == 0 {
		return 0
	}
	lag := float64(m.now()-t) / 1e9
	if lag < 0 {
		return 0
	}
	return lag
}

// SetSafeWALBytes records pg_replication_slots.safe_wal_size; ok=false
// (NULL: unlimited) removes the metric.
func (m *Metrics) SetSafeWALBytes(v int64, ok bool) {
	if !ok {
		v = math.MinInt64
	}
	m.safeWALBytes.Store(v)
}

// safeWAL exports cdc_slot_safe_wal_bytes only while it is known: a zero
// would read as "about to be invalidated", the opposite of unlimited.
type safeWAL struct {
	m    *Metrics
	desc *prometheus.Desc
}

func (s *safeWAL) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *safeWAL) Collect(ch chan<- prometheus.Metric) {
	if v := s.m.safeWALBytes.Load(); v != math.MinInt64 {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(v))
	}
}

// LagSecondsValue returns cdc_replication_lag_seconds as a scrape would.
func (m *Metrics) LagSecondsValue() float64 { return m.lagSeconds() }

//! The sink writer's Prometheus metrics: rows and duration of each write, retried
//! failures and the `as_of` each sink holds, per sink, and whether the sinks are ready.
//!
//! The `sink` label is the store written: `redis`, `mysql`, `clickhouse`, `memory` (the
//! in-process store; one write per batch however many of the views, ledgers and sales it
//! holds), `alerts` and `dead_letters` (whatever log they go to: Kafka, a file or memory).
//!
//! [`SinkMetrics`] is created unregistered (so every [`crate::writer::SinkStats`] has one);
//! [`SinkMetrics::register`] adds it to the registry the API renders at `GET /metrics`.
//! Clones share their values.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use shopflow_model::Millis;

/// The stores the writer writes, as the `sink` label spells them.
pub const SINKS: [&str; 6] = [
    "redis",
    "mysql",
    "clickhouse",
    "memory",
    "alerts",
    "dead_letters",
];

/// The sink writer's metrics. Cheap to clone; clones share their values.
#[derive(Clone, Debug)]
pub struct SinkMetrics {
    /// `shopflow_sink_batch_rows{sink}`: rows (records) per write.
    pub batch_rows: HistogramVec,
    /// `shopflow_sink_write_duration_seconds{sink}`: time of a write, retries included.
    pub write_duration: HistogramVec,
    /// `shopflow_sink_write_failures_total{sink}`: failed attempts that were retried (the
    /// last one, which stops the writer after its give-up limit, is reported as the run's
    /// error).
    pub write_failures: IntCounterVec,
    /// `shopflow_sink_as_of_ms{sink}`: the `as_of` of the last batch the sink holds.
    pub as_of: IntGaugeVec,
    /// `shopflow_ready`: 1 once a batch has been written and nothing (no sink, no source
    /// sharing the writer's health) is failing.
    pub ready: IntGauge,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Rows per write: 1 to ~1M in powers of 4.
const ROW_BUCKETS: [f64; 11] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
];

/// Seconds per write: 1 ms to 3 min (a write retried through an outage takes as long as the
/// outage; longer ones land in `+Inf`).
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0,
];

impl SinkMetrics {
    /// Unregistered metrics.
    pub fn new() -> Self {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["sink"],
            )
            .expect("valid metric")
        };
        SinkMetrics {
            batch_rows: histogram(
                "shopflow_sink_batch_rows",
                "Rows (or records) per sink write.",
                &ROW_BUCKETS,
            ),
            write_duration: histogram(
                "shopflow_sink_write_duration_seconds",
                "Duration of a sink write, retries included.",
                &DURATION_BUCKETS,
            ),
            write_failures: IntCounterVec::new(
                Opts::new(
                    "shopflow_sink_write_failures_total",
                    "Failed sink write attempts (each is retried with backoff).",
                ),
                &["sink"],
            )
            .expect("valid metric"),
            as_of: IntGaugeVec::new(
                Opts::new(
                    "shopflow_sink_as_of_ms",
                    "The as_of (epoch ms) of the last batch written to the sink.",
                ),
                &["sink"],
            )
            .expect("valid metric"),
            ready: IntGauge::new(
                "shopflow_ready",
                  "1 when a view batch has been written and no sink write or input read is failing, else 0.",
            )
            .expect("valid metric"),
        }
    }

    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.batch_rows.clone()))?;
        registry.register(Box::new(self.write_duration.clone()))?;
        registry.register(Box::new(self.write_failures.clone()))?;
        registry.register(Box::new(self.as_of.clone()))?;
        registry.register(Box::new(self.ready.clone()))?;
        Ok(())
    }

    /// Records one successful write of `rows` rows to `sink` that took `took`.
    pub fn wrote(&self, sink: &str, rows: usize, took: Duration) {
        self.batch_rows
            .with_label_values(&[sink])
            .observe(rows as f64);
        self.write_duration
            .with_label_values(&[sink])
            .observe(took.as_secs_f64());
    }

    /// Records that `sink` now holds the batch of `as_of`.
    pub fn holds(&self, sink: &str, as_of: Millis) {
        self.as_of
            .with_label_values(&[sink])
            .set(i64::try_from(as_of).unwrap_or(i64::MAX));
    }

    /// Records a failed attempt at writing `sink`: not ready until a write succeeds.
    pub fn failed(&self, sink: &str) {
        self.write_failures.with_label_values(&[sink]).inc();
        self.ready.set(0);
    }
}

//! The sink writer's retries: every write is retried under the outage policy the source
//! shares ([`shopflow_model::retry`]), reported per sink in `/readyz`, the log and
//! `shopflow_sink_write_failures_total{sink}`.
//!
//! A sink reports its outage at the first failure (the pipeline waits behind it at once).
//! The alerts and dead-letter logs report under the source's `kafka` component, so a broker
//! outage is one outage whichever notices it first.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shopflow_model::retry::{backoff, Next, Outages};

use crate::kafka::{IdRecord, KafkaWriter};
use crate::writer::SinkStats;
use crate::SinkError;

/// The [`shopflow_model::health::Health`] component a sink reports under: its own name,
/// except that the alerts and dead-letter logs share `kafka` with the source.
pub fn component_of(sink: &str) -> &str {
    match sink {
        "alerts" | "dead_letters" => "kafka",
        other => other,
    }
}

/// The [`shopflow_model::health::Health`] member the writer reports as (the source's
/// workers are 0, 1, …).
pub const WRITER_MEMBER: usize = usize::MAX;

/// How long a Kafka write may wait for the broker's acknowledgement before the writer
/// reports Kafka as failing (the write keeps waiting; librdkafka retries by itself).
pub const KAFKA_ACK_WAIT: Duration = Duration::from_secs(15);

/// What an operator should check when `sink` fails.
fn service_of(sink: &str) -> &'static str {
    match sink {
        "redis" => "Redis",
        "mysql" => "MySQL/MariaDB",
        "clickhouse" => "ClickHouse",
        "alerts" | "dead_letters" => "the broker",
        _ => "the store",
    }
}

/// Retries the writer's failing writes and reports their outages.
pub(crate) struct Retry<'a> {
    /// The writer's counters and shared health.
    pub(crate) stats: &'a SinkStats,
    /// How long a sink may keep failing before the run stops; `None` retries forever.
    pub(crate) give_up_after: Option<Duration>,
}

impl Retry<'_> {
    /// How `sink`'s attempts are reported. `name` and `doing` must outlive the answer.
    fn outages<'b>(&'b self, sink: &'b str, name: &'b str, doing: &'b str) -> Outages<'b> {
        Outages {
            health: &self.stats.health,
            component: component_of(sink),
            member: WRITER_MEMBER,
            name,
            doing,
            meanwhile: " while the pipeline waits (backpressure; /readyz answers 503)",
            service: service_of(sink),
            resumes: "writing resumes",
            report_after: Duration::ZERO,
            give_up_after: self.give_up_after,
        }
    }

    /// Calls `report` with the [`Outages`] of `sink`: `Kafka (writing alerts)` for the
    /// Kafka logs, `sink redis` for the stores.
    fn with_outages<T>(&self, sink: &str, report: impl FnOnce(&Outages<'_>) -> T) -> T {
        if component_of(sink) == "kafka" {
            let doing = format!(" (writing {sink})");
            report(&self.outages(sink, "Kafka", &doing))
        } else {
            let name = format!("sink {sink}");
            report(&self.outages(sink, &name, ""))
        }
    }

    /// Counts failed attempt `attempt` at `sink`; returns whether to give up.
    fn failed(&self, sink: &str, attempt: u32, error: &SinkError) -> bool {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.stats.metrics.failed(sink);
        let next = self.with_outages(sink, |o| o.failed(attempt, &error.to_string()));
        matches!(next, Next::GiveUp { .. })
    }

    /// A write to `sink` succeeded: ends its outage, ready again if nothing else fails.
    fn succeeded(&self, sink: &str) {
        self.with_outages(sink, |o| o.succeeded());
        self.stats.refresh_ready();
    }

    /// Runs a write until it succeeds, with exponential backoff, giving up after
    /// [`Retry::give_up_after`].
    pub(crate) async fn run<T, F, Fut>(&self, sink: &str, mut f: F) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => {
                    self.succeeded(sink);
                    return Ok(v);
                }
                Err(e) => {
                    if self.failed(sink, attempt, &e) {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// [`Retry::run`] for a Kafka log (its writer needs `&mut`). A write still waiting for
    /// the broker after [`KAFKA_ACK_WAIT`] is reported as a failure (once) and keeps waiting:
    /// resending could write a record twice.
    pub(crate) async fn kafka(
        &self,
        sink: &str,
        k: &mut KafkaWriter,
        records: &[IdRecord],
    ) -> Result<(), SinkError> {
        let mut attempt = 0;
        loop {
            let brokers = k.brokers().to_string();
            let started = Instant::now();
            let write = k.write(records);
            tokio::pin!(write);
            let mut reported = false;
            let result = loop {
                tokio::select! {
                    r = &mut write => break r,
                    _ = tokio::time::sleep(KAFKA_ACK_WAIT), if !reported => {
                        reported = true;
                        let waited = SinkError::Unacknowledged {
                            brokers: brokers.clone(),
                            waited_s: started.elapsed().as_secs(),
                        };
                        if self.failed(sink, attempt, &waited) {
                            return Err(waited);
                        }
                    }
                }
            };
            match result {
                Ok(_) => {
                    self.succeeded(sink);
                    return Ok(());
                }
                Err(e) => {
                    if self.failed(sink, attempt, &e) {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

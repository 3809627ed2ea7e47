//! The pipeline's Prometheus metrics (SPEC §3, §4): messages read per topic/partition,
//! consumer lag, accepted events, dead letters by reason, duplicates, late events and the
//! frontier with its lag behind event time and the wall clock.
//!
//! [`PipelineMetrics`] is created unregistered (so every [`crate::Stats`] has one, and the
//! worker loop never checks); [`PipelineMetrics::register`] adds it to the registry the API
//! renders at `GET /metrics`. Clones share their values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, CounterVec, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use shopflow_model::{DeadLetterReason, Millis};

/// The pipeline's metrics. Cheap to clone; clones share their values.
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    /// `shopflow_events_in_total{topic,partition}`: messages read.
    pub events_in: IntCounterVec,
    /// `shopflow_events_accepted_total`: events accepted and applied.
    pub accepted: IntCounter,
    /// `shopflow_dead_letters_total{reason}`: rejected messages, by SPEC §8 reason.
    pub dead_letters: IntCounterVec,
    /// `shopflow_duplicates_total`: duplicates dropped.
    pub duplicates: IntCounter,
    /// `shopflow_late_events_total`: events that arrived below the frontier.
    pub late: IntCounter,
    /// `shopflow_consumer_lag_messages{topic,partition}`: messages known to exist but not
    /// yet read (set only for sources that can tell).
    pub consumer_lag: IntGaugeVec,
    /// `shopflow_source_event_time_ms{topic,partition}`: the latest event time read from
    /// each input partition (where its reading stands in event time).
    pub source_event_time: IntGaugeVec,
    /// `shopflow_source_paused_seconds_total{topic,partition}`: how long each partition was
    /// paused because its event time ran ahead of the worker's frontier.
    pub source_paused: CounterVec,
    /// `shopflow_source_errors_total`: failed attempts at reading the input (an unreachable
    /// broker), each retried with backoff.
    pub source_errors: IntCounter,
    /// The frontier and the latest event time, exported by a collector that computes the
    /// lags when scraped.
    pub frontier: FrontierGauges,
    /// `shopflow_checkpoints_total`: checkpoints written.
    pub checkpoints: IntCounter,
    /// `shopflow_checkpoint_bytes`: size of the last checkpoint written.
    pub checkpoint_bytes: IntGauge,
    /// `shopflow_checkpoint_write_seconds`: how long writing the last checkpoint took (in
    /// the sink writer; reading goes on meanwhile).
    pub checkpoint_write: Gauge,
    /// `shopflow_checkpoint_pause_seconds_total`: time reading was paused for checkpoints.
    pub checkpoint_pause: Counter,
    /// `shopflow_cluster_processes`: how many processes run the pipeline (1 alone).
    pub processes: IntGauge,
    /// `shopflow_cluster_process`: this process's index among them.
    pub process: IntGauge,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineMetrics {
    /// Unregistered metrics (every dead-letter reason present at 0).
    pub fn new() -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(Opts::new(name, help)).expect("valid metric")
        };
        let me = PipelineMetrics {
            events_in: counter_vec(
                "shopflow_events_in_total",
                "Input messages read, per topic and partition.",
                &["topic", "partition"],
            ),
            accepted: counter(
                "shopflow_events_accepted_total",
                "Events accepted and applied to the views.",
            ),
            dead_letters: counter_vec(
                "shopflow_dead_letters_total",
                "Input messages rejected to the dead-letter topic, by reason.",
                &["reason"],
            ),
            duplicates: counter(
                "shopflow_duplicates_total",
                "Duplicate events (same event_id within the dedup horizon) dropped.",
            ),
            late: counter(
                "shopflow_late_events_total",
                "Events that arrived with a time below the frontier and were applied at it.",
            ),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "shopflow_consumer_lag_messages",
                    "Messages in the input partition not read yet (high watermark - next offset).",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            source_event_time: IntGaugeVec::new(
                Opts::new(
                    "shopflow_source_event_time_ms",
                    "Latest event time read from the input partition (epoch ms).",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            source_paused: CounterVec::new(
                Opts::new(
                    "shopflow_source_paused_seconds_total",
                    "Seconds the input partition was paused because its event time ran ahead of the worker's frontier by more than the read-ahead window.",
                ),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            source_errors: counter(
                "shopflow_source_errors_total",
                "Failed attempts at reading the input (e.g. the Kafka broker unreachable), each retried with backoff.",
            ),
            frontier: FrontierGauges::new(),
            checkpoints: counter("shopflow_checkpoints_total", "Checkpoints written."),
            checkpoint_bytes: IntGauge::with_opts(Opts::new(
                "shopflow_checkpoint_bytes",
                "Size of the last checkpoint written, in bytes.",
            ))
            .expect("valid metric"),
            checkpoint_write: Gauge::with_opts(Opts::new(
                "shopflow_checkpoint_write_seconds",
                "How long writing the last checkpoint took (the sink writer writes it; reading goes on).",
            ))
            .expect("valid metric"),
            checkpoint_pause: Counter::with_opts(Opts::new(
                "shopflow_checkpoint_pause_seconds_total",
                "Time reading was paused to take checkpoints.",
            ))
            .expect("valid metric"),
            processes: IntGauge::with_opts(Opts::new(
                "shopflow_cluster_processes",
                "How many processes run the pipeline (1: this one alone).",
            ))
            .expect("valid metric"),
            process: IntGauge::with_opts(Opts::new(
                "shopflow_cluster_process",
                "This process's index in the cluster (the last one writes the sinks).",
            ))
            .expect("valid metric"),
        };
        me.processes.set(1);
        for reason in DeadLetterReason::ALL {
            me.dead_letters.with_label_values(&[reason.as_str()]);
        }
        me
    }

    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.events_in.clone()))?;
        registry.register(Box::new(self.accepted.clone()))?;
        registry.register(Box::new(self.dead_letters.clone()))?;
        registry.register(Box::new(self.duplicates.clone()))?;
        registry.register(Box::new(self.late.clone()))?;
        registry.register(Box::new(self.consumer_lag.clone()))?;
        registry.register(Box::new(self.source_event_time.clone()))?;
        registry.register(Box::new(self.source_paused.clone()))?;
        registry.register(Box::new(self.source_errors.clone()))?;
        registry.register(Box::new(self.frontier.clone()))?;
        registry.register(Box::new(self.checkpoints.clone()))?;
        registry.register(Box::new(self.checkpoint_bytes.clone()))?;
        registry.register(Box::new(self.checkpoint_write.clone()))?;
        registry.register(Box::new(self.checkpoint_pause.clone()))?;
        registry.register(Box::new(self.processes.clone()))?;
        registry.register(Box::new(self.process.clone()))?;
        Ok(())
    }

    /// Counts a checkpoint of `bytes` written in `took`.
    pub fn checkpoint_written(&self, bytes: u64, took: std::time::Duration) {
        self.checkpoints.inc();
        self.checkpoint_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.checkpoint_write.set(took.as_secs_f64());
    }

    /// Counts `paused`, the time reading stood still for a checkpoint.
    pub fn checkpoint_paused(&self, paused: std::time::Duration) {
        self.checkpoint_pause.inc_by(paused.as_secs_f64());
    }

    /// The dead-letter counter of `reason`.
    pub fn dead_letter(&self, reason: DeadLetterReason) -> IntCounter {
        self.dead_letters.with_label_values(&[reason.as_str()])
    }
}

/// `shopflow_frontier_ms`, `shopflow_frontier_lag_event_time_seconds` and
/// `shopflow_frontier_lag_wall_clock_seconds`. The worker loop records the frontier and
/// the latest event time; the lags are computed when the registry is scraped, so the
/// wall-clock lag keeps growing while the frontier stands still (a stalled pipeline, or a
/// bounded run that has finished). Nothing is exported before the first frontier.
#[derive(Clone, Debug)]
pub struct FrontierGauges {
    state: Arc<FrontierState>,
    frontier_ms: IntGauge,
    lag_event_time: Gauge,
    lag_wall_clock: Gauge,
}

#[derive(Debug, Default)]
struct FrontierState {
    /// Frontier + 1 (0 = none yet).
    frontier_plus_one: AtomicU64,
    /// Largest effective event time accepted + 1 (0 = none yet).
    max_event_plus_one: AtomicU64,
}

impl FrontierGauges {
    fn new() -> Self {
        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("valid metric");
        FrontierGauges {
            state: Arc::default(),
            frontier_ms: IntGauge::new(
                "shopflow_frontier_ms",
                "The pipeline's frontier T (epoch ms): every event with effective time <= T is reflected in the views.",
            )
            .expect("valid metric"),
            lag_event_time: gauge(
                "shopflow_frontier_lag_event_time_seconds",
                "Latest event time accepted minus the frontier, in seconds (negative when the frontier follows the wall clock past the last event).",
            ),
            lag_wall_clock: gauge(
                "shopflow_frontier_lag_wall_clock_seconds",
                "Wall clock minus the frontier, in seconds.",
            ),
        }
    }

    /// Raises the frontier to `t` (it never goes back).
    pub fn advance(&self, t: Millis) {
        self.state
            .frontier_plus_one
            .fetch_max(t.saturating_add(1), Ordering::Relaxed);
    }

    /// Records that an event with effective time `t` was accepted.
    pub fn saw_event_time(&self, t: Millis) {
        self.state
            .max_event_plus_one
            .fetch_max(t.saturating_add(1), Ordering::Relaxed);
    }

    /// The frontier recorded so far.
    pub fn frontier(&self) -> Option<Millis> {
        self.state
            .frontier_plus_one
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }

    /// The largest effective event time accepted so far.
    pub fn max_event_time(&self) -> Option<Millis> {
        self.state
            .max_event_plus_one
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }
}

fn seconds_between(later: Millis, earlier: Millis) -> f64 {
    (later as f64 - earlier as f64) / 1000.0
}

impl Collector for FrontierGauges {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.frontier_ms.desc();
        d.extend(self.lag_event_time.desc());
        d.extend(self.lag_wall_clock.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(frontier) = self.frontier() else {
            return Vec::new();
        };
        self.frontier_ms
            .set(i64::try_from(frontier).unwrap_or(i64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        self.lag_wall_clock.set(seconds_between(now, frontier));
        let mut out = self.frontier_ms.collect();
        out.extend(self.lag_wall_clock.collect());
        if let Some(max) = self.max_event_time() {
            self.lag_event_time.set(seconds_between(max, frontier));
            out.extend(self.lag_event_time.collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_exports_the_frontier_only_once_known() {
        let m = PipelineMetrics::new();
        let registry = Registry::new();
        m.register(&registry).unwrap();
        let names = |r: &Registry| -> Vec<String> {
            r.gather().iter().map(|f| f.name().to_string()).collect()
        };
        assert!(!names(&registry).contains(&"shopflow_frontier_ms".to_string()));
        assert!(names(&registry).contains(&"shopflow_dead_letters_total".to_string()));
        m.frontier.advance(10_000);
        m.frontier.advance(5_000);
        m.frontier.saw_event_time(15_000);
        let families = registry.gather();
        let value = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.get_metric()[0].get_gauge().get_value())
        };
        assert_eq!(value("shopflow_frontier_ms"), Some(10_000.0));
        assert_eq!(value("shopflow_frontier_lag_event_time_seconds"), Some(5.0));
        assert!(value("shopflow_frontier_lag_wall_clock_seconds").unwrap() > 1e6);
    }
}

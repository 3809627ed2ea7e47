//! The worker loop: sources → validation → dataflow inputs → frontier (SPEC §3, §4).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shopflow_ingest::validate::{DEFAULT_DEDUP_HORIZON_MS, DEFAULT_LATENESS_MS};
use shopflow_ingest::{decode, Accepted, Message, Outcome, Source, SourceError, StreamValidator};
use shopflow_model::health::Health;
use shopflow_model::{DeadLetter, DeadLetterReason, EventBody, Millis, Output};

use crate::dataflow::{build, Inputs, ViewConfig};
use crate::effects::{order_effects, MemberMsg, SkuMsg};
use crate::metrics::PipelineMetrics;
use crate::orders::{stream_id, OrderMsg};
use crate::products::ReviewMsg;

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Timely worker threads in this process.
    pub workers: usize,
    /// Allowed lateness (SPEC §4, default 5 s).
    pub lateness_ms: Millis,
    /// Dedup horizon (SPEC §8, default 7 days).
    pub dedup_horizon_ms: Millis,
    /// View settings.
    pub views: ViewConfig,
    /// Live operation: when every stream is caught up, the frontier follows the wall
    /// clock (minus the lateness), so time-based views advance with no new events.
    pub live: bool,
    /// Most messages read from the source per round.
    pub poll_batch: usize,
    /// How long reading may keep failing with a transient error (an unreachable broker)
    /// before the run stops with it; `None` retries forever. Default 15 minutes, like the
    /// sink writer's.
    pub source_give_up_after: Option<Duration>,
    /// Read-ahead window (ms of event time): a stream whose frontier runs further than this
    /// ahead of the worker's input frontier is paused until the others catch up, so what
    /// waits in memory for the frontier stays bounded whatever the backlog. At least the
    /// lateness plus one second is used (the stream that holds the frontier is never
    /// paused). Default 60 s.
    pub read_ahead_ms: Millis,
}

/// The default [`PipelineConfig::read_ahead_ms`].
pub const DEFAULT_READ_AHEAD_MS: Millis = 60_000;

/// The default [`PipelineConfig::source_give_up_after`].
pub const DEFAULT_SOURCE_GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);

/// The component name the source reports under in [`Stats::health`].
pub const SOURCE_COMPONENT: &str = "kafka";

/// How long reading must have failed before it is logged as an outage. Shorter failures (a
/// client reconnecting right after the broker came back) are counted in
/// `shopflow_source_errors_total` and make `/readyz` answer 503 while they last, but are
/// logged at debug only.
pub const SOURCE_REPORT_AFTER: Duration = Duration::from_secs(5);

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 1,
            lateness_ms: DEFAULT_LATENESS_MS,
            dedup_horizon_ms: DEFAULT_DEDUP_HORIZON_MS,
            views: ViewConfig::default(),
            live: false,
            poll_batch: 4096,
            source_give_up_after: Some(DEFAULT_SOURCE_GIVE_UP_AFTER),
            read_ahead_ms: DEFAULT_READ_AHEAD_MS,
        }
    }
}

/// Counters shared with whoever watches the pipeline (progress, metrics, API readiness),
/// and the stop switch.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages read.
    pub messages: AtomicU64,
    /// Events accepted and applied.
    pub accepted: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Events that arrived below the frontier and were applied at it.
    pub late: AtomicU64,
    /// Dead letters, by reason (index = position in [`DeadLetterReason::ALL`]).
    pub dead_letters: [AtomicU64; 7],
    /// The dataflow frontier while running (0 = nothing yet). The final `as_of` of a
    /// bounded run is reported by the sink writer.
    pub as_of_plus_one: AtomicU64,
    /// Set to ask the workers to stop.
    pub stop: AtomicBool,
    /// Set when every worker has finished.
    pub finished: AtomicBool,
    /// The same counts (and more) as Prometheus metrics; register them with
    /// [`PipelineMetrics::register`] to export them.
    pub metrics: PipelineMetrics,
    /// Whether reading the input is failing now (component [`SOURCE_COMPONENT`]); share it
    /// with the sink writer and the API (`/readyz`).
    pub health: Health,
}

impl Stats {
    /// The `as_of` reached so far.
    pub fn as_of(&self) -> Option<Millis> {
        self.as_of_plus_one.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Total dead letters.
    pub fn dead_letters_total(&self) -> u64 {
        self.dead_letters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn summary(&self) -> RunSummary {
        RunSummary {
            messages: self.messages.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            dead_letters: self.dead_letters_total(),
        }
    }
}

/// Totals of a finished run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// Messages read.
    pub messages: u64,
    /// Events applied.
    pub accepted: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late events.
    pub late: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

/// Why the pipeline stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The sink writer stopped (it reports its own error).
    #[error("the sink writer stopped")]
    SinkGone,
    /// Timely could not start or a worker panicked.
    #[error("dataflow worker failed: {0}")]
    Worker(String),
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Runs the pipeline until its sources are finished (bounded) or `stats.stop` is set.
///
/// `make_source(worker, peers)` gives each worker its share of the input streams.
/// View batches and dead letters go to `out`, in order.
pub fn run<F>(
    config: PipelineConfig,
    make_source: F,
    out: SyncSender<Output>,
    stats: Arc<Stats>,
) -> Result<RunSummary, PipelineError>
where
    F: Fn(usize, usize) -> Result<Box<dyn Source>, SourceError> + Send + Sync + 'static,
{
    let workers = config.workers.max(1);
    let stats2 = stats.clone();
    let ends = Arc::new(Ends::new(workers));
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        worker_main(worker, &config, &make_source, out.clone(), &stats2, &ends)
    })
    .map_err(PipelineError::Worker)?;
    for result in guards.join() {
        result.map_err(PipelineError::Worker)??;
    }
    // At the end of the input the frontier is the largest event time seen (SPEC §8).
    let frontier = &stats.metrics.frontier;
    if let Some(t) = frontier.max_event_time() {
        frontier.advance(t);
    }
    stats.finished.store(true, Ordering::SeqCst);
    Ok(stats.summary())
}

fn worker_main<F>(
    worker: &mut timely::worker::Worker,
    config: &PipelineConfig,
    make_source: &F,
    out: SyncSender<Output>,
    stats: &Stats,
    ends: &Ends,
) -> Result<(), PipelineError>
where
    F: Fn(usize, usize) -> Result<Box<dyn Source>, SourceError>,
{
    let index = worker.index();
    let _guard = EndGuard { ends, index };
    let failed = Arc::new(AtomicBool::new(false));
    let (mut inputs, probe) = {
        let out = out.clone();
        let failed = failed.clone();
        let views = config.views;
        worker.dataflow::<Millis, _, _>(move |scope| build(scope, views, out, failed))
    };
    let mut source = make_source(index, worker.peers())?;
    let streams = source.streams().len();
    // (stream id for order events, partition) of each stream.
    let stream_ids: Vec<(u64, i32)> = source
        .streams()
        .iter()
        .map(|s| (stream_id(&s.topic, s.partition), s.partition))
        .collect();
    let mut tally = Tally::new(&stats.metrics, source.as_ref());
    let mut pauses = Pauses::new(
        streams,
        config
            .read_ahead_ms
            .max(config.lateness_ms.saturating_add(1_000)),
    );
    let mut validators: Vec<StreamValidator> = (0..streams)
        .map(|_| StreamValidator::new(config.dedup_horizon_ms, config.lateness_ms))
        .collect();
    let mut cap: Millis = 0;
    let mut buf = Vec::with_capacity(config.poll_batch);
    let mut dead = Vec::new();
    // Consecutive failed polls of this worker's source (0 = reading works).
    let mut source_failures: u32 = 0;
    // Past the end of a bounded run the probe may move on to work scheduled later (window
    // ends): the views stay as of the end.
    let end = inputs.end.clone();
    let publish_as_of = |probe: &timely::dataflow::operators::probe::Handle<Millis>| {
        if index == 0 {
            probe.with_frontier(|f| {
                if let Some(&t) = f.first() {
                    let t = end.get().map_or(t, |e| t.min(e + 1));
                    stats.as_of_plus_one.fetch_max(t, Ordering::Relaxed);
                    if let Some(as_of) = t.checked_sub(1) {
                        stats.metrics.frontier.advance(as_of);
                    }
                }
            });
        }
    };

    // Messages are decoded on a helper thread one batch ahead of validation: reading and
    // decoding batch k+1 overlap with validating batch k. Everything else stays in log
    // order, and each batch is validated with the source's state as it was read (whether
    // each stream was caught up), so the result is that of reading and validating in turn.
    let decoder = (streams > 0).then(Decoder::spawn);
    // Whether a batch is with the decoder, and whether the source had finished when it
    // was read.
    let mut in_flight = false;
    let mut read_all = false;
    let mut decoded: Vec<Result<shopflow_model::Event, shopflow_ingest::Rejection>> = Vec::new();
    while !stats.stop.load(Ordering::Relaxed) {
        if failed.load(Ordering::Relaxed) {
            return Err(PipelineError::SinkGone);
        }
        // A transient source error (the broker went away) is retried with backoff; the
        // messages read before it are processed as usual.
        if !read_all {
            pauses.update(source.as_mut(), &validators, cap, &tally.paused);
            match source.poll(&mut buf, config.poll_batch) {
                Ok(()) => {
                    if source_failures > 0 {
                        source_failures = 0;
                        source_recovered(stats, index);
                    }
                }
                Err(e) if e.is_transient() => {
                    source_failed(stats, config, index, &e, source_failures)?;
                    let pause = backoff(source_failures);
                    source_failures += 1;
                    let until = std::time::Instant::now() + pause;
                    while std::time::Instant::now() < until && !stats.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let snapshot = Snapshot {
            caught_up: (0..streams).map(|s| source.caught_up(s)).collect(),
            finished: source.finished(),
        };
        let read = std::mem::take(&mut buf);
        read_all = snapshot.finished;
        let (current, snap) = match &decoder {
            Some(d) => {
                d.send(read, snapshot);
                if !std::mem::replace(&mut in_flight, true) {
                    // The first batch: nothing decoded yet.
                    continue;
                }
                let (msgs, dec, snap) = d.recv()?;
                decoded = dec;
                (msgs, snap)
            }
            None => (read, snapshot),
        };
        stats
            .messages
            .fetch_add(current.len() as u64, Ordering::Relaxed);
        let mut decoded_iter = decoded.drain(..);
        for m in current {
            tally.read[m.stream] += 1;
            let validator = &mut validators[m.stream];
            let outcome = match decoded_iter.next() {
                Some(Ok(event)) => validator.process_event_at(event, cap),
                Some(Err(r)) => Outcome::Rejected(r),
                None => validator.process_at(&m.payload, cap),
            };
            match outcome {
                Outcome::Accepted(a) => {
                    if a.late {
                        stats.late.fetch_add(1, Ordering::Relaxed);
                        tally.late += 1;
                    }
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    tally.accepted += 1;
                    feed(
                        &mut inputs,
                        &config.views,
                        validator,
                        a,
                        (stream_ids[m.stream], m.offset),
                    );
                }
                Outcome::Duplicate => {
                    stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    tally.duplicates += 1;
                }
                Outcome::Rejected(r) => {
                    let i = DeadLetterReason::ALL
                        .iter()
                        .position(|x| *x == r.reason)
                        .unwrap_or(0);
                    stats.dead_letters[i].fetch_add(1, Ordering::Relaxed);
                    tally.dead[i] += 1;
                    let s = &source.streams()[m.stream];
                    dead.push(DeadLetter {
                        reason: r.reason,
                        detail: r.detail,
                        topic: s.topic.clone(),
                        partition: s.partition,
                        offset: m.offset,
                        key: m.key,
                        payload: m.payload,
                    });
                }
            }
        }
        if !dead.is_empty()
            && out
                .send(Output::DeadLetters(std::mem::take(&mut dead)))
                .is_err()
        {
            return Err(PipelineError::SinkGone);
        }
        drop(decoded_iter);
        tally.flush(&stats.metrics, source.as_ref(), &validators);
        if snap.finished {
            break;
        }
        let next = next_frontier(config, &snap.caught_up, &validators, cap);
        let previous = cap;
        if next > cap {
            cap = next;
            inputs.advance_to(cap);
            ends.caps[index].store(cap, Ordering::Release);
        }
        inputs.flush();
        // Backpressure: let the dataflow reach the previous frontier before reading more.
        // While waiting, park when there is nothing to do here (another worker has the
        // work): spinning would take the core that worker needs.
        while probe.less_than(&previous) && !failed.load(Ordering::Relaxed) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        worker.step();
        publish_as_of(&probe);
    }

    // The source is done (or stopped): it is not failing any more.
    if source_failures > 0 {
        source_recovered(stats, index);
    }

    // End of input: the views end as of the largest event time any worker saw (SPEC §8).
    // Every worker learns it, drives the frontier past it so that every row dated up to it
    // reaches the sinks, and only then closes its inputs (work scheduled later, such as
    // windows that would end after the input, is dropped).
    let max_time = validators
        .iter()
        .filter_map(StreamValidator::max_time)
        .max()
        .map(|t| t.max(cap));
    if max_time.is_some() {
        ends.any_event.store(true, Ordering::Release);
    }
    ends.finals[index].store(max_time.unwrap_or(cap) + 1, Ordering::Release);
    let last = loop {
        if failed.load(Ordering::Relaxed) {
            return Err(PipelineError::SinkGone);
        }
        if let Some(last) = ends.last_time() {
            break last;
        }
        if ends.aborted.load(Ordering::Acquire) {
            return Err(PipelineError::Worker("another worker stopped".into()));
        }
        if let Some(t) = ends.slowest_reader() {
            if t > cap {
                cap = t;
                inputs.advance_to(cap);
                inputs.flush();
            }
        }
        // Park while there is nothing to do: the other workers still have input to read.
        worker.step_or_park(Some(Duration::from_millis(1)));
        publish_as_of(&probe);
    };
    if let Some(t) = last {
        inputs.end.set(Some(t));
        let end = t.saturating_add(1);
        inputs.advance_to(end);
        inputs.flush();
        while probe.less_than(&end) {
            if failed.load(Ordering::Relaxed) {
                return Err(PipelineError::SinkGone);
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
            publish_as_of(&probe);
        }
    }
    inputs.flush();
    drop(inputs);
    while !probe.done() {
        if failed.load(Ordering::Relaxed) {
            return Err(PipelineError::SinkGone);
        }
        worker.step_or_park(Some(Duration::from_millis(1)));
        publish_as_of(&probe);
    }
    Ok(())
}

/// The pause after failed attempt `attempt` (0-based): 0.1 s doubling to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// Reports a failed read of worker `worker` (`attempt` counts the failures before it in a
/// row): the metric and the shared health at once, and one `warn` line per outage once it
/// has lasted [`SOURCE_REPORT_AFTER`]. Errs (the run stops) once the outage has lasted the
/// configured limit.
fn source_failed(
    stats: &Stats,
    config: &PipelineConfig,
    worker: usize,
    error: &SourceError,
    attempt: u32,
) -> Result<(), SourceError> {
    stats.metrics.source_errors.inc();
    let message = error.to_string();
    stats.health.failed(SOURCE_COMPONENT, worker, &message);
    let lasted = stats
        .health
        .failing_for(SOURCE_COMPONENT)
        .unwrap_or_default();
    if lasted >= SOURCE_REPORT_AFTER && stats.health.announce(SOURCE_COMPONENT) {
        let limit = match config.source_give_up_after {
            Some(d) => format!("up to {} s", d.as_secs()),
            None => "ever".into(),
        };
        tracing::warn!(
            error = %message,
            "Kafka is failing (reading): retrying with backoff (0.1 s doubling to 5 s) for {limit}; \
             reading resumes at the next offset of each partition (/readyz answers 503 meanwhile). \
             Check that the broker is running and reachable"
        );
    } else {
        tracing::debug!(worker, attempt, error = %message, "reading Kafka failed; retrying");
    }
    if config.source_give_up_after.is_some_and(|d| lasted >= d) {
        tracing::error!(
            error = %message,
            "reading Kafka has failed for {:.0} s: giving up; the run stops",
            lasted.as_secs_f64()
        );
        return Err(SourceError::GaveUp {
            after: lasted,
            last: message,
        });
    }
    Ok(())
}

/// Worker `worker` read again: logs the end of the outage when it was the last one failing
/// (at debug when the outage was too short to be reported).
fn source_recovered(stats: &Stats, worker: usize) {
    let Some(outage) = stats.health.recovered(SOURCE_COMPONENT, worker) else {
        return;
    };
    if outage.announced {
        tracing::info!(
            down_s = outage.lasted.as_secs_f64(),
            failed_attempts = outage.attempts,
            "Kafka recovered after {:.1} s ({} failed attempts); reading resumes",
            outage.lasted.as_secs_f64(),
            outage.attempts
        );
    } else {
        tracing::debug!(
            down_s = outage.lasted.as_secs_f64(),
            failed_attempts = outage.attempts,
            "reading Kafka works again after a brief failure"
        );
    }
}

/// One worker's counts since the last flush to the Prometheus metrics (flushed once per
/// round, not per message), with the metric handles of its streams resolved once.
struct Tally {
    /// Messages read, per stream.
    read: Vec<u64>,
    accepted: u64,
    duplicates: u64,
    late: u64,
    /// Dead letters by reason (index = position in [`DeadLetterReason::ALL`]).
    dead: [u64; 7],
    events_in: Vec<prometheus::IntCounter>,
    lag: Vec<prometheus::IntGauge>,
    event_time: Vec<prometheus::IntGauge>,
    paused: Vec<prometheus::Counter>,
    dead_letters: Vec<prometheus::IntCounter>,
}

impl Tally {
    fn new(metrics: &PipelineMetrics, source: &dyn Source) -> Self {
        let labels = |s: &shopflow_ingest::StreamId| [s.topic.clone(), s.partition.to_string()];
        let streams = source.streams();
        Tally {
            read: vec![0; streams.len()],
            accepted: 0,
            duplicates: 0,
            late: 0,
            dead: [0; 7],
            events_in: streams
                .iter()
                .map(|s| metrics.events_in.with_label_values(&labels(s)))
                .collect(),
            lag: streams
                .iter()
                .map(|s| metrics.consumer_lag.with_label_values(&labels(s)))
                .collect(),
            event_time: streams
                .iter()
                .map(|s| metrics.source_event_time.with_label_values(&labels(s)))
                .collect(),
            paused: streams
                .iter()
                .map(|s| metrics.source_paused.with_label_values(&labels(s)))
                .collect(),
            dead_letters: DeadLetterReason::ALL
                .iter()
                .map(|r| metrics.dead_letter(*r))
                .collect(),
        }
    }

    /// Adds the counts to the metrics and resets them; sets the consumer lag of every
    /// stream whose source can tell it, and records the latest event time.
    fn flush(
        &mut self,
        metrics: &PipelineMetrics,
        source: &dyn Source,
        validators: &[StreamValidator],
    ) {
        for (counter, n) in self.events_in.iter().zip(&mut self.read) {
            counter.inc_by(std::mem::take(n));
        }
        for (counter, n) in self.dead_letters.iter().zip(&mut self.dead) {
            counter.inc_by(std::mem::take(n));
        }
        metrics.accepted.inc_by(std::mem::take(&mut self.accepted));
        metrics
            .duplicates
            .inc_by(std::mem::take(&mut self.duplicates));
        metrics.late.inc_by(std::mem::take(&mut self.late));
        for (stream, gauge) in self.lag.iter().enumerate() {
            if let Some(lag) = source.lag(stream) {
                gauge.set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
        }
        for (gauge, v) in self.event_time.iter().zip(validators) {
            if let Some(t) = v.max_time() {
                gauge.set(i64::try_from(t).unwrap_or(i64::MAX));
            }
        }
        if let Some(t) = validators
            .iter()
            .filter_map(StreamValidator::max_time)
            .max()
        {
            metrics.frontier.saw_event_time(t);
        }
    }
}

/// Which streams of a worker are paused: those whose frontier is more than `window` ahead
/// of the worker's input frontier. The stream that holds the input frontier is never
/// paused (the window exceeds the lateness), so reading always progresses.
struct Pauses {
    window: Millis,
    /// For each paused stream, when its paused time was last counted.
    since: Vec<Option<std::time::Instant>>,
}

impl Pauses {
    fn new(streams: usize, window: Millis) -> Self {
        Pauses {
            window,
            since: vec![None; streams],
        }
    }

    /// Pauses and resumes `source`'s streams for input frontier `cap`, adding the time each
    /// has been paused to its counter at every call (so a long pause shows while it lasts).
    fn update(
        &mut self,
        source: &mut dyn Source,
        validators: &[StreamValidator],
        cap: Millis,
        counters: &[prometheus::Counter],
    ) {
        let now = std::time::Instant::now();
        for (s, v) in validators.iter().enumerate() {
            if let Some(at) = self.since[s] {
                counters[s].inc_by(now.duration_since(at).as_secs_f64());
            }
            let ahead = v.frontier() > cap.saturating_add(self.window);
            match (ahead, self.since[s].is_some()) {
                (true, false) => source.set_paused(s, true),
                (false, true) => source.set_paused(s, false),
                _ => {}
            }
            self.since[s] = ahead.then_some(now);
        }
    }
}

/// The worker's new input frontier: the minimum over streams still being read of their
/// frontiers; streams that are caught up do not hold it back. When all are caught up it
/// moves to the largest stream frontier, and in live operation to the wall clock minus
/// the lateness. Never goes backwards.
fn next_frontier(
    config: &PipelineConfig,
    caught_up: &[bool],
    validators: &[StreamValidator],
    cap: Millis,
) -> Millis {
    let active = (0..validators.len())
        .filter(|&s| !caught_up[s])
        .map(|s| validators[s].frontier())
        .min();
    let next = match active {
        Some(t) => t,
        None => {
            let mut t = validators
                .iter()
                .map(StreamValidator::frontier)
                .max()
                .unwrap_or(cap);
            if config.live {
                t = t.max(now_ms().saturating_sub(config.lateness_ms));
            }
            t
        }
    };
    next.max(cap)
}

/// The source's state right after a batch was read: whether each stream was caught up
/// and whether the source was finished.
struct Snapshot {
    caught_up: Vec<bool>,
    finished: bool,
}

/// A batch read, its decoded events (one per message), and the source's state then.
type Decoded = (
    Vec<Message>,
    Vec<Result<shopflow_model::Event, shopflow_ingest::Rejection>>,
    Snapshot,
);

/// A helper thread that decodes the worker's next batch while the worker validates the
/// current one.
struct Decoder {
    to: Option<SyncSender<(Vec<Message>, Snapshot)>>,
    from: std::sync::mpsc::Receiver<Decoded>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Decoder {
    fn spawn() -> Self {
        let (to, rx) = std::sync::mpsc::sync_channel::<(Vec<Message>, Snapshot)>(1);
        let (tx, from) = std::sync::mpsc::sync_channel::<Decoded>(1);
        let thread = std::thread::Builder::new()
            .name("shopflow-decode".into())
            .spawn(move || {
                for (msgs, snap) in rx {
                    let decoded = msgs.iter().map(|m| decode(&m.payload)).collect();
                    if tx.send((msgs, decoded, snap)).is_err() {
                        break;
                    }
                }
            })
            .expect("start the decode thread");
        Decoder {
            to: Some(to),
            from,
            thread: Some(thread),
        }
    }

    fn send(&self, msgs: Vec<Message>, snap: Snapshot) {
        if let Some(to) = &self.to {
            // The thread only stops when this side is dropped.
            let _ = to.send((msgs, snap));
        }
    }

    fn recv(&self) -> Result<Decoded, PipelineError> {
        self.from
            .recv()
            .map_err(|_| PipelineError::Worker("the decode thread stopped".into()))
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.to = None;
        // Unblock the thread if it waits to hand over a batch, then wait for it.
        while self.from.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How the workers of this process end a run together. A bounded run's views end as of
/// the largest event time any worker saw (SPEC §8), so every worker must drive the
/// frontier past that time before any of them closes its inputs; a worker that runs out of
/// input first must meanwhile not hold the frontier back (the others wait on it). Each
/// worker publishes its input time; a finished worker follows the slowest unfinished one.
struct Ends {
    /// Each worker's input time.
    caps: Vec<AtomicU64>,
    /// 0 while the worker reads; then 1 + the last time its views need.
    finals: Vec<AtomicU64>,
    /// Whether some worker accepted an event.
    any_event: AtomicBool,
    /// Whether some worker stopped with an error (the others then stop too).
    aborted: AtomicBool,
}

/// Marks a worker finished (and the run aborted) if it leaves before finishing normally.
struct EndGuard<'a> {
    ends: &'a Ends,
    index: usize,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let f = &self.ends.finals[self.index];
        if f.load(Ordering::Acquire) == 0 {
            self.ends.aborted.store(true, Ordering::Release);
            f.store(1, Ordering::Release);
        }
    }
}

impl Ends {
    fn new(workers: usize) -> Self {
        Ends {
            caps: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            finals: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            any_event: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        }
    }

    /// The input time of the slowest worker still reading, if any.
    fn slowest_reader(&self) -> Option<Millis> {
        self.finals
            .iter()
            .zip(&self.caps)
            .filter(|(f, _)| f.load(Ordering::Acquire) == 0)
            .map(|(_, c)| c.load(Ordering::Acquire))
            .min()
    }

    /// Once every worker finished: the last time of the run, if any event was accepted.
    fn last_time(&self) -> Option<Option<Millis>> {
        let mut last = 0;
        for f in &self.finals {
            match f.load(Ordering::Acquire) {
                0 => return None,
                v => last = last.max(v - 1),
            }
        }
        Some(self.any_event.load(Ordering::Acquire).then_some(last))
    }
}

/// Routes one accepted event into the dataflow: an order event as its effects (computed
/// from the order's state before and after it, which `validator` holds), any other event
/// as the records of the views it feeds.
fn feed(
    inputs: &mut Inputs,
    views: &ViewConfig,
    validator: &StreamValidator,
    accepted: Accepted,
    ((stream, partition), offset): ((u64, i32), i64),
) {
    let time = accepted.time;
    match accepted.event.body {
        EventBody::ReviewPosted {
            review_id,
            sku,
            rating,
            ..
        } => {
            inputs.stock.send(((sku, (0, 0, 1)), time));
            let review = ReviewMsg {
                partition,
                offset,
                review: Some((sku, rating)),
            };
            inputs.reviews.send(((review_id, review), time));
        }
        EventBody::ReviewDeleted { review_id } => {
            let review = ReviewMsg {
                partition,
                offset,
                review: None,
            };
            inputs.reviews.send(((review_id, review), time));
        }
        EventBody::StockReceived { sku, qty } => {
            inputs.stock.send(((sku, (qty as i64, 0, 1)), time));
        }
        EventBody::StockAdjusted { sku, delta } => {
            inputs.stock.send(((sku, (delta, 0, 1)), time));
        }
        EventBody::ProductUpserted {
            sku,
            seller_id,
            category_id,
            ..
        } => {
            inputs.stock.send(((sku, (0, 0, 1)), time));
            let listing = SkuMsg::Listing {
                partition,
                offset,
                seller_id,
                category_id,
            };
            inputs.products.send(((sku, seller_id, listing), time));
        }
        EventBody::CategoryUpserted {
            category_id,
            commission_bp,
            ..
        } => {
            let category = SkuMsg::Category {
                category_id,
                partition,
                offset,
                commission_bp: commission_bp as u32,
            };
            inputs.categories.send(((category_id, category), time));
        }
        EventBody::MemberJoined { member_id } => {
            inputs.members.send(((member_id, MemberMsg::Joined), time));
        }
        EventBody::WowSubscribed { member_id } | EventBody::WowCancelled { member_id } => {
            let on = matches!(accepted.event.body, EventBody::WowSubscribed { .. });
            let wow = MemberMsg::Wow {
                partition,
                offset,
                on,
            };
            inputs.members.send(((member_id, wow), time));
        }
        body => {
            let Some(order_id) = body.order_id() else {
                return;
            };
            let Some(after) = validator.order(order_id) else {
                return;
            };
            let mut effects = Vec::new();
            order_effects(accepted.before.as_deref(), after, time, views, &mut effects);
            let placement = matches!(body, EventBody::OrderPlaced { .. }).then_some(body);
            let msg = OrderMsg {
                order_id,
                stream,
                placement,
                effects,
            };
            inputs.orders.send((msg, time));
        }
    }
}

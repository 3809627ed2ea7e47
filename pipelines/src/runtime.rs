//! The worker loop: sources → validation → dataflow inputs → frontier (SPEC §3, §4).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shopflow_ingest::validate::{DEFAULT_DEDUP_HORIZON_MS, DEFAULT_LATENESS_MS};
use shopflow_ingest::{decode, Accepted, Message, Outcome, Source, SourceError, StreamValidator};
use shopflow_model::health::Health;
use shopflow_model::retry::{backoff, Next, Outages};
use shopflow_model::{DeadLetter, DeadLetterReason, EventBody, Millis, Output};

use crate::checkpoint::{CheckpointConfig, CheckpointError, Part, Restore, StreamPart, WorkerPart};
use crate::cluster::{mirror, ClusterConfig};
use crate::dataflow::{build, Inputs, ViewConfig};
use crate::effects::{order_effects, MemberMsg, SkuMsg, StockDelta};
use crate::ends::{EndGuard, Ends};
use crate::metrics::PipelineMetrics;
use crate::orders::{stream_id, OrderMsg};
use crate::products::ReviewMsg;
use crate::state::States;

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
    /// Where and when checkpoints are taken; `None` takes none.
    pub checkpoints: Option<CheckpointConfig>,
    /// A checkpoint to continue from (the caller restores its store images); `None`
    /// reads every stream from its start.
    pub restore: Option<Arc<Restore>>,
    /// The cluster this process is part of (`workers` threads in each process); `None`
    /// runs in this process alone.
    pub cluster: Option<ClusterConfig>,
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
            checkpoints: None,
            restore: None,
            cluster: None,
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
    /// This worker stopped because another one did (that one's error says why).
    #[error("dataflow worker failed: another worker stopped")]
    OtherWorkerStopped,
    /// Another process of the cluster stopped (its connection broke): timely has no
    /// partial failure, so this one stops too and every process must be started again.
    #[error(
        "a process of the cluster stopped (the connection to it broke): this one stops too; \
         start every process again (they replay the input, the sinks' guards keep it \
         exactly once)"
    )]
    PeerLost,
    /// The checkpoint being restored does not fit this run.
    #[error("cannot continue from checkpoint {seq}: {source} (move the state directory's checkpoints away to replay from the start)")]
    Restore {
        /// The checkpoint's sequence number.
        seq: u64,
        /// Why.
        #[source]
        source: CheckpointError,
    },
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
    let threads = config.workers.max(1);
    // This process's workers are `first..first + threads` of the cluster's `workers`.
    let (timely_config, workers, first) = match &config.cluster {
        Some(c) => {
            stats.metrics.processes.set(c.processes() as i64);
            stats.metrics.process.set(c.process as i64);
            (
                c.timely(threads),
                threads * c.processes(),
                threads * c.process,
            )
        }
        None => (timely::Config::process(threads), threads, 0),
    };
    let stats2 = stats.clone();
    let ends = Arc::new(Ends::new(workers));
    // A checkpoint holds this process's workers (in a cluster each process keeps its own).
    if let Some(r) = &config.restore {
        if r.caps.len() != threads {
            return Err(PipelineError::Restore {
                seq: r.seq,
                source: CheckpointError::Mismatch(format!(
                    "it was taken with {} workers, this run has {threads}",
                    r.caps.len()
                )),
            });
        }
        for (c, &t) in ends.caps[first..].iter().zip(&r.caps) {
            c.store(t, Ordering::Release);
        }
    }
    let coordinator = Arc::new(Coordinator::new(
        config.checkpoints.clone(),
        ends.clone(),
        first,
        threads,
    )?);
    let guards = timely::execute(timely_config, move |worker| {
        let result = worker_main(
            worker,
            &config,
            &make_source,
            out.clone(),
            &stats2,
            &ends,
            &coordinator,
        );
        if result.is_err() {
            // The others may be waiting for this worker (a checkpoint, the end of the
            // input) even after it published its end: they stop too.
            ends.aborted.store(true, Ordering::Release);
        }
        result
    })
    .map_err(PipelineError::Worker)?;
    // A peer's broken connection panics timely's network threads and poisons what the
    // workers receive from it; joining (which also joins the network threads) reports it.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || guards.join()))
        .map_err(|_| PipelineError::PeerLost)?;
    // The error that says why: a worker that stopped because another did says nothing
    // more, so the other's error is reported.
    let mut first: Option<PipelineError> = None;
    for result in joined {
        let result = result.map_err(|e| match is_network_failure(&e) {
            true => PipelineError::PeerLost,
            false => PipelineError::Worker(e),
        });
        if let Err(e) | Ok(Err(e)) = result {
            let secondary = matches!(e, PipelineError::OtherWorkerStopped);
            match &first {
                Some(f) if secondary || !matches!(f, PipelineError::OtherWorkerStopped) => {}
                _ => first = Some(e),
            }
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    // At the end of the input the frontier is the largest event time seen (SPEC §8).
    let frontier = &stats.metrics.frontier;
    if let Some(t) = frontier.max_event_time() {
        frontier.advance(t);
    }
    stats.finished.store(true, Ordering::SeqCst);
    Ok(stats.summary())
}

/// Whether a worker's panic message is that of a broken connection to another process.
pub fn is_network_failure(message: &str) -> bool {
    [
        "timely communication error",
        "MergeQueue poisoned",
        "Send thread panic",
        "Recv thread panic",
    ]
    .iter()
    .any(|m| message.contains(m))
}

fn worker_main<F>(
    worker: &mut timely::worker::Worker,
    config: &PipelineConfig,
    make_source: &F,
    out: SyncSender<Output>,
    stats: &Stats,
    ends: &Arc<Ends>,
    coordinator: &Coordinator,
) -> Result<(), PipelineError>
where
    F: Fn(usize, usize) -> Result<Box<dyn Source>, SourceError>,
{
    let index = worker.index();
    let threads = config.workers.max(1);
    if config.cluster.is_some() {
        mirror(worker, ends.clone(), threads);
    }
    let ends: &Ends = ends;
    let _guard = EndGuard { ends, index };
    let failed = Arc::new(AtomicBool::new(false));
    let restore = config.restore.as_ref();
    let mut part = restore.and_then(|r| r.take(index % threads));
    let restore_error = |source: CheckpointError| PipelineError::Restore {
        seq: restore.map_or(0, |r| r.seq),
        source,
    };
    let started = Instant::now();
    let states = match part.as_mut() {
        Some(p) => States::restoring(std::mem::take(&mut p.operators)),
        None => States::default(),
    };
    // The validators are read back on a thread of their own while this one restores the
    // operators' states and opens the source: with a file source one worker holds the
    // only validator, the largest part of the checkpoint.
    let validators_restored = part.as_mut().map(|p| {
        let streams = std::mem::take(&mut p.streams);
        std::thread::Builder::new()
            .name(format!("shopflow-restore-{index}"))
            .spawn(move || {
                streams
                    .into_iter()
                    .map(|p| {
                        let v = p.validator();
                        (p, v)
                    })
                    .collect::<Vec<_>>()
            })
            .expect("spawn a restoring thread")
    });
    let (mut inputs, probe) = {
        let out = out.clone();
        let failed = failed.clone();
        let views = config.views;
        let states = states.clone();
        let writing = config.cluster.as_ref().map_or(1, |c| c.writers().processes);
        worker.dataflow::<Millis, _, _>(move |scope| {
            build(scope, views, out, failed, states, writing)
        })
    };
    states.finish_restore().map_err(restore_error)?;
    let operators_took = started.elapsed();
    let mut source = make_source(index, worker.peers())?;
    let source_took = started.elapsed() - operators_took;
    let streams = source.streams().len();
    if streams == 0 {
        ends.reads[index].store(false, Ordering::Release);
    }
    let keys: Vec<(String, i32)> = (0..streams).map(|s| source.stream_key(s)).collect();
    for (topic, partition) in &keys {
        stats.health.reads(format!("{topic}/{partition}"));
    }
    // (stream id for order events, partition) of each stream.
    let stream_ids: Vec<(u64, i32)> = keys
        .iter()
        .map(|(topic, partition)| (stream_id(topic, *partition), *partition))
        .collect();
    let mut tally = Tally::new(&stats.metrics, source.as_ref());
    let mut pauses = Pauses::new(
        streams,
        config
            .read_ahead_ms
            .max(config.lateness_ms.saturating_add(1_000)),
    );
    // Each stream's validator and the next offset to validate: from the checkpoint, or new.
    let (mut validators, mut next_offsets, mut cap) = match part {
        None => (
            (0..streams)
                .map(|_| StreamValidator::new(config.dedup_horizon_ms, config.lateness_ms))
                .collect::<Vec<_>>(),
            vec![0i64; streams],
            0,
        ),
        Some(p) => {
            let decoded = validators_restored
                .expect("started with the part")
                .join()
                .map_err(|_| PipelineError::Worker("restoring the validators panicked".into()))?;
            let (mut v, o) = restored_streams(&keys, decoded).map_err(restore_error)?;
            for validator in &mut v {
                validator.set_limits(config.dedup_horizon_ms, config.lateness_ms);
            }
            let total = started.elapsed();
            let waited = total - operators_took - source_took;
            tracing::info!(
                worker = index,
                operators_s = operators_took.as_secs_f64(),
                source_s = source_took.as_secs_f64(),
                validators_wait_s = waited.as_secs_f64(),
                "worker {index} restored in {:.2} s (operator states {:.2} s, opening the \
                 source at its offsets {:.2} s, then {} validators read back alongside: \
                 {:.2} s more)",
                total.as_secs_f64(),
                operators_took.as_secs_f64(),
                source_took.as_secs_f64(),
                v.len(),
                waited.as_secs_f64(),
            );
            (v, o, p.cap)
        }
    };
    // The time of the dataflow's inputs: never later than any reading worker's input
    // frontier minus one (see `Ends::input_time`), so that a checkpoint at the slowest
    // worker's frontier finds nothing in flight.
    let mut timely: Millis = restore.map_or(0, |r| r.time);
    inputs.advance_to(timely);
    ends.timely[index].store(timely, Ordering::Release);
    let mut buf = Vec::with_capacity(config.poll_batch);
    let mut dead = Vec::new();
    // Consecutive failed polls of this worker's source (0 = reading works).
    let mut source_failures: u32 = 0;
    // Past the end of a bounded run the probe may move on to work scheduled later (window
    // ends): the views stay as of the end.
    let end = inputs.end.clone();
    // The first worker of each process publishes the `as_of` (the probe's frontier is the
    // cluster's).
    let publish_as_of = |probe: &timely::dataflow::operators::probe::Handle<Millis>| {
        if index.is_multiple_of(threads) {
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
    // What a checkpoint needs of this worker besides its dataflow.
    macro_rules! checkpoint {
        () => {
            coordinator.take_part(
                worker,
                Paused {
                    index,
                    ends,
                    stats,
                    failed: &failed,
                    out: &out,
                    states: &states,
                    keys: &keys,
                    validators: &validators,
                    next_offsets: &next_offsets,
                    source: source.as_ref(),
                    cap,
                },
                &mut inputs,
                &probe,
                &mut timely,
            )?
        };
    }
    // The frontier of the streams still being read: what pauses are measured from. (With
    // checkpoints on, a bounded run's `cap` is also held by streams at their end, which
    // cannot be read any more: pausing the others against it would stop the run.)
    let mut reading_cap = cap;
    while !stats.stop.load(Ordering::Relaxed) {
        if failed.load(Ordering::Relaxed) {
            return Err(PipelineError::SinkGone);
        }
        if ends.aborted.load(Ordering::Acquire) {
            return Err(PipelineError::OtherWorkerStopped);
        }
        if streams > 0 {
            coordinator.request_if_due(stats.messages.load(Ordering::Relaxed));
        }
        checkpoint!();
        // A transient source error (the broker went away) is retried with backoff; the
        // messages read before it are processed as usual.
        if !read_all {
            pauses.update(source.as_mut(), &validators, reading_cap, &tally.paused);
            match source.poll(&mut buf, config.poll_batch) {
                Ok(()) => {
                    if source_failures > 0 {
                        source_failures = 0;
                        source_recovered(stats, config, index);
                    }
                }
                Err(e) if e.is_transient() => {
                    source_failed(stats, config, index, &e, source_failures)?;
                    let pause = backoff(source_failures);
                    source_failures += 1;
                    let until = Instant::now() + pause;
                    while Instant::now() < until && !stats.stop.load(Ordering::Relaxed) {
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
        let mut sent = false;
        for m in current {
            tally.read[m.stream] += 1;
            next_offsets[m.stream] = m.offset + 1;
            let validator = &mut validators[m.stream];
            let outcome = match decoded_iter.next() {
                Some(Ok(event)) => validator.process_event_at(event, cap),
                Some(Err(r)) => Outcome::Rejected(r),
                None => validator.process_at(&m.payload, cap),
            };
            match outcome {
                Outcome::Accepted(a) => {
                    if a.late {
                        tally.late += 1;
                    }
                    tally.accepted += 1;
                    sent = true;
                    feed(
                        &mut inputs,
                        &config.views,
                        validator,
                        a,
                        (stream_ids[m.stream], m.offset),
                    );
                }
                Outcome::Duplicate => {
                    tally.duplicates += 1;
                }
                Outcome::Rejected(r) => {
                    let i = DeadLetterReason::ALL
                        .iter()
                        .position(|x| *x == r.reason)
                        .unwrap_or(0);
                    tally.dead[i] += 1;
                    let s = &source.streams()[m.stream];
                    sent = true;
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
        // Dead letters go through the dataflow to the worker that writes (in a cluster, it
        // may be in another process), dated at the inputs' time.
        for d in dead.drain(..) {
            inputs.dead.send((d, timely));
        }
        drop(decoded_iter);
        if sent {
            // Records went in at the inputs' time.
            ends.sent[index].fetch_max(timely + 1, Ordering::AcqRel);
        }
        tally.flush(stats, source.as_ref(), &validators);
        if snap.finished {
            // A bounded input read to its end: the frontier takes this round into account
            // before the checkpoint at the end (below), whose time it is — read in one
            // round, an input would otherwise leave it at the start, before the records
            // this round sent, and no checkpoint could be taken.
            if streams > 0 && coordinator.enabled() {
                let next = next_frontier(config, true, &snap.caught_up, &validators, cap);
                if next > cap {
                    cap = next;
                    ends.caps[index].store(cap, Ordering::Release);
                }
            }
            break;
        }
        let hold_all = !config.live && config.checkpoints.is_some();
        let next = next_frontier(config, hold_all, &snap.caught_up, &validators, cap);
        reading_cap = next_frontier(config, false, &snap.caught_up, &validators, reading_cap);
        // The dataflow's inputs stand a millisecond behind the slowest worker's frontier.
        let previous = cap.saturating_sub(1);
        if next > cap {
            cap = next;
            ends.caps[index].store(cap, Ordering::Release);
        }
        ends.follow(index, &mut inputs, &mut timely, false);
        inputs.flush();
        // Backpressure: let the dataflow reach the previous frontier (this round's records
        // went in before it) before reading more; a worker ahead of the others waits for
        // them here. While waiting, park when there is nothing to do here (another worker
        // has the work): spinning would take the core that worker needs.
        // A worker holding at the end of its bounded input (checkpoints on) never moves
        // again: the wait goes no further than its frontier.
        let target = |ends: &Ends| match ends.at_end_floor() {
            Some(f) => previous.min(f.saturating_sub(1)),
            None => previous,
        };
        // A checkpoint asked for ends the wait: the others stop reading for it and would
        // wait for this worker in turn.
        while probe.less_than(&target(ends))
            && !failed.load(Ordering::Relaxed)
            && !coordinator.asked(index)
        {
            worker.step_or_park(Some(Duration::from_millis(1)));
            ends.follow(index, &mut inputs, &mut timely, false);
        }
        worker.step();
        publish_as_of(&probe);
    }

    // The source is done (or stopped): it is not failing any more.
    if source_failures > 0 {
        source_recovered(stats, config, index);
    }
    // A bounded input read to its end: a checkpoint of this moment (before the end below
    // drives the frontier past the last event time), so that a longer input continues it
    // as if it had been read in one run. It must describe every reading worker at its
    // end and none moved past its own frontier (a restart dates what it reads next from
    // there), so a worker that gets there first holds its inputs until all have.
    if streams > 0 && coordinator.enabled() {
        ends.at_end[index].store(true, Ordering::Release);
        while !stats.stop.load(Ordering::Relaxed) && !ends.all_readers_at_end() {
            if failed.load(Ordering::Relaxed) {
                return Err(PipelineError::SinkGone);
            }
            if ends.aborted.load(Ordering::Acquire) {
                return Err(PipelineError::OtherWorkerStopped);
            }
            coordinator.request_if_due(stats.messages.load(Ordering::Relaxed));
            checkpoint!();
            ends.follow(index, &mut inputs, &mut timely, true);
            inputs.flush();
            worker.step_or_park(Some(Duration::from_millis(1)));
            publish_as_of(&probe);
        }
        // Every reading worker takes part until the final checkpoint is done (whichever
        // asks for it, once no other is under way).
        while !stats.stop.load(Ordering::Relaxed) && !coordinator.final_done() {
            if failed.load(Ordering::Relaxed) {
                return Err(PipelineError::SinkGone);
            }
            if ends.aborted.load(Ordering::Acquire) {
                return Err(PipelineError::OtherWorkerStopped);
            }
            coordinator.try_request_final();
            checkpoint!();
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
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
        checkpoint!();
        if let Some(last) = ends.last_time() {
            break last;
        }
        if ends.aborted.load(Ordering::Acquire) {
            return Err(PipelineError::OtherWorkerStopped);
        }
        ends.follow(index, &mut inputs, &mut timely, false);
        inputs.flush();
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

/// How worker `worker` reports failed reads (see [`shopflow_model::retry`]): one `warn`
/// line per outage once it has lasted [`SOURCE_REPORT_AFTER`], giving up after the
/// configured limit.
fn source_outages<'a>(stats: &'a Stats, config: &PipelineConfig, worker: usize) -> Outages<'a> {
    Outages {
        health: &stats.health,
        component: SOURCE_COMPONENT,
        member: worker,
        name: "Kafka",
        doing: " (reading)",
        meanwhile: "; reading resumes at the next offset of each partition (/readyz answers 503 \
                    meanwhile)",
        service: "the broker",
        resumes: "reading resumes",
        report_after: SOURCE_REPORT_AFTER,
        give_up_after: config.source_give_up_after,
    }
}

/// Reports a failed read of worker `worker` (`attempt` counts the failures before it in a
/// row) to the metric and [`source_outages`]. Errs (the run stops) once the outage has
/// lasted the configured limit.
fn source_failed(
    stats: &Stats,
    config: &PipelineConfig,
    worker: usize,
    error: &SourceError,
    attempt: u32,
) -> Result<(), SourceError> {
    stats.metrics.source_errors.inc();
    let message = error.to_string();
    match source_outages(stats, config, worker).failed(attempt, &message) {
        Next::Retry => Ok(()),
        Next::GiveUp { lasted } => Err(SourceError::GaveUp {
            after: lasted,
            last: message,
        }),
    }
}

/// Worker `worker` read again: see [`Outages::succeeded`].
fn source_recovered(stats: &Stats, config: &PipelineConfig, worker: usize) {
    source_outages(stats, config, worker).succeeded();
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

    /// Adds the counts to the run's counts and the metrics once per round (per message,
    /// the counters that every reading worker shares would bounce between the cores) and
    /// resets them; sets the consumer lag of every stream whose source can tell it, and
    /// records the latest event time.
    fn flush(&mut self, stats: &Stats, source: &dyn Source, validators: &[StreamValidator]) {
        let metrics = &stats.metrics;
        for (counter, n) in self.events_in.iter().zip(&mut self.read) {
            counter.inc_by(std::mem::take(n));
        }
        for ((counter, total), n) in self
            .dead_letters
            .iter()
            .zip(&stats.dead_letters)
            .zip(&mut self.dead)
        {
            total.fetch_add(*n, Ordering::Relaxed);
            counter.inc_by(std::mem::take(n));
        }
        stats.accepted.fetch_add(self.accepted, Ordering::Relaxed);
        stats
            .duplicates
            .fetch_add(self.duplicates, Ordering::Relaxed);
        stats.late.fetch_add(self.late, Ordering::Relaxed);
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
    since: Vec<Option<Instant>>,
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
        let now = Instant::now();
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
///
/// `hold_all` (a bounded run that takes checkpoints) is the exception: every stream holds
/// the frontier back, caught up or not. Its last checkpoint must be a moment that a longer input
/// continues as one run over it would (where no stream has ended yet): a stream's next
/// events are dated from its own frontier, and the dataflow must not have moved past it.
fn next_frontier(
    config: &PipelineConfig,
    hold_all: bool,
    caught_up: &[bool],
    validators: &[StreamValidator],
    cap: Millis,
) -> Millis {
    let active = (0..validators.len())
        .filter(|&s| hold_all || !caught_up[s])
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
            inputs.stock.send(((sku, StockDelta::mention(0, 0)), time));
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
            inputs
                .stock
                .send(((sku, StockDelta::mention(qty as i64, 0)), time));
        }
        EventBody::StockAdjusted { sku, delta } => {
            inputs
                .stock
                .send(((sku, StockDelta::mention(delta, 0)), time));
        }
        EventBody::ProductUpserted {
            sku,
            seller_id,
            category_id,
            ..
        } => {
            inputs.stock.send(((sku, StockDelta::mention(0, 0)), time));
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
            order_effects(
                accepted.before.as_deref(),
                &after,
                time,
                views,
                &mut effects,
            );
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

/// Matches a checkpoint's streams with the source's (by [`Source::stream_key`]): each
/// stream's validator and next offset, in the source's order.
fn restored_streams(
    keys: &[(String, i32)],
    parts: Vec<(StreamPart, Result<StreamValidator, CheckpointError>)>,
) -> Result<(Vec<StreamValidator>, Vec<i64>), CheckpointError> {
    type Decoded = (StreamPart, Result<StreamValidator, CheckpointError>);
    let mut by_key: std::collections::BTreeMap<(String, i32), Decoded> = parts
        .into_iter()
        .map(|(p, v)| ((p.topic.clone(), p.partition), (p, v)))
        .collect();
    let mut validators = Vec::with_capacity(keys.len());
    let mut offsets = Vec::with_capacity(keys.len());
    for (topic, partition) in keys {
        let part = by_key.remove(&(topic.clone(), *partition)).ok_or_else(|| {
            CheckpointError::Mismatch(format!(
                "it has no state for {topic}/{partition}: the input's streams changed"
            ))
        })?;
        let (part, validator) = part;
        validators.push(validator?);
        offsets.push(part.next_offset);
    }
    if let Some((topic, partition)) = by_key.keys().next() {
        return Err(CheckpointError::Mismatch(format!(
            "it has state for {topic}/{partition}, which this worker does not read: the \
             input's streams changed"
        )));
    }
    Ok((validators, offsets))
}

/// What a worker contributes to a checkpoint besides its dataflow.
struct Paused<'a> {
    index: usize,
    ends: &'a Ends,
    stats: &'a Stats,
    failed: &'a AtomicBool,
    out: &'a SyncSender<Output>,
    states: &'a States,
    keys: &'a [(String, i32)],
    validators: &'a [StreamValidator],
    next_offsets: &'a [i64],
    /// Where a file source's next offsets start (see [`Source::position`]).
    source: &'a dyn Source,
    cap: Millis,
}

impl Paused<'_> {
    /// Why the worker must stop waiting for the others, if it must.
    fn interrupted(&self) -> Result<bool, PipelineError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(PipelineError::SinkGone);
        }
        if self.ends.aborted.load(Ordering::Acquire) {
            return Err(PipelineError::OtherWorkerStopped);
        }
        Ok(self.stats.stop.load(Ordering::Relaxed))
    }

    /// This worker's part: its frontier, its streams and its operators' states.
    fn part(&self) -> Result<WorkerPart, CheckpointError> {
        let streams = self
            .keys
            .iter()
            .zip(self.validators)
            .zip(self.next_offsets)
            .enumerate()
            .map(|(stream, (((topic, partition), v), &next_offset))| {
                let validator = Part::save(v).map_err(|e| CheckpointError::Part {
                    part: format!("validator of {topic}/{partition}"),
                    reason: e.to_string(),
                })?;
                Ok(StreamPart {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset,
                    position: self.source.position(stream, next_offset),
                    validator,
                })
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        Ok(WorkerPart {
            cap: self.cap,
            streams,
            operators: self.states.save()?,
        })
    }
}

/// How the workers of this process take a checkpoint together.
///
/// Worker 0 asks for one on the schedule (and a worker that reaches the end of a bounded
/// input asks for one then). Every worker, between two rounds of reading:
/// 1. stops reading and *joins*; until all have joined, it keeps stepping the dataflow
///    and moving its inputs up to the slowest worker's frontier (minus one);
/// 2. worker 0 picks T, the smallest input frontier of a worker with streams. The
///    checkpoint goes ahead only if no worker's inputs are past T and none sent records
///    at T or later (a worker that finished a bounded input early has moved on; then it
///    is skipped);
/// 3. every worker moves its inputs to T and steps until its probe (after the output)
///    passes T: every record dated before T is applied and handed to the writer, and —
///    records being sent only at times before T and operators emitting only at times
///    they are handling — no message is in flight anywhere;
/// 4. once all are there, each serializes its part (validators, next offsets, operator
///    states) without stepping in between, and waits until every worker has saved its
///    part (no worker reads again before: in a cluster, records read after the checkpoint
///    would reach a worker of another process still saving); the last worker of each
///    process adds its own and sends its process's checkpoint to the writer behind the
///    batches it already sent. The writer commits the file once everything before it is
///    written. In a cluster the entries above travel between processes (`crate::ends`,
///    `crate::cluster`) and each process writes its own file under the same number.
struct Coordinator {
    config: Option<CheckpointConfig>,
    /// The workers' entries, checkpoint votes included (mirrored between processes).
    ends: Arc<Ends>,
    /// This process's workers: global indexes `first..first + threads`.
    first: usize,
    threads: usize,
    /// The latest checkpoint this process finished (taken or skipped).
    completed: AtomicU64,
    /// Each of this process's workers' part of the checkpoint being taken.
    parts: Mutex<Vec<Option<WorkerPart>>>,
    /// The next checkpoint file's sequence number.
    seq: AtomicU64,
    /// When the last checkpoint was asked for, and the messages read then.
    last: Mutex<(Instant, u64)>,
}

impl Coordinator {
    fn new(
        config: Option<CheckpointConfig>,
        ends: Arc<Ends>,
        first: usize,
        threads: usize,
    ) -> Result<Self, PipelineError> {
        let seq = match &config {
            Some(c) => crate::checkpoint::next_seq(&c.dir)
                .map_err(|e| PipelineError::Restore { seq: 0, source: e })?,
            None => 1,
        };
        Ok(Coordinator {
            config,
            ends,
            first,
            threads,
            completed: AtomicU64::new(0),
            parts: Mutex::new((0..threads).map(|_| None).collect()),
            seq: AtomicU64::new(seq),
            last: Mutex::new((Instant::now(), 0)),
        })
    }

    /// Whether a checkpoint is asked for that worker `index` has not joined yet.
    fn asked(&self, index: usize) -> bool {
        let v = &self.ends.votes;
        v.requested.load(Ordering::Acquire) > v.joined[index].load(Ordering::Acquire)
    }

    /// Whether checkpoints are on.
    fn enabled(&self) -> bool {
        self.config.is_some()
    }

    /// Asks for the checkpoint at the end of a bounded input, once, as soon as no other is
    /// under way (one taken on the schedule meanwhile is not at the end).
    fn try_request_final(&self) {
        let v = &self.ends.votes;
        if v.final_epoch.load(Ordering::Acquire) != 0 {
            return;
        }
        if let Some(epoch) = self.request() {
            v.final_epoch.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    /// Whether the checkpoint at the end of a bounded input is finished (taken or skipped)
    /// here.
    fn final_done(&self) -> bool {
        let epoch = self.ends.votes.final_epoch.load(Ordering::Acquire);
        epoch != 0 && self.completed.load(Ordering::Acquire) >= epoch
    }

    /// Asks for a checkpoint unless one is under way (or checkpoints are off).
    /// Returns the checkpoint's number if this call asked for it. (In a cluster two
    /// processes may ask for the same number at once: it is one checkpoint.)
    fn request(&self) -> Option<u64> {
        self.config.as_ref()?;
        let done = self.completed.load(Ordering::Acquire);
        self.ends
            .votes
            .requested
            .compare_exchange(done, done + 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| done + 1)
    }

    /// Asks for a checkpoint if the schedule says one is due (`messages` read so far).
    fn request_if_due(&self, messages: u64) {
        let Some(config) = &self.config else {
            return;
        };
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let due = last.0.elapsed() >= config.interval
            || (config.every_messages > 0
                && messages.saturating_sub(last.1) >= config.every_messages);
        let requested = self.ends.votes.requested.load(Ordering::Acquire);
        if due && requested == self.completed.load(Ordering::Acquire) {
            *last = (Instant::now(), messages);
            drop(last);
            self.request();
        }
    }

    /// Takes this worker's part in the checkpoint asked for, if it has not yet (see the
    /// type's documentation). Returns when the worker may read again.
    fn take_part(
        &self,
        worker: &mut timely::worker::Worker,
        me: Paused<'_>,
        inputs: &mut Inputs,
        probe: &timely::dataflow::operators::probe::Handle<Millis>,
        timely: &mut Millis,
    ) -> Result<(), PipelineError> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        let v = &self.ends.votes;
        let epoch = v.requested.load(Ordering::Acquire);
        let index = me.index;
        if epoch <= v.joined[index].load(Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        v.joined[index].store(epoch, Ordering::Release);
        let park = Some(Duration::from_millis(1));
        // This process's last worker sends its part of the checkpoint.
        let last = self.first + self.threads - 1;
        // 1. Everyone stops reading.
        while v.joined.iter().any(|j| j.load(Ordering::Acquire) < epoch) {
            if me.interrupted()? {
                return Ok(());
            }
            me.ends.follow(index, inputs, timely, true);
            inputs.flush();
            worker.step_or_park(park);
        }
        // 2. Worker 0 decides the time, or skips.
        if index == 0 {
            let t = me.ends.min_reading_cap().unwrap_or(0);
            let fits = |v: &[AtomicU64], limit: Millis| {
                v.iter().all(|x| x.load(Ordering::Acquire) <= limit)
            };
            let ok = fits(&me.ends.timely, t) && fits(&me.ends.sent, t);
            if !ok {
                let show = |v: &[AtomicU64]| {
                    v.iter()
                        .map(|x| x.load(Ordering::Acquire))
                        .collect::<Vec<_>>()
                };
                tracing::debug!(
                    time = t,
                    "checkpoint {epoch} skipped at {t}: inputs at {:?}, records sent up to {:?}",
                    show(&me.ends.timely),
                    show(&me.ends.sent)
                );
            }
            v.decide(epoch, if ok { t + 1 } else { 0 });
        }
        // (In a cluster the decision comes from another process: keep stepping meanwhile.)
        let decision = loop {
            if let Some(d) = v.decided(epoch) {
                break d;
            }
            if me.interrupted()? {
                return Ok(());
            }
            worker.step_or_park(park);
        };
        let Some(t) = decision.checked_sub(1) else {
            if index == last {
                tracing::debug!(
                    "checkpoint skipped: a worker finished its bounded input and moved on"
                );
                self.completed.store(epoch, Ordering::Release);
            }
            while self.completed.load(Ordering::Acquire) < epoch {
                if me.interrupted()? {
                    return Ok(());
                }
                std::thread::yield_now();
            }
            return Ok(());
        };
        // 3. Everything before T applied and handed to the writer.
        if t > *timely {
            *timely = t;
            inputs.advance_to(t);
            me.ends.timely[index].store(t, Ordering::Release);
        }
        inputs.flush();
        while probe.less_than(&t) {
            if me.interrupted()? {
                return Ok(());
            }
            worker.step_or_park(park);
        }
        v.ready[index].store(epoch, Ordering::Release);
        while v.ready.iter().any(|r| r.load(Ordering::Acquire) < epoch) {
            if me.interrupted()? {
                return Ok(());
            }
            worker.step_or_park(park);
        }
        // 4. Each worker's part; the last one sends the checkpoint.
        let part = me
            .part()
            .map_err(|e| PipelineError::Restore { seq: 0, source: e })?;
        if let Ok(mut parts) = self.parts.lock() {
            parts[index - self.first] = Some(part);
        }
        // Nobody reads again before every worker has saved its part: records read after
        // the checkpoint would reach a worker still saving (in another process) and be in
        // its part, then read again after a restart.
        v.saved[index].store(epoch, Ordering::Release);
        while v.saved.iter().any(|x| x.load(Ordering::Acquire) < epoch) {
            if me.interrupted()? {
                return Ok(());
            }
            worker.step_or_park(park);
        }
        if index == last {
            let workers = loop {
                if me.interrupted()? {
                    return Ok(());
                }
                if let Ok(mut parts) = self.parts.lock() {
                    if parts.iter().all(Option::is_some) {
                        break parts
                            .iter_mut()
                            .filter_map(Option::take)
                            .collect::<Vec<_>>();
                    }
                }
                std::thread::yield_now();
            };
            let seq = self.seq.fetch_add(1, Ordering::AcqRel);
            let paused = started.elapsed();
            let snapshot = crate::checkpoint::Snapshot {
                seq,
                created_ms: now_ms(),
                time: t,
                as_of: t.checked_sub(1),
                workers,
                stores: Default::default(),
            };
            let dir = config.dir.clone();
            let keep = config.keep;
            let metrics = me.stats.metrics.clone();
            let commit = shopflow_model::CheckpointCommit::new(seq, move |stores| {
                let started = Instant::now();
                let mut snapshot = snapshot;
                snapshot.stores = stores;
                let written =
                    crate::checkpoint::write(&dir, snapshot, keep).map_err(|e| e.to_string())?;
                let took = started.elapsed();
                metrics.checkpoint_written(written.len, took);
                Ok(shopflow_model::Committed {
                    line: format!(
                        "checkpoint {seq} written: {} ({:.1} MB in {:.0} ms, as of {})",
                        written.path.display(),
                        written.len as f64 / 1e6,
                        took.as_secs_f64() * 1e3,
                        t.saturating_sub(1)
                    ),
                    memory: written.memory,
                })
            });
            me.stats.metrics.checkpoint_paused(paused);
            tracing::info!(
                seq,
                time = t,
                paused_ms = paused.as_millis() as u64,
                "checkpoint {seq} taken at dataflow time {t} (reading paused {:.0} ms)",
                paused.as_secs_f64() * 1e3
            );
            if me.out.send(Output::Checkpoint(commit)).is_err() {
                return Err(PipelineError::SinkGone);
            }
            self.completed.store(epoch, Ordering::Release);
        } else {
            while self.completed.load(Ordering::Acquire) < epoch {
                if me.interrupted()? {
                    return Ok(());
                }
                std::thread::yield_now();
            }
        }
        Ok(())
    }
}

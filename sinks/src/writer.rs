//! The sink writer: a thread that drains the pipeline's output channel into the sinks.
//!
//! It coalesces whatever batches are waiting into one (so a slow sink sees fewer, larger
//! writes), then writes dead letters, then alerts, then the view rows with their `as_of`.
//! That order makes a crash at any point safe: what was written before the views'
//! `as_of` is either skipped by id or rewritten identically on replay. A failing write is
//! retried with backoff ([`crate::retry`]); while it fails the channel fills and the
//! pipeline waits (backpressure) instead of buffering without bound. The writer gives up,
//! and the run stops with the sink's error, only after [`WriterConfig::give_up_after`] of
//! failures.
//!
//! After a restart the run replays from the beginning: see `write_loop` for how it catches
//! up with a store that is ahead of it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shopflow_model::health::Health;
use shopflow_model::{Alert, CheckpointCommit, DeadLetter, Millis, Output, StoreImages, ViewBatch};

use crate::memory::MemoryStore;
use crate::metrics::SinkMetrics;
use crate::retry::Retry;
use crate::stores::{EventLog, LedgerStore, SalesStore, SinkSet, ViewStore};
use crate::SinkError;

/// Counters of the sink writer.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// View batches written.
    pub batches: AtomicU64,
    /// Rows written.
    pub rows: AtomicU64,
    /// Alerts written.
    pub alerts: AtomicU64,
    /// Dead letters written.
    pub dead_letters: AtomicU64,
    /// Failed write attempts (each retried).
    pub failures: AtomicU64,
    /// `as_of` of the last batch written, plus one (0 = none).
    pub as_of_plus_one: AtomicU64,
    /// Per-sink Prometheus metrics; register them with [`SinkMetrics::register`] to
    /// export them.
    pub metrics: SinkMetrics,
    /// Which sinks are failing now; share it with the source and the API (`/readyz`).
    pub health: Health,
}

impl SinkStats {
    /// Counters and metrics reporting into `health`.
    pub fn with_health(health: Health) -> Self {
        SinkStats {
            health,
            ..SinkStats::default()
        }
    }

    /// Sets `shopflow_ready`: 1 once a view batch has been written while nothing (no sink,
    /// and no source sharing [`SinkStats::health`]) is failing, else 0.
    pub fn refresh_ready(&self) {
        let ready = self.batches.load(Ordering::Relaxed) > 0 && self.health.is_healthy();
        self.metrics.ready.set(i64::from(ready));
    }

    /// Counts a view batch of `rows` rows written to every sink, as of `as_of`.
    fn batch_written(&self, rows: usize, as_of: Millis) {
        if self.batches.load(Ordering::Relaxed) == 0 {
            tracing::info!(
                as_of,
                rows,
                "first view batch of this run written (as of {as_of})"
            );
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.as_of_plus_one.fetch_max(as_of + 1, Ordering::Relaxed);
        self.refresh_ready();
    }
}

/// How the writer treats failing writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// How long a sink may keep failing before the writer gives up and the run stops with
    /// the sink's error; `None` retries forever. Default [`DEFAULT_GIVE_UP_AFTER`].
    pub give_up_after: Option<Duration>,
    /// The run continues from a checkpoint: a replay covers only what changed since, so
    /// the catch-up image is not the whole state (rows it lacks are not stale), and the
    /// alerts and dead letters before it are in the sinks already.
    pub resumed: bool,
    /// With `resumed`: the `as_of` of the last batch written before the checkpoint. A store
    /// behind it has lost data since, and the run refuses to continue.
    pub resumed_as_of: Option<Millis>,
}

/// The default [`WriterConfig::give_up_after`]: 15 minutes, longer than a restart, a
/// failover or a short maintenance of any of the stores, short enough that an orchestrator
/// (or a human paged by the exit) looks at a store that stays down.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(15 * 60);

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            give_up_after: Some(DEFAULT_GIVE_UP_AFTER),
            resumed: false,
            resumed_as_of: None,
        }
    }
}

/// Starts the writer thread. It ends when the channel closes (Ok) or a sink fails for
/// good (Err). `stats` is updated as it goes.
///
/// `runtime` must be a multi-threaded tokio runtime, the one the sinks' clients were
/// created on (their connection tasks run there).
pub fn spawn_writer(
    rx: Receiver<Output>,
    sinks: SinkSet,
    stats: Arc<SinkStats>,
    runtime: tokio::runtime::Handle,
) -> JoinHandle<Result<(), SinkError>> {
    spawn_writer_with(rx, sinks, stats, runtime, WriterConfig::default())
}

/// [`spawn_writer`] with a [`WriterConfig`] of the caller's.
pub fn spawn_writer_with(
    rx: Receiver<Output>,
    sinks: SinkSet,
    stats: Arc<SinkStats>,
    runtime: tokio::runtime::Handle,
    config: WriterConfig,
) -> JoinHandle<Result<(), SinkError>> {
    spawn_writer_restoring(rx, sinks, stats, runtime, config, Vec::new())
}

/// [`spawn_writer_with`] continuing a checkpoint: the writer thread first puts `images`
/// back into the set's in-process stores (see [`SinkSet::memory_stores`], same order),
/// meanwhile the pipeline restores its own state and starts; it writes nothing before.
pub fn spawn_writer_restoring(
    rx: Receiver<Output>,
    sinks: SinkSet,
    stats: Arc<SinkStats>,
    runtime: tokio::runtime::Handle,
    config: WriterConfig,
    images: Vec<shopflow_state::Part>,
) -> JoinHandle<Result<(), SinkError>> {
    std::thread::Builder::new()
        .name("shopflow-sink-writer".into())
        .spawn(move || {
            let stores = sinks.memory_stores();
            if stores.len() != images.len() && !images.is_empty() {
                return Err(SinkError::Checkpoint(format!(
                    "{} store images for {} in-process stores",
                    images.len(),
                    stores.len()
                )));
            }
            for (store, image) in stores.iter().zip(images) {
                let started = Instant::now();
                store.restore(&image)?;
                tracing::info!(
                    bytes = image.len(),
                    "in-process store restored from the checkpoint in {:.2} s",
                    started.elapsed().as_secs_f64()
                );
            }
            let retry = Retry {
                stats: &stats,
                give_up_after: config.give_up_after,
            };
            runtime.block_on(write_loop(rx, sinks, &retry, &config))
        })
        .expect("spawn sink writer")
}

/// A small multi-threaded runtime for the sinks and the API.
pub fn io_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("shopflow-io")
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn write_loop(
    rx: Receiver<Output>,
    mut sinks: SinkSet,
    retry: &Retry<'_>,
    config: &WriterConfig,
) -> Result<(), SinkError> {
    let stats = retry.stats;
    // A replay must not resend alerts the views already cover: skip alerts at or
    // before the `as_of` the view store holds (they were written before that batch).
    let resume_as_of = match &sinks.views {
        ViewStore::Memory(m) => m.read(|s| s.as_of),
        ViewStore::Redis(r) => retry.run("redis", || r.written_as_of()).await?,
    };
    if config.resumed {
        check_resumable(&sinks, resume_as_of, retry, config).await?;
    }
    for sink in sinks.names() {
        // Every sink in use is listed from the start, with no failure yet.
        stats.metrics.write_failures.with_label_values(&[sink]);
    }
    // A replay after a restart: until the run reaches the `as_of` the store holds, its
    // batches are folded into one image of the whole state instead of being written (the
    // store is newer). The first write is then that image, deleting product rows the store
    // holds and the image lacks, so changes that cancelled out within the skipped stretch
    // (a row that came and went, a value that went and came back) leave nothing stale.
    let mut catch_up: Option<ViewBatch> = resume_as_of.map(|_| ViewBatch::default());
    while let Ok(first) = rx.recv() {
        let mut views: Option<ViewBatch> = None;
        let mut dead: Vec<DeadLetter> = Vec::new();
        // A checkpoint ends what is taken together: it is committed once what came
        // before it is written.
        let mut checkpoint: Option<CheckpointCommit> = None;
        // Takes one output; returns the rows it added.
        let mut take = |o: Output| match o {
            Output::Checkpoint(c) => {
                checkpoint = Some(c);
                0
            }
            Output::Views(b) => {
                let (l, s, r) = part_rows(&b);
                match views.as_mut() {
                    Some(v) => v.merge(b),
                    None => views = Some(b),
                }
                l + s + r
            }
            Output::DeadLetters(d) => {
                dead.extend(d);
                0
            }
        };
        let mut more = !matches!(first, Output::Checkpoint(_));
        let mut rows = take(first);
        let started = Instant::now();
        while more && started.elapsed() < Duration::from_millis(50) && rows < MAX_COALESCED_ROWS {
            match rx.try_recv() {
                Ok(o) => {
                    more = !matches!(o, Output::Checkpoint(_));
                    rows += take(o);
                }
                Err(_) => break,
            }
        }
        if !dead.is_empty() {
            write_dead_letters(&mut sinks.dead_letters, &dead, retry).await?;
        }
        if let Some(mut batch) = views {
            'write: {
                // One in-process store applies rows in order (the last of a key wins): the
                // dedup would only repeat that work.
                if sinks.single_memory_store().is_none() {
                    batch.dedup_keys();
                }
                let alerts: Vec<Alert> = batch
                    .alerts
                    .iter()
                    .filter(|a| config.resumed || resume_as_of.is_none_or(|r| a.ts > r))
                    .cloned()
                    .collect();
                if !alerts.is_empty() {
                    write_alerts(&mut sinks.alerts, &alerts, retry).await?;
                }
                stats.metrics.holds("alerts", batch.as_of);
                let batch = match catch_up.take() {
                    None => batch,
                    Some(mut image) => {
                        image.merge(batch);
                        if resume_as_of.is_some_and(|r| image.as_of < r) && !image.complete {
                            catch_up = Some(image);
                            break 'write;
                        }
                        image.dedup_keys();
                        image.alerts.clear();
                        // After a replay from the start, the image is the whole state; after a
                        // restart from a checkpoint it holds only what changed since (with
                        // its removals), and the rows it lacks are current.
                        if let (ViewStore::Redis(r), false) = (&sinks.views, config.resumed) {
                            let (ratings, also) = retry.run("redis", || r.product_skus()).await?;
                            let has_rating: HashSet<u64> =
                                image.ratings.iter().map(|x| x.sku).collect();
                            let has_also: HashSet<u64> =
                                image.also_bought.iter().map(|x| x.sku).collect();
                            image.ratings_removed = ratings
                                .into_iter()
                                .filter(|s| !has_rating.contains(s))
                                .collect();
                            image.also_bought_removed =
                                also.into_iter().filter(|s| !has_also.contains(s)).collect();
                        }
                        tracing::info!(
                            as_of = image.as_of,
                            rows = image.stock.len() + image.orders.len(),
                            "caught up with the stored views: writing the full state once"
                        );
                        image
                    }
                };
                let rows = total_rows(&batch);
                let as_of = batch.as_of;
                // Embedded mode: one in-process store holds views, ledgers and sales. It takes
                // the batch itself (no copy of its rows).
                if let Some(store) = sinks.single_memory_store() {
                    let (ledger_rows, sales_rows, view_rows) = part_rows(&batch);
                    // Members are both ledger and view rows: counted once, as below.
                    let memory_rows = ledger_rows - batch.members.len() + sales_rows + view_rows;
                    let started = Instant::now();
                    store.write_views_owned(batch);
                    stats
                        .metrics
                        .wrote("memory", memory_rows, started.elapsed());
                    stats.metrics.holds("memory", as_of);
                    stats.batch_written(rows, as_of);
                    break 'write;
                }
                // Ledgers before serving views: after a crash between the two, the ledger is
                // ahead, and its own `as_of` guard skips what it already holds.
                // Writes to the in-process store are timed together as one `memory` write. One
                // store often holds views, ledgers and sales (embedded mode): it takes the batch
                // once.
                let mut memory: Option<(usize, Duration)> = None;
                let mut written: Vec<MemoryStore> = Vec::new();
                let mut in_memory = |rows: usize, store: &MemoryStore| {
                    let started = Instant::now();
                    if !written.iter().any(|w| w.same_store(store)) {
                        store.write_views(&batch);
                        written.push(store.clone());
                    }
                    let (r, t) = memory.get_or_insert((0, Duration::ZERO));
                    *r += rows;
                    *t += started.elapsed();
                };
                let (ledger_rows, sales_rows, view_rows) = part_rows(&batch);
                let started = Instant::now();
                match &sinks.ledger {
                    LedgerStore::Memory(m) => {
                        // Members are counted with the views when those are in memory too.
                        let rows = match &sinks.views {
                            ViewStore::Memory(_) => ledger_rows - batch.members.len(),
                            ViewStore::Redis(_) => ledger_rows,
                        };
                        in_memory(rows, m);
                    }
                    LedgerStore::Mysql(l) => {
                        retry.run("mysql", || l.write(&batch)).await?;
                        stats.metrics.wrote("mysql", ledger_rows, started.elapsed());
                        stats.metrics.holds("mysql", batch.as_of);
                    }
                }
                let started = Instant::now();
                match &sinks.sales {
                    SalesStore::Memory(m) => in_memory(sales_rows, m),
                    SalesStore::ClickHouse(c) => {
                        retry.run("clickhouse", || c.write(&batch)).await?;
                        stats
                            .metrics
                            .wrote("clickhouse", sales_rows, started.elapsed());
                        stats.metrics.holds("clickhouse", batch.as_of);
                    }
                }
                let started = Instant::now();
                match &sinks.views {
                    ViewStore::Memory(m) => in_memory(view_rows, m),
                    ViewStore::Redis(r) => {
                        retry.run("redis", || r.write(&batch)).await?;
                        stats.metrics.wrote("redis", view_rows, started.elapsed());
                        stats.metrics.holds("redis", batch.as_of);
                    }
                }
                if let Some((rows, took)) = memory {
                    stats.metrics.wrote("memory", rows, took);
                    stats.metrics.holds("memory", batch.as_of);
                }
                stats.batch_written(rows, as_of);
            }
        }
        if let Some(c) = checkpoint {
            if catch_up.is_some() {
                // The stores are ahead of the replay and the batches so far are only
                // folded: the in-process stores' images would not match the checkpoint.
                tracing::info!(
                    seq = c.seq,
                    "checkpoint {} skipped: the writer is still catching up with the stored views",
                    c.seq
                );
            } else {
                let as_of = stats.as_of_plus_one.load(Ordering::Relaxed).checked_sub(1);
                commit_checkpoint(&mut sinks, &c, as_of);
            }
        }
    }
    Ok(())
}

/// A run continuing a checkpoint: every external store must hold at least what was
/// written before the checkpoint (`views_as_of` is the view store's, read already). A
/// store that was emptied or restored from an older backup would otherwise stay without
/// the rows the checkpoint says are written.
async fn check_resumable(
    sinks: &SinkSet,
    views_as_of: Option<Millis>,
    retry: &Retry<'_>,
    config: &WriterConfig,
) -> Result<(), SinkError> {
    let Some(need) = config.resumed_as_of else {
        return Ok(());
    };
    let behind = |sink: &str, has: Option<Millis>| {
        Err(SinkError::Checkpoint(format!(
            "{sink} holds data as of {has:?}, the checkpoint being continued was taken after \
             writing as of {need}: {sink} lost data since (emptied, or restored from an older \
             backup). Move the state directory's checkpoints away: a replay from the start \
             rebuilds it"
        )))
    };
    if let ViewStore::Redis(_) = &sinks.views {
        if views_as_of.is_none_or(|h| h < need) {
            return behind("Redis", views_as_of);
        }
    }
    if let LedgerStore::Mysql(l) = &sinks.ledger {
        let has = retry.run("mysql", || l.written_as_of()).await?;
        if has.is_none_or(|h| h < need) {
            return behind("MySQL", has);
        }
    }
    if let SalesStore::ClickHouse(c) = &sinks.sales {
        let has = retry.run("clickhouse", || c.written_as_of()).await?;
        if has.is_none_or(|h| h < need) {
            return behind("ClickHouse", has);
        }
    }
    Ok(())
}

/// Commits a checkpoint: everything sent before it is written, so the in-process stores'
/// images belong to its moment. A checkpoint that cannot be written is logged and the run
/// goes on (the next one may succeed; a restart uses an older one).
fn commit_checkpoint(sinks: &mut SinkSet, c: &CheckpointCommit, as_of: Option<Millis>) {
    let images = (|| {
        let memory = sinks
            .memory_stores()
            .iter()
            .map(|m| m.image())
            .collect::<Result<Vec<_>, SinkError>>()?;
        let mut files = Vec::new();
        for log in [&mut sinks.alerts, &mut sinks.dead_letters] {
            if let EventLog::File(f) = log {
                files.push((f.path().to_string(), f.sync()?));
            }
        }
        Ok::<_, SinkError>(StoreImages {
            memory,
            files,
            as_of,
        })
    })();
    let result = match images {
        Ok(images) => c.commit(images),
        Err(e) => Some(Err(e.to_string())),
    };
    match result {
        Some(Ok(committed)) => {
            tracing::info!(seq = c.seq, "{}", committed.line);
            // Each in-process store continues from its image in the file just written: what
            // the checkpoint holds of its paged tables leaves memory for the file's pages
            // (nothing was written to the stores since their images were taken).
            for (store, image) in sinks.memory_stores().iter().zip(&committed.memory) {
                if let Err(e) = store.restore(image) {
                    // Not expected (the image was serialized from this very state); the
                    // store keeps its contents in memory and goes on.
                    tracing::warn!(seq = c.seq, error = %e, "in-process store not moved onto checkpoint {}: {e}", c.seq);
                }
            }
        }
        Some(Err(e)) => tracing::warn!(
            seq = c.seq,
            error = %e,
            "checkpoint {} not written: {e}; the run goes on (a restart uses an older one)",
            c.seq
        ),
        None => {}
    }
}

/// Rows of a batch, each counted once (what `shopflow_sink_rows` and the run summary count):
/// [`part_rows`] without the members counted twice (ledger and view) and the sellers.
fn total_rows(batch: &ViewBatch) -> usize {
    let (ledger, sales, views) = part_rows(batch);
    ledger + sales + views - batch.members.len() - batch.sellers.len()
}

/// The writer stops gathering waiting batches into one once it holds this many rows, so a
/// sink that fell behind catches up in transactions of bounded size (and a crash loses at
/// most one such transaction's work) rather than in one that grows with the backlog.
const MAX_COALESCED_ROWS: usize = 5_000;

/// Rows of a batch for the ledger store (points, settlements, payouts, invoices, members,
/// sellers), the sales store (facts and minute rollups) and the view store (stock, orders,
/// ratings, recommendations and their removals, members, member orders).
fn part_rows(batch: &ViewBatch) -> (usize, usize, usize) {
    let ledger = batch.points.len()
        + batch.settlements.len()
        + batch.payouts.len()
        + batch.invoices.len()
        + batch.members.len()
        + batch.sellers.len();
    let sales = batch.sales_facts.len() + batch.sales_minutes.len();
    let views = batch.stock.len()
        + batch.orders.len()
        + batch.ratings.len()
        + batch.also_bought.len()
        + batch.ratings_removed.len()
        + batch.also_bought_removed.len()
        + batch.members.len()
        + batch.member_orders.len();
    (ledger, sales, views)
}

async fn write_dead_letters(
    log: &mut EventLog,
    dead: &[DeadLetter],
    retry: &Retry<'_>,
) -> Result<(), SinkError> {
    let stats = retry.stats;
    let started = Instant::now();
    match log {
        EventLog::Memory(m) => m.push_dead_letters(dead),
        EventLog::File(f) => {
            f.write_all(&dead.iter().map(DeadLetter::to_json).collect::<Vec<_>>())?
        }
        EventLog::Kafka(k) => {
            let records: Vec<_> = dead
                .iter()
                .map(|d| {
                    let id = format!("{}/{}/{}", d.topic, d.partition, d.offset);
                    let payload = serde_json::to_vec(&d.to_json()).expect("json");
                    (id, d.key.clone(), payload)
                })
                .collect();
            retry.kafka("dead_letters", k, &records).await?;
        }
    }
    stats
        .metrics
        .wrote("dead_letters", dead.len(), started.elapsed());
    stats
        .dead_letters
        .fetch_add(dead.len() as u64, Ordering::Relaxed);
    Ok(())
}

async fn write_alerts(
    log: &mut EventLog,
    alerts: &[Alert],
    retry: &Retry<'_>,
) -> Result<(), SinkError> {
    let stats = retry.stats;
    let started = Instant::now();
    match log {
        EventLog::Memory(m) => m.push_alerts(alerts),
        EventLog::File(f) => f.write_all(
            &alerts
                .iter()
                .map(|a| serde_json::to_value(a).expect("json"))
                .collect::<Vec<_>>(),
        )?,
        EventLog::Kafka(k) => {
            let records: Vec<_> = alerts
                .iter()
                .map(|a| {
                    (
                        a.event_id.clone(),
                        Some(a.key().into_bytes()),
                        serde_json::to_vec(a).expect("json"),
                    )
                })
                .collect();
            retry.kafka("alerts", k, &records).await?;
        }
    }
    stats
        .metrics
        .wrote("alerts", alerts.len(), started.elapsed());
    stats
        .alerts
        .fetch_add(alerts.len() as u64, Ordering::Relaxed);
    Ok(())
}

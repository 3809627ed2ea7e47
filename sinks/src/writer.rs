//! The sink writer: a thread that drains the pipeline's output channel into the sinks.
//!
//! It coalesces whatever batches are waiting into one (so a slow sink sees fewer, larger
//! writes), then writes dead letters, then alerts, then the view rows with their `as_of`.
//! That order makes a crash at any point safe: what was written before the views'
//! `as_of` is either skipped by id or rewritten identically on replay. A failing write is
//! retried with backoff; while it fails the channel fills and the pipeline waits
//! (backpressure) instead of buffering without bound.
//!
//! An outage is reported once: one `warn` line when a sink starts failing (what failed,
//! that it is retried, what to check), one `info` line when it recovers (how long it was
//! down), `shopflow_sink_write_failures_total{sink}` per failed attempt, and the shared
//! [`Health`] (so `/readyz` answers 503) meanwhile. The writer gives up, and the run stops
//! with the sink's error, only after [`WriterConfig::give_up_after`] of failures.
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
use shopflow_model::{
    Alert, AlsoBought, CheckpointCommit, DeadLetter, MemberView, Millis, OrderView, Output, Payout,
    PointsEntry, RatingView, SettlementEntry, StockLevel, StoreImages, TaxInvoice, ViewBatch,
};

use crate::clickhouse::{series, Bucket, ClickHouseSales, SalesPoint};
use crate::file::JsonLinesWriter;
use crate::kafka::KafkaWriter;
use crate::memory::MemoryStore;
use crate::metrics::SinkMetrics;
use crate::mysql::MysqlLedger;
use crate::redis::RedisViews;
use crate::SinkError;

/// Where the serving views go.
#[derive(Debug)]
pub enum ViewStore {
    /// The in-process store.
    Memory(MemoryStore),
    /// Redis.
    Redis(RedisViews),
}

/// Where the ledgers (points, settlements, payouts, tax invoices) go.
#[derive(Debug)]
pub enum LedgerStore {
    /// The in-process store (embedded mode, or a run without MySQL: not durable).
    Memory(MemoryStore),
    /// MySQL or MariaDB.
    Mysql(MysqlLedger),
}

/// Where the sales analytics go.
#[derive(Clone, Debug)]
pub enum SalesStore {
    /// The in-process store (embedded mode, or a run without ClickHouse).
    Memory(MemoryStore),
    /// ClickHouse (boxed: its client is large).
    ClickHouse(Box<ClickHouseSales>),
}

impl SalesStore {
    /// A seller's sales series in [from, to) and the `as_of` of the answer.
    pub async fn sales(
        &self,
        seller_id: u64,
        from: Millis,
        to: Millis,
        bucket: Bucket,
    ) -> Result<(Vec<SalesPoint>, Millis), SinkError> {
        match self {
            SalesStore::Memory(m) => Ok(m.read(|s| {
                let minutes = s
                    .sales_minutes
                    .range((seller_id, from)..(seller_id, to))
                    .map(|(_, m)| *m);
                (series(minutes, bucket), s.as_of.unwrap_or(0))
            })),
            SalesStore::ClickHouse(c) => {
                let as_of = c.as_of().await?.unwrap_or(0);
                Ok((c.sales(seller_id, from, to, bucket).await?, as_of))
            }
        }
    }
}

/// Where a stream of records (alerts, dead letters) goes.
#[derive(Debug)]
pub enum EventLog {
    /// The in-process store.
    Memory(MemoryStore),
    /// A JSON-lines file.
    File(JsonLinesWriter),
    /// A Kafka topic.
    Kafka(KafkaWriter),
}

/// The sinks of one pipeline.
#[derive(Debug)]
pub struct SinkSet {
    /// Serving views.
    pub views: ViewStore,
    /// Ledgers.
    pub ledger: LedgerStore,
    /// Sales analytics.
    pub sales: SalesStore,
    /// `shop.alerts`.
    pub alerts: EventLog,
    /// `shop.dlq`.
    pub dead_letters: EventLog,
}

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

impl WriterConfig {
    fn limit(&self) -> String {
        match self.give_up_after {
            Some(d) => format!("up to {} s", d.as_secs()),
            None => "ever".into(),
        }
    }
}

/// The serving views as the query API reads them.
#[derive(Clone, Debug)]
pub enum ServingViews {
    /// The in-process store.
    Memory(MemoryStore),
    /// Redis.
    Redis(RedisViews),
}

impl ServingViews {
    /// A stock row and the `as_of` of the answer.
    pub async fn stock(&self, sku: u64) -> Result<Option<(StockLevel, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.stock
                    .get(&sku)
                    .map(|(row, _)| (*row, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.stock(sku).await,
        }
    }

    /// An order row and the `as_of` of the answer.
    pub async fn order(&self, order_id: u64) -> Result<Option<(OrderView, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.orders
                    .get(&order_id)
                    .map(|(row, _)| (row.clone(), s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.order(order_id).await,
        }
    }

    /// A SKU's ratings: `None` if the SKU is unknown, zeros if it has no review.
    pub async fn rating(&self, sku: u64) -> Result<Option<(RatingView, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                let known = s.stock.contains_key(&sku);
                let row = s.ratings.get(&sku).copied();
                (known || row.is_some()).then(|| {
                    (
                        row.unwrap_or(RatingView {
                            sku,
                            ..RatingView::default()
                        }),
                        s.as_of.unwrap_or(0),
                    )
                })
            })),
            ServingViews::Redis(r) => r.rating(sku).await,
        }
    }

    /// A SKU's recommendations: `None` if the SKU is unknown, empty if it has none.
    pub async fn also_bought(&self, sku: u64) -> Result<Option<(AlsoBought, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                let known = s.stock.contains_key(&sku);
                let row = s.also_bought.get(&sku).cloned();
                (known || row.is_some()).then(|| {
                    (
                        row.unwrap_or(AlsoBought {
                            sku,
                            items: Vec::new(),
                        }),
                        s.as_of.unwrap_or(0),
                    )
                })
            })),
            ServingViews::Redis(r) => r.also_bought(sku).await,
        }
    }

    /// A member row and the `as_of` of the answer.
    pub async fn member(&self, member_id: u64) -> Result<Option<(MemberView, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.members
                    .get(&member_id)
                    .map(|row| (*row, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.member(member_id).await,
        }
    }

    /// A member's most recent orders, newest first: `None` if the member is unknown.
    pub async fn member_orders(
        &self,
        member_id: u64,
    ) -> Result<Option<(Vec<OrderView>, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.members.get(&member_id)?;
                let ids = s
                    .member_orders
                    .get(&member_id)
                    .map(|m| m.order_ids.clone())
                    .unwrap_or_default();
                let orders = ids
                    .iter()
                    .filter_map(|id| s.orders.get(id).map(|(o, _)| o.clone()))
                    .collect();
                Some((orders, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.member_orders(member_id).await,
        }
    }

    /// The `as_of` of the views, if any batch was written.
    pub async fn as_of(&self) -> Result<Option<Millis>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| s.as_of)),
            ServingViews::Redis(r) => r.as_of().await,
        }
    }
}

/// The ledgers as the query API reads them. Every answer comes with the ledger's `as_of`.
#[derive(Clone, Debug)]
pub enum LedgerViews {
    /// The in-process store.
    Memory(MemoryStore),
    /// MySQL or MariaDB.
    Mysql(MysqlLedger),
}

/// A seller's payouts or tax invoices with their `final` flags.
pub type Periods<T> = Vec<(T, bool)>;

impl LedgerViews {
    /// The ledger's `as_of` (0 before the first batch).
    pub async fn as_of(&self) -> Result<Millis, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| s.as_of.unwrap_or(0))),
            LedgerViews::Mysql(l) => Ok(l.as_of().await?.unwrap_or(0)),
        }
    }

    /// A member's points entries by time: `None` if the member is unknown.
    pub async fn points(
        &self,
        member_id: u64,
    ) -> Result<Option<(Vec<PointsEntry>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.members.get(&member_id)?;
                // In (ts, id) order: the key's order within the member.
                let entries: Vec<PointsEntry> = s
                    .points
                    .range((member_id, 0, String::new())..)
                    .take_while(|((m, _, _), _)| *m == member_id)
                    .map(|(_, e)| e.clone())
                    .collect();
                Some((entries, s.as_of.unwrap_or(0)))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.member_known(member_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.points(member_id).await?, as_of)))
            }
        }
    }

    /// Whether any accepted `product.upserted` named the seller.
    pub async fn seller_known(&self, seller_id: u64) -> Result<bool, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| s.sellers.contains(&seller_id))),
            LedgerViews::Mysql(l) => l.seller_known(seller_id).await,
        }
    }

    /// A seller's settlement entries dated in [from, to): `None` if the seller is unknown.
    pub async fn settlements(
        &self,
        seller_id: u64,
        from: Millis,
        to: Millis,
    ) -> Result<Option<(Vec<SettlementEntry>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.sellers.get(&seller_id)?;
                // In (ts, id) order: the key's order within the seller.
                let entries: Vec<SettlementEntry> = s
                    .settlements
                    .range((seller_id, from, String::new())..)
                    .take_while(|((seller, ts, _), _)| *seller == seller_id && *ts < to)
                    .map(|(_, e)| e.clone())
                    .collect();
                Some((entries, s.as_of.unwrap_or(0)))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.seller_known(seller_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.settlements(seller_id, from, to).await?, as_of)))
            }
        }
    }

    /// A seller's weekly payouts with `final` flags: `None` if the seller is unknown.
    pub async fn payouts(
        &self,
        seller_id: u64,
    ) -> Result<Option<(Periods<Payout>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.sellers.get(&seller_id)?;
                let as_of = s.as_of.unwrap_or(0);
                let rows = s
                    .payouts
                    .range((seller_id, 0)..=(seller_id, Millis::MAX))
                    .map(|(_, p)| {
                        let fin = as_of >= shopflow_model::time::kst_next_week_start(p.week_start);
                        (*p, fin)
                    })
                    .collect();
                Some((rows, as_of))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.seller_known(seller_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.payouts(seller_id).await?, as_of)))
            }
        }
    }

    /// A seller's monthly tax invoices with `final` flags: `None` if the seller is unknown.
    pub async fn invoices(
        &self,
        seller_id: u64,
    ) -> Result<Option<(Periods<TaxInvoice>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.sellers.get(&seller_id)?;
                let as_of = s.as_of.unwrap_or(0);
                let rows = s
                    .invoices
                    .range((seller_id, 0)..=(seller_id, Millis::MAX))
                    .map(|(_, i)| {
                        let fin =
                            as_of >= shopflow_model::time::kst_next_month_start(i.month_start);
                        (*i, fin)
                    })
                    .collect();
                Some((rows, as_of))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.seller_known(seller_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.invoices(seller_id).await?, as_of)))
            }
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
    images: Vec<Vec<u8>>,
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
                config,
            };
            runtime.block_on(write_loop(rx, sinks, &retry))
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
) -> Result<(), SinkError> {
    let stats = retry.stats;
    // A replay must not resend alerts the views already cover: skip alerts at or
    // before the `as_of` the view store holds (they were written before that batch).
    let resume_as_of = match &sinks.views {
        ViewStore::Memory(m) => m.read(|s| s.as_of),
        ViewStore::Redis(r) => retry.run("redis", || r.as_of()).await?,
    };
    if retry.config.resumed {
        check_resumable(&sinks, resume_as_of, retry).await?;
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
                    .filter(|a| retry.config.resumed || resume_as_of.is_none_or(|r| a.ts > r))
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
                        if let (ViewStore::Redis(r), false) = (&sinks.views, retry.config.resumed) {
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
) -> Result<(), SinkError> {
    let Some(need) = retry.config.resumed_as_of else {
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
        let has = retry.run("mysql", || l.as_of()).await?;
        if has.is_none_or(|h| h < need) {
            return behind("MySQL", has);
        }
    }
    if let SalesStore::ClickHouse(c) = &sinks.sales {
        let has = retry.run("clickhouse", || c.as_of()).await?;
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
        Some(Ok(line)) => tracing::info!(seq = c.seq, "{line}"),
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

impl SinkSet {
    /// The in-process stores of this set, each once, in a fixed order (views, ledgers,
    /// sales, alerts, dead letters): what a checkpoint keeps images of.
    pub fn memory_stores(&self) -> Vec<&MemoryStore> {
        let candidates = [
            match &self.views {
                ViewStore::Memory(m) => Some(m),
                ViewStore::Redis(_) => None,
            },
            match &self.ledger {
                LedgerStore::Memory(m) => Some(m),
                LedgerStore::Mysql(_) => None,
            },
            match &self.sales {
                SalesStore::Memory(m) => Some(m),
                SalesStore::ClickHouse(_) => None,
            },
            match &self.alerts {
                EventLog::Memory(m) => Some(m),
                _ => None,
            },
            match &self.dead_letters {
                EventLog::Memory(m) => Some(m),
                _ => None,
            },
        ];
        let mut stores: Vec<&MemoryStore> = Vec::new();
        for m in candidates.into_iter().flatten() {
            if !stores.iter().any(|s| s.same_store(m)) {
                stores.push(m);
            }
        }
        stores
    }

    /// The one in-process store that holds views, ledgers and sales, if this set writes
    /// only there (the embedded default).
    fn single_memory_store(&self) -> Option<&MemoryStore> {
        match (&self.views, &self.ledger, &self.sales) {
            (ViewStore::Memory(v), LedgerStore::Memory(l), SalesStore::Memory(s))
                if v.same_store(l) && v.same_store(s) =>
            {
                Some(v)
            }
            _ => None,
        }
    }

    /// The `sink` labels of the stores this set writes (see [`crate::metrics`]).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["dead_letters", "alerts"];
        let mut memory = false;
        match &self.ledger {
            LedgerStore::Memory(_) => memory = true,
            LedgerStore::Mysql(_) => names.push("mysql"),
        }
        match &self.sales {
            SalesStore::Memory(_) => memory = true,
            SalesStore::ClickHouse(_) => names.push("clickhouse"),
        }
        match &self.views {
            ViewStore::Memory(_) => memory = true,
            ViewStore::Redis(_) => names.push("redis"),
        }
        if memory {
            names.push("memory");
        }
        names
    }
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

/// The pause after failed attempt `attempt` (0-based): 0.1 s doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// The [`Health`] component a sink reports under: its own name, except that the alerts and
/// dead-letter logs share `kafka` with the source, so a broker outage is one outage
/// whichever of them notices it first.
pub fn component_of(sink: &str) -> &str {
    match sink {
        "alerts" | "dead_letters" => "kafka",
        other => other,
    }
}

/// The [`Health`] member the writer reports as (the source's workers are 0, 1, …).
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
        "alerts" | "dead_letters" => "the Kafka broker",
        _ => "the store",
    }
}

/// Retries failing writes and reports outages (see the module docs).
struct Retry<'a> {
    stats: &'a SinkStats,
    config: WriterConfig,
}

impl Retry<'_> {
    /// Counts a failed attempt at `sink` (not ready while it fails); logs the first of an
    /// outage. Returns whether to give up (the outage has lasted the configured limit).
    fn failed(&self, sink: &str, error: &SinkError) -> bool {
        let stats = self.stats;
        stats.failures.fetch_add(1, Ordering::Relaxed);
        stats.metrics.failed(sink);
        let message = error.to_string();
        let component = component_of(sink);
        stats.health.failed(component, WRITER_MEMBER, &message);
        // A write that fails is reported at once (the source may have noticed first without
        // reporting a blip yet).
        let first = stats.health.announce(component);
        if first && component == "kafka" {
            tracing::warn!(
                sink,
                error = %message,
                "Kafka is failing (writing {sink}): retried with backoff for {} while the pipeline \
                 waits (backpressure; /readyz answers 503). Check that the broker is running and \
                 reachable",
                self.config.limit(),
            );
        } else if first {
            tracing::warn!(
                sink,
                error = %message,
                "sink {sink} is failing: writes are retried with backoff (0.1 s doubling to 5 s) for {} \
                 while the pipeline waits (backpressure; /readyz answers 503). Check that {} is running \
                 and reachable",
                self.config.limit(),
                service_of(sink),
            );
        } else {
            tracing::debug!(sink, error = %message, "sink write failed again; retrying");
        }
        let lasted = stats.health.failing_for(component).unwrap_or_default();
        let give_up = self.config.give_up_after.is_some_and(|d| lasted >= d);
        if give_up {
            tracing::error!(
                sink,
                error = %message,
                "sink {sink} has failed for {:.0} s: giving up; the run stops",
                lasted.as_secs_f64()
            );
        }
        give_up
    }

    /// A write to `sink` succeeded: logs the end of an outage, ready again if nothing else
    /// fails.
    fn succeeded(&self, sink: &str) {
        let component = component_of(sink);
        let outage = self
            .stats
            .health
            .recovered(component, WRITER_MEMBER)
            .filter(|o| o.announced);
        if let (Some(outage), "kafka") = (outage, component) {
            tracing::info!(
                sink,
                down_s = outage.lasted.as_secs_f64(),
                failed_attempts = outage.attempts,
                "Kafka recovered after {:.1} s ({} failed attempts); writing resumes",
                outage.lasted.as_secs_f64(),
                outage.attempts
            );
        } else if let Some(outage) = outage {
            tracing::info!(
                sink,
                down_s = outage.lasted.as_secs_f64(),
                failed_attempts = outage.attempts,
                "sink {sink} recovered after {:.1} s ({} failed attempts); writing resumes",
                outage.lasted.as_secs_f64(),
                outage.attempts
            );
        }
        self.stats.refresh_ready();
    }

    /// Runs a write until it succeeds, with exponential backoff, giving up after
    /// [`WriterConfig::give_up_after`].
    async fn run<T, F, Fut>(&self, sink: &str, mut f: F) -> Result<T, SinkError>
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
                    if self.failed(sink, &e) {
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
    async fn kafka(
        &self,
        sink: &str,
        k: &mut KafkaWriter,
        records: &[crate::kafka::IdRecord],
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
                        if self.failed(sink, &waited) {
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
                    if self.failed(sink, &e) {
                        return Err(e);
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

//! Ties sources, pipeline, sinks and API together for the subcommands.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use shopflow_api::auth::Role;
use shopflow_api::metrics::Registry;
use shopflow_api::ApiState;
use shopflow_gen::{generate, split, GenConfig};
use shopflow_ingest::source::KeyedPayloads;
use shopflow_ingest::source::{FileSource, KafkaConfig, KafkaSource, MemorySource};
use shopflow_ingest::{Source, SourceError, StreamId, Topics};
use shopflow_model::health::Health;
use shopflow_model::time::rfc3339_utc;
use shopflow_pipelines::cluster::ClusterConfig;
use shopflow_pipelines::dataflow::ViewConfig;
use shopflow_pipelines::{PipelineConfig, Stats};
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::file::JsonLinesWriter;
use shopflow_sinks::kafka::{alert_id, dead_letter_id, KafkaWriter};
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_sinks::writer::{spawn_writer_restoring, SinkStats, WriterConfig};
use shopflow_sinks::{
    spawn_writer, EventLog, LedgerStore, LedgerViews, MemoryStore, SalesStore, ServingViews,
    SinkSet, ViewStore,
};

/// Options shared by `demo` and `run`.
#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Timely worker threads.
    #[arg(long, default_value_t = 2, env = "SHOPFLOW_WORKERS")]
    pub(crate) workers: usize,
    /// Allowed lateness in ms (SPEC §4).
    #[arg(long, default_value_t = 5_000, env = "SHOPFLOW_LATENESS_MS")]
    pub(crate) lateness_ms: u64,
    /// Low-stock alert threshold.
    #[arg(long, default_value_t = 10, env = "SHOPFLOW_LOW_STOCK_THRESHOLD")]
    pub(crate) low_stock_threshold: i64,
    /// Co-purchase baskets with more distinct SKUs are skipped.
    #[arg(long, default_value_t = 50, env = "SHOPFLOW_BASKET_MAX_SKUS")]
    pub(crate) basket_max_skus: usize,
    /// Read-ahead window in ms of event time: a Kafka partition whose event time runs this
    /// far ahead of the worker's frontier is paused until the others catch up (bounds the
    /// memory a backlog takes; at least the lateness plus 1 s is used).
    #[arg(long, default_value_t = shopflow_pipelines::runtime::DEFAULT_READ_AHEAD_MS, env = "SHOPFLOW_READ_AHEAD_MS")]
    pub(crate) read_ahead_ms: u64,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SHOPFLOW_LISTEN")]
    pub(crate) listen: SocketAddr,
    /// HS256 secret of the API's bearer tokens (at least 32 bytes). `run` refuses to start
    /// without one; `demo` generates one for the session.
    #[arg(long, env = shopflow_api::auth::SECRET_ENV, hide_env_values = true)]
    pub(crate) jwt_secret: Option<String>,
    /// How long a sink or the Kafka source may keep failing (retried with backoff, the
    /// pipeline waiting meanwhile) before the run gives up and exits with the error;
    /// 0 retries forever.
    #[arg(long, default_value_t = 900, env = "SHOPFLOW_GIVE_UP_AFTER_SECS")]
    pub(crate) give_up_after_secs: u64,
}

/// Messages per round when reading a file (see `run`).
const FILE_POLL_BATCH: usize = 16_384;

impl PipelineArgs {
    fn config(&self, live: bool) -> PipelineConfig {
        PipelineConfig {
            workers: self.workers,
            lateness_ms: self.lateness_ms,
            views: ViewConfig {
                low_stock_threshold: self.low_stock_threshold,
                basket_max_skus: self.basket_max_skus,
                ..ViewConfig::default()
            },
            live,
            source_give_up_after: self.give_up_after(),
            read_ahead_ms: self.read_ahead_ms,
            ..PipelineConfig::default()
        }
    }

    fn give_up_after(&self) -> Option<Duration> {
        (self.give_up_after_secs > 0).then(|| Duration::from_secs(self.give_up_after_secs))
    }

    fn writer(&self) -> WriterConfig {
        WriterConfig {
            give_up_after: self.give_up_after(),
            resumed: false,
            resumed_as_of: None,
        }
    }
}

/// `shopflow demo`
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Messages to generate.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of bad messages.
    #[arg(long, default_value_t = 0.01)]
    bad_rate: f64,
    /// Where alerts and dead letters are written (JSON lines).
    #[arg(long, default_value = ".shopflow/demo")]
    out_dir: String,
    /// Exit when the input is processed instead of serving until Ctrl-C.
    #[arg(long)]
    exit_when_done: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// `shopflow run`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A TOML configuration file (see `deploy/shopflow.example.toml`): flags and the
    /// environment win over it, it wins over the built-in defaults.
    #[arg(long, env = "SHOPFLOW_CONFIG")]
    pub(crate) config: Option<std::path::PathBuf>,
    /// Kafka bootstrap servers to read from (and write alerts and dead letters to).
    #[arg(long, env = "SHOPFLOW_KAFKA_BROKERS")]
    pub(crate) kafka: Option<String>,
    /// Read a JSON-lines file instead of Kafka (takes precedence over `--kafka` and
    /// `SHOPFLOW_KAFKA_BROKERS`).
    #[arg(long, env = "SHOPFLOW_FILE")]
    pub(crate) file: Option<String>,
    /// Stop at the end of the input as it is at start (replay, backfill) instead of running live.
    #[arg(long, env = "SHOPFLOW_BOUNDED")]
    pub(crate) bounded: bool,
    /// Redis for the serving views; without it they are kept in process.
    #[arg(long, env = "SHOPFLOW_REDIS_URL")]
    pub(crate) redis: Option<String>,
    /// Most KiB fetched per partition per request: smaller reads partitions more evenly
    /// (finer frontier steps), larger reads faster.
    #[arg(long, default_value_t = 1024, env = "SHOPFLOW_KAFKA_FETCH_KB")]
    pub(crate) kafka_fetch_kb: usize,
    /// MySQL (or MariaDB) for the ledgers, e.g. `mysql://user:pass@host:3306/shopflow`;
    /// without it they are kept in process (not durable).
    #[arg(long, env = "SHOPFLOW_MYSQL_URL")]
    pub(crate) mysql: Option<String>,
    /// ClickHouse HTTP endpoint for the sales analytics, e.g. `http://127.0.0.1:8123`;
    /// without it they are kept in process.
    #[arg(long, env = "SHOPFLOW_CLICKHOUSE_URL")]
    pub(crate) clickhouse: Option<String>,
    /// ClickHouse database of the sales tables (created if missing).
    #[arg(long, env = "SHOPFLOW_CLICKHOUSE_DB", default_value = "shopflow")]
    pub(crate) clickhouse_db: String,
    /// Turn on the ClickHouse client's row validation (servers newer than 18.16).
    #[arg(long, env = "SHOPFLOW_CLICKHOUSE_VALIDATION")]
    pub(crate) clickhouse_validation: bool,
    /// Prefix of every Redis key.
    #[arg(long, default_value = "shopflow:", env = "SHOPFLOW_REDIS_PREFIX")]
    pub(crate) redis_prefix: String,
    /// Prefix of every topic name (e.g. `staging.` → `staging.shop.orders`).
    #[arg(long, default_value = "", env = "SHOPFLOW_TOPIC_PREFIX")]
    pub(crate) topic_prefix: String,
    /// Where alerts and dead letters go when not to Kafka.
    #[arg(long, default_value = ".shopflow/run", env = "SHOPFLOW_OUT_DIR")]
    pub(crate) out_dir: String,
    /// Exit when a bounded input is processed instead of serving until Ctrl-C.
    #[arg(long, env = "SHOPFLOW_EXIT_WHEN_DONE")]
    pub(crate) exit_when_done: bool,
    /// Directory for checkpoints (a mounted volume in production): the run writes them
    /// there on a schedule and at the end of a bounded input, and a restart resumes from
    /// the newest valid one, reading only what came after it. Without it nothing is
    /// saved and every run reads every stream from its start.
    #[arg(long, env = "SHOPFLOW_STATE_DIR")]
    pub(crate) state_dir: Option<String>,
    /// Seconds between checkpoints.
    #[arg(long, default_value_t = 60, env = "SHOPFLOW_CHECKPOINT_INTERVAL_SECS")]
    pub(crate) checkpoint_interval_secs: u64,
    /// Messages read between checkpoints (whichever comes first; 0: time only).
    #[arg(long, default_value_t = shopflow_pipelines::checkpoint::DEFAULT_EVERY_MESSAGES, env = "SHOPFLOW_CHECKPOINT_EVERY_MESSAGES")]
    pub(crate) checkpoint_every_messages: u64,
    /// Most messages read per round (default 4,096 from Kafka, 16,384 from a file): the
    /// views are handed to the writer once per round, so smaller rounds mean smaller,
    /// more frequent batches.
    #[arg(long, env = "SHOPFLOW_POLL_BATCH", value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub(crate) poll_batch: Option<u64>,
    /// Cluster mode: `host:port` of every process, in process order, comma-separated (this
    /// process's own included: it listens there for the others). Every process is given
    /// the same list and runs `--workers` threads. Without it the pipeline runs in this
    /// process alone.
    #[arg(long, env = "SHOPFLOW_PEERS", value_delimiter = ',')]
    pub(crate) peers: Vec<String>,
    /// This process's index in `--peers`, from 0 (in Kubernetes, the pod's ordinal).
    #[arg(long, default_value_t = 0, env = "SHOPFLOW_PROCESS")]
    pub(crate) process: usize,
    /// Checkpoint files kept in the state directory (the oldest kept sets how much of
    /// each topic must be retained, see docs/operations.md).
    #[arg(long, default_value_t = shopflow_pipelines::checkpoint::DEFAULT_KEEP, env = "SHOPFLOW_CHECKPOINTS_KEPT")]
    pub(crate) checkpoints_kept: usize,
    #[command(flatten)]
    pub(crate) pipeline: PipelineArgs,
}

/// `shopflow gen`
#[derive(Args, Debug)]
pub struct GenArgs {
    /// Messages to generate.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of bad messages.
    #[arg(long, default_value_t = 0.01)]
    bad_rate: f64,
    /// Fraction of duplicates.
    #[arg(long, default_value_t = 0.005)]
    duplicate_rate: f64,
    /// Write JSON lines here (takes precedence over `--kafka` and `SHOPFLOW_KAFKA_BROKERS`).
    #[arg(long)]
    out: Option<String>,
    /// Produce to Kafka here (partition = key mod the topic's partitions).
    #[arg(long, env = "SHOPFLOW_KAFKA_BROKERS")]
    kafka: Option<String>,
    /// Partitions per topic when creating topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Prefix of every topic name.
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// A churn workload instead: valid updates to a fixed set of SKUs, members and reviews
    /// and no orders (for checking that memory stays flat; `--bad-rate` and
    /// `--duplicate-rate` do not apply).
    #[arg(long)]
    churn: bool,
}

fn gen_config(events: usize, seed: u64, bad_rate: f64) -> GenConfig {
    GenConfig {
        events,
        seed,
        bad_rate,
        ..GenConfig::default()
    }
}

/// Serves the API on `addr` from the I/O runtime, with `registry` at `/metrics`.
#[allow(clippy::too_many_arguments)]
fn serve(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    views: ServingViews,
    ledger: LedgerViews,
    sales: SalesStore,
    auth: shopflow_api::AuthMode,
    registry: Registry,
    health: Health,
) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (port taken? use --listen)"))?;
    listener.set_nonblocking(true)?;
    // The address bound (the port the system chose, with port 0).
    let bound = listener.local_addr()?;
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        if let Err(e) = shopflow_api::serve(
            listener,
            ApiState {
                views,
                ledger,
                sales,
                auth,
                registry,
                health,
            },
        )
        .await
        {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok(bound)
}

/// Prints a progress line every second until the pipeline finishes. Unpark its thread
/// after setting `finished`: it then ends at once instead of at its next tick.
///
/// In a cluster, a process that does not write (`writes_here` false) is ready once the
/// dataflow has an `as_of` (the writing process's stores are the ones read), and its line
/// shows that `as_of`.
fn progress(
    stats: Arc<Stats>,
    sink: Arc<SinkStats>,
    writes_here: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut last = 0;
        let mut tick = start;
        loop {
            tick += Duration::from_millis(1000);
            while !stats.finished.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now >= tick {
                    break;
                }
                std::thread::park_timeout(tick - now);
            }
            if stats.finished.load(Ordering::SeqCst) {
                break;
            }
            // A failing source does not pass through the writer: keep `shopflow_ready` current.
            let as_of = if writes_here {
                sink.refresh_ready();
                sink.as_of_plus_one.load(Ordering::Relaxed).checked_sub(1)
            } else {
                let ready = stats.as_of().is_some() && sink.health.is_healthy();
                sink.metrics.ready.set(i64::from(ready));
                stats.as_of()
            };
            let n = stats.messages.load(Ordering::Relaxed);
            let as_of = as_of.map(rfc3339_utc).unwrap_or_else(|| "-".into());
            say!(
                "[{:>5.1}s] read {n} ({}/s)  accepted {}  dead letters {}  duplicates {}  late {}  views as of {as_of}",
                start.elapsed().as_secs_f64(),
                n - last,
                stats.accepted.load(Ordering::Relaxed),
                stats.dead_letters_total(),
                stats.duplicates.load(Ordering::Relaxed),
                stats.late.load(Ordering::Relaxed),
            );
            last = n;
        }
    })
}

fn wait_for_ctrl_c() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
}

/// A generated log as in-memory streams, split like Kafka partitions keyed by id.
pub fn memory_streams(
    log: &[shopflow_gen::GenMessage],
    topics: &Topics,
    partitions: i32,
) -> Vec<(StreamId, KeyedPayloads)> {
    split(log, topics.inputs(), partitions)
        .into_iter()
        .map(|s| {
            (
                StreamId {
                    topic: s.topic,
                    partition: s.partition,
                },
                s.messages,
            )
        })
        .collect()
}

/// A generated log as records for Kafka, partitioned like [`memory_streams`].
pub fn kafka_records(
    log: &[shopflow_gen::GenMessage],
    topics: &Topics,
    partitions: i32,
) -> Vec<shopflow_sinks::kafka::RawRecord> {
    memory_streams(log, topics, partitions)
        .into_iter()
        .flat_map(|(id, messages)| {
            messages
                .into_iter()
                .map(move |(key, payload)| shopflow_sinks::kafka::RawRecord {
                    topic: id.topic.clone(),
                    partition: id.partition,
                    key,
                    payload,
                })
        })
        .collect()
}

/// A source factory giving each worker its share of in-memory streams.
pub fn memory_source(streams: Vec<(StreamId, KeyedPayloads)>) -> Box<MakeSource> {
    let streams = Arc::new(streams);
    Box::new(move |w, peers| {
        Ok(Box::new(MemorySource::share(&streams, w, peers)) as Box<dyn Source>)
    })
}

/// Builds one worker's source.
pub type MakeSource = dyn Fn(usize, usize) -> Result<Box<dyn Source>, SourceError> + Send + Sync;

/// Batches the pipeline may have waiting for the sink writer. While a sink fails, this is
/// all the output that piles up before the pipeline stops reading (backpressure); the writer
/// writes whatever waits as one batch, so a deeper queue would not make it faster.
const OUTPUT_CHANNEL_BATCHES: usize = 8;

/// Runs a pipeline to the end of its input (or until stopped), then reports. Its metrics
/// go to `registry`; the source and the sinks report failures into `health`.
fn execute(
    rt: &tokio::runtime::Runtime,
    config: PipelineConfig,
    (writer_config, images): (WriterConfig, Vec<shopflow_pipelines::checkpoint::Part>),
    make_source: Box<MakeSource>,
    sinks: SinkSet,
    (registry, health): (&Registry, Health),
) -> Result<(shopflow_pipelines::RunSummary, Arc<SinkStats>)> {
    let (tx, rx) = sync_channel(OUTPUT_CHANNEL_BATCHES);
    let stats = Arc::new(Stats {
        health: health.clone(),
        ..Stats::default()
    });
    let sink_stats = Arc::new(SinkStats::with_health(health));
    stats
        .metrics
        .register(registry)
        .context("registering the pipeline metrics")?;
    sink_stats
        .metrics
        .register(registry)
        .context("registering the sink metrics")?;
    let writer = spawn_writer_restoring(
        rx,
        sinks,
        sink_stats.clone(),
        rt.handle().clone(),
        writer_config,
        images,
    );
    let writes_here = config
        .cluster
        .as_ref()
        .is_none_or(ClusterConfig::writes_sinks);
    let reporter = progress(stats.clone(), sink_stats.clone(), writes_here);
    let stop = stats.clone();
    ctrlc_stop(stop);
    let result = shopflow_pipelines::run(config, make_source, tx, stats.clone());
    stats.finished.store(true, Ordering::SeqCst);
    reporter.thread().unpark();
    let written = writer.join().expect("sink writer thread");
    let _ = reporter.join();
    // The writer's error says why when the pipeline stopped because the writer did.
    let written = written.context("sink writer stopped");
    if matches!(result, Err(shopflow_pipelines::PipelineError::SinkGone)) {
        written?;
        let summary = result.context("pipeline stopped")?;
        return Ok((summary, sink_stats));
    }
    let summary = result.context("pipeline stopped")?;
    written?;
    Ok((summary, sink_stats))
}

/// Ctrl-C asks the workers to stop at the next round.
fn ctrlc_stop(stats: Arc<Stats>) {
    std::thread::spawn(move || {
        wait_for_ctrl_c();
        say!("stopping…");
        stats.stop.store(true, Ordering::SeqCst);
    });
}

/// `shopflow demo`
pub fn demo(args: DemoArgs) -> Result<()> {
    let topics = Topics::default();
    let auth = crate::token::demo_auth(args.pipeline.jwt_secret.as_deref())?;
    say!("generating {} events (seed {})…", args.events, args.seed);
    let log = generate(&gen_config(args.events, args.seed, args.bad_rate));
    let streams = memory_streams(&log, &topics, 1);
    let sample_sku = 1;
    let sample_order = 1;
    let store = MemoryStore::new();
    let rt = shopflow_sinks::io_runtime();
    let registry = Registry::new();
    let health = Health::new();
    let bound = serve(
        &rt,
        args.pipeline.listen,
        ServingViews::Memory(store.clone()),
        LedgerViews::Memory(store.clone()),
        SalesStore::Memory(store.clone()),
        auth.mode.clone(),
        registry.clone(),
        health.clone(),
    )?;
    say!("API on http://{bound}");
    let sinks = SinkSet {
        views: ViewStore::Memory(store.clone()),
        ledger: LedgerStore::Memory(store.clone()),
        sales: SalesStore::Memory(store.clone()),
        alerts: EventLog::File(JsonLinesWriter::create(&format!(
            "{}/alerts.jsonl",
            args.out_dir
        ))?),
        dead_letters: EventLog::File(JsonLinesWriter::create(&format!(
            "{}/dlq.jsonl",
            args.out_dir
        ))?),
    };
    let make = memory_source(streams);
    let started = Instant::now();
    let (summary, sink_stats) = execute(
        &rt,
        args.pipeline.config(false),
        (args.pipeline.writer(), Vec::new()),
        make,
        sinks,
        (&registry, health),
    )?;
    let secs = started.elapsed().as_secs_f64();
    let (skus, orders, as_of) = store.read(|s| (s.stock.len(), s.orders.len(), s.as_of));
    say!(
        "done in {secs:.1}s ({:.0} events/s): {} accepted, {} dead letters, {} duplicates, {} late; {skus} SKUs, {orders} orders, {} alerts; views as of {}",
        summary.messages as f64 / secs,
        summary.accepted,
        summary.dead_letters,
        summary.duplicates,
        summary.late,
        sink_stats.alerts.load(Ordering::Relaxed),
        as_of.map(rfc3339_utc).unwrap_or_default(),
    );
    say!(
        "alerts: {0}/alerts.jsonl   dead letters: {0}/dlq.jsonl",
        args.out_dir
    );
    let base = format!("http://{bound}");
    // Tokens for the session: admin reads everything, seller 1 only /v1/sellers/1/….
    let ttl = 24 * 3600;
    let admin_token = auth.keys.mint("demo-admin", Role::Admin, None, ttl)?;
    let seller_token = auth
        .keys
        .mint("demo-seller-1", Role::Seller, Some(1), ttl)?;
    let admin = format!("-H \"Authorization: Bearer {admin_token}\"");
    let seller = format!("-H \"Authorization: Bearer {seller_token}\"");
    println!("curl {admin} {base}/v1/stock/{sample_sku}");
    println!("curl {admin} {base}/v1/orders/{sample_order}");
    println!("curl {admin} {base}/v1/products/{sample_sku}/rating");
    println!("curl {admin} '{base}/v1/products/{sample_sku}/also-bought?limit=5'");
    println!("curl {admin} {base}/v1/members/1");
    println!("curl {admin} {base}/v1/members/1/points");
    println!("curl {admin} {base}/v1/members/1/orders");
    println!("curl {seller} {base}/v1/sellers/1/payouts");
    println!("curl {seller} {base}/v1/sellers/1/tax-invoices");
    println!("curl {seller} '{base}/v1/sellers/1/settlements?from=0&to=9999999999999'");
    println!("export SHOPFLOW_TOKEN={admin_token}");
    println!("export SHOPFLOW_SELLER_TOKEN={seller_token}");
    if let Some(secret) = &auth.generated {
        // Lets `shopflow token` mint more tokens for this session.
        println!("export {}={secret}", shopflow_api::auth::SECRET_ENV);
    }
    say!(
        "tokens above are valid for 24 h; more: shopflow token --role storefront|seller|analyst|admin [--seller-id N] (with {} set)",
        shopflow_api::auth::SECRET_ENV
    );
    if args.exit_when_done {
        return Ok(());
    }
    say!("serving until Ctrl-C…");
    wait_for_ctrl_c();
    Ok(())
}

/// `shopflow run`
pub fn run(args: RunArgs) -> Result<()> {
    let auth = crate::token::run_auth(args.pipeline.jwt_secret.as_deref())?;
    let topics = Topics::with_prefix(&args.topic_prefix);
    // Every store outside the process: each process of a cluster can write its own rows.
    let external = args.redis.is_some() && args.mysql.is_some() && args.clickhouse.is_some();
    let cluster = match args.peers.is_empty() {
        true => None,
        false => Some(ClusterConfig {
            writer_per_process: external,
            ..ClusterConfig::new(args.process, args.peers.clone())
                .map_err(|e| anyhow::anyhow!("--peers/--process: {e}"))?
        }),
    };
    // In a cluster with every store external each process writes the rows it owns; with
    // stores in process the last process's last worker writes every row. Alerts and dead
    // letters are always the last process's (see docs/operations.md).
    let writes_here = cluster.as_ref().is_none_or(ClusterConfig::writes_sinks);
    let writes_logs = cluster.as_ref().is_none_or(ClusterConfig::writes_logs);
    let writers = cluster
        .as_ref()
        .map_or(shopflow_model::Writers::ONE, ClusterConfig::writers);
    let mut snapshot = match (&args.state_dir, &cluster) {
        (Some(dir), None) => load_checkpoint(dir, args.pipeline.workers)?,
        (Some(dir), Some(c)) => load_cluster_checkpoint(dir, args.pipeline.workers, c)?,
        (None, _) => None,
    };
    // Where each stream resumes, and how long each JSON-lines file was at the checkpoint.
    let offsets = snapshot.as_ref().map(|s| s.offsets()).unwrap_or_default();
    let positions = snapshot.as_ref().map(|s| s.positions()).unwrap_or_default();
    let file_lengths: BTreeMap<String, u64> = snapshot
        .as_ref()
        .map(|s| s.stores.files.iter().cloned().collect())
        .unwrap_or_default();
    let json_lines = |path: String| match file_lengths.get(&path) {
        Some(&len) => JsonLinesWriter::resume(&path, len),
        None => JsonLinesWriter::create(&path),
    };
    let rt = shopflow_sinks::io_runtime();
    let (views, serving) = match &args.redis {
        Some(url) => {
            let r = rt
                .block_on(RedisViews::connect(url, &args.redis_prefix))?
                .with_writers(writers);
            rt.block_on(r.as_of())?; // fail fast with a clear message
            (ViewStore::Redis(r.clone()), ServingViews::Redis(r))
        }
        None => {
            let m = MemoryStore::new();
            (ViewStore::Memory(m.clone()), ServingViews::Memory(m))
        }
    };
    let (ledger, ledger_views) = match &args.mysql {
        Some(url) => {
            let l = rt
                .block_on(async { MysqlLedger::connect(url).await?.with_writers(writers).await })?;
            (LedgerStore::Mysql(l.clone()), LedgerViews::Mysql(l))
        }
        None => {
            tracing::warn!("no --mysql: the ledgers are kept in process and lost at exit");
            let m = match &views {
                ViewStore::Memory(m) => m.clone(),
                ViewStore::Redis(_) => MemoryStore::new(),
            };
            (LedgerStore::Memory(m.clone()), LedgerViews::Memory(m))
        }
    };
    let (alerts, dead_letters, make): (EventLog, EventLog, Box<MakeSource>) =
        match (&args.kafka, &args.file) {
            (Some(brokers), None) => {
                let config = KafkaConfig {
                    brokers: brokers.clone(),
                    topics: topics.inputs().iter().map(|s| s.to_string()).collect(),
                    bounded: args.bounded,
                    fetch_bytes_per_partition: args.kafka_fetch_kb * 1024,
                    start_offsets: offsets.clone(),
                };
                (
                    EventLog::Kafka(KafkaWriter::open(brokers, &topics.alerts, alert_id)?),
                    EventLog::Kafka(KafkaWriter::open(brokers, &topics.dlq, dead_letter_id)?),
                    Box::new(move |w, peers| {
                        Ok(Box::new(KafkaSource::new(&config, w, peers)?) as Box<dyn Source>)
                    }),
                )
            }
            (_, Some(path)) => {
                let path = path.clone();
                FileSource::open(&path)?; // fail fast
                let key = (shopflow_ingest::source::FILE_TOPIC.to_string(), 0);
                let from = offsets.get(&key).copied().unwrap_or(0);
                // Where that line starts, if the checkpoint knows: a seek, not a count.
                let at = positions.get(&key).filter(|p| p.line == from).cloned();
                if let Some(p) = &at {
                    say!(
                        "reading {path} from line {} (byte {}), where the checkpoint stands",
                        p.line,
                        p.byte
                    );
                }
                // A process that does not write leaves the files alone.
                let log = |name: &str| match writes_logs {
                    true => json_lines(format!("{}/{name}", args.out_dir)).map(EventLog::File),
                    false => Ok(EventLog::Memory(MemoryStore::new())),
                };
                (
                    log("alerts.jsonl")?,
                    log("dlq.jsonl")?,
                    Box::new(move |w, _peers| {
                        if w == 0 {
                            let source = match &at {
                                Some(position) => FileSource::open_at(&path, position)?,
                                None => FileSource::open_from(&path, from)?,
                            };
                            Ok(Box::new(source) as Box<dyn Source>)
                        } else {
                            Ok(Box::new(MemorySource::empty()) as Box<dyn Source>)
                        }
                    }),
                )
            }
            _ => bail!("give --kafka BROKERS (or SHOPFLOW_KAFKA_BROKERS) or --file PATH"),
        };
    let sales = match &args.clickhouse {
        Some(url) => SalesStore::ClickHouse(Box::new(
            rt.block_on(ClickHouseSales::connect(
                url,
                &args.clickhouse_db,
                args.clickhouse_validation,
            ))?
            .with_writers(writers),
        )),
        None => SalesStore::Memory(match &views {
            ViewStore::Memory(m) => m.clone(),
            ViewStore::Redis(_) => MemoryStore::new(),
        }),
    };
    let registry = Registry::new();
    let health = Health::new();
    if let Some(c) = &cluster {
        health.place(c.process, c.processes());
    }
    // Stores kept in process hold what this process writes: in a cluster, only the writing
    // process has anything to serve unless every store is external.
    if writes_here || external {
        let bound = serve(
            &rt,
            args.pipeline.listen,
            serving,
            ledger_views,
            sales.clone(),
            auth,
            registry.clone(),
            health.clone(),
        )?;
        say!("API on http://{bound}");
    } else if let Some(c) = &cluster {
        say!(
            "process {} of {}: the views are kept in process {} (stores in process), which \
             serves the API; none here",
            c.process,
            c.processes(),
            c.processes() - 1
        );
    }
    let live = args.kafka.is_some() && args.file.is_none() && !args.bounded;
    let sinks = SinkSet {
        views,
        ledger,
        sales,
        alerts,
        dead_letters,
    };
    let mut config = args.pipeline.config(live);
    config.cluster = cluster;
    let mut writer = args.pipeline.writer();
    let mut images_to_restore = Vec::new();
    if let Some(dir) = &args.state_dir {
        config.checkpoints = Some(shopflow_pipelines::checkpoint::CheckpointConfig {
            dir: dir.into(),
            interval: Duration::from_secs(args.checkpoint_interval_secs.max(1)),
            every_messages: args.checkpoint_every_messages,
            keep: args.checkpoints_kept.max(1),
        });
    }
    if let Some(mut s) = snapshot.take() {
        let stores = sinks.memory_stores();
        let images = std::mem::take(&mut s.stores.memory);
        if images.len() != stores.len() {
            bail!(
                "checkpoint {} was taken with {} in-process stores, this run has {}: the sinks \
                 changed (move the state directory's checkpoints away to replay from the start)",
                s.seq,
                images.len(),
                stores.len()
            );
        }
        images_to_restore = images;
        writer.resumed = true;
        writer.resumed_as_of = s.stores.as_of;
        config.restore = Some(Arc::new(shopflow_pipelines::checkpoint::Restore::new(s)));
    }
    if args.file.is_some() {
        // A file is one stream, read by one worker: larger rounds cost fewer waits for the
        // dataflow (a 1M-event file ran about 15 % faster with 16,384 than with 4,096). A
        // Kafka source keeps the default so that a stalled sink stops reading sooner.
        config.poll_batch = FILE_POLL_BATCH;
    }
    if let Some(n) = args.poll_batch {
        config.poll_batch = n as usize;
    }
    let (summary, sink_stats) = execute(
        &rt,
        config,
        (writer, images_to_restore),
        make,
        sinks,
        (&registry, health),
    )?;
    say!(
        "finished: {} messages, {} accepted, {} dead letters, {} duplicates, {} late; views as of {:?}",
        summary.messages,
        summary.accepted,
        summary.dead_letters,
        summary.duplicates,
        summary.late,
        sink_stats.as_of_plus_one.load(Ordering::Relaxed).checked_sub(1)
    );
    if !args.exit_when_done {
        say!("serving until Ctrl-C…");
        wait_for_ctrl_c();
        return Ok(());
    }
    // Done: every sink is written and flushed (the writer thread has ended). Exit without
    // freeing the views and stores piece by piece — on a 1M-event run with the embedded
    // stores that took 0.3 s, and the OS reclaims the memory at once.
    std::process::exit(0)
}

/// The newest usable checkpoint in `dir` for `workers` workers, with a line saying where
/// the run starts; `None` (every stream from its start) when there is none.
fn load_checkpoint(
    dir: &str,
    workers: usize,
) -> Result<Option<shopflow_pipelines::checkpoint::Snapshot>> {
    let started = Instant::now();
    let found = shopflow_pipelines::checkpoint::load_newest(std::path::Path::new(dir), workers)
        .with_context(|| format!("reading the state directory {dir}"))?;
    Ok(match found {
        Some((path, s)) => {
            say!(
                "continuing from checkpoint {} ({}, loaded in {:.2} s): {} messages already read, dataflow time {}",
                s.seq,
                path.display(),
                started.elapsed().as_secs_f64(),
                s.messages(),
                s.time
            );
            Some(s)
        }
        None => {
            say!("no checkpoint in {dir}: every stream is read from its start");
            None
        }
    })
}

/// In a cluster: the checkpoint every process holds, agreed with the others (see
/// `ClusterConfig::agree_on_checkpoint`); newer ones of this process, which some other
/// process lacks, are deleted so that the next checkpoint numbers agree too.
fn load_cluster_checkpoint(
    dir: &str,
    workers: usize,
    cluster: &ClusterConfig,
) -> Result<Option<shopflow_pipelines::checkpoint::Snapshot>> {
    use shopflow_pipelines::checkpoint;
    let path = std::path::Path::new(dir);
    let started = Instant::now();
    let offer = checkpoint::usable_seqs(path, workers)
        .with_context(|| format!("reading the state directory {dir}"))?;
    let agreed = cluster
        .agree_on_checkpoint(offer)
        .map_err(|e| anyhow::anyhow!("agreeing on a checkpoint with the other processes: {e}"))?;
    for f in checkpoint::remove_newer(path, agreed)? {
        say!(
            "deleted {}: not every process of the cluster holds it",
            f.display()
        );
    }
    let Some(seq) = agreed else {
        say!("no checkpoint every process holds: every stream is read from its start");
        return Ok(None);
    };
    let (file, s) = checkpoint::load_seq(path, seq, workers)?;
    say!(
        "continuing from checkpoint {} ({}, agreed and loaded in {:.2} s): {} messages already read here, dataflow time {}",
        s.seq,
        file.display(),
        started.elapsed().as_secs_f64(),
        s.messages(),
        s.time
    );
    Ok(Some(s))
}

/// `shopflow checkpoints`
#[derive(Args, Debug)]
pub struct CheckpointsArgs {
    /// The state directory.
    #[arg(long, env = "SHOPFLOW_STATE_DIR")]
    state_dir: String,
}

/// `shopflow checkpoints`: each checkpoint file, newest first, with what it holds.
pub fn checkpoints(args: CheckpointsArgs) -> Result<()> {
    let dir = std::path::Path::new(&args.state_dir);
    let files = shopflow_pipelines::checkpoint::list(dir)?;
    if files.is_empty() {
        say!("no checkpoints in {}", dir.display());
    }
    let mb = |n: usize| n as f64 / 1e6;
    for (_, path) in files {
        let started = Instant::now();
        let s = match shopflow_pipelines::checkpoint::decode_file(&path) {
            Ok(s) => s,
            Err(reason) => {
                println!("{}: unusable: {reason}", path.display());
                continue;
            }
        };
        let took = started.elapsed().as_secs_f64();
        println!(
            "{}: checkpoint {}, taken {}, dataflow time {} ({}), {} messages read, {} workers, {:.1} MB (read and checked in {took:.2} s)",
            path.display(),
            s.seq,
            rfc3339_utc(s.created_ms),
            s.time,
            rfc3339_utc(s.time),
            s.messages(),
            s.workers.len(),
            mb(std::fs::metadata(&path).map_or(0, |m| m.len() as usize))
        );
        for (i, w) in s.workers.iter().enumerate() {
            let offsets: Vec<String> = w
                .streams
                .iter()
                .map(|st| format!("{}/{} at {}", st.topic, st.partition, st.next_offset))
                .collect();
            println!("  worker {i}: frontier {}, {}", w.cap, offsets.join(", "));
        }
        let mut parts: BTreeMap<String, usize> = BTreeMap::new();
        for w in &s.workers {
            for st in &w.streams {
                *parts.entry("stream validators".into()).or_default() +=
                    st.validator.len() as usize;
            }
            for (name, b) in &w.operators {
                *parts.entry(format!("operator {name}")).or_default() += b.len() as usize;
            }
        }
        for (i, m) in s.stores.memory.iter().enumerate() {
            parts.insert(format!("in-process store {i}"), m.len() as usize);
        }
        for (name, n) in parts {
            println!("  {name:<32} {:>9.1} MB", mb(n));
        }
        for (file, len) in &s.stores.files {
            println!("  file {file} cut back to {len} bytes on restart");
        }
    }
    Ok(())
}

/// `shopflow gen`
pub fn gen(args: GenArgs) -> Result<()> {
    let mut cfg = gen_config(args.events, args.seed, args.bad_rate);
    cfg.duplicate_rate = args.duplicate_rate;
    let log = if args.churn {
        shopflow_gen::churn(&shopflow_gen::ChurnConfig {
            events: args.events,
            seed: args.seed,
            ..shopflow_gen::ChurnConfig::default()
        })
    } else {
        generate(&cfg)
    };
    match (&args.out, &args.kafka) {
        (Some(path), _) => {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?,
            );
            for m in &log {
                f.write_all(&m.payload)?;
                f.write_all(b"\n")?;
            }
            f.flush()?;
            say!("wrote {} messages to {path}", log.len());
        }
        (None, Some(brokers)) => {
            let topics = Topics::with_prefix(&args.topic_prefix);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let mut all: Vec<&str> = topics.inputs().to_vec();
            all.extend([topics.alerts.as_str(), topics.dlq.as_str()]);
            rt.block_on(shopflow_sinks::kafka::ensure_topics(
                brokers,
                &all,
                args.partitions,
            ))?;
            let records = kafka_records(&log, &topics, args.partitions);
            let started = Instant::now();
            rt.block_on(shopflow_sinks::kafka::produce(brokers, &records))?;
            say!(
                "produced {} messages to {brokers} in {:.1}s",
                records.len(),
                started.elapsed().as_secs_f64()
            );
        }
        (None, None) => bail!("give --out FILE or --kafka BROKERS"),
    }
    Ok(())
}

/// Runs a pipeline with no progress output (for `bench`).
pub fn run_quiet(
    config: PipelineConfig,
    make_source: Box<MakeSource>,
    sinks: SinkSet,
) -> Result<()> {
    let rt = shopflow_sinks::io_runtime();
    let (tx, rx) = sync_channel(64);
    let writer = spawn_writer(
        rx,
        sinks,
        Arc::new(SinkStats::default()),
        rt.handle().clone(),
    );
    let result = shopflow_pipelines::run(config, make_source, tx, Arc::new(Stats::default()));
    writer.join().expect("sink writer thread")?;
    result?;
    Ok(())
}

//! `shopflow bench`: decode + pipeline throughput as a ratio of the raw read rate of the
//! same input, both measured in the same run (machines are noisy; ratios travel).

use std::time::Instant;

use anyhow::{Context, Result};

use crate::now_ms;
use clap::Args;
use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::source::{KafkaConfig, KafkaSource};
use shopflow_ingest::{Source, Topics};
use shopflow_pipelines::PipelineConfig;
use shopflow_sinks::kafka::{ensure_topics, produce};
use shopflow_sinks::{EventLog, MemoryStore, SinkSet, ViewStore};

/// `shopflow bench`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Messages in the workload.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Timely workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Also measure through Kafka at these brokers.
    #[arg(long, env = "SHOPFLOW_KAFKA_BROKERS")]
    kafka: Option<String>,
    /// Partitions per topic for the Kafka run.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Workload sizes of the file-source table (comma-separated); empty skips it.
    #[arg(long, value_delimiter = ',', default_value = "200000,1000000")]
    sizes: Vec<usize>,
    /// Freshness probe (needs --kafka and --redis): messages per second offered through
    /// Kafka into Redis; 0 skips it. Half the `decode + pipeline` rate through Kafka is the
    /// issue's yardstick.
    #[arg(long, default_value_t = 0)]
    freshness_rate: usize,
    /// How long the freshness probe offers load, in seconds.
    #[arg(long, default_value_t = 20)]
    freshness_secs: u64,
    /// Allowed lateness of the freshness run (the views' as_of trails the newest event by
    /// it, so it adds to every figure; SPEC's default is 5000).
    #[arg(long, default_value_t = 0)]
    freshness_lateness_ms: u64,
    /// Redis for the freshness probe.
    #[arg(long, env = "SHOPFLOW_REDIS_URL")]
    redis: Option<String>,
}

fn rate(n: usize, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

fn memory_sinks() -> SinkSet {
    let m = MemoryStore::new();
    SinkSet {
        views: ViewStore::Memory(m.clone()),
        ledger: shopflow_sinks::LedgerStore::Memory(m.clone()),
        sales: shopflow_sinks::SalesStore::Memory(m.clone()),
        alerts: EventLog::Memory(m.clone()),
        dead_letters: EventLog::Memory(m),
    }
}

/// Runs the bench and prints its figures.
pub fn bench(args: BenchArgs) -> Result<()> {
    if !args.sizes.is_empty() {
        file_table(&args.sizes, args.workers)?;
    }
    let log = generate(&GenConfig {
        events: args.events,
        ..GenConfig::default()
    });
    let n = log.len();
    let bytes: usize = log.iter().map(|m| m.payload.len()).sum();
    println!(
        "workload: {n} messages, {:.1} MB, {} workers",
        bytes as f64 / 1e6,
        args.workers
    );

    // Baseline 1: copy every message (what a source does at the least).
    let started = Instant::now();
    let mut copied = 0usize;
    for m in &log {
        copied += std::hint::black_box(m.payload.clone()).len();
    }
    let copy_rate = rate(n, started);
    assert_eq!(copied, bytes);

    // Decode and schema-check only, one thread.
    let started = Instant::now();
    let mut ok = 0usize;
    for m in &log {
        ok += shopflow_ingest::decode(&m.payload).is_ok() as usize;
    }
    let decode_rate = rate(n, started);
    std::hint::black_box(ok);

    // The whole pipeline from memory.
    let topics = Topics::default();
    let streams = crate::wiring::memory_streams(&log, &topics, args.partitions);
    let config = PipelineConfig {
        workers: args.workers,
        ..PipelineConfig::default()
    };
    let started = Instant::now();
    crate::wiring::run_quiet(
        config.clone(),
        crate::wiring::memory_source(streams),
        memory_sinks(),
    )?;
    let pipeline_rate = rate(n, started);
    println!("in memory:");
    println!("  copy messages (baseline)      {:>12.0} msg/s", copy_rate);
    println!(
        "  decode + schema check, 1 thr  {:>12.0} msg/s  ({:.3} × baseline)",
        decode_rate,
        decode_rate / copy_rate
    );
    println!(
        "  full pipeline to memory       {:>12.0} msg/s  ({:.3} × baseline, {:.3} × decode)",
        pipeline_rate,
        pipeline_rate / copy_rate,
        pipeline_rate / decode_rate
    );

    basket_costs(args.workers)?;

    let Some(brokers) = args.kafka.clone() else {
        println!("(give --kafka BROKERS or SHOPFLOW_KAFKA_BROKERS for the Kafka figures)");
        return Ok(());
    };
    if args.freshness_rate > 0 {
        let redis = args
            .redis
            .clone()
            .context("the freshness probe writes to Redis: give --redis or SHOPFLOW_REDIS_URL")?;
        return freshness(&args, &brokers, &redis);
    }
    let prefix = format!("bench{}.", std::process::id());
    let topics = Topics::with_prefix(&prefix);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut names: Vec<&str> = topics.inputs().to_vec();
    names.extend([topics.alerts.as_str(), topics.dlq.as_str()]);
    rt.block_on(ensure_topics(&brokers, &names, args.partitions))?;
    let records = crate::wiring::kafka_records(&log, &topics, args.partitions);
    let started = Instant::now();
    rt.block_on(produce(&brokers, &records))?;
    let produce_rate = rate(n, started);

    let kconfig = KafkaConfig {
        brokers: brokers.clone(),
        topics: topics.inputs().iter().map(|s| s.to_string()).collect(),
        bounded: true,
        fetch_bytes_per_partition: 1 << 20,
        start_offsets: Default::default(),
    };
    // Baseline: raw consume of the same partitions, same split over workers, no decode.
    let started = Instant::now();
    let handles: Vec<_> = (0..args.workers)
        .map(|w| {
            let kconfig = kconfig.clone();
            let peers = args.workers;
            std::thread::spawn(move || -> Result<usize> {
                let mut src = KafkaSource::new(&kconfig, w, peers)?;
                let mut buf = Vec::new();
                let mut count = 0;
                while !src.finished() {
                    src.poll(&mut buf, 4096)?;
                    count += buf.len();
                    buf.clear();
                }
                Ok(count)
            })
        })
        .collect();
    let mut consumed = 0;
    for h in handles {
        consumed += h.join().expect("consumer thread")?;
    }
    let consume_rate = rate(consumed, started);
    let started = Instant::now();
    let k2 = kconfig.clone();
    crate::wiring::run_quiet(
        config,
        Box::new(move |w, peers| Ok(Box::new(KafkaSource::new(&k2, w, peers)?) as Box<dyn Source>)),
        memory_sinks(),
    )?;
    let kafka_pipeline_rate = rate(n, started);
    println!(
        "through Kafka at {brokers} ({} partitions per topic):",
        args.partitions
    );
    println!(
        "  produce                       {:>12.0} msg/s",
        produce_rate
    );
    println!(
        "  raw consume (baseline)        {:>12.0} msg/s  ({consumed} messages)",
        consume_rate
    );
    println!(
        "  decode + pipeline             {:>12.0} msg/s  ({:.3} × raw consume, {:.3} × the pipeline in memory)",
        kafka_pipeline_rate,
        kafka_pipeline_rate / consume_rate,
        kafka_pipeline_rate / pipeline_rate
    );
    Ok(())
}

/// Cost of a basket by its size: the same number of paid orders, each with n distinct SKUs,
/// through the whole pipeline; reported per basket and against baskets of one SKU (which
/// make no pairs), measured in the same run.
fn basket_costs(workers: usize) -> Result<()> {
    const ORDERS: u64 = 20_000;
    const SKUS: u64 = 5_000;
    println!("co-purchase cost by basket size ({ORDERS} paid orders each, {workers} workers):");
    let mut base: Option<f64> = None;
    for n in [1u64, 2, 5, 10, 20, 50] {
        let mut msgs: Vec<(Option<Vec<u8>>, Vec<u8>)> = Vec::new();
        let mut ts = 1_793_577_600_000u64;
        for o in 1..=ORDERS {
            let lines: Vec<String> = (0..n)
                .map(|i| {
                    let sku = (o * 7919 + i * 104_729) % SKUS + 1;
                    format!(
                        r#"{{"line_no":{},"sku":{sku},"qty":1,"unit_price":1000}}"#,
                        i + 1
                    )
                })
                .collect();
            ts += 10;
            msgs.push((None, format!(
                r#"{{"event_id":"p{o}","type":"order.placed","ts":{ts},"order_id":{o},"member_id":{},"shipping":"rocket","lines":[{}]}}"#,
                o % 2000 + 1,
                lines.join(",")
            ).into_bytes()));
            msgs.push((None, format!(
                r#"{{"event_id":"a{o}","type":"payment.approved","ts":{ts},"order_id":{o},"amount":{}}}"#,
                1000 * n
            ).into_bytes()));
        }
        let streams = vec![(
            shopflow_ingest::StreamId {
                topic: "bench.orders".into(),
                partition: 0,
            },
            msgs,
        )];
        let started = Instant::now();
        crate::wiring::run_quiet(
            PipelineConfig {
                workers,
                ..PipelineConfig::default()
            },
            crate::wiring::memory_source(streams),
            memory_sinks(),
        )?;
        let per_basket_us = started.elapsed().as_secs_f64() * 1e6 / ORDERS as f64;
        let ratio = per_basket_us / *base.get_or_insert(per_basket_us);
        println!(
            "  {n:>2} SKUs ({:>4} pairs): {per_basket_us:>8.1} µs per basket  ({ratio:.2} × a 1-SKU basket)",
            n * (n - 1)
        );
    }
    Ok(())
}

/// One row per workload size: `shopflow run --file W --bounded --exit-when-done` in a child
/// process (the way a user runs it: file source, in-process stores), against the decode-only
/// rate and the reference model's batch rate over the same log, measured in the same run.
fn file_table(sizes: &[usize], workers: usize) -> Result<()> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("shopflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "file source, {workers} workers, in-process stores (`shopflow run --file W --bounded`):"
    );
    println!(
        "  {:>9}  {:>8}  {:>9}  {:>10}  {:>13}  {:>9}  {:>8}  {:>13}",
        "events",
        "orders",
        "wall s",
        "events/s",
        "× decode-only",
        "× ref",
        "peak MiB",
        "peak B/order"
    );
    for &n in sizes {
        let log = generate(&GenConfig {
            events: n,
            ..GenConfig::default()
        });
        let path = dir.join(format!("w{n}.jsonl"));
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            for m in &log {
                f.write_all(&m.payload)?;
                f.write_all(b"\n")?;
            }
        }
        drop(log);
        let started = Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args([
                "run",
                "--bounded",
                "--exit-when-done",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--workers", &workers.to_string()])
            .arg("--file")
            .arg(&path)
            .arg("--out-dir")
            .arg(dir.join("out"))
            .env(
                "SHOPFLOW_JWT_SECRET",
                "bench-secret-0123456789abcdef0123456789",
            )
            .env_remove("SHOPFLOW_REDIS_URL")
            .env_remove("SHOPFLOW_MYSQL_URL")
            .env_remove("SHOPFLOW_CLICKHOUSE_URL")
            .env_remove("SHOPFLOW_KAFKA_BROKERS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let peak = peak_rss_of(&mut child)?;
        let wall = started.elapsed().as_secs_f64();
        let run_rate = n as f64 / wall;
        // Read back for the in-process figures, after the run: the run is measured while
        // this process holds no more than it needs (with the 5M log and the reference's
        // state held here, the same run took up to 1.8× as long).
        let log: Vec<Vec<u8>> = std::fs::read(&path)?
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let orders = log
            .iter()
            .filter(|m| m.windows(14).any(|w| w == b"\"order.placed\""))
            .count();
        // Decode and schema-check only, one thread.
        let started = Instant::now();
        let ok = log
            .iter()
            .filter(|m| shopflow_ingest::decode(m).is_ok())
            .count();
        std::hint::black_box(ok);
        let decode_rate = rate(log.len(), started);
        // The reference model: one batch pass over the same log (one stream, as the file).
        let started = Instant::now();
        std::hint::black_box(shopflow_reference::compute(
            std::slice::from_ref(&log),
            shopflow_reference::Config::default(),
        ));
        let reference_rate = rate(log.len(), started);
        drop(log);

        println!(
            "  {n:>9}  {orders:>8}  {wall:>9.2}  {run_rate:>10.0}  {:>13.3}  {:>9.2}  {:>8.0}  {:>13.0}",
            run_rate / decode_rate,
            run_rate / reference_rate,
            peak as f64 / (1 << 20) as f64,
            peak as f64 / orders.max(1) as f64,
        );
        std::fs::remove_file(&path)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits for `child` and returns its peak resident set in bytes (Linux: the high-water mark
/// `VmHWM` read from /proc while it runs; 0 where /proc is missing).
fn peak_rss_of(child: &mut std::process::Child) -> Result<u64> {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(status.success(), "shopflow run failed: {status}");
            return Ok(peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The freshness probe: offers `freshness_rate` messages per second for `freshness_secs`
/// through Kafka to a live pipeline writing to Redis, each message's `ts` set to the moment
/// it is handed to the producer, and polls Redis's `as_of` every millisecond. A message is
/// fresh when a read's `as_of` first covers its `ts`; prints p50, p99 and the maximum of
/// (that moment − its `ts`).
fn freshness(args: &BenchArgs, brokers: &str, redis_url: &str) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let rate = args.freshness_rate;
    let n = rate * args.freshness_secs as usize;
    let log = generate(&GenConfig {
        events: n,
        bad_rate: 0.0,
        ..GenConfig::default()
    });
    let prefix = format!("fresh{}x{}.", std::process::id(), now_ms());
    let topics = Topics::with_prefix(&prefix);
    let io = shopflow_sinks::io_runtime();
    let mut names: Vec<&str> = topics.inputs().to_vec();
    names.extend([topics.alerts.as_str(), topics.dlq.as_str()]);
    io.block_on(ensure_topics(brokers, &names, args.partitions))?;
    let redis = io.block_on(shopflow_sinks::redis::RedisViews::connect(
        redis_url, &prefix,
    ))?;

    // The live pipeline into Redis (ledgers and sales in process: this measures the views).
    let store = MemoryStore::new();
    let sinks = SinkSet {
        views: ViewStore::Redis(redis.clone()),
        ledger: shopflow_sinks::LedgerStore::Memory(store.clone()),
        sales: shopflow_sinks::SalesStore::Memory(store.clone()),
        alerts: EventLog::Memory(store.clone()),
        dead_letters: EventLog::Memory(store),
    };
    let kconfig = KafkaConfig {
        brokers: brokers.to_string(),
        topics: topics.inputs().iter().map(|s| s.to_string()).collect(),
        bounded: false,
        fetch_bytes_per_partition: 1 << 20,
        start_offsets: Default::default(),
    };
    let config = PipelineConfig {
        workers: args.workers,
        lateness_ms: args.freshness_lateness_ms,
        live: true,
        ..PipelineConfig::default()
    };
    let stats = Arc::new(shopflow_pipelines::Stats::default());
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let writer = shopflow_sinks::spawn_writer(
        rx,
        sinks,
        Arc::new(shopflow_sinks::writer::SinkStats::default()),
        io.handle().clone(),
    );
    let pipeline = {
        let stats = stats.clone();
        std::thread::spawn(move || {
            shopflow_pipelines::run(
                config,
                move |w, peers| {
                    Ok(Box::new(KafkaSource::new(&kconfig, w, peers)?) as Box<dyn Source>)
                },
                tx,
                stats,
            )
        })
    };

    // Reads of as_of: (wall ms of the read, as_of).
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        let redis = redis.clone();
        let handle = io.handle().clone();
        std::thread::spawn(move || -> Vec<(u64, u64)> {
            let mut reads = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok(Some(as_of)) = handle.block_on(redis.as_of()) {
                    let now = now_ms();
                    if reads.last().is_none_or(|&(_, a)| as_of > a) {
                        reads.push((now, as_of));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            reads
        })
    };

    // Offer the load: a batch every 10 ms, each message stamped with the send time.
    let publisher = shopflow_sinks::kafka::Publisher::connect(brokers)?;
    let per_tick = (rate / 100).max(1);
    let mut sent: Vec<u64> = Vec::with_capacity(n);
    let started = Instant::now();
    for (tick, chunk) in log.chunks(per_tick).enumerate() {
        let due = started + Duration::from_millis(10 * tick as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ts = now_ms();
        let records: Vec<_> = chunk
            .iter()
            .map(|m| stamped(m, &topics, args.partitions, ts))
            .collect();
        io.block_on(publisher.publish(&records))?;
        sent.extend(std::iter::repeat_n(ts, chunk.len()));
    }
    let offered_for = started.elapsed();
    // Wait until the last message is covered (or give up after 30 s).
    let last = *sent.last().unwrap_or(&0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(io.block_on(redis.as_of()), Ok(Some(a)) if a >= last) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    stats.stop.store(true, Ordering::SeqCst);
    let reads = reader.join().expect("reader thread");
    pipeline.join().expect("pipeline thread")?;
    writer.join().expect("writer thread")?;

    let mut lags: Vec<u64> = sent
        .iter()
        .filter_map(|&ts| {
            let i = reads.partition_point(|&(_, a)| a < ts);
            reads.get(i).map(|&(at, _)| at.saturating_sub(ts))
        })
        .collect();
    let covered = lags.len();
    lags.sort_unstable();
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "freshness through Kafka into Redis: {} msg/s offered for {:.1} s ({} messages, {} partitions per topic, lateness {} ms)",
        rate,
        offered_for.as_secs_f64(),
        sent.len(),
        args.partitions,
        args.freshness_lateness_ms
    );
    println!(
        "  produce → as_of covers it: p50 {} ms, p99 {} ms, max {} ms ({covered} of {} covered)",
        pct(0.50),
        pct(0.99),
        lags.last().copied().unwrap_or(0),
        sent.len()
    );
    Ok(())
}

/// `m` as a record of its topic and partition with its `ts` replaced by `ts` (a payload that
/// is not a JSON object is sent as is).
fn stamped(
    m: &shopflow_gen::GenMessage,
    topics: &Topics,
    partitions: i32,
    ts: u64,
) -> shopflow_sinks::kafka::RawRecord {
    let payload = match serde_json::from_slice::<serde_json::Value>(&m.payload) {
        Ok(serde_json::Value::Object(mut o)) => {
            o.insert("ts".into(), ts.into());
            serde_json::to_vec(&o).expect("a JSON object serializes")
        }
        _ => m.payload.clone(),
    };
    shopflow_sinks::kafka::RawRecord {
        topic: match m.topic {
            shopflow_gen::TopicKind::Catalog => &topics.catalog,
            shopflow_gen::TopicKind::Inventory => &topics.inventory,
            shopflow_gen::TopicKind::Members => &topics.members,
            shopflow_gen::TopicKind::Orders => &topics.orders,
            shopflow_gen::TopicKind::Reviews => &topics.reviews,
        }
        .clone(),
        partition: (m.key % partitions.max(1) as u64) as i32,
        key: Some(m.key.to_string().into_bytes()),
        payload,
    }
}

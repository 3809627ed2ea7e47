//! `shopflow bench`: decode + pipeline throughput as a ratio of the raw read rate of the
//! same input, both measured in the same run (machines are noisy; ratios travel).

use std::time::Instant;

use anyhow::Result;
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

    let Some(brokers) = args.kafka else {
        println!("(give --kafka BROKERS or SHOPFLOW_KAFKA_BROKERS for the Kafka figures)");
        return Ok(());
    };
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
        "  decode + pipeline             {:>12.0} msg/s  ({:.3} × raw consume)",
        kafka_pipeline_rate,
        kafka_pipeline_rate / consume_rate
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
        let orders = log
            .iter()
            .filter(|m| m.payload.windows(14).any(|w| w == b"\"order.placed\""))
            .count();
        // Decode and schema-check only, one thread.
        let started = Instant::now();
        let ok = log
            .iter()
            .filter(|m| shopflow_ingest::decode(&m.payload).is_ok())
            .count();
        std::hint::black_box(ok);
        let decode_rate = rate(log.len(), started);
        // The reference model: one batch pass over the same log (one stream, as the file).
        let stream: Vec<Vec<u8>> = log.iter().map(|m| m.payload.clone()).collect();
        drop(log);
        let started = Instant::now();
        std::hint::black_box(shopflow_reference::compute(
            std::slice::from_ref(&stream),
            shopflow_reference::Config::default(),
        ));
        let reference_rate = rate(stream.len(), started);
        drop(stream);
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

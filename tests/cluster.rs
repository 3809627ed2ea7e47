//! The `shopflow` binary in cluster mode: two processes of one worker each, on localhost.
//!
//! - A file read by one process, stores in process: the writing process serves what one
//!   process of two workers serves, with the same alerts and dead letters; the other says
//!   it serves nothing and writes no file.
//! - Kafka, Redis, MariaDB, ClickHouse: a run to the end equals the reference model; so does
//!   a run whose writing process is SIGKILLed mid-stream (the other must stop on its own),
//!   after both are started again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_model::Writers;
use shopflow_reference::{compute, Config};
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_tests::{
    first_event_time, fresh_ledger, fresh_sales, partition, payloads, publish, read_sinks,
    service_env, unique_name,
};

mod common;
use common::{admin_token, answers, dead_letters, get, get_text, same_answers, serve};

const SECRET: &str = "cluster-test-secret-0123456789abcdef";

/// Two localhost addresses nobody listens on now.
fn peers() -> String {
    let listeners: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address").to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a test directory");
    d
}

/// `shopflow run --bounded` with no service given.
fn shopflow(workers: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args(["run", "--bounded", "--listen", "127.0.0.1:0"])
        .args(["--workers", &workers.to_string()])
        .env("SHOPFLOW_JWT_SECRET", SECRET);
    for v in [
        "SHOPFLOW_KAFKA_BROKERS",
        "SHOPFLOW_REDIS_URL",
        "SHOPFLOW_MYSQL_URL",
        "SHOPFLOW_CLICKHOUSE_URL",
        "SHOPFLOW_PEERS",
        "SHOPFLOW_PROCESS",
    ] {
        c.env_remove(v);
    }
    c
}

fn in_cluster(mut c: Command, peers: &str, process: usize) -> Command {
    c.args(["--peers", peers, "--process", &process.to_string()]);
    c
}

/// Waits for `child` to exit, at most `limit`.
fn exits_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_file_read_by_one_process_of_two_serves_what_one_process_serves() {
    let d = dir("file");
    let file = d.join("events.jsonl");
    let log = generate(&GenConfig {
        events: 25_000,
        seed: 41,
        bad_rate: 0.02,
        ..GenConfig::default()
    });
    let mut text = Vec::new();
    for m in &log {
        text.extend_from_slice(&m.payload);
        text.push(b'\n');
    }
    std::fs::write(&file, text).expect("write the workload");
    let token = admin_token(SECRET);

    let one = d.join("one");
    let mut c = shopflow(2);
    c.arg("--file").arg(&file).arg("--out-dir").arg(&one);
    let (mut single, port, _) = serve(c);
    let want = answers(port, &token);
    single.kill().expect("stop");
    single.wait().expect("reap");
    assert!(
        want.iter().filter(|(_, s, _)| *s == 200).count() > 50,
        "the sample must mostly hit known keys: {want:?}"
    );

    let peers = peers();
    let (out0, out1) = (d.join("p0"), d.join("p1"));
    let mut c = in_cluster(shopflow(1), &peers, 0);
    c.arg("--file").arg(&file).arg("--out-dir").arg(&out0);
    let mut reader = c
        .arg("--exit-when-done")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start process 0");
    let mut c = in_cluster(shopflow(1), &peers, 1);
    c.arg("--file").arg(&file).arg("--out-dir").arg(&out1);
    let (mut writer, port, log) = serve(c);
    let got = answers(port, &token);
    let (status, ready) = get(port, "/readyz", &token);
    let (_, metrics) = get_text(port, "/metrics", &token);
    writer.kill().expect("stop");
    writer.wait().expect("reap");
    let status0 = exits_within(&mut reader, Duration::from_secs(60));
    let out = reader.wait_with_output().expect("process 0's output");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        status0.map(|s| s.success()),
        Some(true),
        "process 0 did not finish well: {said}"
    );
    assert!(
        said.contains("process 0 of 2: the views are kept in process 1")
            && !said.contains("API on"),
        "process 0 must say it serves no API:\n{said}"
    );
    assert!(
        said.contains("finished: 25000 messages"),
        "process 0 reads the file:\n{said}"
    );
    assert!(
        log.contains("finished: 0 messages"),
        "process 1 reads nothing:\n{log}"
    );
    assert_eq!(status, 200, "/readyz of process 1: {ready}");
    assert_eq!(
        (&ready["process"], &ready["processes"], &ready["streams"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!([])
        ),
        "/readyz says which process this is and what it reads: {ready}"
    );
    for line in ["shopflow_cluster_processes 2", "shopflow_cluster_process 1"] {
        assert!(
            metrics.lines().any(|l| l == line),
            "/metrics of process 1 lacks {line:?}"
        );
    }
    same_answers(&want, &got, "one process vs a cluster of two");
    for name in ["alerts.jsonl", "dlq.jsonl"] {
        let read = |dir: &Path| std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(!read(&one).is_empty(), "{name}: the workload writes some");
        assert_eq!(
            read(&one),
            read(&out1),
            "{name}: one process vs a cluster of two"
        );
        assert!(
            !out0.join(name).exists(),
            "{name}: process 0 writes nothing, yet created the file"
        );
    }
}

#[test]
fn a_cluster_continues_from_the_newest_checkpoint_every_process_holds() {
    let d = dir("checkpoints");
    let log = generate(&GenConfig {
        events: 24_000,
        seed: 47,
        bad_rate: 0.02,
        ..GenConfig::default()
    });
    let write = |name: &str, n: usize| {
        let path = d.join(name);
        let mut text = Vec::new();
        for m in &log[..n] {
            text.extend_from_slice(&m.payload);
            text.push(b'\n');
        }
        std::fs::write(&path, text).expect("write a workload");
        path
    };
    let (first, second, full) = (
        write("first.jsonl", 8_000),
        write("second.jsonl", 16_000),
        write("full.jsonl", log.len()),
    );
    let token = admin_token(SECRET);

    let one = d.join("one");
    let mut c = shopflow(2);
    c.arg("--file").arg(&full).arg("--out-dir").arg(&one);
    let (mut single, port, _) = serve(c);
    let want = answers(port, &token);
    single.kill().expect("stop");
    single.wait().expect("reap");

    // Each process keeps its checkpoints in its own state directory.
    let state = [d.join("s0"), d.join("s1")];
    let out = [d.join("p0"), d.join("p1")];
    let cluster = |file: &Path, peers: &str, p: usize| {
        let mut c = in_cluster(shopflow(1), peers, p);
        c.arg("--file").arg(file);
        c.arg("--out-dir")
            .arg(&out[p])
            .arg("--state-dir")
            .arg(&state[p]);
        // Several rounds per file: a checkpoint at the end of a bounded input needs the
        // input time to have moved (an input read in one round has none).
        c.args(["--poll-batch", "1000"]);
        c
    };
    let run_to_end = |file: &Path| {
        let peers = peers();
        let mut children: Vec<Child> = (0..2)
            .map(|p| {
                cluster(file, &peers, p)
                    .arg("--exit-when-done")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start a process")
            })
            .collect();
        for (p, child) in children.iter_mut().enumerate() {
            let status = exits_within(child, Duration::from_secs(120));
            assert!(
                status.is_some_and(|s| s.success()),
                "process {p} over {file:?}: {status:?}"
            );
        }
    };
    run_to_end(&first);
    run_to_end(&second);
    let files = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("a state directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        names
    };
    let held = files(&state[0]);
    assert_eq!(
        held.len(),
        2,
        "two checkpoints in process 0's directory: {held:?}"
    );
    assert_eq!(
        held,
        files(&state[1]),
        "the processes number their checkpoints alike"
    );
    // Process 0 loses its newest: the cluster must go back to the one before, in both.
    std::fs::remove_file(state[0].join(&held[1])).expect("remove a checkpoint");

    let peers = peers();
    let mut reader = cluster(&full, &peers, 0)
        .arg("--exit-when-done")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start process 0");
    let (mut writer, port, log1) = serve(cluster(&full, &peers, 1));
    let got = answers(port, &token);
    writer.kill().expect("stop");
    writer.wait().expect("reap");
    let status0 = exits_within(&mut reader, Duration::from_secs(60));
    let log0 =
        String::from_utf8_lossy(&reader.wait_with_output().expect("output").stderr).to_string();
    assert_eq!(
        status0.map(|s| s.success()),
        Some(true),
        "process 0:\n{log0}"
    );
    assert!(
        log0.contains("continuing from checkpoint 1 ")
            && log0.contains("8000 messages already read here")
            && log0.contains("finished: 16000 messages"),
        "process 0 continues from checkpoint 1 (its newest, 2, is gone) and reads the rest:\n{log0}"
    );
    assert!(
        log1.contains(&format!("deleted {}", state[1].join(&held[1]).display()))
            && log1.contains("continuing from checkpoint 1 "),
        "process 1 drops the checkpoint process 0 lacks and continues from checkpoint 1:\n{log1}"
    );
    same_answers(&want, &got, "one run vs a cluster continued");
    assert_eq!(
        std::fs::read(one.join("alerts.jsonl")).expect("alerts"),
        std::fs::read(out[1].join("alerts.jsonl")).expect("alerts"),
        "alerts: one run vs a cluster continued"
    );
    // In any order: the cluster's writer gets them from the reading process's worker.
    let sorted = |path: &Path| {
        let mut d: Vec<String> = dead_letters(path).iter().map(|v| v.to_string()).collect();
        d.sort();
        d
    };
    assert_eq!(
        sorted(&one.join("dlq.jsonl")),
        sorted(&out[1].join("dlq.jsonl")),
        "dead letters: one run vs a cluster continued"
    );
}

/// Where the processes write: (brokers, Redis URL, MySQL URL, ClickHouse URL, ClickHouse db,
/// unique prefix).
struct Services {
    brokers: String,
    redis: String,
    mysql: String,
    clickhouse: String,
    clickhouse_db: String,
    unique: String,
    /// Checkpoints on: each process's state directory is `state/s{process}`, its log
    /// `state/p{process}.log` (appended to by every start).
    state: Option<PathBuf>,
}

fn on_services(s: &Services, peers: &str, process: usize) -> Command {
    let mut c = in_cluster(shopflow(1), peers, process);
    c.args(["--exit-when-done", "--kafka", &s.brokers])
        .args(["--redis", &s.redis, "--mysql", &s.mysql])
        .args([
            "--clickhouse",
            &s.clickhouse,
            "--clickhouse-db",
            &s.clickhouse_db,
        ])
        .args(["--topic-prefix", &format!("{}.", s.unique)])
        .args(["--redis-prefix", &format!("{}:", s.unique)])
        // Small rounds: many small batches, so the pipeline (held back by the writer) is
        // still running when the kill comes.
        .args(["--kafka-fetch-kb", "4", "--poll-batch", "64"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dir) = &s.state {
        c.arg("--state-dir")
            .arg(dir.join(format!("s{process}")))
            .args(["--checkpoint-every-messages", "3000"]);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("p{process}.log")))
            .expect("open a log file");
        c.stderr(log);
    }
    c
}

fn start_both(s: &Services) -> (Child, Child) {
    let peers = peers();
    let a = on_services(s, &peers, 0).spawn().expect("start process 0");
    let b = on_services(s, &peers, 1).spawn().expect("start process 1");
    (a, b)
}

/// Runs the cluster over a fresh set of topics, keys and databases; `kill_at` (a fraction
/// of the log's time) SIGKILLs the writing process once its ledger is that far, checks the
/// other stops on its own, and starts both again, each from its checkpoints. Then every sink
/// must equal the reference.
fn cluster_on_services(stem: &str, kill_at: Option<u64>) {
    let unique = unique_name(stem);
    let topics = Topics::with_prefix(&format!("{unique}."));
    let rt = shopflow_sinks::io_runtime();
    let log = generate(&GenConfig {
        events: 30_000,
        seed: 43,
        bad_rate: 0.03,
        skus: 300,
        members: 500,
        concurrency: 200,
        mean_gap_ms: 220_000,
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, 3);
    let brokers = service_env("SHOPFLOW_KAFKA_BROKERS");
    publish(&rt, &brokers, &topics, &streams, 3);
    let want = compute(&payloads(&streams), Config::default());
    let final_as_of = want.as_of.expect("events");
    let redis_url = service_env("SHOPFLOW_REDIS_URL");
    // Every store is external: each process writes the rows it owns, with its own progress
    // records; the stores read as of the smallest (any process's view reads them so).
    let reader = Writers::new(0, 2);
    let redis = rt
        .block_on(RedisViews::connect(&redis_url, &format!("{unique}:")))
        .expect("redis")
        .with_writers(reader);
    let (ledger, admin, db) = fresh_ledger(&rt, &unique);
    let ledger = rt
        .block_on(ledger.with_writers(reader))
        .expect("ledger as a reader of two writers");
    let (sales, ch_url, ch_db) = fresh_sales(&rt, &unique);
    let sales = sales.with_writers(reader);
    let s = Services {
        brokers: brokers.clone(),
        redis: redis_url,
        mysql: shopflow_sinks::mysql::url_with_database(&admin, &db),
        clickhouse: ch_url.clone(),
        clickhouse_db: ch_db,
        unique: unique.clone(),
        state: kill_at.map(|_| dir(stem)),
    };
    let (mut p0, mut p1) = start_both(&s);
    if let Some(third) = kill_at {
        let first_ts = first_event_time(&log);
        let kill_from = first_ts + (final_as_of - first_ts) / third;
        let deadline = Instant::now() + Duration::from_secs(300);
        let killed_at = loop {
            let as_of = rt.block_on(ledger.as_of()).expect("read ledger as_of");
            if let Some(t) = as_of.filter(|t| *t >= kill_from) {
                assert!(
                    p0.try_wait().expect("wait").is_none(),
                    "process 0 finished before the kill: nothing would be tested"
                );
                p1.kill().expect("SIGKILL the writing process");
                break t;
            }
            assert!(
                p1.try_wait().expect("wait").is_none(),
                "process 1 exited before the kill"
            );
            assert!(Instant::now() < deadline, "no batch written in 300 s");
            std::thread::sleep(Duration::from_millis(5));
        };
        p1.wait().expect("reap");
        assert!(
            killed_at < final_as_of,
            "the kill came after the last batch: nothing was tested"
        );
        let stopped = exits_within(&mut p0, Duration::from_secs(60));
        assert!(
            stopped.is_some_and(|s| !s.success()),
            "process 0 must stop with an error once its peer is gone: {stopped:?}"
        );
        let points = rt.block_on(ledger.all_points()).expect("points").len();
        assert!(
            points > 0 && points < want.points.len(),
            "the kill should leave the points ledger part-written: {points} of {}",
            want.points.len()
        );
        (p0, p1) = start_both(&s);
    }
    let restarted = kill_at.is_some();
    for (i, p) in [&mut p0, &mut p1].into_iter().enumerate() {
        let status = exits_within(p, Duration::from_secs(300));
        assert!(
            status.is_some_and(|s| s.success()),
            "process {i} did not finish well: {status:?}"
        );
    }
    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    // Both processes wrote, each its own rows up to the end.
    for p in 0..2 {
        let writer = Writers::new(p, 2);
        let redis = redis.clone().with_writers(writer);
        let sales = sales.clone().with_writers(writer);
        let ledger = rt
            .block_on(ledger.clone().with_writers(writer))
            .expect("ledger as one writer");
        let written = [
            rt.block_on(redis.written_as_of()).expect("Redis as_of"),
            rt.block_on(ledger.written_as_of()).expect("MySQL as_of"),
            rt.block_on(sales.written_as_of())
                .expect("ClickHouse as_of"),
        ];
        assert_eq!(
            written,
            [Some(final_as_of); 3],
            "process {p}'s progress in Redis, MySQL and ClickHouse ({stem})"
        );
    }
    let mut got = read_sinks(&brokers, &redis, &topics, &ids, &streams, &rt);
    got.read_members(&redis, &rt);
    got.read_ledger(&ledger, &rt);
    got.read_sales(&sales, &rt);
    if let Err(e) = got.compare(&want) {
        panic!("the cluster's sinks differ from the reference ({stem}):\n{e}");
    }
    if let (true, Some(dir)) = (restarted, &s.state) {
        for p in 0..2 {
            let log = std::fs::read_to_string(dir.join(format!("p{p}.log"))).expect("a log");
            assert!(
                log.contains("continuing from checkpoint"),
                "process {p} restarted from a checkpoint:\n{log}"
            );
        }
    }
    rt.block_on(ledger.close());
    rt.block_on(ClickHouseSales::drop_database(&ch_url, &s.clickhouse_db))
        .expect("drop ClickHouse test database");
    rt.block_on(MysqlLedger::drop_database(&admin, &db))
        .expect("drop test database");
}

#[test]
fn two_processes_on_kafka_write_what_the_reference_computes() {
    cluster_on_services("cluster", None);
}

#[test]
fn a_sigkilled_process_stops_the_cluster_and_a_restart_of_both_loses_and_duplicates_nothing() {
    cluster_on_services("cluster-kill", Some(3));
}

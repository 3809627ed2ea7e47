//! Exactly once through a crash (an integration test of the `shopflow` binary itself, so it
//! lives beside the `shopflow-tests` crate rather than in it).
//!
//! A generated log with bad events is published to Kafka; `shopflow run --bounded` is
//! started as a child process writing to Redis, MariaDB, ClickHouse and Kafka, SIGKILLed once its
//! ledger is a third of the way through the log's time, then started again. Afterwards
//! Redis, the MySQL ledgers (points, settlements, payouts, tax invoices), the ClickHouse
//! sales facts and rollups, the alerts topic and the dead-letter topic must equal the
//! reference model, with no ledger entry, fact, alert or dead letter written twice.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_reference::{compute, Config};
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::kafka::read_all;
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_tests::{
    first_event_time, fresh_ledger, fresh_sales, partition, payloads, publish, read_sinks,
    service_env, unique_name,
};

/// Where the child process writes: (Redis URL, MySQL URL, ClickHouse URL, ClickHouse db).
type Targets<'a> = (&'a str, &'a str, &'a str, &'a str);

fn shopflow(brokers: &str, (redis, mysql, ch, ch_db): Targets, unique: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args(["run", "--bounded", "--exit-when-done", "--workers", "2"])
        .args(["--kafka", brokers, "--redis", redis, "--mysql", mysql])
        .args(["--clickhouse", ch, "--clickhouse-db", ch_db])
        .args(["--topic-prefix", &format!("{unique}.")])
        .args(["--redis-prefix", &format!("{unique}:")])
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "SHOPFLOW_JWT_SECRET",
            "crash-restart-test-secret-0123456789abcdef",
        )
        // Small fetches: the partitions are read evenly, so the run writes many batches
        // and the kill lands between them.
        .args(["--kafka-fetch-kb", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn sigkill_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let brokers = service_env("SHOPFLOW_KAFKA_BROKERS");
    let redis_url = service_env("SHOPFLOW_REDIS_URL");
    let unique = unique_name("crash");
    let topics = Topics::with_prefix(&format!("{unique}."));
    let rt = shopflow_sinks::io_runtime();
    let log = generate(&GenConfig {
        events: 40_000,
        seed: 23,
        bad_rate: 0.03,
        skus: 300,
        members: 500,
        concurrency: 200,
        late_catalog_rate: 0.1,
        // About 100 days of events: the ledgers span many weeks and months.
        mean_gap_ms: 220_000,
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, 2);
    publish(&rt, &brokers, &topics, &streams, 2);
    let want = compute(&payloads(&streams), Config::default());
    let final_as_of = want.as_of.expect("events");
    let redis = rt
        .block_on(RedisViews::connect(&redis_url, &format!("{unique}:")))
        .expect("redis");
    let (ledger, admin, db) = fresh_ledger(&rt, &unique);
    let mysql_url = shopflow_sinks::mysql::url_with_database(&admin, &db);
    let (sales, ch_url, ch_db) = fresh_sales(&rt, &unique);
    let targets = (
        redis_url.as_str(),
        mysql_url.as_str(),
        ch_url.as_str(),
        ch_db.as_str(),
    );
    let first_ts = first_event_time(&log);
    let kill_from = first_ts + (final_as_of - first_ts) / 3;

    // First run: kill it once the ledger is a third of the way through the log's time and
    // the sales store holds some facts. (The writer writes the ledger, then the facts, then
    // the serving views of each batch; the pipeline can be so far ahead of the writer that
    // its first batch already crosses the third, and a kill between that batch's ledger
    // and its facts would leave no fact to test.)
    let mut child = shopflow(&brokers, targets, &unique)
        .spawn()
        .expect("start shopflow");
    let deadline = Instant::now() + Duration::from_secs(300);
    let killed_at = loop {
        let as_of = rt.block_on(ledger.as_of()).expect("read ledger as_of");
        let some_facts = || rt.block_on(sales.stored_fact_rows()).expect("facts") > 0;
        if let Some(t) = as_of.filter(|t| *t >= kill_from && some_facts()) {
            child.kill().expect("SIGKILL");
            break t;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "shopflow exited before writing any batch"
        );
        assert!(Instant::now() < deadline, "no batch written in 300 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.wait().expect("reap");
    assert!(
        killed_at < final_as_of,
        "the kill came after the last batch ({killed_at} ≥ {final_as_of}): nothing was tested"
    );
    let alerts_before = read_all(&brokers, &topics.alerts).expect("alerts").len();
    assert!(
        alerts_before < want.alerts.len(),
        "all alerts were written before the kill"
    );
    let points_before = rt.block_on(ledger.all_points()).expect("points").len();
    let entries_before = rt
        .block_on(ledger.all_settlements())
        .expect("entries")
        .len();
    assert!(
        points_before > 0 && points_before < want.points.len(),
        "the kill should leave the points ledger part-written: {points_before} of {}",
        want.points.len()
    );
    assert!(
        entries_before > 0 && entries_before < want.settlements.len(),
        "the kill should leave the settlement ledger part-written: {entries_before} of {}",
        want.settlements.len()
    );

    let facts_before = rt.block_on(sales.stored_fact_rows()).expect("facts");
    assert!(
        facts_before > 0 && (facts_before as usize) < want.sales_facts.len(),
        "the kill should leave the sales facts part-written: {facts_before} of {}",
        want.sales_facts.len()
    );

    // Second run: from the start of the topics into the same sinks.
    let status = shopflow(&brokers, targets, &unique)
        .status()
        .expect("restart shopflow");
    assert!(status.success(), "restarted shopflow failed: {status}");

    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    // Also asserts that no alert or dead letter appears twice and that every dead letter
    // holds the original bytes.
    let mut got = read_sinks(&brokers, &redis, &topics, &ids, &streams, &rt);
    got.read_members(&redis, &rt);
    // Also asserts that no entry id is stored twice and every `final` flag matches as_of.
    got.read_ledger(&ledger, &rt);
    // Also asserts that no fact is stored twice, even before ClickHouse merges.
    got.read_sales(&sales, &rt);
    // Sorted lists equal to the reference's also means nothing was written twice.
    if let Err(e) = got.compare(&want) {
        panic!("after SIGKILL at as_of {killed_at} and a restart, the sinks differ from the reference:\n{e}");
    }
    rt.block_on(ledger.close());
    rt.block_on(ClickHouseSales::drop_database(&ch_url, &ch_db))
        .expect("drop ClickHouse test database");
    rt.block_on(MysqlLedger::drop_database(&admin, &db))
        .expect("drop test database");
}

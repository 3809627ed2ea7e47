//! End to end against the real services started by `deploy/local/up.sh`: a generated log
//! with bad events is published to Kafka, the pipeline runs to its end into Redis,
//! MariaDB and Kafka, and every sink is compared with the reference model. A second run
//! over the same topics (a restart that replays everything) must leave every sink exactly
//! as it was.

use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::source::{KafkaConfig, KafkaSource};
use shopflow_ingest::{Source, StreamId, Topics};
use shopflow_model::sales::{series, Bucket};
use shopflow_model::DeadLetterReason;
use shopflow_pipelines::{PipelineConfig, Stats};
use shopflow_reference::{compute, Config};
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::kafka::{alert_id, dead_letter_id, KafkaWriter};
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_sinks::writer::SinkStats;
use shopflow_sinks::{spawn_writer, EventLog, LedgerStore, SalesStore, SinkSet, ViewStore};
use shopflow_tests::{
    fresh_ledger, fresh_sales, partition, payloads, publish, read_sinks, service_env, unique_name,
    SinkContents,
};

fn run_once(
    brokers: &str,
    redis: &RedisViews,
    ledger: &MysqlLedger,
    sales: &ClickHouseSales,
    topics: &Topics,
    rt: &tokio::runtime::Runtime,
) {
    let sinks = SinkSet {
        views: ViewStore::Redis(redis.clone()),
        ledger: LedgerStore::Mysql(ledger.clone()),
        sales: SalesStore::ClickHouse(Box::new(sales.clone())),
        alerts: EventLog::Kafka(
            KafkaWriter::open(brokers, &topics.alerts, alert_id).expect("alerts writer"),
        ),
        dead_letters: EventLog::Kafka(
            KafkaWriter::open(brokers, &topics.dlq, dead_letter_id).expect("dlq writer"),
        ),
    };
    let (tx, rx) = sync_channel(64);
    let writer = spawn_writer(
        rx,
        sinks,
        Arc::new(SinkStats::default()),
        rt.handle().clone(),
    );
    let config = KafkaConfig {
        brokers: brokers.to_string(),
        topics: topics.inputs().iter().map(|s| s.to_string()).collect(),
        bounded: true,
        fetch_bytes_per_partition: 1 << 20,
        start_offsets: Default::default(),
    };
    let summary = shopflow_pipelines::run(
        PipelineConfig {
            workers: 2,
            ..PipelineConfig::default()
        },
        move |w, peers| Ok(Box::new(KafkaSource::new(&config, w, peers)?) as Box<dyn Source>),
        tx,
        Arc::new(Stats::default()),
    )
    .expect("pipeline run");
    writer.join().expect("writer thread").expect("sink writer");
    assert!(summary.messages > 0, "the pipeline read nothing from Kafka");
}

/// The stores one run writes to.
struct Stores<'a> {
    redis: &'a RedisViews,
    ledger: &'a MysqlLedger,
    sales: &'a ClickHouseSales,
}

fn read_all_sinks(
    brokers: &str,
    stores: &Stores,
    topics: &Topics,
    ids: &[StreamId],
    streams: &[shopflow_tests::Stream],
    rt: &tokio::runtime::Runtime,
) -> SinkContents {
    let Stores {
        redis,
        ledger,
        sales,
    } = *stores;
    let mut c = read_sinks(brokers, redis, topics, ids, streams, rt);
    c.read_members(redis, rt);
    c.read_ledger(ledger, rt);
    c.read_sales(sales, rt);
    c
}

#[test]
fn kafka_to_redis_mysql_clickhouse_matches_reference_and_replay_changes_nothing() {
    let brokers = service_env("SHOPFLOW_KAFKA_BROKERS");
    let redis_url = service_env("SHOPFLOW_REDIS_URL");
    let unique = unique_name("t");
    let topics = Topics::with_prefix(&format!("{unique}."));
    let partitions = 3;
    let rt = shopflow_sinks::io_runtime();

    // Publish a generated log with bad events and duplicates.
    let log = generate(&GenConfig {
        events: 30_000,
        seed: 11,
        bad_rate: 0.03,
        skus: 300,
        members: 500,
        concurrency: 200,
        late_catalog_rate: 0.1,
        // About 80 days: payouts and invoices span weeks and months, and some become final.
        mean_gap_ms: 230_000,
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, partitions);
    publish(&rt, &brokers, &topics, &streams, partitions);
    let want = compute(&payloads(&streams), Config::default());
    let ids: Vec<StreamId> = streams.iter().map(|(id, _)| id.clone()).collect();

    let redis = rt
        .block_on(RedisViews::connect(&redis_url, &format!("{unique}:")))
        .expect("redis");
    let (ledger, admin, db) = fresh_ledger(&rt, &unique);
    let (sales, ch_url, ch_db) = fresh_sales(&rt, &unique);
    run_once(&brokers, &redis, &ledger, &sales, &topics, &rt);
    let stores = Stores {
        redis: &redis,
        ledger: &ledger,
        sales: &sales,
    };
    let first = read_all_sinks(&brokers, &stores, &topics, &ids, &streams, &rt);
    if let Err(e) = first.compare(&want) {
        panic!("Kafka → Redis, MariaDB, ClickHouse differs from the reference:\n{e}");
    }
    // The workload must exercise the ledgers, or the comparison proves little.
    assert!(
        want.points.len() > 100,
        "only {} points entries",
        want.points.len()
    );
    assert!(
        want.settlements
            .values()
            .any(|e| e.cause == shopflow_model::EntryCause::Refund),
        "no settlement refund entry"
    );
    assert!(
        want.alerts
            .iter()
            .any(|a| matches!(a.body, shopflow_model::AlertBody::GradeChanged { .. })),
        "no grade change"
    );
    assert!(want.payouts.len() > 10 && want.invoices.len() > 5);
    assert!(want
        .sales_minutes
        .values()
        .any(|m| m.refunds > 0 && m.gross == 0));

    // The API's query (ClickHouse groups minutes into KST days) equals the reference's
    // minutes grouped the same way, for every seller and bucket size.
    let sellers: std::collections::BTreeSet<u64> =
        want.sales_minutes.keys().map(|(s, _)| *s).collect();
    for bucket in [Bucket::Minute, Bucket::Hour, Bucket::Day] {
        for &seller in &sellers {
            let got = rt
                .block_on(sales.sales(seller, 0, u64::MAX >> 11, bucket))
                .expect("sales query");
            let expect = series(
                want.sales_minutes
                    .range((seller, 0)..=(seller, u64::MAX))
                    .map(|(_, m)| *m),
                bucket,
            );
            assert_eq!(got, expect, "seller {seller}, {bucket:?} series");
        }
    }
    for reason in DeadLetterReason::ALL {
        assert!(
            first.dead_letters.iter().any(|d| d.2 == reason),
            "no {reason} dead letter in the topic"
        );
    }

    // A restart replays the topics from the beginning: nothing may change or repeat.
    run_once(&brokers, &redis, &ledger, &sales, &topics, &rt);
    let second = read_all_sinks(&brokers, &stores, &topics, &ids, &streams, &rt);
    if let Err(e) = second.compare(&want) {
        panic!("after a replay the sinks differ from the reference:\n{e}");
    }
    rt.block_on(ledger.close());
    rt.block_on(MysqlLedger::drop_database(&admin, &db))
        .expect("drop test database");
    rt.block_on(ClickHouseSales::drop_database(&ch_url, &ch_db))
        .expect("drop ClickHouse test database");
}

/// The processes of a cluster start together on one fresh database: every one of them
/// applies the migrations, none fails on another's (a cluster's first start on an empty
/// MariaDB once stopped one process with `Duplicate entry '1' for key 'PRIMARY'`).
#[test]
fn processes_starting_together_on_a_fresh_database_all_connect() {
    let rt = shopflow_sinks::io_runtime();
    let admin = service_env("SHOPFLOW_MYSQL_URL");
    let name = format!(
        "shopflow_{}",
        unique_name("migrate-race").replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let url = rt
        .block_on(MysqlLedger::create_database(&admin, &name))
        .expect("create test database");
    let results = rt.block_on(async {
        let (a, b, c, d) = tokio::join!(
            MysqlLedger::connect(&url),
            MysqlLedger::connect(&url),
            MysqlLedger::connect(&url),
            MysqlLedger::connect(&url)
        );
        [a, b, c, d]
    });
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "connection {i} of 4: {:?}", r.as_ref().err());
    }
    for l in results.into_iter().flatten() {
        rt.block_on(l.close());
    }
    rt.block_on(MysqlLedger::drop_database(&admin, &name))
        .expect("drop test database");
}

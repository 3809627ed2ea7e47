//! End to end against the real services started by `deploy/local/up.sh`: a generated log
//! with bad events is published to Kafka, the pipeline runs to its end into Redis and
//! Kafka, and every sink is compared with the reference model. A second run over the same
//! topics (a restart that replays everything) must leave every sink exactly as it was.

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::source::{KafkaConfig, KafkaSource};
use shopflow_ingest::{Source, StreamId, Topics};
use shopflow_model::{Alert, DeadLetter, DeadLetterReason};
use shopflow_pipelines::{PipelineConfig, Stats};
use shopflow_reference::{compute, Config};
use shopflow_sinks::kafka::{
    alert_id, dead_letter_id, ensure_topics, produce, read_all, KafkaWriter, RawRecord,
};
use shopflow_sinks::redis::RedisViews;
use shopflow_sinks::writer::SinkStats;
use shopflow_sinks::{spawn_writer, EventLog, SinkSet, ViewStore};
use shopflow_tests::{partition, payloads, stream_index, SinkContents};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services with deploy/local/up.sh and source .shopflow/env (./test.sh does both)")
    })
}

fn run_once(brokers: &str, redis: &RedisViews, topics: &Topics, rt: &tokio::runtime::Runtime) {
    let sinks = SinkSet {
        views: ViewStore::Redis(redis.clone()),
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

#[test]
fn kafka_to_redis_matches_reference_and_replay_changes_nothing() {
    let brokers = env("SHOPFLOW_KAFKA_BROKERS");
    let redis_url = env("SHOPFLOW_REDIS_URL");
    let unique = format!(
        "t{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
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
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, partitions);
    let mut names: Vec<&str> = topics.inputs().to_vec();
    names.extend([topics.alerts.as_str(), topics.dlq.as_str()]);
    rt.block_on(ensure_topics(&brokers, &names, partitions))
        .expect("create topics");
    let records: Vec<RawRecord> = streams
        .iter()
        .flat_map(|(id, msgs)| {
            msgs.iter().map(|(key, payload)| RawRecord {
                topic: id.topic.clone(),
                partition: id.partition,
                key: key.clone(),
                payload: payload.clone(),
            })
        })
        .collect();
    rt.block_on(produce(&brokers, &records)).expect("produce");
    let want = compute(&payloads(&streams), Config::default());
    let ids: Vec<StreamId> = streams.iter().map(|(id, _)| id.clone()).collect();

    let redis = rt
        .block_on(RedisViews::connect(&redis_url, &format!("{unique}:")))
        .expect("redis");
    run_once(&brokers, &redis, &topics, &rt);
    let first = read_sinks(&brokers, &redis, &topics, &ids, &streams, &rt);
    if let Err(e) = first.compare(&want) {
        panic!("Kafka → Redis differs from the reference:\n{e}");
    }
    for reason in DeadLetterReason::ALL {
        assert!(
            first.dead_letters.iter().any(|d| d.2 == reason),
            "no {reason} dead letter in the topic"
        );
    }

    // A restart replays the topics from the beginning: nothing may change or repeat.
    run_once(&brokers, &redis, &topics, &rt);
    let second = read_sinks(&brokers, &redis, &topics, &ids, &streams, &rt);
    if let Err(e) = second.compare(&want) {
        panic!("after a replay the sinks differ from the reference:\n{e}");
    }
}

/// Reads Redis, the alerts topic and the dead-letter topic; checks each dead letter keeps
/// the original bytes, and that no record appears twice.
fn read_sinks(
    brokers: &str,
    redis: &RedisViews,
    topics: &Topics,
    ids: &[StreamId],
    streams: &[shopflow_tests::Stream],
    rt: &tokio::runtime::Runtime,
) -> SinkContents {
    let stock = rt.block_on(redis.all_stock()).expect("read stock");
    let orders = rt.block_on(redis.all_orders()).expect("read orders");
    let as_of = rt.block_on(redis.as_of()).expect("read as_of");
    let ratings = rt.block_on(redis.all_ratings()).expect("read ratings");
    let also_bought = rt
        .block_on(redis.all_also_bought())
        .expect("read also-bought");
    let alerts: Vec<Alert> = read_all(brokers, &topics.alerts)
        .expect("read alerts")
        .into_iter()
        .map(|(_, _, _, payload)| serde_json::from_slice(&payload).expect("alert json"))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for a in &alerts {
        assert!(
            seen.insert(a.event_id.clone()),
            "alert {} written twice",
            a.event_id
        );
    }
    let mut dead = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, _, _, payload) in read_all(brokers, &topics.dlq).expect("read dlq") {
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("dead letter json");
        let topic = v["topic"].as_str().expect("topic");
        let partition = v["partition"].as_i64().expect("partition") as i32;
        let offset = v["offset"].as_i64().expect("offset");
        assert!(
            seen.insert((topic.to_string(), partition, offset)),
            "dead letter {topic}/{partition}/{offset} written twice"
        );
        let reason: DeadLetterReason = serde_json::from_value(v["reason"].clone()).expect("reason");
        let s = stream_index(ids, topic, partition);
        let original = &streams[s].1[offset as usize].1;
        assert_eq!(
            DeadLetter::payload_from_json(&v).as_ref(),
            Some(original),
            "dead letter {topic}/{partition}/{offset} does not hold the original bytes"
        );
        dead.push((s, offset, reason));
    }
    let mut c = SinkContents {
        stock: stock
            .into_iter()
            .map(|r| (r.sku, r))
            .collect::<BTreeMap<_, _>>(),
        orders: orders.into_iter().map(|r| (r.order_id, r)).collect(),
        alerts,
        ratings: ratings.into_iter().map(|r| (r.sku, r)).collect(),
        also_bought: also_bought.into_iter().map(|r| (r.sku, r)).collect(),
        dead_letters: dead,
        as_of,
    };
    c.normalize();
    c
}

//! Exactly once through a crash (an integration test of the `shopflow` binary itself, so it
//! lives beside the `shopflow-tests` crate rather than in it).
//!
//! A generated log with bad events is published to Kafka; `shopflow run --bounded` is
//! started as a child process writing to Redis and Kafka, SIGKILLed as soon as it has
//! written some but not all of its view batches, then started again. Afterwards Redis, the
//! alerts topic and the dead-letter topic must equal the reference model, with no alert and
//! no dead letter written twice.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_reference::{compute, Config};
use shopflow_sinks::kafka::{ensure_topics, produce, read_all, RawRecord};
use shopflow_sinks::redis::RedisViews;
use shopflow_tests::{partition, payloads, stream_index, SinkContents};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the services with deploy/local/up.sh and source .shopflow/env (./test.sh does both)")
    })
}

fn shopflow(brokers: &str, redis: &str, unique: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args(["run", "--bounded", "--exit-when-done", "--workers", "2"])
        .args(["--kafka", brokers, "--redis", redis])
        .args(["--topic-prefix", &format!("{unique}.")])
        .args(["--redis-prefix", &format!("{unique}:")])
        .args(["--listen", "127.0.0.1:0"])
        // Small fetches: the partitions are read evenly, so the run writes many batches
        // and the kill lands between them.
        .args(["--kafka-fetch-kb", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn sigkill_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let brokers = env("SHOPFLOW_KAFKA_BROKERS");
    let redis_url = env("SHOPFLOW_REDIS_URL");
    let unique = format!(
        "crash{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let topics = Topics::with_prefix(&format!("{unique}."));
    let rt = shopflow_sinks::io_runtime();
    let log = generate(&GenConfig {
        events: 40_000,
        seed: 23,
        bad_rate: 0.03,
        skus: 300,
        members: 500,
        concurrency: 200,
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, 2);
    let mut names: Vec<&str> = topics.inputs().to_vec();
    names.extend([topics.alerts.as_str(), topics.dlq.as_str()]);
    rt.block_on(ensure_topics(&brokers, &names, 2))
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
    let final_as_of = want.as_of.expect("events");
    let redis = rt
        .block_on(RedisViews::connect(&redis_url, &format!("{unique}:")))
        .expect("redis");

    // First run: kill it once some, but not all, batches are in Redis.
    let mut child = shopflow(&brokers, &redis_url, &unique)
        .spawn()
        .expect("start shopflow");
    let deadline = Instant::now() + Duration::from_secs(300);
    let killed_at = loop {
        let as_of = rt.block_on(redis.as_of()).expect("read as_of");
        if let Some(t) = as_of {
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

    // Second run: from the start of the topics into the same sinks.
    let status = shopflow(&brokers, &redis_url, &unique)
        .status()
        .expect("restart shopflow");
    assert!(status.success(), "restarted shopflow failed: {status}");

    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    let mut got = SinkContents {
        stock: rt
            .block_on(redis.all_stock())
            .expect("stock")
            .into_iter()
            .map(|r| (r.sku, r))
            .collect(),
        orders: rt
            .block_on(redis.all_orders())
            .expect("orders")
            .into_iter()
            .map(|r| (r.order_id, r))
            .collect(),
        ratings: rt
            .block_on(redis.all_ratings())
            .expect("ratings")
            .into_iter()
            .map(|r| (r.sku, r))
            .collect(),
        also_bought: rt
            .block_on(redis.all_also_bought())
            .expect("also-bought")
            .into_iter()
            .map(|r| (r.sku, r))
            .collect(),
        alerts: read_all(&brokers, &topics.alerts)
            .expect("alerts")
            .into_iter()
            .map(|(_, _, _, p)| serde_json::from_slice(&p).expect("alert json"))
            .collect(),
        dead_letters: read_all(&brokers, &topics.dlq)
            .expect("dlq")
            .into_iter()
            .map(|(_, _, _, p)| {
                let v: serde_json::Value = serde_json::from_slice(&p).expect("dlq json");
                let s = stream_index(
                    &ids,
                    v["topic"].as_str().expect("topic"),
                    v["partition"].as_i64().expect("partition") as i32,
                );
                let reason = serde_json::from_value(v["reason"].clone()).expect("reason");
                (s, v["offset"].as_i64().expect("offset"), reason)
            })
            .collect(),
        as_of: rt.block_on(redis.as_of()).expect("as_of"),
    };
    got.normalize();
    // Sorted lists equal to the reference's also means nothing was written twice.
    if let Err(e) = got.compare(&want) {
        panic!("after SIGKILL at as_of {killed_at} and a restart, the sinks differ from the reference:\n{e}");
    }
}

//! A backlog in Kafka whose partitions are badly out of step in event time: the orders of
//! 80 % of the keys in partition 0, 10 % in each of the others, so at equal offsets
//! partitions 1 and 2 are eight times further along in event time. The source must read
//! the partitions fairly (the first view batch comes within seconds, not after one
//! partition was drained), pause the partitions that run ahead, and the views must still
//! equal the reference.

use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shopflow_gen::{generate, GenConfig, GenMessage};
use shopflow_ingest::source::{KafkaConfig, KafkaSource};
use shopflow_ingest::{Source, StreamId, Topics};
use shopflow_pipelines::{PipelineConfig, Stats};
use shopflow_reference::{compute, Config};
use shopflow_sinks::writer::SinkStats;
use shopflow_sinks::{
    spawn_writer, EventLog, LedgerStore, MemoryStore, SalesStore, SinkSet, ViewStore,
};
use shopflow_tests::{
    env_or, partition, payloads, publish, service_env, unique_name, SinkContents,
};

/// The partition (of 3) a key goes to: 0 for 80 % of keys, 1 and 2 for 10 % each.
fn skewed(key: u64) -> u64 {
    let weight = match key % 10 {
        0..=7 => 0,
        8 => 1,
        _ => 2,
    };
    // Same key → same new key (an order's events stay together); new key mod 3 = weight.
    key * 3 + weight
}

#[test]
fn a_skewed_backlog_is_read_fairly_and_the_views_stay_exact() {
    let brokers = service_env("SHOPFLOW_KAFKA_BROKERS");
    let events = env_or("SHOPFLOW_BACKLOG_EVENTS", 300_000usize);
    let unique = unique_name("backlog");
    let topics = Topics::with_prefix(&format!("{unique}."));
    let partitions = 3;
    let rt = shopflow_sinks::io_runtime();

    let log: Vec<GenMessage> = generate(&GenConfig {
        events,
        seed: 23,
        ..GenConfig::default()
    })
    .into_iter()
    .map(|m| GenMessage {
        key: skewed(m.key),
        ..m
    })
    .collect();
    let streams = partition(&log, &topics, partitions);
    let orders: Vec<usize> = streams
        .iter()
        .filter(|(id, _)| id.topic == topics.orders)
        .map(|(_, m)| m.len())
        .collect();
    assert!(
        orders[0] > 5 * orders[1] && orders[0] > 5 * orders[2],
        "the orders topic is not skewed: {orders:?}"
    );
    publish(&rt, &brokers, &topics, &streams, partitions);
    let want = compute(&payloads(&streams), Config::default());
    let ids: Vec<StreamId> = streams.iter().map(|(id, _)| id.clone()).collect();

    let store = MemoryStore::new();
    let sinks = SinkSet {
        views: ViewStore::Memory(store.clone()),
        ledger: LedgerStore::Memory(store.clone()),
        sales: SalesStore::Memory(store.clone()),
        alerts: EventLog::Memory(store.clone()),
        dead_letters: EventLog::Memory(store.clone()),
    };
    let (tx, rx) = sync_channel(64);
    let sink_stats = Arc::new(SinkStats::default());
    let writer = spawn_writer(rx, sinks, sink_stats.clone(), rt.handle().clone());
    let config = KafkaConfig {
        brokers: brokers.clone(),
        topics: topics.inputs().iter().map(|s| s.to_string()).collect(),
        bounded: true,
        fetch_bytes_per_partition: 1 << 20,
        start_offsets: Default::default(),
    };
    let stats = Arc::new(Stats::default());
    // Watches for the first view batch written.
    let started = Instant::now();
    let first_write = {
        let sink_stats = sink_stats.clone();
        let stats = stats.clone();
        std::thread::spawn(move || loop {
            if sink_stats.as_of_plus_one.load(Ordering::Relaxed) > 0 {
                return Some(started.elapsed());
            }
            if stats.finished.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        })
    };
    let summary = shopflow_pipelines::run(
        PipelineConfig {
            workers: 2,
            ..PipelineConfig::default()
        },
        move |w, peers| Ok(Box::new(KafkaSource::new(&config, w, peers)?) as Box<dyn Source>),
        tx,
        stats.clone(),
    )
    .expect("pipeline run");
    writer.join().expect("writer thread").expect("sink writer");
    let took = started.elapsed();
    let first_write = first_write.join().expect("watcher");
    assert_eq!(
        summary.messages as usize,
        log.len(),
        "every message read once"
    );

    // Fair reading: a view batch early in the run, not after a partition was drained.
    let first_write = first_write.expect("no view batch before the run finished");
    eprintln!(
        "{events} messages: first view batch after {:.2} s, run {:.2} s",
        first_write.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        first_write < Duration::from_secs(5) && first_write < took / 3,
        "the first view batch came after {first_write:?} of {took:?}"
    );
    // The sparse partitions ran ahead in event time and were paused.
    let paused: f64 = [1, 2]
        .iter()
        .map(|p| {
            stats
                .metrics
                .source_paused
                .with_label_values(&[topics.orders.as_str(), &p.to_string()])
                .get()
        })
        .sum();
    assert!(
        paused > 0.0,
        "partitions 1 and 2 of the orders were never paused"
    );

    let got = SinkContents::from_memory(&store, &ids);
    if let Err(e) = got.compare(&want) {
        panic!("a skewed Kafka backlog differs from the reference:\n{e}");
    }
}

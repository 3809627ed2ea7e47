//! Timely's cluster mode in one test process: two pipeline instances (threads standing in for
//! processes), each with its own workers, sinks and stats, connected over localhost TCP,
//! must together write exactly what the reference model computes — all of it through the
//! writing process (the last one), nothing through the other.

use std::sync::Arc;

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::source::MemorySource;
use shopflow_ingest::{Source, Topics};
use shopflow_pipelines::cluster::ClusterConfig;
use shopflow_pipelines::{PipelineConfig, RunSummary, Stats};
use shopflow_reference::{compute, Config};
use shopflow_sinks::{spawn_writer, EventLog, MemoryStore, SinkSet, ViewStore};
use shopflow_tests::{partition, payloads, SinkContents, Stream};

/// Two localhost addresses nobody listens on now.
fn addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address").to_string())
        .collect()
}

/// Runs process `process` of the cluster over `streams` into a fresh store.
fn process(
    process: usize,
    addresses: Vec<String>,
    workers: usize,
    streams: Arc<Vec<Stream>>,
) -> (MemoryStore, RunSummary) {
    let store = MemoryStore::new();
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let sinks = SinkSet {
        views: ViewStore::Memory(store.clone()),
        ledger: shopflow_sinks::LedgerStore::Memory(store.clone()),
        sales: shopflow_sinks::SalesStore::Memory(store.clone()),
        alerts: EventLog::Memory(store.clone()),
        dead_letters: EventLog::Memory(store.clone()),
    };
    let rt = shopflow_sinks::io_runtime();
    let writer = spawn_writer(rx, sinks, Arc::default(), rt.handle().clone());
    let config = PipelineConfig {
        workers,
        poll_batch: 301,
        cluster: Some(ClusterConfig::new(process, addresses).expect("cluster configuration")),
        ..PipelineConfig::default()
    };
    let make = move |w: usize, peers: usize| -> Result<Box<dyn Source>, _> {
        Ok(Box::new(MemorySource::share(&streams, w, peers)) as Box<dyn Source>)
    };
    let summary = shopflow_pipelines::run(config, make, tx, Arc::new(Stats::default()))
        .unwrap_or_else(|e| panic!("process {process}: {e}"));
    writer.join().expect("writer thread").expect("writer");
    (store, summary)
}

fn check(gen: &GenConfig, partitions: i32, (processes, workers): (usize, usize)) {
    let topics = Topics::default();
    let streams = partition(&generate(gen), &topics, partitions);
    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    let want = compute(&payloads(&streams), Config::default());
    let streams = Arc::new(streams);
    let addresses = addresses(processes);
    let runs: Vec<_> = (0..processes)
        .map(|p| {
            let (a, s) = (addresses.clone(), streams.clone());
            std::thread::spawn(move || process(p, a, workers, s))
        })
        .collect();
    let results: Vec<(MemoryStore, RunSummary)> = runs
        .into_iter()
        .map(|r| r.join().expect("a process panicked"))
        .collect();
    let what = format!(
        "seed {}, {} events, {partitions} partitions, {processes} processes × {workers} workers",
        gen.seed, gen.events
    );
    // Each process counts what its own workers read; together, everything once.
    let total = |f: fn(&RunSummary) -> u64| results.iter().map(|(_, s)| f(s)).sum::<u64>();
    assert_eq!(
        total(|s| s.accepted),
        want.accepted,
        "accepted events ({what})"
    );
    assert_eq!(
        total(|s| s.duplicates),
        want.duplicates,
        "duplicates ({what})"
    );
    let messages: u64 = streams.iter().map(|(_, m)| m.len() as u64).sum();
    assert_eq!(total(|s| s.messages), messages, "messages read ({what})");
    if partitions as usize >= processes * workers {
        for (p, (_, s)) in results.iter().enumerate() {
            assert!(s.messages > 0, "process {p} read nothing ({what})");
        }
    }
    let (writer, others) = results.split_last().expect("processes");
    for (p, (store, _)) in others.iter().enumerate() {
        let held = SinkContents::from_memory(store, &ids);
        assert!(
            held.stock.is_empty() && held.orders.is_empty() && held.dead_letters.is_empty(),
            "process {p} does not write, yet its store holds rows ({what})"
        );
    }
    let got = SinkContents::from_memory(&writer.0, &ids);
    if let Err(e) = got.compare(&want) {
        panic!("the cluster's sinks differ from the reference ({what}):\n{e}");
    }
    assert!(
        !want.alerts.is_empty() && !want.dead_letters.is_empty(),
        "the workload has no alerts or no dead letters: nothing crossed processes ({what})"
    );
}

#[test]
fn two_processes_of_one_worker_equal_the_reference() {
    let gen = GenConfig {
        events: 12_000,
        seed: 31,
        bad_rate: 0.03,
        ..GenConfig::default()
    };
    check(&gen, 4, (2, 1));
}

#[test]
fn two_processes_of_two_workers_equal_the_reference_one_stream_or_many() {
    for (seed, partitions) in [(32, 1), (33, 3)] {
        let gen = GenConfig {
            events: 8_000,
            seed,
            bad_rate: 0.02,
            late_catalog_rate: 0.1,
            ..GenConfig::default()
        };
        check(&gen, partitions, (2, 2));
    }
}

#[test]
fn processes_agree_on_the_newest_checkpoint_they_all_hold() {
    for (offers, want) in [
        (vec![vec![4, 3, 2], vec![3, 2]], Some(3)),
        (vec![vec![5, 4], vec![5, 4]], Some(5)),
        (vec![vec![2], vec![]], None),
        (vec![vec![7, 6], vec![9, 8, 6]], Some(6)),
    ] {
        let addresses = addresses(offers.len());
        let runs: Vec<_> = offers
            .iter()
            .enumerate()
            .map(|(p, offer)| {
                let (a, o) = (addresses.clone(), offer.clone());
                std::thread::spawn(move || {
                    ClusterConfig::new(p, a)
                        .expect("cluster configuration")
                        .agree_on_checkpoint(o)
                        .expect("agreement")
                })
            })
            .collect();
        for (p, r) in runs.into_iter().enumerate() {
            assert_eq!(
                r.join().expect("a process panicked"),
                want,
                "process {p} of offers {offers:?}"
            );
        }
    }
}

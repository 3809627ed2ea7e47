//! The dataflow against the reference model, in process, on generated workloads.

use proptest::prelude::*;
use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_pipelines::dataflow::ViewConfig;
use shopflow_pipelines::PipelineConfig;
use shopflow_reference::{compute, Config};
use shopflow_tests::{env_or, partition, payloads, run_in_memory, SinkContents};

fn check(gen: &GenConfig, partitions: i32, workers: usize, threshold: i64) {
    check_with(gen, partitions, workers, threshold, 50);
}

fn check_with(gen: &GenConfig, partitions: i32, workers: usize, threshold: i64, cap: usize) {
    let topics = Topics::default();
    let log = generate(gen);
    let streams = partition(&log, &topics, partitions);
    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    let want = compute(
        &payloads(&streams),
        Config {
            low_stock_threshold: threshold,
            basket_max_skus: cap,
            ..Config::default()
        },
    );
    let config = PipelineConfig {
        workers,
        views: ViewConfig {
            low_stock_threshold: threshold,
            basket_max_skus: cap,
            ..ViewConfig::default()
        },
        poll_batch: 257,
        ..PipelineConfig::default()
    };
    let (store, summary) = run_in_memory(streams, config);
    let got = SinkContents::from_memory(&store, &ids);
    if let Err(e) = got.compare(&want) {
        panic!(
            "pipeline differs from the reference (seed {}, {} events, {partitions} partitions, {workers} workers):\n{e}",
            gen.seed, gen.events
        );
    }
    assert_eq!(summary.accepted, want.accepted, "accepted events");
    assert_eq!(summary.duplicates, want.duplicates, "duplicates");
    // The workload must exercise what it claims to.
    assert!(!want.alerts.is_empty(), "no alerts in the workload");
    assert!(
        want.orders.len() > 50,
        "too few orders: {}",
        want.orders.len()
    );
}

#[test]
fn default_workload_single_stream_matches_reference() {
    check(
        &GenConfig {
            events: 20_000,
            ..GenConfig::default()
        },
        1,
        1,
        10,
    );
}

/// Over a year of events: baskets expire 90 days after payment, in the middle of the run.
#[test]
fn baskets_expire_after_ninety_days() {
    let gen = GenConfig {
        events: 8_000,
        seed: 5,
        skus: 60,
        members: 200,
        concurrency: 50,
        mean_gap_ms: 4_000_000, // ~46 min: ~1 year over the run
        ..GenConfig::default()
    };
    let topics = Topics::default();
    let streams = partition(&generate(&gen), &topics, 2);
    let want = compute(&payloads(&streams), Config::default());
    let all_time = compute(
        &payloads(&streams),
        Config {
            basket_window_ms: u64::MAX / 4,
            ..Config::default()
        },
    );
    let weight = |v: &shopflow_reference::Views| -> u64 {
        v.also_bought
            .values()
            .flat_map(|r| r.items.iter().map(|i| i.1))
            .sum()
    };
    assert!(
        weight(&want) > 0 && weight(&want) < weight(&all_time),
        "the workload must have both current and expired baskets ({} vs {})",
        weight(&want),
        weight(&all_time)
    );
    check(&gen, 2, 2, 10);
}

#[test]
fn every_dead_letter_reason_occurs_and_matches() {
    let gen = GenConfig {
        events: 10_000,
        bad_rate: 0.05,
        seed: 3,
        ..GenConfig::default()
    };
    let topics = Topics::default();
    let streams = partition(&generate(&gen), &topics, 2);
    let want = compute(&payloads(&streams), Config::default());
    for reason in shopflow_model::DeadLetterReason::ALL {
        assert!(
            want.dead_letters.iter().any(|d| d.2 == reason),
            "the workload has no {reason} dead letter"
        );
    }
    check(&gen, 2, 2, 10);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(env_or("SHOPFLOW_EQUIVALENCE_CASES", 8)))]

    #[test]
    fn generated_workloads_match_reference(
        seed in any::<u64>(),
        events in 2_000usize..8_000,
        partitions in 1i32..4,
        workers in 1usize..3,
        threshold in prop_oneof![Just(10i64), 1i64..40],
        bad_rate in 0.0f64..0.08,
        late_rate in 0.0f64..0.2,
        skus in 20u64..400,
        mean_gap_ms in prop_oneof![Just(200u64), 1_000u64..3_000_000],
        cap in prop_oneof![Just(50usize), 2usize..8],
    ) {
        let gen = GenConfig {
            seed,
            events,
            bad_rate,
            late_rate,
            skus,
            members: 300,
            concurrency: 100,
            mean_gap_ms,
            ..GenConfig::default()
        };
        check_with(&gen, partitions, workers, threshold, cap);
    }
}

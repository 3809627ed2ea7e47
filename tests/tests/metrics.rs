//! The Prometheus metrics of an in-process run agree with the run's own totals and with
//! what the sinks hold.

use std::collections::BTreeMap;

use shopflow_api::metrics::Registry;
use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_model::DeadLetterReason;
use shopflow_pipelines::PipelineConfig;
use shopflow_reference::{compute, Config};
use shopflow_tests::{partition, payloads, run_in_memory_metered};

/// Every sample of metric `name` as (labels, value); histograms give their count.
fn samples(registry: &Registry, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            let value = m.get_counter().get_value()
                + m.get_gauge().get_value()
                + m.get_histogram().get_sample_count() as f64;
            (labels, value)
        })
        .collect()
}

fn value(registry: &Registry, name: &str) -> f64 {
    let s = samples(registry, name);
    assert_eq!(s.len(), 1, "{name}: {s:?}");
    s[0].1
}

fn labelled(registry: &Registry, name: &str, label: &str, want: &str) -> f64 {
    samples(registry, name)
        .into_iter()
        .find(|(l, _)| l.get(label).map(String::as_str) == Some(want))
        .unwrap_or_else(|| panic!("{name}{{{label}={want:?}}} missing"))
        .1
}

#[test]
fn metrics_match_the_run_summary_and_the_sinks() {
    let gen = GenConfig {
        events: 10_000,
        bad_rate: 0.05,
        duplicate_rate: 0.02,
        seed: 3,
        ..GenConfig::default()
    };
    let topics = Topics::default();
    let streams = partition(&generate(&gen), &topics, 2);
    let want = compute(&payloads(&streams), Config::default());
    let per_stream: Vec<_> = streams
        .iter()
        .map(|(id, m)| (id.clone(), m.len() as f64))
        .collect();
    let total: usize = streams.iter().map(|(_, m)| m.len()).sum();
    let registry = Registry::new();
    let config = PipelineConfig {
        workers: 2,
        poll_batch: 257,
        ..PipelineConfig::default()
    };
    let (store, summary) = run_in_memory_metered(streams, config, &registry);

    // Messages read, per topic and partition.
    assert_eq!(summary.messages, total as u64);
    let events_in = samples(&registry, "shopflow_events_in_total");
    assert_eq!(events_in.len(), per_stream.len(), "{events_in:?}");
    for (id, n) in &per_stream {
        let got = events_in
            .iter()
            .find(|(l, _)| l["topic"] == id.topic && l["partition"] == id.partition.to_string())
            .unwrap_or_else(|| panic!("no events_in for {id:?}"))
            .1;
        assert_eq!(got, *n, "{id:?}");
        // The memory source is read to its end: nothing left.
        let lag = samples(&registry, "shopflow_consumer_lag_messages")
            .into_iter()
            .find(|(l, _)| l["topic"] == id.topic && l["partition"] == id.partition.to_string())
            .unwrap_or_else(|| panic!("no consumer lag for {id:?}"))
            .1;
        assert_eq!(lag, 0.0, "{id:?}");
    }
    let sum: f64 = events_in.iter().map(|(_, v)| v).sum();
    assert_eq!(sum, total as f64);

    // Accepted, duplicates, late: as the run counted them.
    assert_eq!(
        value(&registry, "shopflow_events_accepted_total"),
        summary.accepted as f64
    );
    assert_eq!(summary.accepted, want.accepted);
    assert_eq!(
        value(&registry, "shopflow_duplicates_total"),
        summary.duplicates as f64
    );
    assert!(summary.duplicates > 0, "the workload has duplicates");
    assert_eq!(
        value(&registry, "shopflow_late_events_total"),
        summary.late as f64
    );
    assert!(summary.late > 0, "the workload has late events");

    // Dead letters by reason: as written to the dead-letter log, and as the reference
    // model finds them; every reason is listed.
    let written = store.read(|s| s.dead_letters.clone());
    assert_eq!(written.len() as u64, summary.dead_letters);
    for reason in DeadLetterReason::ALL {
        let got = labelled(
            &registry,
            "shopflow_dead_letters_total",
            "reason",
            reason.as_str(),
        );
        let in_log = written.iter().filter(|d| d.reason == reason).count();
        let in_reference = want.dead_letters.iter().filter(|d| d.2 == reason).count();
        assert_eq!(got, in_log as f64, "{reason}");
        assert_eq!(in_log, in_reference, "{reason}");
        assert!(got > 0.0, "the workload has no {reason} dead letter");
    }
    let total_dead: f64 = samples(&registry, "shopflow_dead_letters_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total_dead, summary.dead_letters as f64);

    // The frontier ends at the final as_of, the largest event time.
    let as_of = store.read(|s| s.as_of).expect("as_of");
    assert_eq!(Some(as_of), want.as_of);
    assert_eq!(value(&registry, "shopflow_frontier_ms"), as_of as f64);
    assert_eq!(
        value(&registry, "shopflow_frontier_lag_event_time_seconds"),
        0.0
    );
    assert!(value(&registry, "shopflow_frontier_lag_wall_clock_seconds").is_finite());

    // The sink writer: one memory write per view batch, the dead letters, ready.
    assert_eq!(
        labelled(&registry, "shopflow_sink_as_of_ms", "sink", "memory"),
        as_of as f64
    );
    assert_eq!(value(&registry, "shopflow_ready"), 1.0);
    let rows_sum: f64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "shopflow_sink_batch_rows")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "sink" && l.value() == "dead_letters")
        })
        .map(|m| m.get_histogram().get_sample_sum())
        .sum();
    assert_eq!(rows_sum, summary.dead_letters as f64);
    for sink in ["memory", "alerts", "dead_letters"] {
        assert!(
            labelled(
                &registry,
                "shopflow_sink_write_duration_seconds",
                "sink",
                sink
            ) > 0.0,
            "{sink} writes are timed"
        );
        assert_eq!(
            labelled(
                &registry,
                "shopflow_sink_write_failures_total",
                "sink",
                sink
            ),
            0.0
        );
    }
}

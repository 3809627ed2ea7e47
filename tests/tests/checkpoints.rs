//! Checkpoints (SPEC §7), in process: a run that continues from a checkpoint serves what
//! one uninterrupted run serves, whatever moment the checkpoint describes; a damaged or
//! foreign checkpoint is skipped for an older one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_pipelines::checkpoint::{self, CheckpointConfig, Restore, Snapshot};
use shopflow_pipelines::PipelineConfig;
use shopflow_reference::{compute, Config, Views};
use shopflow_sinks::MemoryStore;
use shopflow_tests::{partition, payloads, run_into, SinkContents, Stream};

/// A fresh state directory under the target's temporary directory.
fn state_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("checkpoints-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the state directory");
    dir
}

fn config(workers: usize, checkpoints: CheckpointConfig) -> PipelineConfig {
    PipelineConfig {
        workers,
        poll_batch: 257,
        checkpoints: Some(checkpoints),
        ..PipelineConfig::default()
    }
}

/// The first `fraction` of each stream.
fn prefix(streams: &[Stream], fraction: f64) -> Vec<Stream> {
    streams
        .iter()
        .map(|(id, msgs)| {
            let n = (msgs.len() as f64 * fraction) as usize;
            (id.clone(), msgs[..n].to_vec())
        })
        .collect()
}

/// Continues `snapshot` over `streams` (the whole log) as a restart does: the store from
/// the checkpoint's image, each stream from its offset. Returns the store and the messages
/// the restarted run read.
fn resume(
    snapshot: Snapshot,
    streams: &[Stream],
    workers: usize,
    dir: &Path,
) -> (MemoryStore, u64) {
    let store = MemoryStore::new();
    assert_eq!(
        snapshot.stores.memory.len(),
        1,
        "one in-process store image"
    );
    store
        .restore(&snapshot.stores.memory[0])
        .expect("restore the store image");
    let offsets = snapshot.offsets();
    let mut config = config(workers, CheckpointConfig::new(dir));
    config.restore = Some(Arc::new(Restore::new(snapshot)));
    let summary = run_into(&store, streams.to_vec(), config, offsets);
    (store, summary.messages)
}

fn check(store: &MemoryStore, streams: &[Stream], want: &Views, what: &str) {
    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    let got = SinkContents::from_memory(store, &ids);
    if let Err(e) = got.compare(want) {
        panic!("{what}: the views differ from one run over the whole log:\n{e}");
    }
}

fn workload(events: usize, seed: u64, partitions: i32) -> (Vec<Stream>, Views, u64) {
    let log = generate(&GenConfig {
        events,
        seed,
        ..GenConfig::default()
    });
    let streams = partition(&log, &Topics::default(), partitions);
    let want = compute(&payloads(&streams), Config::default());
    let total = streams.iter().map(|(_, m)| m.len() as u64).sum();
    (streams, want, total)
}

/// `run --file PREFIX --bounded --state-dir D`, then the whole log with the same `D`: the
/// second run reads only what follows the prefix and ends where one run over the whole
/// log ends (every view, ledger, alert and dead letter).
#[test]
fn prefix_then_whole_log_equals_one_run() {
    for (partitions, workers, fraction) in [(1, 2, 0.5), (3, 2, 0.37), (4, 1, 0.8)] {
        let (streams, want, total) = workload(12_000, 11 + partitions as u64, partitions);
        let dir = state_dir(&format!("prefix-{partitions}-{workers}"));
        let first = prefix(&streams, fraction);
        let read_first: u64 = first.iter().map(|(_, m)| m.len() as u64).sum();
        let mut cfg = CheckpointConfig::new(&dir);
        cfg.interval = std::time::Duration::from_secs(3600);
        cfg.every_messages = 0;
        run_into(
            &MemoryStore::new(),
            first,
            config(workers, cfg),
            BTreeMap::new(),
        );
        let (path, snapshot) = checkpoint::load_newest(&dir, workers)
            .expect("read the state directory")
            .expect("a checkpoint at the end of the bounded prefix");
        assert_eq!(
            snapshot.messages(),
            read_first,
            "the last checkpoint of a bounded run is at its end ({})",
            path.display()
        );
        let (store, read) = resume(snapshot, &streams, workers, &dir);
        assert_eq!(read, total - read_first, "the restart reads only the tail");
        check(
            &store,
            &streams,
            &want,
            &format!("{partitions} partitions, {workers} workers, prefix {fraction}"),
        );
    }
}

/// Checkpoints taken while the run reads (on a message count, with two workers sharing
/// four partitions): a restart from each of them ends where one run ends.
#[test]
fn a_restart_from_any_checkpoint_equals_one_run() {
    let (streams, want, total) = workload(16_000, 5, 4);
    let dir = state_dir("periodic");
    let mut cfg = CheckpointConfig::new(&dir);
    cfg.every_messages = 1_500;
    cfg.keep = 100;
    let first = MemoryStore::new();
    run_into(&first, streams.clone(), config(2, cfg), BTreeMap::new());
    // After each checkpoint the store continued from its image in the file: what it held
    // then is on the file's pages, what came after in memory, and it answers as one run.
    let (on_pages, in_memory) = first.read(|s| {
        let tables = [
            (s.orders.on_pages(), s.orders.in_memory()),
            (s.sales_facts.on_pages(), s.sales_facts.in_memory()),
            (s.settlements.on_pages(), s.settlements.in_memory()),
        ];
        tables
            .iter()
            .fold((0, 0), |(p, m), (tp, tm)| (p + tp, m + tm))
    });
    assert!(
        on_pages > 0 && in_memory < on_pages,
        "{on_pages} rows on checkpoint pages, {in_memory} in memory"
    );
    check(&first, &streams, &want, "the run that took the checkpoints");
    let files = checkpoint::list(&dir).expect("list the checkpoints");
    let mid: Vec<_> = files
        .iter()
        .filter_map(|(_, p)| checkpoint::decode(&std::fs::read(p).expect("read")).ok())
        .filter(|s| s.messages() < total)
        .collect();
    assert!(
        mid.len() >= 3,
        "expected several checkpoints taken while reading, got {} of {}",
        mid.len(),
        files.len()
    );
    for s in mid {
        let (seq, at) = (s.seq, s.messages());
        let only = state_dir(&format!("periodic-{seq}"));
        let (store, read) = resume(s, &streams, 2, &only);
        assert_eq!(
            read,
            total - at,
            "checkpoint {seq}: the restart reads only the tail"
        );
        check(
            &store,
            &streams,
            &want,
            &format!("restart from checkpoint {seq}"),
        );
    }
}

/// A truncated, corrupt or other-version newest checkpoint is skipped for the previous
/// one; a checkpoint of another worker count too; with none usable, the run starts over.
#[test]
fn damaged_checkpoints_fall_back_to_older_ones() {
    let (streams, want, _) = workload(6_000, 9, 2);
    let dir = state_dir("damaged");
    let mut cfg = CheckpointConfig::new(&dir);
    cfg.every_messages = 1_000;
    cfg.keep = 4;
    run_into(
        &MemoryStore::new(),
        streams.clone(),
        config(2, cfg),
        BTreeMap::new(),
    );
    let files = checkpoint::list(&dir).expect("list");
    assert_eq!(files.len(), 4, "old checkpoints are pruned to the last 4");
    let seqs: Vec<u64> = files.iter().map(|(s, _)| *s).collect();
    let newest = |workers| {
        checkpoint::load_newest(&dir, workers)
            .expect("read the state directory")
            .map(|(_, s)| s.seq)
    };
    assert_eq!(newest(2), Some(seqs[0]));
    assert_eq!(newest(3), None, "a checkpoint of 2 workers does not fit 3");

    // Truncated: the header promises more than the file holds.
    let bytes = std::fs::read(&files[0].1).expect("read");
    std::fs::write(&files[0].1, &bytes[..bytes.len() / 2]).expect("truncate");
    assert_eq!(newest(2), Some(seqs[1]));
    // Corrupt: one byte of the state flipped.
    let mut bytes = std::fs::read(&files[1].1).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x40;
    std::fs::write(&files[1].1, &bytes).expect("corrupt");
    let reason = checkpoint::decode(&bytes).expect_err("a flipped byte is detected");
    assert!(reason.contains("checksum"), "{reason}");
    assert_eq!(newest(2), Some(seqs[2]));
    // Another format version (an older or newer build): refused with the versions named.
    let mut bytes = std::fs::read(&files[2].1).expect("read");
    let v = checkpoint::MAGIC.len();
    bytes[v..v + 4].copy_from_slice(&(checkpoint::FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&files[2].1, &bytes).expect("rewrite");
    let reason = checkpoint::decode(&bytes).expect_err("another version is refused");
    assert!(reason.contains("version"), "{reason}");
    assert_eq!(newest(2), Some(seqs[3]));

    // The oldest still restores to the right answer.
    let (_, s) = checkpoint::load_newest(&dir, 2)
        .expect("read")
        .expect("one left");
    let (store, _) = resume(s, &streams, 2, &state_dir("damaged-restore"));
    check(
        &store,
        &streams,
        &want,
        "restart from the oldest checkpoint",
    );

    // Not a checkpoint at all.
    std::fs::write(&files[3].1, b"hello").expect("overwrite");
    assert_eq!(newest(2), None, "nothing usable: the run starts over");
}

//! Restarts of the `shopflow` binary from checkpoints, file source and embedded stores:
//! `run --file PREFIX --bounded --state-dir D`, then `run --file FULL --state-dir D` (FULL
//! starts with PREFIX) reads only the lines after PREFIX and serves what one run over FULL
//! serves, with the same alerts and dead letters; a damaged checkpoint is named, skipped,
//! and the run starts over with the same result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{admin_token, answers, dead_letters, same_answers, serve};

use shopflow_gen::{generate, GenConfig};

const SECRET: &str = "restart-test-secret-0123456789abcdef";

fn dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("restart-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a test directory");
    d
}

fn shopflow(file: &Path, out: &Path, state: Option<&Path>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args([
        "run",
        "--bounded",
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
    ])
    .arg("--file")
    .arg(file)
    .arg("--out-dir")
    .arg(out)
    .env("SHOPFLOW_JWT_SECRET", SECRET)
    .env_remove("SHOPFLOW_KAFKA_BROKERS")
    .env_remove("SHOPFLOW_REDIS_URL")
    .env_remove("SHOPFLOW_MYSQL_URL")
    .env_remove("SHOPFLOW_CLICKHOUSE_URL");
    if let Some(s) = state {
        c.arg("--state-dir").arg(s);
    }
    c
}

/// Runs to the end and exits; its log (stderr).
fn run_to_end(mut c: Command) -> String {
    let out = c.arg("--exit-when-done").output().expect("run shopflow");
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "shopflow failed: {log}");
    log
}

/// A 30,000-event workload as FULL and its first `cut(len)` lines as PREFIX.
fn workload(dir: &Path, cut: fn(usize) -> usize) -> (PathBuf, PathBuf, usize, usize) {
    let log = generate(&GenConfig {
        events: 30_000,
        seed: 23,
        ..GenConfig::default()
    });
    let write = |name: &str, n: usize| {
        let path = dir.join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        for m in &log[..n] {
            f.write_all(&m.payload).expect("write");
            f.write_all(b"\n").expect("write");
        }
        f.flush().expect("flush");
        path
    };
    let cut = cut(log.len());
    (
        write("prefix.jsonl", cut),
        write("full.jsonl", log.len()),
        cut,
        log.len(),
    )
}

#[test]
fn prefix_then_full_serves_what_one_run_serves() {
    prefix_then_full("prefix", |n| n * 3 / 5);
}

/// A prefix shorter than one round of reading (16,384 lines from a file): its checkpoint
/// at the end of the input must still be taken.
#[test]
fn a_prefix_read_in_one_round_is_continued_too() {
    prefix_then_full("short-prefix", |_| 5_000);
}

fn prefix_then_full(name: &str, cut: fn(usize) -> usize) {
    let d = dir(name);
    let (prefix, full, cut, total) = workload(&d, cut);
    let token = admin_token(SECRET);

    // One run over FULL.
    let one = d.join("one");
    let (mut single, port, _) = serve(shopflow(&full, &one, None));
    let want = answers(port, &token);
    single.kill().expect("stop");
    single.wait().expect("reap");
    assert!(
        want.iter().filter(|(_, s, _)| *s == 200).count() > 50,
        "the sample must mostly hit known keys: {want:?}"
    );

    // PREFIX with a state directory, then FULL with the same one.
    let two = d.join("two");
    let state = d.join("state");
    run_to_end(shopflow(&prefix, &two, Some(&state)));
    let (mut resumed, port, log) = serve(shopflow(&full, &two, Some(&state)));
    assert!(
        log.contains(&format!("{cut} messages already read")),
        "the restart continues the checkpoint at line {cut}:\n{log}"
    );
    assert!(
        log.contains(&format!("finished: {} messages", total - cut)),
        "the restart reads only the lines after the prefix:\n{log}"
    );
    assert!(
        log.contains(&format!("from line {cut} (byte")),
        "the restart seeks to the checkpoint's byte rather than counting lines:\n{log}"
    );
    let got = answers(port, &token);
    resumed.kill().expect("stop");
    resumed.wait().expect("reap");
    same_answers(&want, &got, "one run vs prefix then full");
    let alerts = |dir: &Path| std::fs::read(dir.join("alerts.jsonl")).expect("alerts");
    assert!(!alerts(&one).is_empty(), "the workload raises alerts");
    assert!(
        alerts(&one) == alerts(&two),
        "alerts.jsonl differs between one run and prefix then full"
    );
    let dl = dead_letters(&one.join("dlq.jsonl"));
    assert!(!dl.is_empty(), "the workload has bad input");
    assert_eq!(dl, dead_letters(&two.join("dlq.jsonl")), "dead letters");
}

#[test]
fn a_damaged_checkpoint_is_named_skipped_and_the_run_starts_over() {
    let d = dir("damaged");
    let (prefix, full, _, total) = workload(&d, |n| n * 3 / 5);
    let one = d.join("one");
    run_to_end(shopflow(&full, &one, None));

    let two = d.join("two");
    let state = d.join("state");
    run_to_end(shopflow(&prefix, &two, Some(&state)));
    let files: Vec<PathBuf> = std::fs::read_dir(&state)
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one checkpoint, at the end of the prefix: {files:?}"
    );
    let bytes = std::fs::read(&files[0]).expect("read");
    std::fs::write(&files[0], &bytes[..bytes.len() - 100]).expect("truncate");
    let log = run_to_end(shopflow(&full, &two, Some(&state)));
    let name = files[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_string();
    let skipped = log
        .lines()
        .find(|l| l.contains("checkpoint skipped"))
        .unwrap_or_else(|| panic!("no line about the damaged checkpoint:\n{log}"));
    assert!(
        skipped.contains(&name) && skipped.contains("truncated"),
        "the line names the file and the reason: {skipped}"
    );
    assert!(
        log.contains("every stream is read from its start")
            && log.contains(&format!("finished: {total} messages")),
        "with no usable checkpoint the run reads everything:\n{log}"
    );
    assert!(
        std::fs::read(one.join("alerts.jsonl")).expect("alerts")
            == std::fs::read(two.join("alerts.jsonl")).expect("alerts"),
        "alerts after starting over"
    );
}

/// A sink that lost what the checkpoint says it holds (here: Redis under another prefix,
/// empty) makes the writer refuse to continue. The worker that writes stops, after it had
/// already published the end of its (empty) input; the other must stop too rather than
/// wait for it in the end-of-input checkpoint, and the run must say the writer's reason.
#[test]
fn a_restart_onto_a_sink_that_lost_data_stops_and_says_why() {
    let d = dir("lost-sink");
    let (prefix, full, _, _) = workload(&d, |n| n / 2);
    let redis = shopflow_tests::service_env("SHOPFLOW_REDIS_URL");
    let prefix_key = |p: &str| format!("restart-lost-{p}-{}", std::process::id());
    let state = d.join("state");
    let with_redis = |file: &Path, p: &str| {
        let mut c = shopflow(file, &d.join("out"), Some(&state));
        c.args(["--redis", &redis, "--redis-prefix", &prefix_key(p)]);
        c
    };
    run_to_end(with_redis(&prefix, "a"));
    let started = std::time::Instant::now();
    let mut c = with_redis(&full, "b");
    let mut child = c
        .arg("--exit-when-done")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run shopflow");
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the run hung instead of stopping on the writer's error");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log)
        .expect("read the log");
    assert!(!status.success(), "the run must fail:\n{log}");
    assert!(
        log.contains("Redis lost data since"),
        "the run names the writer's reason, not only that a worker stopped:\n{log}"
    );
}

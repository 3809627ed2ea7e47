//! Chaos: many SIGKILLs at random points of a run, then a comparison of every sink with the
//! reference model.
//!
//! Every run takes checkpoints (every 1,500 messages) into one state directory and starts
//! from the newest valid one, so kills land before, during and after checkpoint writes
//! and restarts replay only the tail; one kill in three waits for a checkpoint being
//! written (its temporary file) and kills then.
//!
//! A generated log (with bad events, duplicates and late events) is published to Kafka in
//! three parts, cut where every later message has a later `ts` (see [`clean_parts`]), each
//! part before its share of the kills, so the sinks cannot reach the end of the log early.
//! `shopflow run --bounded` is started against Redis, MariaDB, ClickHouse and Kafka and
//! killed with SIGKILL again and again: half of the kills when the MySQL ledger's `as_of`
//! passes a random point between where it stands and the end of what is published (so the
//! sinks are left part-written, further on each time), half after a random delay from the
//! start, up to a little past the longest run so far (so they land anywhere: while
//! connecting, while a restarted run replays what the sinks already hold, inside a sink's
//! write). At least a third of the kills must leave
//! the sinks part-written, and at least two runs must have written something new. A last
//! run finishes the log. Then Redis, the MySQL ledgers, the ClickHouse facts and rollups,
//! and the alerts and dead-letter topics must equal the reference model: nothing lost,
//! nothing written twice.
//!
//! Size and kills by environment (CI uses the defaults):
//! - `SHOPFLOW_CHAOS_EVENTS` (default 20000) messages in the log,
//! - `SHOPFLOW_CHAOS_KILLS` (default 6) kills,
//! - `SHOPFLOW_CHAOS_SEED` the seed of the kill schedule (default: from the clock, printed,
//!   so every run tries other points; set it to repeat a failure).
//!
//! It also measures recovery: a final replay of the whole log into sinks that already
//! hold it, which is what a restart after a crash at the end of the log does; the figure is
//! printed per million events.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_reference::{compute, Config};
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_tests::{
    env_or, fresh_ledger, fresh_sales, partition, payloads, publish, read_sinks, service_env,
    unique_name,
};

/// Where the child process writes.
struct Targets {
    /// The checkpoints' state directory.
    state_dir: std::path::PathBuf,
    brokers: String,
    redis: String,
    mysql: String,
    clickhouse: String,
    clickhouse_db: String,
    unique: String,
}

fn shopflow(t: &Targets) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args(["run", "--bounded", "--exit-when-done", "--workers", "2"])
        .args([
            "--kafka", &t.brokers, "--redis", &t.redis, "--mysql", &t.mysql,
        ])
        .args([
            "--clickhouse",
            &t.clickhouse,
            "--clickhouse-db",
            &t.clickhouse_db,
        ])
        .args(["--topic-prefix", &format!("{}.", t.unique)])
        .args(["--redis-prefix", &format!("{}:", t.unique)])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--kafka-fetch-kb", "4"])
        .arg("--state-dir")
        .arg(&t.state_dir)
        .args([
            "--checkpoint-every-messages",
            "1500",
            "--checkpoints-kept",
            "3",
        ])
        .env(
            "SHOPFLOW_JWT_SECRET",
            "chaos-test-secret-0123456789abcdef0123",
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// How one run ended.
#[derive(Debug)]
struct Kill {
    /// "as_of" (when the ledger passed a point), "delay" (a random time after the start) or
    /// "checkpoint" (while a checkpoint was being written).
    how: &'static str,
    /// Milliseconds after the start.
    after_ms: u128,
    /// The ledger's `as_of` at the kill (None: nothing written yet).
    ledger_as_of: Option<u64>,
    /// The run had already finished by itself.
    finished_first: bool,
    /// When the run wrote its first batch beyond where the previous run left the ledger
    /// (ms after the start: the replay of what the sinks already held), if it got there.
    caught_up_ms: Option<u128>,
}

/// Whether a checkpoint is being written in `dir` (its temporary file exists).
fn writing_checkpoint(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    })
}

fn kill(child: &mut Child) {
    // SIGKILL: no destructor, flush or handler runs.
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

/// Cuts the log into about `n` parts at clean points: every message after a cut has a later
/// `ts` than every message before it, so a bounded run that ends at a cut (its frontier then
/// jumps to the largest time seen) applies nothing the full log would apply at another time.
/// Returns each part's end index and its largest `ts`.
fn clean_parts(times: &[Option<u64>], n: usize) -> Vec<(usize, u64)> {
    let mut suffix_min = vec![u64::MAX; times.len() + 1];
    for i in (0..times.len()).rev() {
        suffix_min[i] = suffix_min[i + 1].min(times[i].unwrap_or(u64::MAX));
    }
    let mut parts = Vec::new();
    let mut prefix_max = 0;
    let mut next_target = times.len() / n;
    for (i, t) in times.iter().enumerate() {
        prefix_max = prefix_max.max(t.unwrap_or(0));
        if i + 1 >= next_target && i + 1 < times.len() && prefix_max < suffix_min[i + 1] {
            parts.push((i + 1, prefix_max));
            next_target = (parts.len() + 1) * times.len() / n;
        }
    }
    parts.push((times.len(), prefix_max));
    parts
}

#[test]
fn many_sigkills_lose_and_duplicate_nothing() {
    let events: usize = env_or("SHOPFLOW_CHAOS_EVENTS", 20_000);
    let kills: usize = env_or("SHOPFLOW_CHAOS_KILLS", 6);
    let seed: u64 = env_or(
        "SHOPFLOW_CHAOS_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    println!("chaos: {events} events, {kills} kills, SHOPFLOW_CHAOS_SEED={seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let brokers = service_env("SHOPFLOW_KAFKA_BROKERS");
    let redis_url = service_env("SHOPFLOW_REDIS_URL");
    let unique = unique_name("chaos");
    let topics = Topics::with_prefix(&format!("{unique}."));
    let rt = shopflow_sinks::io_runtime();
    let log = generate(&GenConfig {
        events,
        seed: 31,
        bad_rate: 0.03,
        skus: 300,
        members: 500,
        concurrency: 200,
        late_catalog_rate: 0.1,
        // About 100 days for 40k events: the ledgers span many weeks and months.
        mean_gap_ms: 220_000,
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, 2);
    let want = compute(&payloads(&streams), Config::default());
    let final_as_of = want.as_of.expect("events");
    let times: Vec<Option<u64>> = log
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload)
                .ok()
                .and_then(|v| v["ts"].as_u64())
        })
        .collect();
    let first_ts = times.iter().flatten().copied().min().expect("timestamps");
    let parts = clean_parts(&times, 3);
    println!("publishing in {} parts: {parts:?}", parts.len());

    let redis = rt
        .block_on(RedisViews::connect(&redis_url, &format!("{unique}:")))
        .expect("redis");
    let (ledger, admin, db) = fresh_ledger(&rt, &unique);
    let (sales, ch_url, ch_db) = fresh_sales(&rt, &unique);
    let state_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&unique);
    let _ = std::fs::remove_dir_all(&state_dir);
    let targets = Targets {
        state_dir: state_dir.clone(),
        brokers: brokers.clone(),
        redis: redis_url.clone(),
        mysql: shopflow_sinks::mysql::url_with_database(&admin, &db),
        clickhouse: ch_url.clone(),
        clickhouse_db: ch_db.clone(),
        unique: unique.clone(),
    };
    let ledger_as_of = || rt.block_on(ledger.as_of()).expect("read ledger as_of");

    let mut history: Vec<Kill> = Vec::new();
    let mut published = 0;
    for k in 0..kills {
        // The log is published in parts, each part before its share of the kills, so the
        // sinks cannot reach the end of the log before the last part's kills.
        let part = (k * parts.len() / kills).min(parts.len() - 1);
        let (end, part_end_ts) = parts[part];
        if published < end {
            let started = Instant::now();
            publish(
                &rt,
                &brokers,
                &topics,
                &partition(&log[published..end], &topics, 2),
                2,
            );
            println!(
                "published messages {published}..{end} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            published = end;
        }
        let previous = ledger_as_of();
        let mut child = shopflow(&targets).spawn().expect("start shopflow");
        let start = Instant::now();
        let deadline = start + Duration::from_secs(600);
        // Two kinds of kill, in turn: when the ledger passes a random point between where
        // it is and the end of the log (so the sinks are left part-written, further on
        // each time), and at a random moment from the start (anywhere: while connecting,
        // while the restart replays what the sinks hold, inside a sink's write).
        let how = ["as_of", "delay", "checkpoint"][k % 3];
        let from = previous.unwrap_or(first_ts);
        let point = from + part_end_ts.saturating_sub(from) / 20 * rng.random_range(1..12);
        // Up to a little past the longest run so far (at least 6 s), so on a large log
        // these kills also land after the replay, inside the writing.
        let longest = history.iter().map(|h| h.after_ms).max().unwrap_or(0) as u64;
        let delay = Duration::from_millis(rng.random_range(20..(longest * 6 / 5).max(6_000)));
        let mut caught_up: Option<Instant> = None;
        let finished_first = loop {
            let now = ledger_as_of();
            if caught_up.is_none() && now > previous {
                caught_up = Some(Instant::now());
            }
            let due = match how {
                "as_of" => now.is_some_and(|t| t >= point),
                "checkpoint" => writing_checkpoint(&state_dir),
                _ => start.elapsed() >= delay,
            };
            if due {
                kill(&mut child);
                break false;
            }
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "shopflow failed on its own: {status}");
                break true;
            }
            assert!(
                Instant::now() < deadline,
                "run {k} made no progress in 600 s"
            );
            if how != "checkpoint" {
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        let after = ledger_as_of();
        history.push(Kill {
            how,
            after_ms: start.elapsed().as_millis(),
            ledger_as_of: after,
            finished_first,
            caught_up_ms: caught_up.map(|c| (c - start).as_millis()),
        });
        let h = &history[k];
        println!(
            "kill {k}: {:<14} after {:>6} ms, ledger as_of {:?} (was {previous:?}),              first new batch after {:?} ms{}",
            h.how,
            h.after_ms,
            h.ledger_as_of,
            h.caught_up_ms,
            if h.finished_first { ", finished before the kill" } else { "" }
        );
    }
    let mid_stream = history
        .iter()
        .filter(|h| !h.finished_first && h.ledger_as_of < Some(final_as_of))
        .count();
    // A restart's first write is the catch-up image, which can reach the end of what is
    // published in one step; kills after that hit replays (which must be harmless too).
    assert!(
        mid_stream >= (kills / 3).max(1),
        "only {mid_stream} of {kills} kills left the sinks part-written (seed {seed}): the \
         test did not test what it says"
    );
    let progressed = history.iter().filter(|h| h.caught_up_ms.is_some()).count();
    assert!(
        progressed >= 2,
        "only {progressed} runs wrote past where the previous one stopped (seed {seed})"
    );

    if published < log.len() {
        publish(
            &rt,
            &brokers,
            &topics,
            &partition(&log[published..], &topics, 2),
            2,
        );
    }
    // The last run finishes the log.
    let status = shopflow(&targets).status().expect("restart shopflow");
    assert!(status.success(), "the last run failed: {status}");
    assert_eq!(
        ledger_as_of(),
        Some(final_as_of),
        "the ledger is not at the end"
    );

    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    // Reads every sink. Each read also asserts that nothing is stored twice: no alert or
    // dead letter, no ledger entry id (and every `final` flag matches as_of), no ClickHouse
    // fact even before merges.
    let read_everything = || {
        let mut got = read_sinks(&brokers, &redis, &topics, &ids, &streams, &rt);
        got.read_members(&redis, &rt);
        got.read_ledger(&ledger, &rt);
        got.read_sales(&sales, &rt);
        got
    };
    if let Err(e) = read_everything().compare(&want) {
        panic!("after {kills} SIGKILLs (seed {seed}) the sinks differ from the reference:\n{e}");
    }

    // Recovery: a restart from the last checkpoint (the end of the log) changes nothing…
    let started = Instant::now();
    let status = shopflow(&targets).status().expect("restart");
    assert!(status.success(), "the restart failed: {status}");
    println!(
        "recovery: a restart from the last checkpoint took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = read_everything().compare(&want) {
        panic!("a restart from the last checkpoint changed the sinks:\n{e}");
    }
    // …and neither does a replay of the whole log with no checkpoint (the state directory
    // lost), into sinks that hold it already.
    std::fs::remove_dir_all(&state_dir).expect("remove the state directory");
    let started = Instant::now();
    let status = shopflow(&targets).status().expect("replay");
    assert!(status.success(), "the replay failed: {status}");
    let replay = started.elapsed().as_secs_f64();
    println!(
        "recovery: replaying {} messages into caught-up sinks took {replay:.1} s \
         ({:.0} s per million messages)",
        log.len(),
        replay * 1e6 / log.len() as f64
    );
    if let Err(e) = read_everything().compare(&want) {
        panic!("a replay into caught-up sinks changed them:\n{e}");
    }

    rt.block_on(ledger.close());
    rt.block_on(ClickHouseSales::drop_database(&ch_url, &ch_db))
        .expect("drop ClickHouse test database");
    rt.block_on(MysqlLedger::drop_database(&admin, &db))
        .expect("drop test database");
}

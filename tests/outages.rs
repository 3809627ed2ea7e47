//! Outages (an integration test of the `shopflow` binary against real services of its own).
//!
//! The test starts a private Kafka broker (Nisshi with durable SQLite storage), Redis (with
//! its append-only file), MariaDB and ClickHouse with `deploy/local/up.sh` in a temporary
//! state dir on free ports, so stopping them disturbs no other test. It publishes a
//! generated log and runs `shopflow run --bounded` over it. As soon as the run reads it
//! stops Redis, then MariaDB, then ClickHouse, then the broker, each for
//! `SHOPFLOW_OUTAGE_SECS` (default 30 s); each next service is stopped just before the
//! previous one starts again, so the run only moves by what its output channel holds
//! between two outages and stays mid-stream through all four. During each outage:
//!
//! - `/readyz` answers 503, and `shopflow_sink_write_failures_total{sink}` (for the broker:
//!   `shopflow_source_errors_total`) grows on `/metrics`;
//! - once the pipeline has hit the failure, it stalls instead of buffering: no sink's
//!   `as_of` moves (neither in the writer's metrics nor in the stores that are up), at most
//!   one round of input per worker is read ([`STALL_READ_LIMIT`]) although more is left, and
//!   the process's resident memory grows by at most [`RSS_GROWTH_LIMIT`];
//!
//! and after it the run gets past the stall. The child's stderr must hold exactly one
//! "failing" warning and one recovery line per outage and no other warning. At the end the
//! run must finish, `/readyz` answer 200 again, and every sink equal the reference model,
//! nothing twice.
//!
//! `SHOPFLOW_OUTAGE_SERVICES` (e.g. `redis,mysql`), `SHOPFLOW_OUTAGE_EVENTS` and
//! `SHOPFLOW_KAFKA_STORAGE=memory` (no broker outage then) shorten local iterations.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shopflow_gen::{generate, GenConfig};
use shopflow_ingest::Topics;
use shopflow_reference::{compute, Config};
use shopflow_sinks::clickhouse::ClickHouseSales;
use shopflow_sinks::mysql::MysqlLedger;
use shopflow_sinks::redis::RedisViews;
use shopflow_tests::{partition, payloads, publish, read_sinks, unique_name};

/// Largest growth of the child's resident memory allowed while it is stalled by an outage,
/// measured from a few seconds into the outage (when the output channel is full and the
/// pipeline has stopped) to its end. Nothing should be allocated in proportion to the
/// outage's length then; 24 MiB covers allocator noise, the API answering this test, and
/// librdkafka topping up its prefetch (capped per partition). That the pipeline does not
/// read (and so cannot buffer) input meanwhile is checked directly on
/// `shopflow_events_in_total`.
const RSS_GROWTH_LIMIT: u64 = 24 << 20;

/// The broker's storage: `sqlite` (durable; needed for the broker outage), or what
/// `SHOPFLOW_KAFKA_STORAGE` says (`memory`, to iterate on the other outages with a broker
/// built without SQLite).
fn kafka_storage() -> String {
    std::env::var("SHOPFLOW_KAFKA_STORAGE").unwrap_or_else(|_| "sqlite".into())
}

/// The services to stop, in order: `SHOPFLOW_OUTAGE_SERVICES` (comma-separated) to iterate
/// on some; all four by default.
fn outage_services() -> Vec<&'static str> {
    let all = ["redis", "mysql", "clickhouse", "kafka"];
    match std::env::var("SHOPFLOW_OUTAGE_SERVICES") {
        Ok(v) => all
            .into_iter()
            .filter(|s| v.split(',').any(|x| x.trim() == *s))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

/// Most input messages the run may read while it is stalled (after the output channel is
/// full): worker 0, which sends the batches, blocks at once; the other worker can finish
/// one round of reading (`poll_batch`, 4096 messages) before it waits for the dataflow.
const STALL_READ_LIMIT: f64 = 2.0 * 4096.0;

/// The services of one test: `deploy/local/up.sh` in a state dir of its own, on free
/// ports. Dropping it stops them all and removes the dir.
struct Services {
    state: PathBuf,
    ports: [u16; 5],
    env: Vec<(String, String)>,
}

impl Services {
    fn scripts() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local")
    }

    fn start() -> Services {
        let state = std::env::temp_dir().join(unique_name("shopflow-outages-"));
        std::fs::create_dir_all(&state).expect("create the state dir");
        // Free ports: bind them all at once (so they differ), then release them.
        let listeners: Vec<TcpListener> = (0..5)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        drop(listeners);
        let mut me = Services {
            state,
            ports: ports.try_into().expect("five ports"),
            env: Vec::new(),
        };
        let out = me.script("up.sh", &[]);
        for line in String::from_utf8_lossy(&out).lines() {
            if let Some((k, v)) = line
                .strip_prefix("export ")
                .and_then(|kv| kv.split_once('='))
            {
                me.env.push((k.to_string(), v.to_string()));
            }
        }
        me
    }

    /// Runs `deploy/local/NAME ARGS` on this state dir; panics with its stderr on failure.
    fn script(&self, name: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(Self::scripts().join(name))
            .args(args)
            .env("SHOPFLOW_STATE", &self.state)
            .env("SHOPFLOW_KAFKA_STORAGE", kafka_storage())
            .env("SHOPFLOW_REDIS_PERSIST", "1")
            .env("SHOPFLOW_KAFKA_PORT", self.ports[0].to_string())
            .env("SHOPFLOW_REDIS_PORT", self.ports[1].to_string())
            .env("SHOPFLOW_MYSQL_PORT", self.ports[2].to_string())
            .env("SHOPFLOW_CLICKHOUSE_HTTP_PORT", self.ports[3].to_string())
            .env("SHOPFLOW_CLICKHOUSE_TCP_PORT", self.ports[4].to_string())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(
            out.status.success(),
            "{name} {args:?} failed (deploy/local/install.sh installs what it needs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn var(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("up.sh printed no {name}"))
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = Command::new(Self::scripts().join("down.sh"))
            .env("SHOPFLOW_STATE", &self.state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if std::thread::panicking() {
            eprintln!("outage test state (logs) kept in {}", self.state.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// The `shopflow run` child: killed when dropped; its stderr collected line by line.
struct Run {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn log(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    fn tail(&self) -> String {
        let log = self.log();
        log[log.len().saturating_sub(40)..].join("\n")
    }

    /// A plain HTTP/1.1 GET: (status, body), or `None` when nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Some((status, body.to_string()))
    }

    fn readyz(&self) -> Option<u16> {
        self.get("/readyz").map(|(s, _)| s)
    }

    fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        Metrics(body)
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for shopflow")
    }
}

/// `line` without terminal colour sequences (ESC [ … m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `/metrics` page.
struct Metrics(String);

impl Metrics {
    /// The sum of `name`'s samples whose labels contain `labels` (e.g. `sink="redis"`).
    fn sum(&self, name: &str, labels: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                (n == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// `shopflow_sink_as_of_ms` of every sink, as (sink, value) lines.
    fn as_ofs(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .lines()
            .filter(|l| l.starts_with("shopflow_sink_as_of_ms{"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

/// What the test reads from the stores that are up: (Redis, MySQL, ClickHouse) `as_of`,
/// `None` for the one that is down.
struct Stores {
    redis_url: String,
    redis_prefix: String,
    ledger: MysqlLedger,
    sales: ClickHouseSales,
}

impl Stores {
    /// A new connection: one made before Redis restarted may fail its next command.
    fn redis(&self, rt: &tokio::runtime::Runtime) -> RedisViews {
        rt.block_on(RedisViews::connect(&self.redis_url, &self.redis_prefix))
            .expect("connect to Redis")
    }

    fn as_ofs(&self, rt: &tokio::runtime::Runtime, down: &str) -> [Option<u64>; 3] {
        let read = |name: &str| name != down;
        [
            read("redis")
                .then(|| rt.block_on(self.redis(rt).as_of()).expect("Redis as_of"))
                .flatten(),
            read("mysql")
                .then(|| rt.block_on(self.ledger.as_of()).expect("MySQL as_of"))
                .flatten(),
            read("clickhouse")
                .then(|| rt.block_on(self.sales.as_of()).expect("ClickHouse as_of"))
                .flatten(),
        ]
    }
}

fn wait_until(what: &str, limit: Duration, run: &mut Run, mut done: impl FnMut(&mut Run) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(run) {
        if let Some(status) = run.exited() {
            panic!(
                "shopflow exited ({status}) while waiting for {what}:\n{}",
                run.tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            run.tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Measured figures of one outage, printed at the end.
#[derive(Debug)]
struct Figures {
    service: &'static str,
    down_s: f64,
    not_ready_after_s: f64,
    failing_after_s: f64,
    rss_at_stall_mib: f64,
    rss_max_mib: f64,
    failures: f64,
    resumed_after_s: f64,
}

#[test]
fn sinks_and_broker_down_for_a_while_then_back_lose_and_duplicate_nothing() {
    let outage = Duration::from_secs(
        std::env::var("SHOPFLOW_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let started = Instant::now();
    let services = Services::start();
    let brokers = services.var("SHOPFLOW_KAFKA_BROKERS");
    let redis_url = services.var("SHOPFLOW_REDIS_URL");
    let mysql_url = services.var("SHOPFLOW_MYSQL_URL");
    let ch_url = services.var("SHOPFLOW_CLICKHOUSE_URL");
    eprintln!("services up in {:.1} s", started.elapsed().as_secs_f64());

    let unique = unique_name("outage");
    let topics = Topics::with_prefix(&format!("{unique}."));
    let rt = shopflow_sinks::io_runtime();
    // More input than librdkafka can prefetch (1 MiB per partition, 16 partitions): the
    // broker's outage must find input left that only the broker can serve. With 50,000
    // messages (7.5 MB) the whole log could sit in the prefetch, and a fast run drained it
    // between the ClickHouse and the broker outages.
    let events = std::env::var("SHOPFLOW_OUTAGE_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150_000);
    let log = generate(&GenConfig {
        events,
        seed: 31,
        bad_rate: 0.03,
        skus: 300,
        members: 500,
        concurrency: 200,
        late_catalog_rate: 0.1,
        mean_gap_ms: 220_000,
        ..GenConfig::default()
    });
    let streams = partition(&log, &topics, 2);
    let t = Instant::now();
    publish(&rt, &brokers, &topics, &streams, 2);
    eprintln!(
        "published {} messages in {:.1} s",
        log.len(),
        t.elapsed().as_secs_f64()
    );
    let want = compute(&payloads(&streams), Config::default());
    let stores = Stores {
        redis_url: redis_url.clone(),
        redis_prefix: format!("{unique}:"),
        ledger: rt
            .block_on(MysqlLedger::connect(&mysql_url))
            .expect("mysql"),
        sales: rt
            .block_on(ClickHouseSales::connect(&ch_url, "shopflow", false))
            .expect("clickhouse"),
    };

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .args(["run", "--bounded", "--workers", "2"])
        .args([
            "--kafka", &brokers, "--redis", &redis_url, "--mysql", &mysql_url,
        ])
        .args(["--clickhouse", &ch_url, "--clickhouse-db", "shopflow"])
        .args(["--topic-prefix", &format!("{unique}.")])
        .args(["--redis-prefix", &format!("{unique}:")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--kafka-fetch-kb",
            &std::env::var("SHOPFLOW_OUTAGE_FETCH_KB").unwrap_or_else(|_| "4".into()),
        ])
        .env(
            "SHOPFLOW_JWT_SECRET",
            "outage-test-secret-0123456789abcdef0123",
        )
        .env_remove("SHOPFLOW_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shopflow");
    let stderr = Arc::new(Mutex::new(Vec::new()));
    {
        let pipe = child.stderr.take().expect("stderr");
        let lines = stderr.clone();
        let copy = services.state.join("shopflow.log");
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(copy).ok();
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                lines.lock().expect("lines").push(strip_ansi(&line));
            }
        });
    }
    let mut run = Run {
        child,
        port,
        stderr,
    };
    let final_as_of = want.as_of.expect("events");
    let run_started = Instant::now();
    // The first outage starts as soon as the run reads: computing the first batch (the
    // slowest part of a short run) overlaps with it.
    wait_until(
        "the run to read input",
        Duration::from_secs(60),
        &mut run,
        |r| {
            r.get("/metrics").is_some_and(|(s, body)| {
                s == 200 && Metrics(body).sum("shopflow_events_in_total", "") > 0.0
            })
        },
    );
    eprintln!(
        "reading {:.1} s after start",
        run_started.elapsed().as_secs_f64()
    );
    let mut figures = Vec::new();
    let services_down = outage_services();
    let mut next_down_at: Option<Instant> = None;
    for (i, &service) in services_down.iter().enumerate() {
        // The run must be mid-stream: input left, nothing final yet.
        let before = run.metrics();
        let lag = before.sum("shopflow_consumer_lag_messages", "");
        assert!(
            lag > STALL_READ_LIMIT,
            "only {lag} messages left to read before the {service} outage: nothing would be tested"
        );
        let failures_metric = |m: &Metrics| match service {
            // Whichever notices first: the source, or the writer of alerts and dead letters.
            "kafka" => {
                m.sum("shopflow_source_errors_total", "")
                    + m.sum("shopflow_sink_write_failures_total", "sink=\"alerts\"")
                    + m.sum(
                        "shopflow_sink_write_failures_total",
                        "sink=\"dead_letters\"",
                    )
            }
            sink => m.sum(
                "shopflow_sink_write_failures_total",
                &format!("sink=\"{sink}\""),
            ),
        };
        let failures_before = failures_metric(&before);

        let down_at = match next_down_at.take() {
            Some(t) => t,
            None => {
                services.script("down.sh", &[service]);
                Instant::now()
            }
        };
        // The pipeline notices when it next writes (or reads): from then on /readyz must
        // answer 503 and the run stand still. Give the output channel and the other worker's
        // round a moment to fill.
        wait_until(
            &format!("a failure counted with {service} down"),
            Duration::from_secs(120),
            &mut run,
            |r| failures_metric(&r.metrics()) > failures_before,
        );
        let failing_after = down_at.elapsed();
        wait_until(
            &format!("/readyz not 200 with {service} failing"),
            Duration::from_secs(3),
            &mut run,
            |r| r.readyz().is_some_and(|s| s != 200),
        );
        let not_ready_after = down_at.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let a = run.metrics();
        let a_stores = stores.as_ofs(&rt, service);
        let rss_a = run.rss();
        let mut rss_max = rss_a;
        // Down for the outage's length, and watched for at least 5 s after the stall.
        let watch_from = Instant::now();
        while down_at.elapsed() < outage || watch_from.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(500));
            rss_max = rss_max.max(run.rss());
            assert_ne!(
                run.readyz(),
                Some(200),
                "/readyz answered 200 while {service} was down"
            );
            assert!(
                run.exited().is_none(),
                "shopflow exited during the {service} outage:\n{}",
                run.tail()
            );
        }
        let b = run.metrics();
        let b_stores = stores.as_ofs(&rt, service);
        assert_eq!(
            a.as_ofs(),
            b.as_ofs(),
            "a sink's as_of moved while {service} was down"
        );
        assert_eq!(
            a_stores, b_stores,
            "a store's as_of (Redis, MySQL, ClickHouse) moved while {service} was down"
        );
        let read = |m: &Metrics| m.sum("shopflow_events_in_total", "");
        let read_while_down = read(&b) - read(&a);
        assert!(
            read_while_down <= STALL_READ_LIMIT,
            "{read_while_down} messages read while {service} was down: the pipeline buffers instead of waiting"
        );
        assert!(
            rss_max <= rss_a + RSS_GROWTH_LIMIT,
            "resident memory grew from {rss_a} to {rss_max} bytes while {service} was down"
        );
        let failures = failures_metric(&b) - failures_before;
        assert!(
            failures >= 1.0,
            "no failure counted on /metrics while {service} was down"
        );
        let held = b.sum("shopflow_sink_as_of_ms", "sink=\"mysql\"") as u64;
        assert!(
            held < final_as_of,
            "the ledger was final before {service} came back"
        );

        // The next outage starts before this service comes back, so the run only moves by
        // what the output channel holds between two outages and stays mid-stream.
        let up_at = Instant::now();
        if let Some(&next) = services_down.get(i + 1) {
            services.script("down.sh", &[next]);
            next_down_at = Some(Instant::now());
        }
        services.script("up.sh", &[service]);
        // Back: the writer (or the source) gets past the stall.
        let moved = |m: &Metrics| match service {
            "kafka" => read(m) > read(&b),
            sink => {
                let label = format!("sink=\"{sink}\"");
                m.sum("shopflow_sink_as_of_ms", &label) > b.sum("shopflow_sink_as_of_ms", &label)
            }
        };
        wait_until(
            &format!("progress after {service} came back"),
            Duration::from_secs(60),
            &mut run,
            |r| moved(&r.metrics()),
        );
        let resumed_after = up_at.elapsed();
        figures.push(Figures {
            service,
            down_s: up_at.duration_since(down_at).as_secs_f64(),
            not_ready_after_s: not_ready_after.as_secs_f64(),
            failing_after_s: failing_after.as_secs_f64(),
            rss_at_stall_mib: rss_a as f64 / (1 << 20) as f64,
            rss_max_mib: rss_max as f64 / (1 << 20) as f64,
            failures,
            resumed_after_s: resumed_after.as_secs_f64(),
        });
    }

    // The run catches up and finishes; without --exit-when-done it then keeps serving,
    // ready again.
    let last_up = Instant::now();
    wait_until(
        "the run to finish after the last outage",
        Duration::from_secs(120),
        &mut run,
        |r| r.log().iter().any(|l| l.starts_with("finished: ")),
    );
    let finish_s = last_up.elapsed().as_secs_f64();
    wait_until(
        "/readyz 200 after the run finished",
        Duration::from_secs(10),
        &mut run,
        |r| r.readyz() == Some(200),
    );
    assert_eq!(
        run.metrics().sum("shopflow_ready", ""),
        1.0,
        "shopflow_ready"
    );

    // One "failing" warning and one recovery line per outage.
    let log_lines = run.log();
    let count = |needle: &str| log_lines.iter().filter(|l| l.contains(needle)).count();
    for service in ["redis", "mysql", "clickhouse", "kafka"] {
        let (failing, recovered) = match service {
            "kafka" => (
                "Kafka is failing".to_string(),
                "Kafka recovered after".to_string(),
            ),
            sink => (
                format!("sink {sink} is failing"),
                format!("sink {sink} recovered after"),
            ),
        };
        let want_lines = usize::from(services_down.contains(&service));
        assert_eq!(
            (count(&failing), count(&recovered)),
            (want_lines, want_lines),
            "want exactly one {failing:?} and one {recovered:?} line:\n{}",
            log_lines
                .iter()
                .filter(|l| !l.starts_with('['))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // shopflow's own warnings are the outage lines (clients may warn about slow reconnects).
    for line in log_lines.iter().filter(|l| l.contains(" WARN shopflow")) {
        assert!(line.contains("is failing"), "an unexpected warning: {line}");
    }

    // Nothing lost, nothing twice.
    let ids: Vec<_> = streams.iter().map(|(id, _)| id.clone()).collect();
    let redis = stores.redis(&rt);
    let mut got = read_sinks(&brokers, &redis, &topics, &ids, &streams, &rt);
    got.read_members(&redis, &rt);
    got.read_ledger(&stores.ledger, &rt);
    got.read_sales(&stores.sales, &rt);
    if let Err(e) = got.compare(&want) {
        panic!("after the outages the sinks differ from the reference:\n{e}");
    }
    for f in &figures {
        eprintln!(
            "{}: down {:.1} s; /readyz 503 after {:.1} s, first failure after {:.1} s; {} failures counted; RSS {:.1} MiB when stalled, at most {:.1} MiB; moving again {:.1} s after it came back",
            f.service,
            f.down_s,
            f.not_ready_after_s,
            f.failing_after_s,
            f.failures,
            f.rss_at_stall_mib,
            f.rss_max_mib,
            f.resumed_after_s,
        );
    }
    eprintln!(
        "finished {finish_s:.1} s after the last service came back; whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
    rt.block_on(stores.ledger.close());
}

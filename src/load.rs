//! `shopflow load`: concurrent GETs at a running API, bounded in count and time, with a
//! realistic mix of endpoints (storefront reads dominate), then throughput, latency
//! percentiles and counts by status.
//!
//! Each of `--concurrency` workers holds one keep-alive HTTP/1.1 connection (plain HTTP:
//! hyper's client connection, already in the dependency tree through axum) and sends one
//! request after another. Ids come from `--ids FILE` (ids the server knows: each must
//! answer 200) or from ranges (`--skus N` …: 200 and 404 both count as answers); a
//! fraction `--unknown-rate` names an id no workload has and must answer 404. The run
//! fails (exit 1) on any transport error, any 5xx and any answer other than expected.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use shopflow_api::auth::{Hs256, Role, SECRET_ENV};
use shopflow_model::MAX_ID;

/// The most connections `--concurrency` allows.
const MAX_CONCURRENCY: usize = 1024;
/// The longest run `--duration-secs` allows.
const MAX_DURATION_SECS: f64 = 3600.0;
/// The most requests `--requests` allows.
const MAX_REQUESTS: u64 = 100_000_000;
/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `shopflow load`
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Base URL of the API (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token for every request; an analyst or admin token reads the whole mix.
    #[arg(long, conflicts_with = "jwt_secret")]
    token: Option<String>,
    /// The API's HS256 secret: mints a storefront token and one token per seller, as the
    /// shop's front end and its sellers would hold them.
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Concurrent connections, each sending one request after another.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Stop after this many seconds (whichever bound comes first).
    #[arg(long, default_value_t = 30.0)]
    duration_secs: f64,
    /// `shop`: the weighted mix of SPEC §6 reads; `storefront`: only its storefront reads
    /// (stock, products, orders, members: what the shop's pages read, from Redis);
    /// `healthz`: only `/healthz`, a baseline that does no work, to read figures against on
    /// the same machine.
    #[arg(long, default_value = "shop", value_parser = ["shop", "storefront", "healthz"])]
    mix: String,
    /// JSON file of ids the server knows, `{"sku": [..], "member": [..], "order": [..],
    /// "seller": [..]}`: each request with one of them must answer 200.
    #[arg(long)]
    ids: Option<String>,
    /// Without `--ids`: SKUs are drawn from 1..=N (200 or 404 both count as answers).
    #[arg(long, default_value_t = 2_000)]
    skus: u64,
    /// Without `--ids`: members from 1..=N.
    #[arg(long, default_value_t = 5_000)]
    members: u64,
    /// Without `--ids`: orders from 1..=N.
    #[arg(long, default_value_t = 20_000)]
    orders: u64,
    /// Without `--ids`: sellers from 1..=N.
    #[arg(long, default_value_t = 100)]
    sellers: u64,
    /// Fraction of requests naming an id no workload has (2^53−1): each must answer 404.
    #[arg(long, default_value_t = 0.01)]
    unknown_rate: f64,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tokio threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Sku,
    Member,
    Order,
    Seller,
}

/// The endpoints of the `shop` mix with their weights (per 100 requests): storefront reads
/// (stock, products, orders, members) are 85, a seller's ledgers and sales 15.
const MIX: [(&str, Kind, u32); 11] = [
    ("stock", Kind::Sku, 30),
    ("rating", Kind::Sku, 12),
    ("also-bought", Kind::Sku, 12),
    ("order", Kind::Order, 10),
    ("member", Kind::Member, 8),
    ("member-orders", Kind::Member, 8),
    ("points", Kind::Member, 5),
    ("settlements", Kind::Seller, 4),
    ("payouts", Kind::Seller, 4),
    ("sales", Kind::Seller, 4),
    ("tax-invoices", Kind::Seller, 3),
];

/// How many of [`MIX`]'s endpoints, from the first, are the storefront's reads from the view
/// store (the rest are ledgers and sales, from MySQL and ClickHouse).
const STOREFRONT_ENDPOINTS: usize = 6;

/// Where ids come from.
enum Ids {
    /// Known ids: 200 expected.
    Known(HashMap<Kind, Vec<u64>>),
    /// 1..=N per kind: 200 or 404.
    Ranges(HashMap<Kind, u64>),
}

/// Which statuses a request may get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    NotFound,
    OkOrNotFound,
}

impl Expect {
    fn allows(self, status: u16) -> bool {
        match self {
            Expect::Ok => status == 200,
            Expect::NotFound => status == 404,
            Expect::OkOrNotFound => status == 200 || status == 404,
        }
    }
}

/// How callers authenticate.
enum Auth {
    One(String),
    Minted(Box<Hs256>),
}

/// Everything the workers share.
struct Plan {
    authority: String,
    host: String,
    port: u16,
    prefix: String,
    healthz_only: bool,
    /// The endpoints drawn from, with their weights.
    mix: Vec<(&'static str, Kind, u32)>,
    ids: Ids,
    unknown_rate: f64,
    auth: Auth,
    storefront: Option<String>,
    requests: u64,
    deadline: Instant,
    issued: AtomicU64,
}

/// One request to make.
struct Planned {
    endpoint: &'static str,
    path: String,
    seller: Option<u64>,
    expect: Expect,
}

impl Plan {
    fn pick(&self, rng: &mut impl Rng) -> Planned {
        if self.healthz_only {
            return Planned {
                endpoint: "healthz",
                path: "/healthz".into(),
                seller: None,
                expect: Expect::Ok,
            };
        }
        let total: u32 = self.mix.iter().map(|m| m.2).sum();
        let mut roll = rng.random_range(0..total);
        let (endpoint, kind, _) = *self
            .mix
            .iter()
            .find(|m| {
                if roll < m.2 {
                    true
                } else {
                    roll -= m.2;
                    false
                }
            })
            .expect("weights add up");
        let (id, expect) = if rng.random_bool(self.unknown_rate) {
            (MAX_ID, Expect::NotFound)
        } else {
            match &self.ids {
                Ids::Known(known) => {
                    let list = &known[&kind];
                    (list[rng.random_range(0..list.len())], Expect::Ok)
                }
                Ids::Ranges(max) => (rng.random_range(1..=max[&kind]), Expect::OkOrNotFound),
            }
        };
        let path = match endpoint {
            "stock" => format!("/v1/stock/{id}"),
            "rating" => format!("/v1/products/{id}/rating"),
            "also-bought" => match rng.random_range(0..3) {
                0 => format!("/v1/products/{id}/also-bought"),
                _ => format!(
                    "/v1/products/{id}/also-bought?limit={}",
                    rng.random_range(1..=20)
                ),
            },
            "order" => format!("/v1/orders/{id}"),
            "member" => format!("/v1/members/{id}"),
            "member-orders" => format!("/v1/members/{id}/orders"),
            "points" => format!("/v1/members/{id}/points"),
            "settlements" => format!("/v1/sellers/{id}/settlements"),
            "payouts" => format!("/v1/sellers/{id}/payouts"),
            "tax-invoices" => format!("/v1/sellers/{id}/tax-invoices"),
            _ => format!(
                "/v1/sellers/{id}/sales?bucket={}",
                ["hour", "day"][rng.random_range(0..2)]
            ),
        };
        Planned {
            endpoint,
            path,
            seller: (kind == Kind::Seller).then_some(id),
            expect,
        }
    }

    /// The token for a request: the one given, or the storefront's, or the seller's own.
    fn token(&self, seller: Option<u64>, cache: &mut HashMap<u64, String>) -> Result<String> {
        match (&self.auth, seller) {
            (Auth::One(t), _) => Ok(t.clone()),
            (Auth::Minted(_), None) => Ok(self.storefront.clone().unwrap_or_default()),
            (Auth::Minted(keys), Some(id)) => {
                if let Some(t) = cache.get(&id) {
                    return Ok(t.clone());
                }
                let t = keys.mint(&format!("load-seller-{id}"), Role::Seller, Some(id), 3600)?;
                cache.insert(id, t.clone());
                Ok(t)
            }
        }
    }

    /// Takes one request out of the budget, unless the run is over.
    fn next(&self) -> bool {
        Instant::now() < self.deadline
            && self.issued.fetch_add(1, Ordering::Relaxed) < self.requests
    }
}

/// What one worker saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    by_endpoint: BTreeMap<&'static str, BTreeMap<u16, u64>>,
    /// Latencies of each endpoint, so the slow one shows at a glance.
    latencies_by_endpoint: BTreeMap<&'static str, Vec<u64>>,
    errors: u64,
    unexpected: u64,
    problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, what: String) {
        if self.problems.len() < 10 {
            self.problems.push(what);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (e, m) in other.by_endpoint {
            let mine = self.by_endpoint.entry(e).or_default();
            for (s, n) in m {
                *mine.entry(s).or_default() += n;
            }
        }
        for (e, l) in other.latencies_by_endpoint {
            self.latencies_by_endpoint.entry(e).or_default().extend(l);
        }
        self.errors += other.errors;
        self.unexpected += other.unexpected;
        for p in other.problems {
            self.problem(p);
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(plan: &Plan) -> Result<Sender> {
    let stream = tokio::net::TcpStream::connect((plan.host.as_str(), plan.port))
        .await
        .with_context(|| format!("cannot connect to {}", plan.authority))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request on `sender`: (status, body).
async fn fetch(sender: &mut Sender, req: Request<Empty<Bytes>>) -> Result<(u16, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn worker(plan: Arc<Plan>, index: usize, seed: u64) -> Tally {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut tally = Tally::default();
    let mut tokens = HashMap::new();
    let mut sender: Option<Sender> = None;
    while plan.next() {
        let p = plan.pick(&mut rng);
        let mut req =
            Request::get(format!("{}{}", plan.prefix, p.path)).header(HOST, &plan.authority);
        if !plan.healthz_only {
            match plan.token(p.seller, &mut tokens) {
                Ok(t) => req = req.header(AUTHORIZATION, format!("Bearer {t}")),
                Err(e) => {
                    tally.errors += 1;
                    tally.problem(format!("cannot mint a token: {e}"));
                    continue;
                }
            }
        }
        let req = req.body(Empty::new()).expect("a valid request");
        let started = Instant::now();
        let result = async {
            if sender.is_none() {
                sender = Some(connect(&plan).await?);
            }
            fetch(sender.as_mut().expect("connected"), req).await
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, result).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        let elapsed = started.elapsed();
        match result {
            Ok((status, body)) => {
                tally.latencies_us.push(elapsed.as_micros() as u64);
                tally
                    .latencies_by_endpoint
                    .entry(p.endpoint)
                    .or_default()
                    .push(elapsed.as_micros() as u64);
                *tally.statuses.entry(status).or_default() += 1;
                *tally
                    .by_endpoint
                    .entry(p.endpoint)
                    .or_default()
                    .entry(status)
                    .or_default() += 1;
                if status >= 500 {
                    tally.problem(format!("{} {}: {status}", p.endpoint, p.path));
                } else if !p.expect.allows(status) {
                    tally.unexpected += 1;
                    tally.problem(format!(
                        "{} {}: {status}, expected {:?}: {}",
                        p.endpoint,
                        p.path,
                        p.expect,
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ));
                } else if status == 200 && !plan.healthz_only && !answer_ok(&body) {
                    tally.unexpected += 1;
                    tally.problem(format!("{} {}: 200 without as_of", p.endpoint, p.path));
                }
            }
            Err(e) => {
                tally.errors += 1;
                tally.problem(format!("{} {}: {e:#}", p.endpoint, p.path));
                sender = None; // reconnect
            }
        }
    }
    tally
}

/// A 200 of a /v1 endpoint: a JSON object with `as_of`.
fn answer_ok(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v.get("as_of").is_some())
}

fn read_ids(path: &str) -> Result<HashMap<Kind, Vec<u64>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let v: HashMap<String, Vec<u64>> =
        serde_json::from_str(&text).with_context(|| format!("{path}: expected {{\"sku\": [..], \"member\": [..], \"order\": [..], \"seller\": [..]}}"))?;
    let mut out = HashMap::new();
    for (name, kind) in [
        ("sku", Kind::Sku),
        ("member", Kind::Member),
        ("order", Kind::Order),
        ("seller", Kind::Seller),
    ] {
        let list = v.get(name).cloned().unwrap_or_default();
        if list.is_empty() {
            bail!("{path}: no {name} ids");
        }
        if let Some(bad) = list.iter().find(|id| !(1..=MAX_ID).contains(*id)) {
            bail!("{path}: {name} id {bad} is outside 1..=9007199254740991");
        }
        out.insert(kind, list);
    }
    Ok(out)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// `shopflow load`
pub fn load(args: LoadArgs) -> Result<()> {
    if !(1..=MAX_CONCURRENCY).contains(&args.concurrency) {
        bail!("--concurrency must be in 1..={MAX_CONCURRENCY}");
    }
    if !(args.duration_secs > 0.0 && args.duration_secs <= MAX_DURATION_SECS) {
        bail!("--duration-secs must be in (0, {MAX_DURATION_SECS}]");
    }
    if !(1..=MAX_REQUESTS).contains(&args.requests) {
        bail!("--requests must be in 1..={MAX_REQUESTS}");
    }
    if !(0.0..=1.0).contains(&args.unknown_rate) {
        bail!("--unknown-rate must be in [0, 1]");
    }
    let uri: Uri = args
        .url
        .parse()
        .with_context(|| format!("--url {}", args.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be plain http://host:port (got {})", args.url);
    }
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("--url needs a host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let healthz_only = args.mix == "healthz";
    let auth = match (&args.token, &args.jwt_secret) {
        (Some(t), _) => Auth::One(t.clone()),
        (None, Some(s)) => {
            Auth::Minted(Box::new(Hs256::new(s.as_bytes()).context("--jwt-secret")?))
        }
        (None, None) if healthz_only => Auth::One(String::new()),
        (None, None) => bail!("give --token T or --jwt-secret S (or {SECRET_ENV})"),
    };
    let storefront = match &auth {
        Auth::Minted(keys) => Some(keys.mint("load-storefront", Role::Storefront, None, 3600)?),
        Auth::One(_) => None,
    };
    let ids = match &args.ids {
        Some(path) => Ids::Known(read_ids(path)?),
        None => {
            for (name, n) in [
                ("--skus", args.skus),
                ("--members", args.members),
                ("--orders", args.orders),
                ("--sellers", args.sellers),
            ] {
                if !(1..=MAX_ID).contains(&n) {
                    bail!("{name} must be in 1..=9007199254740991");
                }
            }
            Ids::Ranges(HashMap::from([
                (Kind::Sku, args.skus),
                (Kind::Member, args.members),
                (Kind::Order, args.orders),
                (Kind::Seller, args.sellers),
            ]))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.clamp(1, 64))
        .enable_all()
        .build()?;
    let started = Instant::now();
    let plan = Arc::new(Plan {
        authority: authority.to_string(),
        host,
        port,
        prefix: uri.path().trim_end_matches('/').to_string(),
        healthz_only,
        // The storefront reads from Redis are the mix's first six endpoints.
        mix: match args.mix.as_str() {
            "storefront" => MIX[..STOREFRONT_ENDPOINTS].to_vec(),
            _ => MIX.to_vec(),
        },
        ids,
        unknown_rate: args.unknown_rate,
        auth,
        storefront,
        requests: args.requests,
        deadline: started + Duration::from_secs_f64(args.duration_secs),
        issued: AtomicU64::new(0),
    });
    let total = Arc::new(Mutex::new(Tally::default()));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..args.concurrency {
            let plan = plan.clone();
            let total = total.clone();
            let seed = args.seed;
            tasks.push(tokio::spawn(async move {
                let t = worker(plan, i, seed).await;
                total.lock().expect("tally").merge(t);
            }));
        }
        for t in tasks {
            t.await.expect("load worker");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let mut tally = std::mem::take(&mut *total.lock().expect("tally"));
    tally.latencies_us.sort_unstable();
    for l in tally.latencies_by_endpoint.values_mut() {
        l.sort_unstable();
    }
    let answered = tally.latencies_us.len() as u64;
    let server_errors: u64 = tally.statuses.range(500..).map(|(_, n)| n).sum();
    let lat = |p| percentile(&tally.latencies_us, p);
    let report = json!({
        "url": args.url,
        "mix": args.mix,
        "concurrency": args.concurrency,
        "requests": answered + tally.errors,
        "answered": answered,
        "seconds": secs,
        "rps": answered as f64 / secs,
        "latency_ms": {"p50": lat(50.0), "p90": lat(90.0), "p99": lat(99.0), "max": lat(100.0)},
        "status": tally.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "endpoints": tally.by_endpoint.iter().map(|(e, m)| {
            (e.to_string(), json!(m.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>()))
        }).collect::<serde_json::Map<_, _>>(),
        "endpoint_latency_ms": tally.latencies_by_endpoint.iter().map(|(e, l)| {
            let at = |p| percentile(l, p);
            (e.to_string(), json!({"p50": at(50.0), "p99": at(99.0), "max": at(100.0)}))
        }).collect::<serde_json::Map<_, _>>(),
        "errors": tally.errors,
        "server_errors": server_errors,
        "unexpected": tally.unexpected,
        "problems": tally.problems,
    });
    if args.json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    if tally.errors + server_errors + tally.unexpected > 0 {
        bail!(
            "{} transport errors, {server_errors} 5xx, {} unexpected answers",
            tally.errors,
            tally.unexpected
        );
    }
    Ok(())
}

fn print_report(r: &Value) {
    let counts = |m: &Value| {
        m.as_object()
            .map(|o| {
                o.iter()
                    .map(|(s, n)| format!("{s}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    println!(
        "{} requests in {:.2} s over {} connections ({} mix): {:.0} req/s",
        r["requests"],
        r["seconds"].as_f64().unwrap_or(0.0),
        r["concurrency"],
        r["mix"].as_str().unwrap_or(""),
        r["rps"].as_f64().unwrap_or(0.0)
    );
    let l = &r["latency_ms"];
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        l["p50"].as_f64().unwrap_or(0.0),
        l["p90"].as_f64().unwrap_or(0.0),
        l["p99"].as_f64().unwrap_or(0.0),
        l["max"].as_f64().unwrap_or(0.0)
    );
    println!("status: {}", counts(&r["status"]));
    if let Some(eps) = r["endpoints"].as_object() {
        for (e, m) in eps {
            let l = &r["endpoint_latency_ms"][e];
            println!(
                "  {e:<14} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  {}",
                l["p50"].as_f64().unwrap_or(0.0),
                l["p99"].as_f64().unwrap_or(0.0),
                l["max"].as_f64().unwrap_or(0.0),
                counts(m)
            );
        }
    }
    println!(
        "transport errors: {}  5xx: {}  unexpected: {}",
        r["errors"], r["server_errors"], r["unexpected"]
    );
    if let Some(problems) = r["problems"].as_array() {
        for p in problems {
            println!("  {}", p.as_str().unwrap_or(""));
        }
    }
}

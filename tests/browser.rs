//! The seller web page (`GET /seller`) in a real browser: `shopflow demo` serves a generated
//! workload, headless Chromium opens `/seller#token=<seller-1 token>`, runs the page's script
//! (sign-in from the URL fragment, the four `/v1/sellers/1/…` requests, the SVG chart) and
//! dumps the rendered DOM; the numbers on the page must be the ones the API answers over
//! HTTP with the same token. An admin token picks the seller and the day bucket; a forged
//! token is sent back to sign-in. A screenshot is kept at
//! `$CARGO_TARGET_DIR/test-artifacts/seller-page.png` (default `target/`), with the
//! rendered DOM beside it.
//!
//! Needs Debian's `chromium` (deploy/local/install.sh installs it; `SHOPFLOW_CHROMIUM`
//! may name another Chromium or Chrome binary). Without one the test fails: it never skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shopflow_model::time::rfc3339_utc;

/// The session's JWT secret (≥ 32 bytes), so the test can also mint a forged token.
const SECRET: &str = "browser-test-secret-0123456789abcdef-0123456789";

/// How many buckets the page's chart draws at most (`MAX_BARS` in the page).
const MAX_BARS: usize = 240;

/// How many weeks the payouts table shows (`LATEST_PAYOUTS` in the page).
const LATEST_PAYOUTS: usize = 8;

/// The browser: `$SHOPFLOW_CHROMIUM`, or `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOPFLOW_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: run deploy/local/install.sh (it installs Debian's \
             `chromium` package), or set SHOPFLOW_CHROMIUM to a Chromium/Chrome binary"
        )
    })
}

/// Where test artefacts are kept: `$CARGO_TARGET_DIR/test-artifacts` (relative to the
/// package, as cargo reads it), default `target/test-artifacts`.
fn artifacts_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| manifest.join(t))
        .unwrap_or_else(|| manifest.join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// A unique scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shopflow-browser-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo process, killed on drop (also when an assertion fails).
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs headless Chromium on `url` with `extra` arguments (a fresh profile each time) and
/// returns its stdout. Fails after 120 s.
fn run_chromium(url: &str, extra: &[String]) -> String {
    let profile = TempDir::new("profile");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium().display()));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    assert!(
        status.success(),
        "chromium failed ({status}) on {url}:\n{stderr}"
    );
    stdout
}

/// A plain HTTP/1.1 GET with a bearer token: (status, body as JSON).
fn get(port: u16, path: &str, token: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the demo API");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `get` that must succeed.
fn get_ok(port: u16, path: &str, token: &str) -> Value {
    let (s, body) = get(port, path, token);
    assert_eq!(s, 200, "{path}: {body}");
    body
}

/// A whole paged list (SPEC §6): the first page with `key` holding every page's items,
/// following `next_cursor` (the walk's pages share the first page's `as_of` and totals).
fn get_all(port: u16, path: &str, key: &str, token: &str) -> Value {
    let sep = if path.contains('?') { '&' } else { '?' };
    let first = format!("{path}{sep}limit=3");
    let mut body = get_ok(port, &first, token);
    let mut items = body[key].as_array().cloned().unwrap_or_default();
    let mut next = body["next_cursor"].clone();
    while let Some(cursor) = next.as_str() {
        let page = get_ok(port, &format!("{first}&cursor={cursor}"), token);
        assert_eq!(page["as_of"], body["as_of"], "{path}: pages of one walk");
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        next = page["next_cursor"].clone();
    }
    body[key] = Value::Array(items);
    body
}

/// The opening tag of the element whose opening tag contains `needle` (e.g. `id="x"`).
fn tag<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("no element with {needle} in the rendered page"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// An attribute of an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(&tag[at..at + tag[at..].find('"')?])
}

/// `data-value` of the element with `id`.
fn value_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let t = tag(dom, &format!("id=\"{id}\""));
    attr(t, "data-value").unwrap_or_else(|| panic!("#{id} has no data-value: {t}"))
}

/// The text right after the opening tag of the element with `id` (up to the next tag).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let needle = format!("id=\"{id}\"");
    let at = dom.find(&needle).unwrap();
    let start = at + dom[at..].find('>').unwrap() + 1;
    &dom[start..start + dom[start..].find('<').unwrap()]
}

/// The opening tags named `name` whose attributes contain `needle`.
fn count_tags(dom: &str, name: &str, needle: &str) -> usize {
    dom.split(&format!("<{name} "))
        .skip(1)
        .filter(|rest| rest.split('>').next().unwrap().contains(needle))
        .count()
}

/// Σ of a field over a sales series, as a decimal string (the page sums exactly).
fn series_sum(series: &[Value], field: &str) -> String {
    series
        .iter()
        .map(|p| {
            p[field]
                .as_i64()
                .unwrap_or_else(|| panic!("{field} of {p}")) as i128
        })
        .sum::<i128>()
        .to_string()
}

/// A JSON money value as the page writes it into data-value.
fn decimal(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("not money: {other}"),
    }
}

/// The page's KST rendering of epoch ms: `YYYY-MM-DD HH:MM:SS KST`.
fn kst(ms: u64) -> String {
    let utc = rfc3339_utc(ms + 9 * 3_600_000);
    format!("{} KST", utc[..19].replace('T', " "))
}

/// What the page must show for one seller and bucket, read from the API.
struct Expected {
    series_len: usize,
    sums: Vec<(&'static str, String)>,
    settle: Vec<(&'static str, String)>,
    entries: usize,
    payouts: Vec<(String, bool)>,
    invoices: usize,
    as_of: u64,
}

fn expected(port: u16, token: &str, seller: u64, bucket: &str) -> Expected {
    let base = format!("/v1/sellers/{seller}");
    // Small pages, so that the walk the page does is exercised here too.
    let sales = get_all(
        port,
        &format!("{base}/sales?bucket={bucket}"),
        "series",
        token,
    );
    let series = sales["series"].as_array().unwrap().clone();
    let st = get_all(port, &format!("{base}/settlements"), "entries", token);
    let payouts = get_all(port, &format!("{base}/payouts"), "payouts", token);
    let invoices = get_all(port, &format!("{base}/tax-invoices"), "tax_invoices", token);
    let mut weeks: Vec<(String, bool)> = payouts["payouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["week_start"].as_str().unwrap().to_string(),
                p["final"].as_bool().unwrap(),
            )
        })
        .collect();
    weeks.sort_by(|a, b| b.0.cmp(&a.0));
    weeks.truncate(LATEST_PAYOUTS);
    let t = &st["totals"];
    Expected {
        series_len: series.len(),
        sums: vec![
            ("total-gross", series_sum(&series, "gross")),
            ("total-refunds", series_sum(&series, "refunds")),
            ("total-net", series_sum(&series, "net")),
            ("total-orders", series_sum(&series, "orders")),
            ("total-units", series_sum(&series, "units")),
        ],
        settle: vec![
            ("settle-gross", decimal(&t["gross"])),
            ("settle-commission", decimal(&t["commission"])),
            ("settle-fee", decimal(&t["payment_fee"])),
            ("settle-payout", decimal(&t["payout"])),
        ],
        entries: st["entries"].as_array().unwrap().len(),
        payouts: weeks,
        invoices: invoices["tax_invoices"].as_array().unwrap().len(),
        as_of: sales["as_of"].as_u64().unwrap(),
    }
}

/// The rendered page shows `want` for `seller`.
fn check_page(dom: &str, want: &Expected, seller: u64, what: &str) {
    let status = tag(dom, "id=\"status\"");
    assert_eq!(
        attr(status, "data-state"),
        Some("ok"),
        "{what}: page status {status} {:?}",
        text_of(dom, "status")
    );
    assert_eq!(
        text_of(dom, "seller-id-shown"),
        seller.to_string(),
        "{what}"
    );
    // The chart: an SVG with one gross bar and one net point per drawn bucket.
    let svg = tag(dom, "id=\"sales-chart\"");
    assert!(svg.starts_with("<svg"), "{what}: {svg}");
    let drawn = want.series_len.min(MAX_BARS);
    assert!(drawn >= 1, "{what}: seller {seller} has no sales to draw");
    assert_eq!(
        attr(svg, "data-buckets"),
        Some(drawn.to_string().as_str()),
        "{what}"
    );
    let bars = count_tags(dom, "rect", "class=\"bar gross\"");
    let points = count_tags(dom, "circle", "class=\"point net\"");
    assert_eq!((bars, points), (drawn, drawn), "{what}: bars and points");
    assert_eq!(
        count_tags(dom, "polyline", "class=\"line net\""),
        1,
        "{what}"
    );
    assert_eq!(
        value_of(dom, "series-count"),
        want.series_len.to_string(),
        "{what}"
    );
    for (id, v) in want.sums.iter().chain(&want.settle) {
        assert_eq!(value_of(dom, id), v, "{what}: #{id}");
    }
    assert_ne!(
        want.settle[0].1, "0",
        "{what}: seller {seller} has settlements"
    );
    assert_eq!(
        value_of(dom, "settle-entries"),
        want.entries.to_string(),
        "{what}"
    );
    // Money is shown formatted, e.g. ₩1,234,567.
    let gross_text = text_of(dom, "total-gross");
    let digits: String = gross_text.chars().filter(char::is_ascii_digit).collect();
    assert_eq!(
        digits,
        want.sums[0].1.trim_start_matches('-'),
        "{what}: {gross_text}"
    );
    assert!(gross_text.contains('₩'), "{what}: {gross_text}");
    // Payouts: the latest weeks, newest first, with their final flags.
    let rows: Vec<(String, bool)> = dom
        .split("<tr ")
        .skip(1)
        .map(|r| &r[..r.find('>').unwrap()])
        .filter(|r| r.contains("data-week=\""))
        .map(|r| {
            let r = format!(" {r}");
            (
                attr(&r, "data-week").unwrap().to_string(),
                attr(&r, "data-final").unwrap() == "true",
            )
        })
        .collect();
    assert_eq!(rows, want.payouts, "{what}: payout rows");
    assert_eq!(
        value_of(dom, "invoice-count"),
        want.invoices.to_string(),
        "{what}"
    );
    assert_eq!(
        count_tags(dom, "tr", "data-month=\""),
        want.invoices,
        "{what}"
    );
    // as_of, shown in KST.
    let as_of = tag(dom, "id=\"as-of\"");
    assert_eq!(
        attr(as_of, "data-ms"),
        Some(want.as_of.to_string().as_str()),
        "{what}"
    );
    assert_eq!(text_of(dom, "as-of"), kst(want.as_of), "{what}");
}

/// `shopflow token ARGS` with `secret`: the token it prints.
fn mint(secret: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .arg("token")
        .args(args)
        .env("SHOPFLOW_JWT_SECRET", secret)
        .output()
        .expect("run shopflow token");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn seller_page_in_headless_chromium_shows_what_the_api_answers() {
    let browser = chromium(); // fails first, with what to install, when there is none
    assert!(browser.exists(), "{}", browser.display());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out_dir = TempDir::new("demo");
    let mut demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_shopflow"))
            .args(["demo", "--events", "20000", "--jwt-secret", SECRET])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--out-dir")
            .arg(&out_dir.0)
            .env_remove("SHOPFLOW_JWT_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shopflow demo"),
    );
    // The demo prints the curl lines and the tokens once the input is processed.
    let mut admin = None;
    let mut seller = None;
    for line in BufReader::new(demo.0.stdout.take().unwrap()).lines() {
        let line = line.expect("read demo output");
        if let Some(t) = line.strip_prefix("export SHOPFLOW_TOKEN=") {
            admin = Some(t.to_string());
        } else if let Some(t) = line.strip_prefix("export SHOPFLOW_SELLER_TOKEN=") {
            seller = Some(t.to_string());
            break;
        }
    }
    let admin = admin.expect("admin token in the demo output");
    let seller = seller.expect("seller-1 token in the demo output");
    let base = format!("http://127.0.0.1:{port}/seller");
    let artifacts = artifacts_dir();

    // The page itself needs no token.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /seller HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{}", &page[..200]);
    assert!(page
        .to_ascii_lowercase()
        .contains("content-type: text/html"));

    // Seller 1 with its own token, hour buckets (the default).
    let want = expected(port, &seller, 1, "hour");
    let dom = run_chromium(
        &format!("{base}#token={seller}"),
        &["--dump-dom".to_string()],
    );
    std::fs::write(artifacts.join("seller-page.html"), &dom).unwrap();
    check_page(&dom, &want, 1, "seller token");
    assert!(
        tag(&dom, "id=\"seller-picker\"").contains(" hidden"),
        "a seller cannot pick another seller"
    );
    assert!(
        !dom.contains(&seller),
        "the token is not written into the page"
    );

    // An admin token picks the seller, here with day buckets: another series, same sums.
    let day = expected(port, &admin, 1, "day");
    assert_eq!(day.sums, want.sums, "Σ over days = Σ over hours");
    let dom = run_chromium(
        &format!("{base}#token={admin}&seller=1&bucket=day"),
        &["--dump-dom".to_string()],
    );
    check_page(&dom, &day, 1, "admin token, day buckets");
    assert!(!tag(&dom, "id=\"seller-picker\"").contains(" hidden"));
    let pressed = tag(&dom, "data-bucket=\"day\"");
    assert_eq!(attr(pressed, "aria-pressed"), Some("true"), "{pressed}");

    // A forged token (well-formed, other secret): the API says 401, the page asks again.
    let forged = mint(
        "another-secret-of-at-least-32-bytes!!",
        &["--role", "seller", "--seller-id", "1"],
    );
    let dom = run_chromium(
        &format!("{base}#token={forged}"),
        &["--dump-dom".to_string()],
    );
    assert!(tag(&dom, "id=\"dashboard\"").contains(" hidden"), "{dom}");
    let error = text_of(&dom, "sign-in-error");
    assert!(
        error.contains("401") && error.contains("bad signature"),
        "{error:?}"
    );

    // The screenshot, kept as an artefact.
    let png = artifacts.join("seller-page.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &format!("{base}#token={seller}"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,900".to_string(),
        ],
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        png.display()
    );
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 900), "screenshot size");
    // A blank or error page compresses to a few KB; the dashboard with its chart does not.
    assert!(
        bytes.len() > 30_000,
        "screenshot is only {} bytes: {}",
        bytes.len(),
        png.display()
    );
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());
    drop(demo);
}

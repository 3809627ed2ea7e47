//! The README's first command, end to end: `shopflow demo` generates a workload, runs the
//! pipeline into the in-process stores and serves the API; the answers are checked over
//! real HTTP on loopback, with the bearer tokens the demo prints (and one minted by
//! `shopflow token`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

/// A plain HTTP/1.1 GET with the admin token the demo printed: (status, body as JSON).
fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let token = ADMIN_TOKEN
        .get()
        .expect("admin token read from the demo output");
    get_as(port, path, Some(token)).0
}

static ADMIN_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A plain HTTP/1.1 GET with an optional bearer token: ((status, body as JSON), head).
fn get_as(port: u16, path: &str, token: Option<&str>) -> ((u16, serde_json::Value), String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the demo API");
    // An answer that never comes is a failure naming the path, not a hang of the suite.
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path}: no complete answer from the demo API: {e}"));
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    ((status, json), head.to_ascii_lowercase())
}

/// `shopflow token ARGS` with the secret in the environment: the token it prints.
fn mint(secret: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .arg("token")
        .args(args)
        .env("SHOPFLOW_JWT_SECRET", secret)
        .output()
        .expect("run shopflow token");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    text.trim().to_string()
}

/// `shopflow run` over a file that does not exist, with `secret` as the JWT secret and
/// `extra` arguments.
fn run_missing_file(secret: Option<&str>, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args([
        "run",
        "--file",
        "/nonexistent.jsonl",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(extra)
    .env_remove("SHOPFLOW_JWT_SECRET")
    .env_remove("SHOPFLOW_MYSQL_URL");
    if let Some(s) = secret {
        c.env("SHOPFLOW_JWT_SECRET", s);
    }
    c.output().expect("run shopflow run")
}

#[test]
fn run_refuses_to_start_without_a_jwt_secret() {
    let out = run_missing_file(None, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("SHOPFLOW_JWT_SECRET") && err.contains("--jwt-secret"),
        "{err}"
    );
    // With a secret, the missing file is the error: its cause once, and no colour codes
    // in the log lines when stderr is not a terminal.
    let out = run_missing_file(Some("demo-test-secret-0123456789abcdef0123456"), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "the cause once: {err}"
    );
    assert!(!err.contains('\u{1b}'), "colour codes on a pipe: {err:?}");
    assert!(
        err.contains("WARN"),
        "the log line about the ledgers: {err}"
    );
    // A secret that is too short is refused too.
    let out = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .args([
            "run",
            "--file",
            "/nonexistent.jsonl",
            "--jwt-secret",
            "short",
        ])
        .output()
        .expect("run shopflow run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));
}

#[test]
fn demo_serves_every_view_endpoint() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out_dir = std::env::temp_dir().join(format!("shopflow-demo-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .args(["demo", "--events", "20000", "--listen"])
        // The demo prints a generated secret only when none is given: a developer's own
        // secret in the environment would leave the test waiting for that line.
        .env_remove("SHOPFLOW_JWT_SECRET")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--out-dir")
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shopflow demo");
    // The demo prints the example requests once the input is processed.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("demo output")
        .expect("read demo output");
    assert!(
        first.starts_with("curl "),
        "unexpected demo output {first:?}"
    );
    assert!(first.contains("-H \"Authorization: Bearer "), "{first}");
    // After the curl lines: the admin and seller-1 tokens and the session's secret.
    let mut seller_token = None;
    let mut secret = None;
    for line in lines.by_ref().take(40) {
        let line = line.expect("read demo output");
        if let Some(t) = line.strip_prefix("export SHOPFLOW_TOKEN=") {
            ADMIN_TOKEN.set(t.to_string()).unwrap();
        } else if let Some(t) = line.strip_prefix("export SHOPFLOW_SELLER_TOKEN=") {
            seller_token = Some(t.to_string());
        } else if let Some(s) = line.strip_prefix("export SHOPFLOW_JWT_SECRET=") {
            secret = Some(s.to_string());
            break;
        } else {
            assert!(
                line.starts_with("curl -H "),
                "unexpected demo output {line:?}"
            );
        }
    }
    let seller_token = seller_token.expect("seller token in the demo output");
    let secret = secret.expect("generated secret in the demo output");

    let result = std::panic::catch_unwind(|| {
        let (s, stock) = get(port, "/v1/stock/1");
        assert_eq!(s, 200, "{stock}");
        assert_eq!(
            stock["available"].as_i64().unwrap(),
            stock["on_hand"].as_i64().unwrap() - stock["reserved"].as_i64().unwrap()
        );
        assert!(stock["as_of"].as_u64().unwrap() > 0);
        let (s, order) = get(port, "/v1/orders/1");
        assert_eq!(s, 200, "{order}");
        assert_eq!(order["history"][0]["status"], "PLACED");
        let (s, rating) = get(port, "/v1/products/1/rating");
        assert_eq!(s, 200, "{rating}");
        assert!(
            rating["count"].as_u64().unwrap() > 0,
            "SKU 1 is the most reviewed: {rating}"
        );
        let (s, also) = get(port, "/v1/products/1/also-bought?limit=5");
        assert_eq!(s, 200, "{also}");
        let items = also["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= 5, "{also}");
        // Member 1 exists in the demo workload; its orders are its own, newest first.
        let (s, member) = get(port, "/v1/members/1");
        assert_eq!(s, 200, "{member}");
        assert!(["BRONZE", "SILVER", "GOLD", "VIP"].contains(&member["grade"].as_str().unwrap()));
        let (s, orders) = get(port, "/v1/members/1/orders");
        assert_eq!(s, 200, "{orders}");
        let orders = orders["orders"].as_array().unwrap();
        assert!(orders.len() <= 20);
        assert!(orders.iter().all(|o| o["member_id"] == 1), "{orders:?}");
        let placed: Vec<u64> = orders
            .iter()
            .map(|o| o["history"][0]["ts"].as_u64().unwrap())
            .collect();
        assert!(
            placed.windows(2).all(|w| w[0] >= w[1]),
            "not newest first: {placed:?}"
        );
        let (s, points) = get(port, "/v1/members/1/points");
        assert_eq!(s, 200, "{points}");
        let sum: i64 = points["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["points"].as_i64().unwrap())
            .sum();
        assert_eq!(points["balance"].as_i64().unwrap(), sum, "{points}");
        // Seller 1 sells something in a 20k-event workload with 100 sellers.
        let (s, st) = get(port, "/v1/sellers/1/settlements");
        assert_eq!(s, 200, "{st}");
        let entries = st["entries"].as_array().unwrap();
        assert!(!entries.is_empty(), "{st}");
        let payout: i64 = entries.iter().map(|e| e["payout"].as_i64().unwrap()).sum();
        assert_eq!(st["totals"]["payout"].as_i64().unwrap(), payout);
        let (s, payouts) = get(port, "/v1/sellers/1/payouts");
        assert_eq!(s, 200, "{payouts}");
        let weekly: i64 = payouts["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["amount"].as_i64().unwrap())
            .sum();
        assert_eq!(weekly, payout, "Σ payouts = Σ entry payouts");
        assert_eq!(get(port, "/v1/sellers/1/tax-invoices").0, 200);
        assert_eq!(get(port, "/v1/members/999999999").0, 404);
        assert_eq!(get(port, "/v1/stock/999999").0, 404);
        assert_eq!(get(port, "/v1/orders/x").0, 400);
        assert_eq!(get(port, "/readyz").0, 200);
        // Auth: no token → 401 with a challenge; public paths need none.
        let ((s, body), head) = get_as(port, "/v1/stock/1", None);
        assert_eq!(s, 401, "{body}");
        assert!(body["error"].is_string(), "{body}");
        assert!(head.contains("\r\nwww-authenticate: bearer"), "{head}");
        assert_eq!(get_as(port, "/v1/stock/1", Some("not.a.token")).0 .0, 401);
        assert_eq!(get_as(port, "/healthz", None).0 .0, 200);
        assert_eq!(get_as(port, "/readyz", None).0 .0, 200);
        let ((s, doc), _) = get_as(port, "/openapi.json", None);
        assert_eq!(s, 200);
        assert!(doc["paths"]["/v1/stock/{sku}"].is_object(), "{doc}");
        // The seller-1 token reads seller 1 only.
        let seller = Some(seller_token.as_str());
        assert_eq!(get_as(port, "/v1/sellers/1/payouts", seller).0 .0, 200);
        assert_eq!(get_as(port, "/v1/sellers/2/payouts", seller).0 .0, 403);
        assert_eq!(get_as(port, "/v1/stock/1", seller).0 .0, 403);
        // `shopflow token` mints with the session's secret; a storefront token reads stock,
        // not sellers; a token of another secret is refused.
        let storefront = mint(&secret, &["--role", "storefront"]);
        assert_eq!(get_as(port, "/v1/stock/1", Some(&storefront)).0 .0, 200);
        assert_eq!(
            get_as(port, "/v1/sellers/1/payouts", Some(&storefront))
                .0
                 .0,
            403
        );
        let seller2 = mint(
            &secret,
            &["--role", "seller", "--seller-id", "2", "--ttl-secs", "60"],
        );
        assert_eq!(
            get_as(port, "/v1/sellers/2/payouts", Some(&seller2)).0 .0,
            200
        );
        let forged = mint(
            "another-secret-of-at-least-32-bytes!!",
            &["--role", "admin"],
        );
        assert_eq!(get_as(port, "/v1/stock/1", Some(&forged)).0 .0, 401);
        let dlq = std::fs::read_to_string(out_dir.join("dlq.jsonl")).expect("dead-letter file");
        assert!(dlq.lines().count() > 0, "the demo workload has bad events");
    });
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&out_dir).ok();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn json_log_format_writes_only_json_objects() {
    let out = run_missing_file(
        Some("demo-test-secret-0123456789abcdef0123456"),
        &["--log-format", "json"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    // The warning about in-process ledgers, then the error, each an object with a level
    // and a message.
    assert!(lines.len() >= 2, "{err}");
    for l in &lines {
        assert!(
            l["level"].is_string() && l["fields"]["message"].is_string(),
            "{l}"
        );
    }
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent.jsonl"),
        "{last}"
    );
}

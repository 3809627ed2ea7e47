//! The README's first command, end to end: `shopflow demo` generates a workload, runs the
//! pipeline into the in-process stores and serves the API; the answers are checked over
//! real HTTP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

/// A plain HTTP/1.1 GET: (status, body as JSON).
fn get(port: u16, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the demo API");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
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

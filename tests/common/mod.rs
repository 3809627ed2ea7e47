//! What the tests of the `shopflow` binary share: starting a run that serves its API,
//! reading answers from it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A run left serving its API once its input is done: the process, its port and its log.
pub fn serve(mut c: Command) -> (Child, u16, String) {
    let mut child = c
        .env("SHOPFLOW_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start shopflow");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = String::new();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.expect("read the log");
        log.push_str(&line);
        log.push('\n');
        if let Some(p) = line.strip_prefix("API on http://127.0.0.1:") {
            port = p.trim().parse().ok();
        }
        if line.contains("serving until Ctrl-C") {
            break;
        }
    }
    // Keep draining so that the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let port = port.unwrap_or_else(|| panic!("no API port in the log:\n{log}"));
    (child, port, log)
}

/// GET `path` with `token`: the status and the body as text.
pub fn get_text(port: u16, path: &str, token: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// GET `path` with `token`: the status and the body as JSON (null if it is not).
pub fn get(port: u16, path: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, body) = get_text(port, path, token);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

pub fn admin_token(secret: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .args(["token", "--role", "admin"])
        .env("SHOPFLOW_JWT_SECRET", secret)
        .output()
        .expect("mint a token");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

/// The answers of a sample of endpoints.
pub fn answers(port: u16, token: &str) -> Vec<(String, u16, serde_json::Value)> {
    let mut paths = Vec::new();
    for id in 1..=12 {
        paths.push(format!("/v1/stock/{id}"));
        paths.push(format!("/v1/orders/{id}"));
        paths.push(format!("/v1/members/{id}"));
        paths.push(format!("/v1/members/{id}/points"));
        paths.push(format!("/v1/members/{id}/orders"));
        paths.push(format!("/v1/products/{id}/rating"));
        paths.push(format!("/v1/products/{id}/also-bought"));
    }
    for id in 1..=4 {
        paths.push(format!("/v1/sellers/{id}/payouts"));
        paths.push(format!("/v1/sellers/{id}/tax-invoices"));
        paths.push(format!("/v1/sellers/{id}/settlements"));
        paths.push(format!(
            "/v1/sellers/{id}/sales?from=0&to=9999999999999&bucket=day"
        ));
    }
    paths
        .into_iter()
        .map(|p| {
            let (status, body) = get(port, &p, token);
            (p, status, body)
        })
        .collect()
}

/// The dead letters of a JSON-lines file without the `topic` (the file they were read
/// from, which differs between a prefix and the whole log).
pub fn dead_letters(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read the dead letters")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v.as_object_mut().expect("an object").remove("topic");
            v
        })
        .collect()
}

/// Asserts that two samples of [`answers`] are equal, endpoint by endpoint.
pub fn same_answers(
    want: &[(String, u16, serde_json::Value)],
    got: &[(String, u16, serde_json::Value)],
    what: &str,
) {
    assert_eq!(
        want.len(),
        got.len(),
        "{what}: samples of different endpoints"
    );
    for ((path, s1, b1), (_, s2, b2)) in want.iter().zip(got) {
        assert_eq!((s1, b1), (s2, b2), "{path}: {what}");
    }
}

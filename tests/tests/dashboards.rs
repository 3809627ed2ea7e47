//! The Grafana dashboards under `dashboards/grafana/` are well-formed and refer only to what
//! exists: every dashboard JSON has the structure Grafana needs, every datasource it names is
//! provisioned with that type, and every Prometheus metric (and label) it queries is one the
//! binary exports, so renaming a metric without updating the dashboards fails here.
//! No Grafana is needed: the files are read with serde_json, the provisioning YAML by lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every metric the pipeline-health dashboard may use, with its labels (besides the ones
/// Prometheus adds at scrape time). The contract with the metrics code (api/src/metrics.rs,
/// pipelines/src/metrics.rs, sinks/src/metrics.rs): each name must be registered there
/// ([`every_dashboard_metric_is_registered_by_the_code`]), so a rename there fails here until
/// this list and the dashboards follow.
const METRICS: &[(&str, &[&str])] = &[
    ("shopflow_events_in_total", &["topic", "partition"]),
    ("shopflow_events_accepted_total", &[]),
    ("shopflow_dead_letters_total", &["reason"]),
    ("shopflow_duplicates_total", &[]),
    ("shopflow_late_events_total", &[]),
    ("shopflow_consumer_lag_messages", &["topic", "partition"]),
    ("shopflow_frontier_ms", &[]),
    ("shopflow_frontier_lag_event_time_seconds", &[]),
    ("shopflow_frontier_lag_wall_clock_seconds", &[]),
    ("shopflow_sink_batch_rows_bucket", &["sink", "le"]),
    (
        "shopflow_sink_write_duration_seconds_bucket",
        &["sink", "le"],
    ),
    ("shopflow_sink_write_failures_total", &["sink"]),
    ("shopflow_sink_as_of_ms", &["sink"]),
    (
        "shopflow_http_request_duration_seconds_bucket",
        &["route", "method", "status", "le"],
    ),
    ("shopflow_ready", &[]),
];

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// The ClickHouse tables (and their columns) the seller dashboards may query: the sales
/// sink's DDL (sinks/src/clickhouse.rs, docs/sink-schemas.md).
const CLICKHOUSE_TABLES: &[&str] = &["sales_facts", "sales_minute"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn grafana() -> PathBuf {
    repo().join("dashboards/grafana")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The dashboards: (file name, JSON).
fn dashboards() -> Vec<(String, Value)> {
    let dir = grafana().join("dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let json = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A YAML line's `key: value`, with the value unquoted and any trailing comment cut.
fn yaml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let t = line.trim_start().trim_start_matches("- ");
    let rest = t.strip_prefix(key)?.strip_prefix(':')?;
    let v = rest.split(" #").next().unwrap().trim();
    Some(v.trim_matches('"').trim_matches('\''))
}

/// The provisioned datasources: uid → type. Each datasource is a `- name:` item of
/// `datasources:` with `uid:` and `type:` at the item's own indentation.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let text = read(&grafana().join("provisioning/datasources/shopflow.yaml"));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| yaml_value(l, "apiVersion") == Some("1")),
        "apiVersion: 1"
    );
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "datasources:")
        .expect("a top-level `datasources:` list");
    let mut out = BTreeMap::new();
    let mut item: Option<(usize, Option<String>, Option<String>)> = None;
    let mut finish = |item: Option<(usize, Option<String>, Option<String>)>| {
        if let Some((_, uid, ty)) = item {
            let uid = uid.expect("every datasource has a uid (the dashboards refer to it)");
            let ty = ty.unwrap_or_else(|| panic!("datasource {uid} has no type"));
            assert!(
                out.insert(uid.clone(), ty).is_none(),
                "datasource uid {uid} twice"
            );
        }
    };
    for line in &lines[start + 1..] {
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            break;
        }
        if line.trim_start().starts_with("- ") {
            finish(item.take());
            assert!(
                yaml_value(line, "name").is_some(),
                "items start with `- name:`: {line}"
            );
            item = Some((indent + 2, None, None));
            continue;
        }
        let Some((field_indent, uid, ty)) = item.as_mut() else {
            panic!("a line outside any datasource item: {line}");
        };
        if indent == *field_indent {
            if let Some(v) = yaml_value(line, "uid") {
                *uid = Some(v.to_string());
            }
            if let Some(v) = yaml_value(line, "type") {
                *ty = Some(v.to_string());
            }
        }
    }
    finish(item);
    out
}

#[test]
fn provisioning_files_are_well_formed() {
    let ds = provisioned_datasources();
    assert_eq!(
        ds.get("shopflow-prometheus").map(String::as_str),
        Some("prometheus"),
        "{ds:?}"
    );
    assert_eq!(
        ds.get("shopflow-clickhouse").map(String::as_str),
        Some("grafana-clickhouse-datasource"),
        "{ds:?}"
    );
    let text = read(&grafana().join("provisioning/datasources/shopflow.yaml"));
    assert!(
        text.contains("plugins install grafana-clickhouse-datasource"),
        "the datasource file says the ClickHouse plugin must be installed"
    );
    for key in ["host", "port", "protocol", "defaultDatabase"] {
        assert!(
            text.lines().any(|l| yaml_value(l, key).is_some()),
            "ClickHouse jsonData.{key}"
        );
    }

    let text = read(&grafana().join("provisioning/dashboards/shopflow.yaml"));
    let find = |key: &str| {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| yaml_value(l, key))
            .unwrap_or_else(|| panic!("dashboards provisioning: no `{key}`"))
    };
    assert_eq!(find("apiVersion"), "1");
    assert!(text.lines().any(|l| l.trim_end() == "providers:"));
    assert_eq!(find("type"), "file");
    assert_eq!(find("path"), "${SHOPFLOW_GRAFANA_DASHBOARDS}");
    assert!(
        text.contains("dashboards/grafana/dashboards"),
        "says which folder the path is"
    );
}

/// `(type, uid)` of a datasource reference, which must be an object (a bare name string is
/// the pre-8.x form).
fn datasource_ref(v: &Value, what: &str) -> (String, String) {
    let ty = v["type"].as_str();
    let uid = v["uid"].as_str();
    match (ty, uid) {
        (Some(t), Some(u)) => (t.to_string(), u.to_string()),
        _ => panic!("{what}: datasource must be {{\"type\", \"uid\"}}, got {v}"),
    }
}

#[test]
fn dashboards_are_grafana_json_with_provisioned_datasources() {
    let ds = provisioned_datasources();
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["pipeline-health.json", "seller-sales.json"]);
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        for key in ["title", "uid"] {
            let v = d[key]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: {key} must be a string"));
            assert!(!v.is_empty(), "{name}: empty {key}");
        }
        let uid = d["uid"].as_str().unwrap();
        assert!(
            uid.len() <= 40
                && uid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{name}: uid {uid:?} (≤ 40 of [A-Za-z0-9-_])"
        );
        assert!(uids.insert(uid.to_string()), "uid {uid} used twice");
        let schema = d["schemaVersion"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: schemaVersion"));
        assert!(schema >= 36, "{name}: schemaVersion {schema} < 36");
        assert!(
            d["id"].is_null(),
            "{name}: no numeric id (Grafana assigns it)"
        );
        assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());
        let panels = d["panels"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: panels must be an array"));
        assert!(panels.len() >= 5, "{name}: only {} panels", panels.len());
        let mut ids = BTreeSet::new();
        let mut cells: Vec<(u64, u64, u64, u64, String)> = vec![];
        for p in panels {
            let title = p["title"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a panel without a title: {p}"));
            let what = format!("{name} / {title}");
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: id must be a number"));
            assert!(ids.insert(id), "{what}: panel id {id} used twice");
            let ty = p["type"].as_str().unwrap_or("");
            assert!(
                [
                    "timeseries",
                    "stat",
                    "table",
                    "barchart",
                    "gauge",
                    "bargauge"
                ]
                .contains(&ty),
                "{what}: panel type {ty:?}"
            );
            let g = &p["gridPos"];
            let pos: Vec<u64> = ["x", "y", "w", "h"]
                .iter()
                .map(|k| {
                    g[k].as_u64()
                        .unwrap_or_else(|| panic!("{what}: gridPos.{k}"))
                })
                .collect();
            assert!(
                pos[2] >= 1 && pos[3] >= 1 && pos[0] + pos[2] <= 24,
                "{what}: gridPos {g} (24 columns)"
            );
            cells.push((pos[0], pos[1], pos[2], pos[3], what.clone()));
            let (panel_ty, panel_uid) = datasource_ref(&p["datasource"], &what);
            assert_eq!(
                ds.get(&panel_uid),
                Some(&panel_ty),
                "{what}: datasource {panel_uid} ({panel_ty}) is not provisioned as such: {ds:?}"
            );
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: targets must be an array"));
            assert!(!targets.is_empty(), "{what}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                let r = t["refId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: refId"));
                assert!(refs.insert(r.to_string()), "{what}: refId {r} twice");
                let (tt, tu) = datasource_ref(&t["datasource"], &what);
                assert_eq!((&tt, &tu), (&panel_ty, &panel_uid), "{what}: target {r}");
                let query = match tt.as_str() {
                    "prometheus" => t["expr"].as_str(),
                    "grafana-clickhouse-datasource" => {
                        assert_eq!(t["editorType"], "sql", "{what}: {r}");
                        let f = t["format"].as_u64();
                        assert!(
                            f == Some(0) || f == Some(1),
                            "{what}: format 0 (time series) or 1 (table)"
                        );
                        t["rawSql"].as_str()
                    }
                    other => panic!("{what}: unexpected datasource type {other}"),
                };
                let query = query.unwrap_or("");
                assert!(!query.trim().is_empty(), "{what}: target {r} has no query");
            }
        }
        // Panels do not overlap.
        for (i, a) in cells.iter().enumerate() {
            for b in &cells[i + 1..] {
                let apart =
                    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                assert!(apart, "{} overlaps {}", a.4, b.4);
            }
        }
        // Template variables name provisioned datasources and have a query.
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let vname = v["name"].as_str().expect("variable name");
            let what = format!("{name} / ${vname}");
            if v["type"] == "query" {
                let (t, u) = datasource_ref(&v["datasource"], &what);
                assert_eq!(ds.get(&u), Some(&t), "{what}");
                let q = v["query"]
                    .as_str()
                    .or(v["query"]["rawSql"].as_str())
                    .or(v["query"]["query"].as_str())
                    .unwrap_or("");
                assert!(!q.trim().is_empty(), "{what}: no query");
            }
        }
    }
}

/// A Prometheus expression's tokens, enough to find metric names, label matchers and
/// `by`/`without` groupings: identifiers, punctuation, and string literals (kept whole).
fn promql_tokens(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == '"' || c == '\'' || c == '`' {
            chars.next();
            let mut s = String::from(c);
            while let Some(d) = chars.next() {
                s.push(d);
                if d == '\\' {
                    if let Some(e) = chars.next() {
                        s.push(e);
                    }
                } else if d == c {
                    break;
                }
            }
            out.push(s);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' || d == '$' {
                    s.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(s);
        } else if c == '[' {
            // A range: `[5m]`, `[$__rate_interval]`.
            for d in chars.by_ref() {
                if d == ']' {
                    break;
                }
            }
        } else if c.is_whitespace() {
            chars.next();
        } else {
            out.push(c.to_string());
            chars.next();
        }
    }
    out
}

/// The metrics an expression reads and the labels it names (in matchers and groupings).
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let t = promql_tokens(expr);
    let mut metrics = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let mut i = 0;
    while i < t.len() {
        let tok = t[i].as_str();
        if tok.starts_with("shopflow") {
            metrics.insert(tok.to_string());
        }
        let opens_matchers = t.get(i + 1).map(String::as_str) == Some("{")
            && tok
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let opens_grouping = [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ]
        .contains(&tok)
            && t.get(i + 1).map(String::as_str) == Some("(");
        if opens_matchers || opens_grouping {
            let close = if opens_matchers { "}" } else { ")" };
            let mut j = i + 2;
            while j < t.len() && t[j] != close {
                let name = &t[j];
                let next = t.get(j + 1).map(String::as_str);
                let is_label = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
                if is_label && (opens_grouping || matches!(next, Some("=") | Some("!"))) {
                    labels.insert(name.clone());
                }
                j += 1;
            }
            i = j;
        }
        i += 1;
    }
    (metrics, labels)
}

#[test]
fn promql_parsing_finds_metrics_and_labels() {
    let (m, l) = promql_names(
        r#"histogram_quantile(0.99, sum by (sink, le) (rate(shopflow_x_bucket{le="+Inf", instance=~"$instance", s!="a{b}"}[$__rate_interval]))) / scalar(max(shopflow_y))"#,
    );
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        ["shopflow_x_bucket", "shopflow_y"]
    );
    assert_eq!(
        l.into_iter().collect::<Vec<_>>(),
        ["instance", "le", "s", "sink"]
    );
}

#[test]
fn prometheus_queries_use_only_exported_metrics_and_labels() {
    let known: BTreeMap<&str, &[&str]> = METRICS.iter().copied().collect();
    let mut used = BTreeSet::new();
    let mut prom_targets = 0;
    for (name, d) in dashboards() {
        let mut exprs: Vec<(String, String)> = vec![];
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                if let Some(e) = t["expr"].as_str() {
                    exprs.push((format!("{name} / {}", p["title"]), e.to_string()));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["datasource"]["type"] == "prometheus" {
                let q = v["query"]["query"].as_str().or(v["query"].as_str());
                exprs.push((format!("{name} / ${}", v["name"]), q.unwrap().to_string()));
            }
        }
        for (what, expr) in exprs {
            prom_targets += 1;
            let (metrics, labels) = promql_names(&expr);
            assert!(!metrics.is_empty(), "{what}: no shopflow metric in {expr}");
            let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            for m in &metrics {
                let labels = known.get(m.as_str()).unwrap_or_else(|| {
                    panic!(
                        "{what}: {m} is not a metric shopflow exports (known: {:?})",
                        known.keys().collect::<Vec<_>>()
                    )
                });
                allowed.extend(labels.iter().copied());
                used.insert(m.clone());
            }
            for l in &labels {
                assert!(
                    allowed.contains(l.as_str()),
                    "{what}: label {l} is not one of {allowed:?} in {expr}"
                );
            }
        }
    }
    assert!(prom_targets >= 15, "{prom_targets}");
    // The health dashboard shows every metric.
    let unused: Vec<&str> = known
        .keys()
        .copied()
        .filter(|m| !used.contains(*m))
        .collect();
    assert!(unused.is_empty(), "metrics on no panel: {unused:?}");
}

/// The Rust sources of the crates that register metrics.
fn metric_sources() -> String {
    let mut text = String::new();
    let mut dirs: Vec<PathBuf> = ["api/src", "pipelines/src", "sinks/src", "ingest/src", "src"]
        .iter()
        .map(|d| repo().join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                text.push_str(&read(&p));
            }
        }
    }
    text
}

#[test]
fn every_dashboard_metric_is_registered_by_the_code() {
    // A histogram `x` is exported as `x_bucket`, `x_sum` and `x_count`; the code names `x`.
    let sources = metric_sources();
    let missing: Vec<&str> = METRICS
        .iter()
        .map(|(m, _)| m.strip_suffix("_bucket").unwrap_or(m))
        .filter(|m| !sources.contains(&format!("\"{m}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the dashboards use that no source registers (renamed?): {missing:?}"
    );
}

#[test]
fn clickhouse_queries_read_the_sales_tables_with_final() {
    let mut sql_targets = 0;
    for (name, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let Some(sql) = t["rawSql"].as_str() else {
                    continue;
                };
                sql_targets += 1;
                let what = format!("{name} / {}", p["title"]);
                let lower = sql.to_ascii_lowercase();
                let tables: Vec<&str> = lower
                    .split(" from ")
                    .skip(1)
                    .map(|rest| rest.split_whitespace().next().unwrap_or(""))
                    .collect();
                assert!(!tables.is_empty(), "{what}: no FROM in {sql}");
                for (i, table) in tables.iter().enumerate() {
                    assert!(
                        CLICKHOUSE_TABLES.contains(table),
                        "{what}: unknown table {table}"
                    );
                    // ReplacingMergeTree: without FINAL a read may see superseded versions.
                    let after = lower.split(" from ").nth(i + 1).unwrap();
                    assert!(
                        after.split_whitespace().nth(1) == Some("final"),
                        "{what}: {table} must be read with FINAL: {sql}"
                    );
                }
                assert!(
                    sql.contains("seller_id = ${seller_id}"),
                    "{what}: filtered by the seller variable: {sql}"
                );
                assert!(
                    sql.contains("$__timeFilter("),
                    "{what}: limited to the dashboard's time range: {sql}"
                );
                if lower.contains("from sales_facts") {
                    assert!(sql.contains("effect = 'paid'"), "{what}: paid facts: {sql}");
                }
                // ClickHouse 18.16 (the local server) has no toStartOfInterval, DateTime64 or
                // CTEs; the macros that expand to them ($__timeInterval, $__timeFilter_ms)
                // are avoided.
                for unsupported in [
                    "$__timeInterval",
                    "$__timeFilter_ms",
                    "toStartOfInterval",
                    "DateTime64",
                    "WITH ",
                ] {
                    assert!(!sql.contains(unsupported), "{what}: {unsupported} in {sql}");
                }
            }
        }
        if name == "seller-sales.json" {
            let vars = d["templating"]["list"].as_array().unwrap();
            assert!(
                vars.iter()
                    .any(|v| v["name"] == "seller_id" && v["type"] == "query"),
                "a seller_id query variable"
            );
            assert_eq!(d["timezone"], "Asia/Seoul", "KST business calendar");
            let all = d.to_string();
            for needed in [
                "toStartOfHour(minute)",
                "toStartOfDay(minute)",
                "sum(refunds)",
                "sum(net)",
            ] {
                assert!(all.contains(needed), "{needed}");
            }
        }
    }
    assert!(sql_targets >= 5, "{sql_targets}");
}

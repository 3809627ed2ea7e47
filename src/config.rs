//! The configuration file of `shopflow run` (TOML, `--config FILE` or `SHOPFLOW_CONFIG`).
//!
//! Every setting of `run` can be given in four places; the first that has it wins, the same
//! for every key: a flag, the environment (for the settings that have a variable), the
//! file, the built-in default. Clap parses flags and the environment and records where
//! each value came from ([`ArgMatches::value_source`]); the file fills only what neither
//! gave. The file is checked whole before anything starts: an unknown key, a value of the
//! wrong type or out of range stops the start with one line naming the file, the line and
//! the key.
//!
//! Secrets are never written in the file: the JWT secret comes from `--jwt-secret`,
//! `SHOPFLOW_JWT_SECRET` or the file named by `api.jwt_secret_file` (a warning if others
//! may read it); a database URL in the file must not carry a password (the URL with its
//! password goes in `SHOPFLOW_MYSQL_URL`, or the password alone in the file named by
//! `sinks.mysql_password_file`).

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use crate::wiring::RunArgs;

/// The file, as written: every key optional. Sections and keys are listed in
/// `deploy/shopflow.example.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where events come from.
    #[serde(default)]
    pub source: SourceSection,
    /// Where views, ledgers, analytics, alerts and dead letters go.
    #[serde(default)]
    pub sinks: SinksSection,
    /// The dataflow's rules and threads.
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// The query API.
    #[serde(default)]
    pub api: ApiSection,
    /// What the process does once the input is processed.
    #[serde(default)]
    pub run: RunSection,
    /// Several processes running one pipeline.
    #[serde(default)]
    pub cluster: ClusterSection,
}

/// `[cluster]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// `--peers`: `host:port` of every process, in process order.
    pub peers: Option<Vec<String>>,
    /// `--process`: this process's index in `peers`.
    #[serde(default, deserialize_with = "in_range::<_, 0, 1_023>")]
    pub process: Option<u64>,
}

/// `[source]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `--kafka`: bootstrap servers.
    pub kafka_brokers: Option<String>,
    /// `--file`: a JSON-lines file instead of Kafka.
    pub file: Option<String>,
    /// `--bounded`: stop at the end of the input as it is at start.
    pub bounded: Option<bool>,
    /// `--kafka-fetch-kb`: most KiB fetched per partition per request.
    #[serde(default, deserialize_with = "in_range::<_, 1, 1_048_576>")]
    pub kafka_fetch_kb: Option<u64>,
    /// `--poll-batch`: most messages read per round.
    #[serde(default, deserialize_with = "in_range::<_, 1, 1_048_576>")]
    pub poll_batch: Option<u64>,
    /// `--topic-prefix`: prefix of every topic name.
    pub topic_prefix: Option<String>,
}

/// `[sinks]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksSection {
    /// `--redis`: Redis URL of the serving views.
    pub redis_url: Option<String>,
    /// `--redis-prefix`: prefix of every Redis key.
    pub redis_prefix: Option<String>,
    /// `--mysql`: MySQL/MariaDB URL of the ledgers, without a password.
    pub mysql_url: Option<String>,
    /// A file holding the MySQL password (added to `mysql_url`).
    pub mysql_password_file: Option<PathBuf>,
    /// `--clickhouse`: ClickHouse HTTP URL of the sales analytics.
    pub clickhouse_url: Option<String>,
    /// `--clickhouse-db`: ClickHouse database.
    pub clickhouse_db: Option<String>,
    /// `--clickhouse-validation`: the client's row validation.
    pub clickhouse_validation: Option<bool>,
    /// `--out-dir`: alerts and dead letters when not to Kafka.
    pub out_dir: Option<String>,
    /// `--give-up-after-secs`: how long a failing sink or source is retried (0: forever).
    #[serde(default, deserialize_with = "in_range::<_, 0, 604_800>")]
    pub give_up_after_secs: Option<u64>,
}

/// `[pipeline]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// `--workers`: timely worker threads.
    #[serde(default, deserialize_with = "in_range::<_, 1, 256>")]
    pub workers: Option<u64>,
    /// `--lateness-ms`: allowed lateness (SPEC §4).
    #[serde(default, deserialize_with = "in_range::<_, 0, 86_400_000>")]
    pub lateness_ms: Option<u64>,
    /// `--low-stock-threshold`: low-stock alert threshold.
    #[serde(default, deserialize_with = "in_range::<_, 0, 1_000_000>")]
    pub low_stock_threshold: Option<u64>,
    /// `--basket-max-skus`: co-purchase baskets with more distinct SKUs are skipped.
    #[serde(default, deserialize_with = "in_range::<_, 2, 1_000>")]
    pub basket_max_skus: Option<u64>,
    /// `--read-ahead-ms`: how far a partition may run ahead in event time before it is
    /// paused.
    #[serde(default, deserialize_with = "in_range::<_, 1_000, 86_400_000>")]
    pub read_ahead_ms: Option<u64>,
}

/// `[api]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// `--listen`: where the API listens.
    #[serde(default, deserialize_with = "socket_addr")]
    pub listen: Option<SocketAddr>,
    /// A file holding the JWT secret (used when neither `--jwt-secret` nor
    /// `SHOPFLOW_JWT_SECRET` is given).
    pub jwt_secret_file: Option<PathBuf>,
}

/// `[run]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// `--exit-when-done`: exit once a bounded input is processed.
    pub exit_when_done: Option<bool>,
    /// `--state-dir`: where checkpoints are written and restarts resume from.
    pub state_dir: Option<String>,
    /// `--checkpoint-interval-secs`: seconds between checkpoints.
    #[serde(default, deserialize_with = "in_range::<_, 1, 86_400>")]
    pub checkpoint_interval_secs: Option<u64>,
    /// `--checkpoint-every-messages`: messages read between checkpoints (0: no limit).
    #[serde(default, deserialize_with = "in_range::<_, 0, 1_000_000_000_000>")]
    pub checkpoint_every_messages: Option<u64>,
    /// `--checkpoints-kept`: checkpoint files kept.
    #[serde(default, deserialize_with = "in_range::<_, 1, 100>")]
    pub checkpoints_kept: Option<u64>,
}

/// An integer in `LO..=HI`.
fn in_range<'de, D: Deserializer<'de>, const LO: u64, const HI: u64>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    let v = i128::deserialize(d)?;
    if v < LO as i128 || v > HI as i128 {
        return Err(D::Error::custom(format!(
            "must be an integer in {LO}..={HI}, got {v}"
        )));
    }
    Ok(Some(v as u64))
}

/// `host:port` with an IP address.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        D::Error::custom(format!(
            "must be an address like \"127.0.0.1:8080\", got {text:?}"
        ))
    })
}

impl FileConfig {
    /// Reads and checks `path`. The error is one line: `FILE:LINE: KEY: what is wrong`.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))
    }

    /// Parses the text of a file; the error is `LINE: KEY: what is wrong`.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        let config: FileConfig = toml::from_str(text).map_err(|e| describe(text, &e))?;
        let urls = [
            ("mysql_url", &config.sinks.mysql_url, "put it in the file named by sinks.mysql_password_file, or give the whole URL in SHOPFLOW_MYSQL_URL"),
            ("redis_url", &config.sinks.redis_url, "give the whole URL in SHOPFLOW_REDIS_URL"),
            ("clickhouse_url", &config.sinks.clickhouse_url, "give the whole URL in SHOPFLOW_CLICKHOUSE_URL"),
        ];
        for (key, url, instead) in urls {
            if url.as_deref().is_some_and(has_password) {
                let line = line_of_key(text, key).unwrap_or(1);
                return Err(format!(
                    "{line}: sinks.{key}: a password is not kept in the configuration file; {instead}"
                ));
            }
        }
        Ok(config)
    }
}

/// Whether a URL carries a password (`scheme://user:password@host`).
fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// The 1-based line where `key = …` is first written.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// A TOML error as `LINE: KEY: message`, the key as `section.key` when the error's line
/// writes one.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .trim()
        .replace('\n', " ")
        .replace("unknown field", "unknown key")
        .replace("expected i128", "expected an integer");
    let Some(span) = e.span() else {
        return format!("1: {message}");
    };
    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
    match key_at(text, line) {
        Some(key) => format!("{line}: {key}: {message}"),
        None => format!("{line}: {message}"),
    }
}

/// `section.key` for the key written on 1-based `line`, if that line is `key = value`.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?;
    let (key, _) = this.split_once('=')?;
    let key = key.trim();
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The configuration file.
    File,
    /// The built-in default (or unset).
    Default,
}

impl Origin {
    fn of(matches: &ArgMatches, id: &str) -> Origin {
        match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Origin::Flag,
            Some(ValueSource::EnvVariable) => Origin::Env,
            _ => Origin::Default,
        }
    }

    /// `flag`, `env`, `file` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Flag => "flag",
            Origin::Env => "env",
            Origin::File => "file",
            Origin::Default => "default",
        }
    }
}

/// One effective setting: its file key, value (secrets redacted) and origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// `section.key` in the file.
    pub key: &'static str,
    /// The value, `-` when unset, `<redacted>` for a secret.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Fills what flags and the environment left unset from `file`, in `args`, and lists every
/// setting with its origin. `matches` are the matches of the `run` (or `config show`)
/// subcommand.
pub fn merge(args: &mut RunArgs, file: &FileConfig, matches: &ArgMatches) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    // One setting: `$id` is the clap argument, `$dst` the field, `$src` the file's value.
    macro_rules! setting {
        ($key:literal, $id:literal, $dst:expr, $src:expr, $into:expr) => {{
            let mut origin = Origin::of(matches, $id);
            if origin == Origin::Default {
                if let Some(v) = $src.clone() {
                    $dst = $into(v);
                    origin = Origin::File;
                }
            }
            out.push(Setting {
                key: $key,
                value: ShowValue::show(&$dst),
                origin,
            });
        }};
    }
    // Where events come from is one choice made in one place: a flag or variable naming
    // either Kafka or a file sets aside both keys of the file.
    let source_given = [Origin::of(matches, "kafka"), Origin::of(matches, "file")]
        .iter()
        .any(|o| *o != Origin::Default);
    let none = SourceSection::default();
    let s = if source_given { &none } else { &file.source };
    setting!(
        "source.kafka_brokers",
        "kafka",
        args.kafka,
        s.kafka_brokers,
        Some
    );
    setting!("source.file", "file", args.file, s.file, Some);
    let s = &file.source;
    setting!("source.bounded", "bounded", args.bounded, s.bounded, |v| v);
    setting!(
        "source.poll_batch",
        "poll_batch",
        args.poll_batch,
        s.poll_batch,
        Some
    );
    setting!(
        "source.kafka_fetch_kb",
        "kafka_fetch_kb",
        args.kafka_fetch_kb,
        s.kafka_fetch_kb,
        |v| v as usize
    );
    setting!(
        "source.topic_prefix",
        "topic_prefix",
        args.topic_prefix,
        s.topic_prefix,
        |v| v
    );
    let k = &file.sinks;
    setting!("sinks.redis_url", "redis", args.redis, k.redis_url, Some);
    if let Some(last) = out.last_mut() {
        last.value = args
            .redis
            .as_deref()
            .map(redact_url)
            .unwrap_or_else(|| "-".into());
    }
    setting!(
        "sinks.redis_prefix",
        "redis_prefix",
        args.redis_prefix,
        k.redis_prefix,
        |v| v
    );
    let mysql_origin = Origin::of(matches, "mysql");
    if mysql_origin == Origin::Default {
        if let Some(url) = &k.mysql_url {
            let url = match &k.mysql_password_file {
                Some(path) => with_password(url, &read_secret(path, "sinks.mysql_password_file")?)?,
                None => url.clone(),
            };
            args.mysql = Some(url);
        }
    }
    out.push(Setting {
        key: "sinks.mysql_url",
        value: args
            .mysql
            .as_deref()
            .map(redact_url)
            .unwrap_or_else(|| "-".into()),
        origin: match (mysql_origin, &k.mysql_url) {
            (Origin::Default, Some(_)) => Origin::File,
            (o, _) => o,
        },
    });
    setting!(
        "sinks.clickhouse_url",
        "clickhouse",
        args.clickhouse,
        k.clickhouse_url,
        Some
    );
    if let Some(last) = out.last_mut() {
        last.value = args
            .clickhouse
            .as_deref()
            .map(redact_url)
            .unwrap_or_else(|| "-".into());
    }
    setting!(
        "sinks.clickhouse_db",
        "clickhouse_db",
        args.clickhouse_db,
        k.clickhouse_db,
        |v| v
    );
    setting!(
        "sinks.clickhouse_validation",
        "clickhouse_validation",
        args.clickhouse_validation,
        k.clickhouse_validation,
        |v| v
    );
    setting!("sinks.out_dir", "out_dir", args.out_dir, k.out_dir, |v| v);
    let p = &mut args.pipeline;
    setting!(
        "sinks.give_up_after_secs",
        "give_up_after_secs",
        p.give_up_after_secs,
        k.give_up_after_secs,
        |v| v
    );
    let q = &file.pipeline;
    setting!("pipeline.workers", "workers", p.workers, q.workers, |v| v
        as usize);
    setting!(
        "pipeline.lateness_ms",
        "lateness_ms",
        p.lateness_ms,
        q.lateness_ms,
        |v| v
    );
    setting!(
        "pipeline.low_stock_threshold",
        "low_stock_threshold",
        p.low_stock_threshold,
        q.low_stock_threshold,
        |v| v as i64
    );
    setting!(
        "pipeline.basket_max_skus",
        "basket_max_skus",
        p.basket_max_skus,
        q.basket_max_skus,
        |v| v as usize
    );
    setting!(
        "pipeline.read_ahead_ms",
        "read_ahead_ms",
        p.read_ahead_ms,
        q.read_ahead_ms,
        |v| v
    );
    setting!("api.listen", "listen", p.listen, file.api.listen, |v| v);
    let secret_origin = Origin::of(matches, "jwt_secret");
    if secret_origin == Origin::Default {
        if let Some(path) = &file.api.jwt_secret_file {
            p.jwt_secret = Some(read_secret(path, "api.jwt_secret_file")?);
        }
    }
    out.push(Setting {
        key: "api.jwt_secret_file",
        value: if p.jwt_secret.is_some() {
            "<redacted>".into()
        } else {
            "-".into()
        },
        origin: match (secret_origin, &file.api.jwt_secret_file) {
            (Origin::Default, Some(_)) => Origin::File,
            (o, _) => o,
        },
    });
    setting!(
        "run.exit_when_done",
        "exit_when_done",
        args.exit_when_done,
        file.run.exit_when_done,
        |v| v
    );
    let r = &file.run;
    setting!(
        "run.state_dir",
        "state_dir",
        args.state_dir,
        r.state_dir,
        Some
    );
    setting!(
        "run.checkpoint_interval_secs",
        "checkpoint_interval_secs",
        args.checkpoint_interval_secs,
        r.checkpoint_interval_secs,
        |v| v
    );
    setting!(
        "run.checkpoint_every_messages",
        "checkpoint_every_messages",
        args.checkpoint_every_messages,
        r.checkpoint_every_messages,
        |v| v
    );
    setting!(
        "run.checkpoints_kept",
        "checkpoints_kept",
        args.checkpoints_kept,
        r.checkpoints_kept,
        |v| v as usize
    );
    let c = &file.cluster;
    let mut origin = Origin::of(matches, "peers");
    if origin == Origin::Default {
        if let Some(v) = &c.peers {
            args.peers = v.clone();
            origin = Origin::File;
        }
    }
    out.push(Setting {
        key: "cluster.peers",
        value: if args.peers.is_empty() {
            "-".into()
        } else {
            args.peers.join(",")
        },
        origin,
    });
    setting!("cluster.process", "process", args.process, c.process, |v| v
        as usize);
    Ok(out)
}

/// How `config show` prints a value.
trait ShowValue {
    fn show(&self) -> String;
}

impl<T: Display> ShowValue for Option<T> {
    fn show(&self) -> String {
        match self {
            Some(v) => v.to_string(),
            None => "-".into(),
        }
    }
}

macro_rules! show_display {
    ($($t:ty),*) => {$(
        impl ShowValue for $t {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
show_display!(String, bool, u64, i64, usize, SocketAddr);

/// A URL with its password replaced by `<redacted>`.
fn redact_url(url: &str) -> String {
    if !has_password(url) {
        return url.to_string();
    }
    let (scheme, rest) = url.split_once("://").expect("has a scheme");
    let (userinfo, host) = rest.split_once('@').expect("has userinfo");
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:<redacted>@{host}")
}

/// `url` with `password` added to its user.
fn with_password(url: &str, password: &str) -> Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("sinks.mysql_url {url:?} is not a URL (mysql://user@host:3306/db)");
    };
    let Some((user, host)) = rest.split_once('@') else {
        bail!("sinks.mysql_url has no user to give sinks.mysql_password_file's password to (mysql://user@host:3306/db)");
    };
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}"))
}

/// The content of a secret file (one trailing newline removed); warns when others may
/// read it.
fn read_secret(path: &Path, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{key}: cannot read {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o044 != 0 {
                tracing::warn!(
                    "{key}: {} may be read by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    meta.permissions().mode() & 0o777
                );
            }
        }
    }
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        bail!("{key}: {} is empty", path.display());
    }
    Ok(secret.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        FileConfig::parse(text).expect_err("an error")
    }

    #[test]
    fn the_shipped_example_is_valid_and_sets_every_section() {
        let text = include_str!("../deploy/shopflow.example.toml");
        let c = FileConfig::parse(text).unwrap_or_else(|e| panic!("example: {e}"));
        assert!(c.source.kafka_brokers.is_some());
        assert!(c.sinks.redis_url.is_some());
        assert_eq!(c.pipeline.workers, Some(2));
        assert!(c.api.listen.is_some());
    }

    #[test]
    fn unknown_keys_bad_types_and_bad_values_name_the_line_and_key() {
        let e = err("[pipeline]\nworkers = 2\nwokers = 3\n");
        assert!(e.starts_with("3: pipeline.wokers: unknown key"), "{e}");
        let e = err("[pipeline]\n\nworkers = \"two\"\n");
        assert!(e.starts_with("3: pipeline.workers: "), "{e}");
        assert!(
            e.contains("invalid type") && e.contains("expected an integer"),
            "{e}"
        );
        let e = err("[pipeline]\nworkers = 0\n");
        assert!(
            e.starts_with("2: pipeline.workers: must be an integer in 1..=256, got 0"),
            "{e}"
        );
        let e = err("[api]\nlisten = \"localhost\"\n");
        assert!(e.starts_with("2: api.listen: must be an address"), "{e}");
        let e = err("[nope]\n");
        assert!(e.starts_with("1: ") && e.contains("nope"), "{e}");
        let e = err("[sinks]\nmysql_url = \"mysql://u:secret@h:3306/db\"\n");
        assert!(e.starts_with("2: sinks.mysql_url: a password"), "{e}");
        assert!(!e.contains("secret@"), "the password is not echoed: {e}");
        let e = err("[sinks]\nredis_url = \"redis://:secret@h:6379/\"\n");
        assert!(e.starts_with("2: sinks.redis_url: a password"), "{e}");
        let e = err("[sinks]\n\nclickhouse_url = \"http://u:secret@h:8123\"\n");
        assert!(e.starts_with("3: sinks.clickhouse_url: a password"), "{e}");
        for e in [err("[pipeline]\nworkers = 2\nwokers = 3\n"), err("x = [\n")] {
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn urls_get_passwords_and_show_redacted() {
        assert!(has_password("mysql://u:p@h/db"));
        assert!(!has_password("mysql://u@h/db"));
        assert!(!has_password("http://h:8123"));
        assert_eq!(
            with_password("mysql://u@h:3306/db", "p@ss word").unwrap(),
            "mysql://u:p%40ss%20word@h:3306/db"
        );
        assert_eq!(redact_url("mysql://u:p@h/db"), "mysql://u:<redacted>@h/db");
    }
}

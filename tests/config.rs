//! `shopflow run --config FILE`: precedence (flag, environment, file, default), one-line
//! errors for a bad file or a service that cannot be reached, `config check` on the shipped
//! example, and a JWT secret given only by a file reaching the API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `shopflow` with no `SHOPFLOW_*` variable of the caller's environment.
fn shopflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SHOPFLOW_") {
            c.env_remove(k);
        }
    }
    c
}

/// A fresh directory for one test, removed when the test is done with it (passed or not).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("shopflow-config-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `config show` output as (key → (origin, value)).
fn show(c: &mut Command) -> std::collections::BTreeMap<String, (String, String)> {
    let out = c.output().expect("run shopflow config show");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, char::is_whitespace).filter(|p| !p.is_empty());
            let key = parts.next().unwrap().to_string();
            let rest = l[key.len()..].trim_start();
            let (origin, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (key, (origin.to_string(), value.trim_start().to_string()))
        })
        .collect()
}

#[test]
fn flag_beats_env_beats_file_beats_default_for_every_layer() {
    let dir = scratch("precedence");
    let file = dir.join("shopflow.toml");
    write(
        &file,
        "[pipeline]\nworkers = 3\n[sinks]\nredis_prefix = \"file:\"\n",
    );
    let key = "pipeline.workers";
    /// (want origin, env, flag, with the file, want value)
    type Case = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        &'static str,
    );
    let cases: [Case; 4] = [
        ("default", None, None, false, "2"),
        ("file", None, None, true, "3"),
        ("env", Some("4"), None, true, "4"),
        ("flag", Some("4"), Some("5"), true, "5"),
    ];
    for (origin, env, flag, with_file, value) in cases {
        let mut c = shopflow();
        c.args(["config", "show"]);
        if with_file {
            c.arg("--config").arg(&file);
        }
        if let Some(v) = env {
            c.env("SHOPFLOW_WORKERS", v);
        }
        if let Some(v) = flag {
            c.args(["--workers", v]);
        }
        let got = show(&mut c);
        assert_eq!(
            got[key],
            (origin.to_string(), value.to_string()),
            "{origin}: {got:?}"
        );
        if with_file {
            assert_eq!(got["sinks.redis_prefix"], ("file".into(), "file:".into()));
        }
    }
    // SHOPFLOW_CONFIG names the file too.
    let got = show(
        shopflow()
            .args(["config", "show"])
            .env("SHOPFLOW_CONFIG", &file),
    );
    assert_eq!(got[key], ("file".into(), "3".into()));
}

#[test]
fn a_bad_file_stops_the_start_with_one_line_naming_file_line_and_key() {
    let dir = scratch("bad");
    for (name, text, want) in [
        (
            "unknown",
            "[pipeline]\nworkers = 2\nwokers = 3\n",
            ":3: pipeline.wokers: unknown key",
        ),
        (
            "type",
            "[pipeline]\nlateness_ms = \"soon\"\n",
            ":2: pipeline.lateness_ms: invalid type",
        ),
        (
            "range",
            "[sinks]\n\ngive_up_after_secs = -1\n",
            ":3: sinks.give_up_after_secs: must be an integer in 0..=604800, got -1",
        ),
        (
            "secret",
            "[sinks]\nmysql_url = \"mysql://u:pw@h/db\"\n",
            ":2: sinks.mysql_url: a password is not kept",
        ),
    ] {
        let file = dir.join(format!("{name}.toml"));
        write(&file, text);
        for args in [
            vec!["config", "check"],
            vec!["run", "--file", "none.jsonl", "--config"],
        ] {
            let out = shopflow()
                .args(&args)
                .arg(&file)
                .env("SHOPFLOW_JWT_SECRET", "0123456789abcdef0123456789abcdef")
                .output()
                .unwrap();
            assert!(!out.status.success(), "{name} {args:?}: {out:?}");
            let err = String::from_utf8(out.stderr).unwrap();
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{name} {args:?}: one line: {err:?}");
            assert!(
                lines[0].contains(&format!("{}{want}", file.display())),
                "{name} {args:?}: {err:?}"
            );
            assert!(!err.contains("pw@"), "the password is not echoed: {err}");
        }
    }
}

#[test]
fn a_service_that_cannot_be_reached_stops_the_start_with_one_line_saying_what_to_do() {
    let dir = scratch("unreachable");
    let input = dir.join("empty.jsonl");
    write(&input, "");
    // Nothing listens on port 1.
    for (variable, url, says, script) in [
        (
            "SHOPFLOW_REDIS_URL",
            "redis://127.0.0.1:1",
            "Redis at redis://127.0.0.1:1",
            "deploy/local/up.sh redis",
        ),
        (
            "SHOPFLOW_MYSQL_URL",
            "mysql://shopflow:secret@127.0.0.1:1/shopflow",
            "MySQL at mysql://shopflow@127.0.0.1:1/shopflow",
            "deploy/local/up.sh mysql",
        ),
        (
            "SHOPFLOW_CLICKHOUSE_URL",
            "http://127.0.0.1:1",
            "ClickHouse at http://127.0.0.1:1",
            "deploy/local/up.sh clickhouse",
        ),
    ] {
        let out = shopflow()
            .args(["run", "--bounded", "--exit-when-done", "--file"])
            .arg(&input)
            .args(["--out-dir"])
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            .env(variable, url)
            .env("SHOPFLOW_JWT_SECRET", "0123456789abcdef0123456789abcdef")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{variable}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("shopflow:")).collect();
        assert_eq!(errors.len(), 1, "{variable}: one error line: {err:?}");
        let line = errors[0];
        assert!(line.contains(says), "{variable}: names the service: {line}");
        assert!(
            line.contains(script),
            "{variable}: says how to start it: {line}"
        );
        assert!(
            line.contains(variable),
            "{variable}: names the variable: {line}"
        );
        assert!(!line.contains("secret"), "{variable}: no password: {line}");
        let cause = "refused";
        assert!(
            line.matches(cause).count() <= 1,
            "{variable}: the cause once: {line}"
        );
    }
}

#[test]
fn the_shipped_example_passes_config_check() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/shopflow.example.toml");
    let out = shopflow()
        .args(["config", "check", example])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8(out.stdout).unwrap().ends_with(": ok\n"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` with a bearer token: the status.
fn status(port: u16, path: &str, token: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

#[test]
fn a_jwt_secret_given_only_by_file_reaches_the_api() {
    let dir = scratch("secret");
    let secret = "file-secret-0123456789abcdef0123456789";
    let secret_file = dir.join("jwt");
    write(&secret_file, &format!("{secret}\n"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let events = dir.join("events.jsonl");
    let gen = shopflow()
        .args(["gen", "--events", "2000", "--out"])
        .arg(&events)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{gen:?}");
    let port = free_port();
    let config = dir.join("shopflow.toml");
    write(
        &config,
        &format!(
            "[source]\nfile = {:?}\nbounded = true\n[sinks]\nout_dir = {:?}\n[api]\nlisten = \"127.0.0.1:{port}\"\njwt_secret_file = {:?}\n",
            events.display().to_string(),
            dir.join("out").display().to_string(),
            secret_file.display().to_string(),
        ),
    );
    let mut child = shopflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let mut served = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        served |= line.starts_with("serving until Ctrl-C");
        log.push(line);
        if served {
            break;
        }
    }
    let token = |secret: &str| {
        let out = shopflow()
            .args(["token", "--role", "admin"])
            .env("SHOPFLOW_JWT_SECRET", secret)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let signed = token(secret);
    let forged = token("another-secret-0123456789abcdef0123456");
    let results = served.then(|| {
        (
            status(port, "/v1/stock/1", &signed),
            status(port, "/v1/stock/1", &forged),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "the run did not finish: {log:#?}");
    assert_eq!(results, Some((200, 401)), "{log:#?}");
    assert!(
        !log.iter().any(|l| l.contains("may be read by other users")),
        "no warning for a 0600 file: {log:#?}"
    );
}

#[cfg(unix)]
#[test]
fn a_secret_file_others_may_read_is_warned_about_and_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("mode");
    let secret_file = dir.join("jwt");
    write(&secret_file, "mode-secret-0123456789abcdef0123456789\n");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = dir.join("shopflow.toml");
    write(
        &config,
        &format!(
            "[api]\njwt_secret_file = {:?}\n",
            secret_file.display().to_string()
        ),
    );
    let out = shopflow()
        .args(["config", "show", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("may be read by other users"), "{stderr}");
    assert!(!stdout.contains("mode-secret"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("api.jwt_secret_file")
            && l.contains("file")
            && l.ends_with("<redacted>")),
        "{stdout}"
    );
}

#[test]
fn a_source_given_by_flag_or_env_sets_aside_both_source_keys_of_the_file() {
    let dir = scratch("source");
    let file = dir.join("shopflow.toml");
    write(
        &file,
        "[source]\nfile = \"x.jsonl\"\nkafka_brokers = \"file-broker:9092\"\n",
    );
    let with_file = show(shopflow().args(["config", "show", "--config"]).arg(&file));
    assert_eq!(with_file["source.file"], ("file".into(), "x.jsonl".into()));
    // --kafka on the command line: the file's `file` must not win over it.
    let got = show(
        shopflow()
            .args(["config", "show", "--kafka", "flag-broker:9092", "--config"])
            .arg(&file),
    );
    assert_eq!(
        got["source.kafka_brokers"],
        ("flag".into(), "flag-broker:9092".into())
    );
    assert_eq!(
        got["source.file"],
        ("default".into(), "-".into()),
        "{got:?}"
    );
    let got = show(
        shopflow()
            .args(["config", "show", "--config"])
            .arg(&file)
            .env("SHOPFLOW_FILE", "env.jsonl"),
    );
    assert_eq!(got["source.file"], ("env".into(), "env.jsonl".into()));
    assert_eq!(
        got["source.kafka_brokers"],
        ("default".into(), "-".into()),
        "{got:?}"
    );
}

//! The deployment files (`deploy/Dockerfile`, `deploy/compose/`, `deploy/k8s/`) cannot run
//! on the test machine (no container engine), so this test reads them and checks them
//! against the binary they deploy:
//!
//! - every flag they pass to `shopflow` exists in the subcommand it is passed to (from
//!   `shopflow SUBCOMMAND --help`), and no flag appears where this test cannot tell which
//!   command it belongs to;
//! - every `SHOPFLOW_*` variable they set is one `shopflow run` reads;
//! - every configuration file they ship passes `shopflow config check`;
//! - every Secret key the StatefulSet reads exists in the Secret, the ConfigMap it mounts
//!   exists, and the StatefulSet runs one replica (the pipeline is one process: more
//!   replicas would each read every partition).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Variables the binary reads outside `run`'s flags (its log filter).
const OTHER_VARIABLES: [&str; 1] = ["SHOPFLOW_LOG"];

/// Subcommands a deployment file may invoke.
const SUBCOMMANDS: [&str; 3] = ["run", "load", "token"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shopflow(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shopflow"))
        .args(args)
        .output()
        .expect("run shopflow");
    assert!(out.status.success(), "shopflow {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The flags of `shopflow SUB --help`.
fn flags_of(sub: &str) -> BTreeSet<String> {
    shopflow(&[sub, "--help"])
        .split_whitespace()
        .map(|w| w.trim_end_matches([',', '.']))
        .filter(|w| is_flag(w))
        .map(str::to_string)
        .collect()
}

/// The `SHOPFLOW_*` variables `shopflow run --help` names, and the others the binary reads.
fn variables() -> BTreeSet<String> {
    let mut vars: BTreeSet<String> = shopflow(&["run", "--help"])
        .split("env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    vars.extend(OTHER_VARIABLES.iter().map(|v| v.to_string()));
    vars
}

/// The deployment files, each with its text.
fn files() -> Vec<(PathBuf, String)> {
    let mut out = vec![root().join("deploy/Dockerfile")];
    for dir in ["deploy/compose", "deploy/k8s"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        out.extend(entries);
    }
    out.into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            (p, text)
        })
        .collect()
}

/// The lines that are not comments; in the Dockerfile, only what the image runs.
fn live_lines<'a>(path: &Path, text: &'a str) -> Vec<&'a str> {
    let dockerfile = path.file_name().is_some_and(|n| n == "Dockerfile");
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| !dockerfile || l.starts_with("CMD") || l.starts_with("ENTRYPOINT"))
        .collect()
}

/// The quoted strings of a flow array on `line` (`["run", "--config", "…"]`), if any.
fn array_items(line: &str) -> Option<Vec<String>> {
    let start = line.find('[')?;
    let end = line.rfind(']')?;
    let inner = &line[start + 1..end];
    let items: Vec<String> = inner
        .split(',')
        .map(|i| i.trim().trim_matches('"').to_string())
        .collect();
    (!items.is_empty()).then_some(items)
}

/// `--name` (not a YAML document separator `---`).
fn is_flag(word: &str) -> bool {
    word.strip_prefix("--")
        .is_some_and(|name| name.starts_with(|c: char| c.is_ascii_lowercase()))
}

#[test]
fn every_flag_and_variable_the_deployment_uses_exists() {
    let vars = variables();
    let flags: Vec<(&str, BTreeSet<String>)> =
        SUBCOMMANDS.iter().map(|s| (*s, flags_of(s))).collect();
    let mut checked_flags = 0;
    for (path, text) in files() {
        for line in live_lines(&path, &text) {
            let has_flag = line
                .split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '[')
                .any(is_flag);
            if has_flag {
                let items = array_items(line).unwrap_or_else(|| {
                    panic!(
                        "{path:?}: a flag outside a [\"subcommand\", \"--flag\", …] list: {line}"
                    )
                });
                let (sub, known) = flags
                    .iter()
                    .find(|(s, _)| items.iter().any(|i| i == s))
                    .unwrap_or_else(|| panic!("{path:?}: flags for no known subcommand: {line}"));
                for flag in items.iter().filter(|i| is_flag(i)) {
                    assert!(
                        known.contains(flag.as_str()),
                        "{path:?}: `shopflow {sub}` has no flag {flag}: {line}"
                    );
                    checked_flags += 1;
                }
            }
            let mut rest = line;
            while let Some(at) = rest.find("SHOPFLOW_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                assert!(
                    vars.contains(&name),
                    "{path:?}: shopflow reads no variable {name}: {line}"
                );
                rest = &rest[at + name.len()..];
            }
        }
    }
    assert!(
        checked_flags >= 4,
        "only {checked_flags} flags found: the scan is broken"
    );
}

/// Every `NAME.toml: |` block of the ConfigMap, unindented: (NAME.toml, text).
fn configmap_files() -> Vec<(String, String)> {
    let configmap = std::fs::read_to_string(root().join("deploy/k8s/configmap.yaml")).unwrap();
    let mut out = Vec::new();
    let mut lines = configmap.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(name) = line.trim().strip_suffix(": |") else {
            continue;
        };
        let mut block = Vec::new();
        while let Some(l) = lines.next_if(|l| l.is_empty() || l.starts_with("    ")) {
            block.push(l.strip_prefix("    ").unwrap_or(l));
        }
        out.push((name.to_string(), block.join("\n")));
    }
    out
}

/// The quoted items of the `peers = [...]` line of a configuration.
fn peers_of(config: &str) -> Vec<String> {
    let line = config
        .lines()
        .find(|l| l.trim_start().starts_with("peers ="))
        .unwrap_or_else(|| panic!("no peers in {config}"));
    array_items(line).expect("a list of peers")
}

/// What `shopflow config show --config FILE` prints, with `env` set: key → value.
fn shown(config: &Path, env: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopflow"));
    c.args(["config", "show", "--config"]).arg(config);
    for v in ["SHOPFLOW_PEERS", "SHOPFLOW_PROCESS", "SHOPFLOW_STATE_DIR"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let key = w.next()?.to_string();
            let _origin = w.next()?;
            Some((key, w.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

#[test]
fn the_cluster_manifests_name_one_peer_per_process_in_order() {
    // Kubernetes: one peer per replica, pod i at position i, on the port the pods and the
    // headless Service open; pods start together and resolve before they are ready.
    let read = |f: &str| std::fs::read_to_string(root().join(f)).unwrap();
    let statefulset = read("deploy/k8s/statefulset-cluster.yaml");
    let service = read("deploy/k8s/service.yaml");
    let replicas: usize = statefulset
        .lines()
        .find_map(|l| l.trim().strip_prefix("replicas:"))
        .and_then(|r| r.trim().parse().ok())
        .expect("replicas");
    let (_, config) = configmap_files()
        .into_iter()
        .find(|(n, _)| n == "shopflow-cluster.toml")
        .expect("the ConfigMap holds shopflow-cluster.toml");
    let peers = peers_of(&config);
    assert_eq!(peers.len(), replicas, "one peer per replica: {peers:?}");
    assert!(replicas >= 2, "a cluster of one process");
    let port = "2101";
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(
            p,
            &format!("shopflow-{i}.shopflow-peers:{port}"),
            "peer {i}"
        );
    }
    assert!(
        statefulset.contains(&format!("containerPort: {port}"))
            && service.contains(&format!("port: {port}")),
        "the pods and the headless Service open the peers' port"
    );
    assert!(statefulset.contains("serviceName: shopflow-peers"));
    assert!(statefulset.contains("podManagementPolicy: Parallel"));
    assert!(service.contains("publishNotReadyAddresses: true"));
    assert!(
        statefulset.contains("apps.kubernetes.io/pod-index")
            && statefulset.contains("SHOPFLOW_PROCESS"),
        "each pod's process index is its ordinal"
    );
    assert!(
        statefulset.contains("/etc/shopflow/shopflow-cluster.toml"),
        "the cluster reads the cluster configuration"
    );
    assert!(
        statefulset.contains("volumeClaimTemplates")
            && statefulset.contains("mountPath: /var/lib/shopflow"),
        "each pod keeps its checkpoints on a volume of its own"
    );

    // Compose: one service per peer, each with its index.
    let compose = read("deploy/compose/compose.cluster.yaml");
    let peers = peers_of(&read("deploy/compose/shopflow-cluster.toml"));
    let indexes: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SHOPFLOW_PROCESS:"))
        .map(|v| v.trim().trim_matches('"'))
        .collect();
    assert_eq!(
        indexes.len(),
        peers.len(),
        "one process per peer: {peers:?}"
    );
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(indexes[i], i.to_string(), "process {i}'s index");
        let host = p.split(':').next().unwrap();
        assert!(
            compose.contains(&format!("\n  {host}:\n")),
            "peer {i} ({p}) is no service of compose.cluster.yaml"
        );
    }

    // Both configurations start as the process their index says, each with its state
    // directory (on the pod's or the service's own volume).
    let dir = std::env::temp_dir().join(format!("shopflow-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let k8s = dir.join("k8s.toml");
    std::fs::write(&k8s, config).unwrap();
    for file in [k8s, root().join("deploy/compose/shopflow-cluster.toml")] {
        let got = shown(&file, &[("SHOPFLOW_PROCESS", "1")]);
        assert_eq!(got["cluster.process"], "1", "{file:?}: {got:?}");
        assert_eq!(
            got["run.state_dir"], "/var/lib/shopflow/state",
            "{file:?}: {got:?}"
        );
        assert_eq!(
            got["cluster.peers"].split(',').count(),
            2,
            "{file:?}: {got:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_shipped_configuration_passes_config_check() {
    let dir = std::env::temp_dir().join(format!("shopflow-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut configs = vec![
        root().join("deploy/compose/shopflow.toml"),
        root().join("deploy/compose/shopflow-cluster.toml"),
    ];
    for (name, block) in configmap_files() {
        assert!(block.lines().count() > 5, "a short {name}: {block}");
        let path = dir.join(format!("configmap-{name}"));
        std::fs::write(&path, block).unwrap();
        configs.push(path);
    }
    assert_eq!(configs.len(), 4, "two configurations in the ConfigMap");
    for file in &configs {
        let out = Command::new(env!("CARGO_BIN_EXE_shopflow"))
            .args(["config", "check"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_statefulset_reads_what_the_secret_and_configmap_hold_and_runs_one_process() {
    let read = |f: &str| std::fs::read_to_string(root().join("deploy/k8s").join(f)).unwrap();
    let (statefulset, secret, configmap) = (
        read("statefulset.yaml"),
        read("secret.yaml"),
        read("configmap.yaml"),
    );
    let mut keys = 0;
    for line in statefulset.lines().filter(|l| l.contains("secretKeyRef")) {
        let key = line
            .split("key:")
            .nth(1)
            .map(|k| k.trim().trim_end_matches('}').trim())
            .unwrap_or_else(|| panic!("a secretKeyRef without key: {line}"));
        assert!(
            secret
                .lines()
                .any(|l| l.trim().starts_with(&format!("{key}:"))),
            "the Secret has no key {key}"
        );
        keys += 1;
    }
    assert_eq!(
        keys, 2,
        "the JWT secret and the MySQL URL come from the Secret"
    );
    assert!(
        statefulset.contains("configMap: {name: shopflow}")
            && configmap.contains("name: shopflow\n"),
        "the mounted ConfigMap is the one shipped"
    );
    let replicas: Vec<&str> = statefulset
        .lines()
        .filter_map(|l| l.trim().strip_prefix("replicas:"))
        .map(str::trim)
        .collect();
    assert_eq!(replicas, ["1"], "one process runs the pipeline");
    for probe in ["path: /healthz", "path: /readyz"] {
        assert!(statefulset.contains(probe), "no probe on {probe}");
    }
}

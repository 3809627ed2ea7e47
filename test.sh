#!/usr/bin/env bash
# Runs every check and test of shopflow against real services:
#   1. installs what the local services need (idempotent: a no-op once installed),
#   2. starts Kafka (Nisshi), Redis, MariaDB and ClickHouse on 127.0.0.1 (deploy/local/up.sh),
#   3. checks formatting and lints (cargo fmt, cargo clippy -D warnings) and the dependency
#      tree (cargo deny: licences, bans, sources; deploy/local/deny.sh),
#   4. runs the unit, property and integration tests (cargo nextest, or cargo test),
#   5. stops the services it started (set SHOPFLOW_KEEP_SERVICES=1 to keep them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

deploy/local/install.sh
env_lines=$(deploy/local/up.sh)  # fails the script (set -e) if a service cannot start
eval "$env_lines"
if [ -z "${SHOPFLOW_KEEP_SERVICES:-}" ]; then
    trap 'deploy/local/down.sh >/dev/null 2>&1 || true' EXIT
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The advisory database lives on github.com, which CI machines may not reach: the offline checks.
deploy/local/deny.sh licenses bans sources
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

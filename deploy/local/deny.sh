#!/usr/bin/env bash
# Checks the dependency tree against deny.toml (licences, bans, sources, advisories):
# installs cargo-deny from crates.io into the build cache on first use (a few minutes on
# 2 cores; skipped once it is there), then runs `cargo deny check`.
#   deploy/local/deny.sh              all checks (advisories need github.com for the database)
#   deploy/local/deny.sh licenses bans sources   the checks that work offline
set -euo pipefail
cd "$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
version=0.20.2
root="${SHOPFLOW_CACHE:-$HOME/.cache/shopflow}/cargo-deny-$version"
if [ ! -x "$root/bin/cargo-deny" ]; then
    echo "deny.sh: installing cargo-deny $version into $root" >&2
    cargo install cargo-deny --version "$version" --locked --root "$root" >&2
fi
exec "$root/bin/cargo-deny" deny check "$@"

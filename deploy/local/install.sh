#!/usr/bin/env bash
# Installs what the local test services need, skipping whatever is already there:
#   - Debian packages: redis-server, mariadb-server, clickhouse-server, clickhouse-client,
#     cmake and libcurl4-openssl-dev (kept for the broker's build; shopflow itself builds
#     librdkafka with its own configure script and needs neither), curl, and chromium
#     (headless, for the seller page's browser test, tests/browser.rs);
#   - the Kafka-protocol broker Nisshi 0.8.1 with features dynostore,libsql (the libsql
#     feature gives it durable SQLite storage, which up.sh uses with
#     SHOPFLOW_KAFKA_STORAGE=sqlite so a broker restart keeps the log), built from crates.io
#     with cargo into $SHOPFLOW_CACHE/nisshi-0.8.1-libsql (default ~/.cache/shopflow),
#     outside the clone, so the ~40 min build happens once per machine.
# Safe to run again: it does nothing when everything is installed. Logs go to
# ${SHOPFLOW_STATE:-<repo>/.shopflow}/logs/. Exits non-zero with one line naming the
# failed step and its log.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
state=${SHOPFLOW_STATE:-$repo/.shopflow}
cache=${SHOPFLOW_CACHE:-$HOME/.cache/shopflow}
logs=$state/logs

NISSHI_VERSION=0.8.1
NISSHI_FEATURES=dynostore,libsql
nisshi_root=$cache/nisshi-$NISSHI_VERSION-libsql
nisshi_bin=$nisshi_root/bin/nisshi

packages=(redis-server mariadb-server clickhouse-server clickhouse-client cmake curl libcurl4-openssl-dev chromium)

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

mkdir -p "$logs"

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "not root and sudo is missing; cannot run apt-get"
    as_root=(sudo)
fi

started=$SECONDS

# --- Debian packages ------------------------------------------------------------------------
installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    apt_log=$logs/install-apt.log
    echo "install.sh: installing ${missing[*]} (log: $apt_log)"
    # Wait for another apt/dpkg run to release its lock instead of failing at once.
    apt_opts=(-o DPkg::Lock::Timeout=900)
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" update >>"$apt_log" 2>&1; then
        fail "apt-get update failed; see $apt_log"
    fi
    if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install -y "${missing[@]}" >>"$apt_log" 2>&1; then
        fail "apt-get install ${missing[*]} failed; see $apt_log"
    fi
    for pkg in "${missing[@]}"; do
        installed "$pkg" || fail "apt-get install $pkg failed; see $apt_log"
    done
fi

for bin in /usr/bin/redis-server /usr/bin/redis-cli /usr/sbin/mariadbd /usr/bin/mariadb-install-db \
    /usr/sbin/clickhouse-server /usr/bin/clickhouse-client /usr/bin/cmake /usr/bin/curl /usr/bin/chromium; do
    [ -x "$bin" ] || fail "$bin is missing after installing its package"
done

# --- Nisshi broker --------------------------------------------------------------------------
nisshi_works() {
    [ -x "$nisshi_bin" ] && "$nisshi_bin" --version >/dev/null 2>&1
}

if ! nisshi_works; then
    # Another build of the same thing (e.g. a second shell running this script) would only
    # compete for the two cores: wait for it and use its result.
    if pgrep -f "cargo install nisshi" >/dev/null 2>&1; then
        echo "install.sh: a 'cargo install nisshi' is already running; waiting for it to finish"
        while pgrep -f "cargo install nisshi" >/dev/null 2>&1; do
            sleep 10
        done
    fi
fi

if ! nisshi_works; then
    command -v cargo >/dev/null 2>&1 || fail "cargo not found; install a Rust toolchain (rustup) first"
    nisshi_log=$logs/install-nisshi.log
    echo "install.sh: building nisshi $NISSHI_VERSION ($NISSHI_FEATURES) into $nisshi_root (about 40 min on 2 cores; log: $nisshi_log)"
    mkdir -p "$nisshi_root"
    if ! cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
        --no-default-features --features "$NISSHI_FEATURES" --root "$nisshi_root" >>"$nisshi_log" 2>&1; then
        fail "cargo install nisshi $NISSHI_VERSION failed; see $nisshi_log"
    fi
    nisshi_works || fail "nisshi was built but $nisshi_bin does not run; see $nisshi_log"
fi

echo "install.sh: all installed ($((SECONDS - started)) s); nisshi: $nisshi_bin"

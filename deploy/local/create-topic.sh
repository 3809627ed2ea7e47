#!/usr/bin/env bash
# Creates a topic on the local Nisshi broker that up.sh started
# (127.0.0.1:${SHOPFLOW_KAFKA_PORT:-19092}), with the nisshi CLI.
# Usage: create-topic.sh NAME PARTITIONS
# Idempotent: a topic that already exists counts as success (its partition count is left as
# it is; a warning says so when it differs).
set -euo pipefail

usage() {
    echo "usage: create-topic.sh NAME PARTITIONS" >&2
    exit 2
}
fail() {
    echo "create-topic.sh: $*" >&2
    exit 1
}

[ "$#" -eq 2 ] || usage
name=$1
partitions=$2
[[ $name =~ ^[A-Za-z0-9._-]{1,249}$ ]] || fail "invalid topic name '$name' (allowed: letters, digits, '.', '_', '-')"
[[ $partitions =~ ^[1-9][0-9]*$ ]] || fail "invalid partition count '$partitions'"

cache=${SHOPFLOW_CACHE:-$HOME/.cache/shopflow}
nisshi=${SHOPFLOW_NISSHI:-$cache/nisshi-0.8.1-libsql/bin/nisshi}  # where install.sh builds it
port=${SHOPFLOW_KAFKA_PORT:-19092}
broker=tcp://127.0.0.1:$port

[ -x "$nisshi" ] || fail "nisshi not found at $nisshi; run deploy/local/install.sh"

# Prints the partition count of topic $name, or nothing when the broker does not have it.
existing_partitions() {
    local topics
    topics=$(timeout 30 "$nisshi" topic list --broker "$broker" 2>/dev/null) || return 0
    python3 - "$name" "$topics" <<'PY'
import json, sys
name, topics = sys.argv[1], json.loads(sys.argv[2])
for topic in topics or []:
    if topic.get("name") == name:
        print(len(topic.get("partitions") or []))
PY
}

# Runs from a scratch dir: the nisshi CLI reads a .env file from its working directory.
cd "${TMPDIR:-/tmp}"

if output=$(timeout 60 "$nisshi" topic create --broker "$broker" --partitions "$partitions" --silent "$name" 2>&1); then
    echo "create-topic.sh: created topic $name with $partitions partition(s) on $broker"
    exit 0
fi

have=$(existing_partitions)
if [ -z "$have" ]; then
    # Only the last line: the CLI's own 'error: ...' message.
    fail "creating topic $name on $broker failed: $(printf '%s\n' "$output" | tail -n 1)"
fi
if [ "$have" != "$partitions" ]; then
    echo "create-topic.sh: warning: topic $name already exists with $have partition(s), not $partitions" >&2
else
    echo "create-topic.sh: topic $name already exists ($have partition(s))"
fi

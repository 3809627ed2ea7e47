#!/usr/bin/env bash
# Stops the local test services that up.sh started from the same state dir
# (${SHOPFLOW_STATE:-<repo>/.shopflow}): SIGTERM through their pidfiles, a wait of up to 10 s,
# then SIGKILL. Data stays (MariaDB and ClickHouse keep theirs; the Kafka broker keeps its log
# with SHOPFLOW_KAFKA_STORAGE=sqlite and Redis its views with SHOPFLOW_REDIS_PERSIST=1, else
# they keep nothing), so up.sh brings them back.
# Usage: down.sh [kafka|redis|mysql|clickhouse ...]   (no argument: all four)
# Idempotent: stopping what does not run succeeds.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
state=${SHOPFLOW_STATE:-$repo/.shopflow}

all_services=(kafka redis mysql clickhouse)
term_timeout=10
kill_timeout=5

say() { echo "down.sh: $*" >&2; }

usage() {
    echo "usage: down.sh [kafka|redis|mysql|clickhouse ...]" >&2
    exit "${1:-2}"
}

services=()
for arg in "$@"; do
    case $arg in
        kafka | nisshi) svc=kafka ;;
        redis) svc=redis ;;
        mysql | mariadb) svc=mysql ;;
        clickhouse) svc=clickhouse ;;
        -h | --help) usage 0 ;;
        *) echo "down.sh: unknown service '$arg'" >&2 && usage ;;
    esac
    [[ " ${services[*]} " == *" $svc "* ]] || services+=("$svc")
done
[ "${#services[@]}" -gt 0 ] || services=("${all_services[@]}")

if [ ! -d "$state/run" ]; then
    say "nothing runs from $state"
    exit 0
fi
state=$(cd "$state" && pwd)
run=$state/run
data=$state/data

# One up.sh/down.sh at a time per state dir.
exec 9>"$run/lock"
flock -w 120 9 || {
    say "another up.sh or down.sh holds $run/lock"
    exit 1
}

# Two strings that the command line of this state dir's process for service $1, started with
# the ports in $2, contains (the same test as in up.sh, so a reused pid is never signalled).
signature() {
    local port=${2%% *}
    case $1 in
        kafka) echo "nisshi" "tcp://127.0.0.1:$port" ;;
        redis) echo "redis-server" "127.0.0.1:$port" ;;
        mysql) echo "mariadbd" "--datadir=$data/mysql" ;;
        clickhouse) echo "clickhouse-server" "--config-file=$state/clickhouse/config.xml" ;;
    esac
}

# True when process $1 exists and is not a zombie.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Prints the pid of this state dir's running process for service $1; fails when there is none.
service_pid() {
    local svc=$1 pid ports cmdline a b
    pid=$(cat "$run/$svc.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    ports=$(cat "$run/$svc.ports" 2>/dev/null) || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    read -r a b <<<"$(signature "$svc" "$ports")"
    [[ $cmdline == *"$a"* && $cmdline == *"$b"* ]] || return 1
    echo "$pid"
}

# Signal every selected service first, then wait for all of them together.
stopping=()
pids=()
for svc in "${services[@]}"; do
    if pid=$(service_pid "$svc"); then
        kill -TERM "$pid" 2>/dev/null || true
        stopping+=("$svc")
        pids+=("$pid")
    else
        rm -f "$run/$svc.pid" "$run/$svc.ports"
        say "$svc is not running"
    fi
done

all_gone() {
    local pid
    for pid in "${pids[@]}"; do
        alive "$pid" && return 1
    done
    return 0
}

wait_gone() {
    local deadline=$((SECONDS + $1))
    while ! all_gone; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

if [ "${#pids[@]}" -gt 0 ] && ! wait_gone "$term_timeout"; then
    for i in "${!pids[@]}"; do
        if alive "${pids[$i]}"; then
            say "${stopping[$i]} (pid ${pids[$i]}) ignored SIGTERM for $term_timeout s; sending SIGKILL"
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
    done
    wait_gone "$kill_timeout" || true
fi

status=0
for i in "${!pids[@]}"; do
    svc=${stopping[$i]}
    if alive "${pids[$i]}"; then
        say "$svc (pid ${pids[$i]}) is still running after SIGKILL"
        status=1
    else
        rm -f "$run/$svc.pid" "$run/$svc.ports"
        [ "$svc" != mysql ] || rm -f "$run/mysqld.sock" "$run/mariadbd.pid"
        say "$svc stopped (pid ${pids[$i]})"
    fi
done
exit "$status"

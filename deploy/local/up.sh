#!/usr/bin/env bash
# Starts the local test services in the background (no systemd), on 127.0.0.1 only, with all
# data, logs, pidfiles and configs under ${SHOPFLOW_STATE:-<repo>/.shopflow}:
#   kafka       Nisshi broker                        port $SHOPFLOW_KAFKA_PORT           (19092)
#   redis       redis-server                         port $SHOPFLOW_REDIS_PORT           (16379)
#   mysql       mariadbd, database+user "shopflow"   port $SHOPFLOW_MYSQL_PORT           (13306)
#   clickhouse  clickhouse-server (HTTP and native)  ports $SHOPFLOW_CLICKHOUSE_HTTP_PORT (18123)
#                                                    and $SHOPFLOW_CLICKHOUSE_TCP_PORT   (19000)
# Usage: up.sh [kafka|redis|mysql|clickhouse ...]   (no argument: all four)
# Storage: SHOPFLOW_KAFKA_STORAGE=memory (default; a broker restart loses every topic) or
# sqlite (durable, in <state>/data/kafka/nisshi.db; slower). SHOPFLOW_REDIS_PERSIST=1 turns
# on Redis's append-only file (in <state>/data/redis) so a Redis restart keeps the views;
# without it Redis keeps nothing across a restart.
# A service that this state dir already runs is left as it is, so running it again is a no-op.
# A port held by another process is an error. Each service gets ~30 s to answer.
# At the end it writes <state>/env and prints its export lines on stdout (progress goes to
# stderr), so `eval "$(deploy/local/up.sh)"` also works. Stop with down.sh.
# Needs install.sh to have run (Debian packages and the Nisshi binary).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/../.." && pwd))
state=${SHOPFLOW_STATE:-$repo/.shopflow}
mkdir -p "$state"
state=$(cd "$state" && pwd)
cache=${SHOPFLOW_CACHE:-$HOME/.cache/shopflow}
nisshi=${SHOPFLOW_NISSHI:-$cache/nisshi-0.8.1-libsql/bin/nisshi}
kafka_storage=${SHOPFLOW_KAFKA_STORAGE:-memory}
redis_persist=${SHOPFLOW_REDIS_PERSIST:-0}

kafka_port=${SHOPFLOW_KAFKA_PORT:-19092}
redis_port=${SHOPFLOW_REDIS_PORT:-16379}
mysql_port=${SHOPFLOW_MYSQL_PORT:-13306}
clickhouse_http_port=${SHOPFLOW_CLICKHOUSE_HTTP_PORT:-18123}
clickhouse_tcp_port=${SHOPFLOW_CLICKHOUSE_TCP_PORT:-19000}

run=$state/run
logs=$state/logs
data=$state/data
mysql_socket=$run/mysqld.sock
clickhouse_conf=$state/clickhouse
startup_timeout=30

all_services=(kafka redis mysql clickhouse)

say() { echo "up.sh: $*" >&2; }
fail() {
    echo "up.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: up.sh [kafka|redis|mysql|clickhouse ...]" >&2
    exit "${1:-2}"
}

case $kafka_storage in
    memory | sqlite) ;;
    *) fail "SHOPFLOW_KAFKA_STORAGE must be memory or sqlite, not '$kafka_storage'" ;;
esac
case $redis_persist in
    0 | 1) ;;
    *) fail "SHOPFLOW_REDIS_PERSIST must be 0 or 1, not '$redis_persist'" ;;
esac

for port in "$kafka_port" "$redis_port" "$mysql_port" "$clickhouse_http_port" "$clickhouse_tcp_port"; do
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        fail "invalid port '$port'"
    fi
done

services=()
for arg in "$@"; do
    case $arg in
        kafka | nisshi) svc=kafka ;;
        redis) svc=redis ;;
        mysql | mariadb) svc=mysql ;;
        clickhouse) svc=clickhouse ;;
        -h | --help) usage 0 ;;
        *) echo "up.sh: unknown service '$arg'" >&2 && usage ;;
    esac
    [[ " ${services[*]} " == *" $svc "* ]] || services+=("$svc")
done
[ "${#services[@]}" -gt 0 ] || services=("${all_services[@]}")

mkdir -p "$run" "$logs" "$data"

# One up.sh/down.sh at a time per state dir.
exec 9>"$run/lock"
flock -w 120 9 || fail "another up.sh or down.sh holds $run/lock"

# --- helpers ---------------------------------------------------------------------------------
# ports a service listens on (the first is the one named in messages and recorded)
service_ports() {
    case $1 in
        kafka) echo "$kafka_port" ;;
        redis) echo "$redis_port" ;;
        mysql) echo "$mysql_port" ;;
        clickhouse) echo "$clickhouse_http_port $clickhouse_tcp_port" ;;
    esac
}

port_variable() {
    case $1:$2 in
        kafka:*) echo SHOPFLOW_KAFKA_PORT ;;
        redis:*) echo SHOPFLOW_REDIS_PORT ;;
        mysql:*) echo SHOPFLOW_MYSQL_PORT ;;
        clickhouse:"$clickhouse_http_port") echo SHOPFLOW_CLICKHOUSE_HTTP_PORT ;;
        clickhouse:*) echo SHOPFLOW_CLICKHOUSE_TCP_PORT ;;
    esac
}

log_file() { echo "$logs/$1.log"; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

# Two strings that the command line of this state dir's process for service $1, started with
# the ports in $2, contains.
signature() {
    local port=${2%% *}
    case $1 in
        kafka) echo "nisshi" "tcp://127.0.0.1:$port" ;;
        redis) echo "redis-server" "127.0.0.1:$port" ;;
        mysql) echo "mariadbd" "--datadir=$data/mysql" ;;
        clickhouse) echo "clickhouse-server" "--config-file=$clickhouse_conf/config.xml" ;;
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

# True when service $1 answers on its port(s).
answers() {
    case $1 in
        kafka)
            port_open "$kafka_port" &&
                timeout 10 "$nisshi" topic list --broker "tcp://127.0.0.1:$kafka_port" >/dev/null 2>&1
            ;;
        redis)
            [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ]
            ;;
        mysql)
            # Through the socket as the admin user: a TCP ping is refused until setup_mysql has
            # created a user for 127.0.0.1. setup_mysql then checks the TCP login.
            timeout 10 mariadb-admin --no-defaults --socket="$mysql_socket" -u"$(mysql_admin_user)" \
                --connect-timeout=2 ping >/dev/null 2>&1
            ;;
        clickhouse)
            # (a server that cannot listen on its TCP port exits, which wait_ready notices)
            [ "$(curl -s --max-time 2 "http://127.0.0.1:$clickhouse_http_port/ping" 2>/dev/null)" = "Ok." ]
            ;;
    esac
}

# Stops process $1 (one that did not come up): SIGTERM, then SIGKILL after 5 s.
stop_pid() {
    local _
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 25); do
        alive "$1" || return 0
        sleep 0.2
    done
    kill -KILL "$1" 2>/dev/null || true
}

# Waits until service $1 answers; fails when its process exits or after $startup_timeout s
# (then it stops the process).
wait_ready() {
    local svc=$1 deadline pid
    deadline=$((SECONDS + startup_timeout))
    while ! answers "$svc"; do
        pid=$(cat "$run/$svc.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && ! alive "$pid"; then
            rm -f "$run/$svc.pid" "$run/$svc.ports"
            fail "$svc exited while starting; see $(log_file "$svc")"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            [ -z "$pid" ] || stop_pid "$pid"
            rm -f "$run/$svc.pid" "$run/$svc.ports"
            fail "$svc did not answer within $startup_timeout s; see $(log_file "$svc")"
        fi
        sleep 0.3
    done
}

# Runs "$@" as service $1 in its own session, in the background, with its output appended to
# the service's log, and records its pid and ports.
launch() {
    local svc=$1
    shift
    rm -f "$run/$svc.pid"
    service_ports "$svc" >"$run/$svc.ports"
    {
        echo
        echo "=== $(date -u '+%Y-%m-%dT%H:%M:%SZ') up.sh starting $svc: $*"
    } >>"$(log_file "$svc")"
    (
        exec 9>&- # the service must not hold the up.sh/down.sh lock
        cd "$state"
        # shellcheck disable=SC2016 # expanded by the inner shell
        exec setsid bash -c 'echo "$$" >"$0" && exec "$@"' "$run/$svc.pid" "$@"
    ) </dev/null >>"$(log_file "$svc")" 2>&1 &
}

# --- per-service start -----------------------------------------------------------------------
start_kafka() {
    [ -x "$nisshi" ] || fail "nisshi not found at $nisshi; run deploy/local/install.sh"
    local storage=memory://nisshi/
    if [ "$kafka_storage" = sqlite ]; then
        # A path relative to the broker's working directory, the state dir (launch cds there):
        # nisshi resolves sqlite://HOST/PATH as HOST/PATH under it.
        mkdir -p "$data/kafka"
        storage="sqlite://data/kafka/nisshi.db?maintenance_interval=5s"
    fi
    launch kafka "$nisshi" broker \
        --listener-url "tcp://127.0.0.1:$kafka_port" \
        --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
        --storage-engine "$storage" \
        --group-initial-rebalance-delay 0s
}

start_redis() {
    mkdir -p "$data/redis"
    local appendonly=no
    [ "$redis_persist" = 1 ] && appendonly=yes
    # With the append-only file, every write is on disk within a second and a clean stop
    # (SIGTERM, as down.sh sends) flushes the rest.
    launch redis /usr/bin/redis-server \
        --bind 127.0.0.1 --port "$redis_port" --protected-mode yes \
        --daemonize no --dir "$data/redis" --logfile "" \
        --save "" --appendonly "$appendonly" --appendfsync everysec
}

as_root() { [ "$(id -u)" -eq 0 ]; }

# The MariaDB account that the OS user running this script reaches through the socket.
mysql_admin_user() {
    if as_root; then echo root; else id -un; fi
}

mysql_admin() {
    mariadb --no-defaults --socket="$mysql_socket" -u"$(mysql_admin_user)"
}

start_mysql() {
    local datadir=$data/mysql log
    log=$(log_file mysql)
    [ "${#mysql_socket}" -le 100 ] ||
        fail "socket path $mysql_socket is too long for a Unix socket; set SHOPFLOW_STATE to a shorter dir"
    local user_opts=()
    as_root && user_opts=(--user=root)
    if [ ! -f "$datadir/.shopflow-initialized" ]; then
        rm -rf "$datadir"
        mkdir -p "$datadir"
        local init_opts=(--auth-root-authentication-method=socket)
        as_root || init_opts+=("--auth-root-socket-user=$(id -un)")
        say "mysql: initializing $datadir"
        if ! mariadb-install-db --no-defaults "${user_opts[@]}" --datadir="$datadir" \
            --skip-test-db "${init_opts[@]}" >>"$log" 2>&1 </dev/null; then
            fail "mariadb-install-db failed; see $log"
        fi
        touch "$datadir/.shopflow-initialized"
    fi
    # --no-defaults: ignore /etc/mysql. innodb-flush-log-at-trx-commit=2 keeps every committed
    # transaction when mariadbd itself is killed (the outage tests), not on a machine crash.
    launch mysql /usr/sbin/mariadbd --no-defaults "${user_opts[@]}" \
        --datadir="$datadir" --bind-address=127.0.0.1 --port="$mysql_port" \
        --socket="$mysql_socket" --pid-file="$run/mariadbd.pid" \
        --skip-name-resolve --max-connections=500 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2
}

# Creates the database and the user; idempotent, so it runs on every up.sh.
setup_mysql() {
    local log
    log=$(log_file mysql)
    if ! mysql_admin >>"$log" 2>&1 <<'SQL'; then
CREATE DATABASE IF NOT EXISTS shopflow CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'shopflow'@'127.0.0.1' IDENTIFIED BY 'shopflow';
CREATE USER IF NOT EXISTS 'shopflow'@'localhost' IDENTIFIED BY 'shopflow';
ALTER USER 'shopflow'@'127.0.0.1' IDENTIFIED BY 'shopflow';
ALTER USER 'shopflow'@'localhost' IDENTIFIED BY 'shopflow';
GRANT ALL PRIVILEGES ON `shopflow`.* TO 'shopflow'@'127.0.0.1', 'shopflow'@'localhost';
GRANT ALL PRIVILEGES ON `shopflow\_%`.* TO 'shopflow'@'127.0.0.1', 'shopflow'@'localhost';
SQL
        fail "mysql: creating database/user shopflow failed; see $log"
    fi
    local deadline=$((SECONDS + startup_timeout))
    until timeout 10 mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P"$mysql_port" \
        -ushopflow -pshopflow --connect-timeout=2 ping >>"$log" 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] ||
            fail "mysql: user shopflow cannot log in on 127.0.0.1:$mysql_port; see $log"
        sleep 0.3
    done
}

write_clickhouse_config() {
    mkdir -p "$clickhouse_conf" "$data/clickhouse/data" "$data/clickhouse/tmp" \
        "$data/clickhouse/user_files" "$data/clickhouse/format_schemas"
    cat >"$clickhouse_conf/config.xml" <<XML
<?xml version="1.0"?>
<!-- Written by deploy/local/up.sh on every start; edits are overwritten. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$logs/clickhouse.log</log>
        <errorlog>$logs/clickhouse.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$clickhouse_http_port</http_port>
    <tcp_port>$clickhouse_tcp_port</tcp_port>
    <!-- no interserver_http_port: no replication, so no third port -->
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>536870912</mark_cache_size>
    <path>$data/clickhouse/data/</path>
    <tmp_path>$data/clickhouse/tmp/</tmp_path>
    <user_files_path>$data/clickhouse/user_files/</user_files_path>
    <format_schema_path>$data/clickhouse/format_schemas/</format_schema_path>
    <users_config>$clickhouse_conf/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
XML
    cat >"$clickhouse_conf/users.xml" <<'XML'
<?xml version="1.0"?>
<!-- Written by deploy/local/up.sh on every start; edits are overwritten. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>10000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
XML
}

start_clickhouse() {
    [[ $state != *[\<\>\&]* ]] || fail "the state dir path $state has a character (<, > or &) that the ClickHouse config cannot hold"
    write_clickhouse_config
    launch clickhouse /usr/sbin/clickhouse-server --config-file="$clickhouse_conf/config.xml"
}

after_start() {
    case $1 in
        mysql) setup_mysql ;;
    esac
}

# --- main ------------------------------------------------------------------------------------
# First make sure every port is either ours or free, so that nothing is started when one is
# taken.
to_start=()
for svc in "${services[@]}"; do
    if pid=$(service_pid "$svc"); then
        recorded=$(cat "$run/$svc.ports")
        wanted=$(service_ports "$svc")
        [ "$recorded" = "$wanted" ] ||
            fail "$svc of $state already runs (pid $pid) on port(s) $recorded, not $wanted; run down.sh $svc first"
        continue
    fi
    rm -f "$run/$svc.pid" "$run/$svc.ports"
    if [ "$svc" = kafka ] && [ ! -x "$nisshi" ]; then
        fail "nisshi not found at $nisshi; run deploy/local/install.sh"
    fi
    for port in $(service_ports "$svc"); do
        if port_open "$port"; then
            fail "port $port ($svc) is taken by another process; set $(port_variable "$svc" "$port")"
        fi
    done
    to_start+=("$svc")
done

for svc in "${services[@]}"; do
    if [[ " ${to_start[*]} " == *" $svc "* ]]; then
        t0=$SECONDS
        "start_$svc"
        wait_ready "$svc"
        after_start "$svc"
        say "$svc started (pid $(cat "$run/$svc.pid"), port(s) $(service_ports "$svc"), $((SECONDS - t0)) s; log $(log_file "$svc"))"
    else
        wait_ready "$svc"
        after_start "$svc"
        say "$svc already running (pid $(cat "$run/$svc.pid"), port(s) $(service_ports "$svc"))"
    fi
done

{
    printf 'export SHOPFLOW_KAFKA_BROKERS=%s\n' "127.0.0.1:$kafka_port"
    printf 'export SHOPFLOW_REDIS_URL=%s\n' "redis://127.0.0.1:$redis_port/"
    printf 'export SHOPFLOW_MYSQL_URL=%s\n' "mysql://shopflow:shopflow@127.0.0.1:$mysql_port/shopflow"
    printf 'export SHOPFLOW_CLICKHOUSE_URL=%s\n' "http://127.0.0.1:$clickhouse_http_port"
    printf 'export SHOPFLOW_NISSHI=%q\n' "$nisshi"
} >"$state/env.tmp"
mv "$state/env.tmp" "$state/env"
cat "$state/env"

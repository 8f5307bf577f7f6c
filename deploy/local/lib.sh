# shellcheck shell=bash
# Shared helpers of deploy/local/{up,down,status}: one local instance of Kafka (KRaft),
# PostgreSQL 15 and an S3 server that checks SigV4, all on 127.0.0.1, state in $FQ_STATE.
# Sourced, not run.

FQ_LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FQ_REPO_DIR=$(cd "$FQ_LOCAL_DIR/../.." && pwd)
FQ_STATE=${FRAMEQ_STATE_DIR:-$FQ_REPO_DIR/.stack}
FQ_CRASH=0 # set by `down --crash` alone, never taken from the environment (see fq_stop_pid)
FQ_CACHE=${FRAMEQ_CACHE_DIR:-${HOME:-/root}/.cache/frameq}
FQ_LOGS=$FQ_STATE/logs
# Local CA, PostgreSQL ssl and the Kafka SSL listener (tls_* and kafka_restart_if_config_changed).
# shellcheck source=deploy/local/tls.sh
. "$FQ_LOCAL_DIR/tls.sh"

FQ_HOST=127.0.0.1
# Fixed ports are the contract; the overrides exist to test these scripts beside a running stack.
KAFKA_PORT=${FRAMEQ_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${FRAMEQ_KAFKA_CONTROLLER_PORT:-19093}
PG_PORT=${FRAMEQ_PG_PORT:-55432}
S3_PORT=${FRAMEQ_S3_PORT:-17070}

# The broker version lives in one place: the pom.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$FQ_LOCAL_DIR/pom.xml")
KAFKA_JARS=$FQ_CACHE/kafka-$KAFKA_VERSION
# Pinned so every machine runs the same S3 server.
VERSITYGW_VERSION=v1.8.0
VERSITYGW_BIN=$FQ_CACHE/versitygw-$VERSITYGW_VERSION/versitygw
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

PG_USER=frameq
PG_PASSWORD=frameq-local
PG_DB=frameq
S3_REGION=us-east-1
S3_ACCESS_KEY=frameq-local
S3_SECRET_KEY=frameq-local-secret
S3_BUCKETS=(frameq-videos frameq-frames)

# Seconds each service gets to become healthy.
FQ_START_TIMEOUT=${FRAMEQ_START_TIMEOUT:-90}

fq_say() {
    printf '%s\n' "$*"
}

fq_die() {
    printf 'deploy/local: %s\n' "$*" >&2
    exit 1
}

# Prints the end of a service's log so a failed start explains itself.
fq_log_tail() {
    local file=$1
    if [[ -f $file ]]; then
        printf -- '--- last lines of %s ---\n' "$file" >&2
        tail -n 40 "$file" >&2 || true
        printf -- '---\n' >&2
    fi
}

# Serialises up/down between colleagues who run them at the same time.
fq_lock() {
    mkdir -p "$FQ_STATE"
    # Servers are started with fd 9 closed (9>&-) so they never hold this lock.
    exec 9>"$FQ_STATE/.lock"
    if ! flock -w 600 9; then
        fq_die "could not lock $FQ_STATE/.lock within 600 s"
    fi
}

fq_pid_alive() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

fq_read_pid() {
    local file=$1
    [[ -f $file ]] && head -n 1 "$file" 2>/dev/null | tr -dc '0-9'
}

# fq_wait_for SECONDS CMD...: retries CMD every half second until it succeeds.
fq_wait_for() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    "$@" >/dev/null 2>&1
}

# True if something already listens on PORT of 127.0.0.1.
fq_port_busy() {
    (exec 3<>"/dev/tcp/$FQ_HOST/$1") 2>/dev/null
}

# Refuses to start a server whose port another process (not ours: ours was found by pid) holds.
fq_require_free_port() {
    local name=$1 port=$2
    if fq_port_busy "$port"; then
        fq_die "$name: port $FQ_HOST:$port is taken by another process (not started from $FQ_STATE)"
    fi
}

# fq_wait_started SECONDS PIDFN HEALTHFN: waits until a server we just started is healthy; gives
# up at once if its process died (e.g. port taken), so another server on the port never passes.
fq_wait_started() {
    local timeout=$1 pidfn=$2 healthfn=$3
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if [[ -z $("$pidfn") ]]; then
            sleep 0.5 # the pid file may be written a moment after the process exits
            [[ -n $("$pidfn") ]] || return 1
        fi
        if "$healthfn" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# fq_started_or_die NAME PROGRAM PIDFN HEALTHFN LOG: fq_wait_started, or dies with the end of
# LOG, saying whether PROGRAM exited during start or stayed unhealthy.
fq_started_or_die() {
    local name=$1 program=$2 pidfn=$3 healthfn=$4 log=$5
    fq_wait_started "$FQ_START_TIMEOUT" "$pidfn" "$healthfn" && return 0
    fq_log_tail "$log"
    if [[ -z $("$pidfn") ]]; then
        fq_die "$name: $program exited during start"
    fi
    fq_die "$name: not healthy after ${FQ_START_TIMEOUT}s"
}

# Sends SIGTERM, waits, then SIGKILL: a stuck JVM must not keep `down` waiting forever. With
# FQ_CRASH=1 (down --crash) it sends SIGKILL at once and waits for the process to be gone: a crash,
# with no shutdown of the server's own.
fq_stop_pid() {
    local pid=$1 wait_s=${2:-30}
    fq_pid_alive "$pid" || return 0
    if ((FQ_CRASH)); then
        kill -KILL "$pid" 2>/dev/null || true
        while fq_pid_alive "$pid"; do
            sleep 0.1
        done
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + wait_s))
    while fq_pid_alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.3
    done
    if fq_pid_alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
}

# fq_pid_in PIDFILE PATTERN: prints the pid of PIDFILE when that process is alive and its command
# line holds PATTERN (a recycled pid is not our server).
fq_pid_in() {
    local pid
    pid=$(fq_read_pid "$1")
    if fq_pid_alive "$pid" && grep -qa "$2" "/proc/$pid/cmdline" 2>/dev/null; then
        printf '%s' "$pid"
    fi
}

# fq_stop_server NAME PID PIDFILE WAIT_S: stops our server PID (see fq_stop_pid) and removes
# its PIDFILE; says so under NAME.
fq_stop_server() {
    local name=$1 pid=$2 pidfile=$3 wait_s=$4
    if [[ -z $pid ]]; then
        fq_say "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    fq_stop_pid "$pid" "$wait_s"
    rm -f "$pidfile"
    fq_say "$name: stopped"
}

# fq_running_healthy NAME PID HEALTHFN LOG WHERE: false when PID (our server's, maybe empty)
# is not running; true, saying so, when it runs and HEALTHFN passes within the start timeout;
# dies with the end of LOG when it runs but stays unhealthy.
fq_running_healthy() {
    local name=$1 pid=$2 healthfn=$3 log=$4 where=$5
    [[ -n $pid ]] || return 1
    if fq_wait_for "$FQ_START_TIMEOUT" "$healthfn"; then
        fq_say "$name: already running (pid $pid, $where)"
        return 0
    fi
    fq_log_tail "$log"
    fq_die "$name: pid $pid runs but is not healthy"
}

# ---- Kafka ----------------------------------------------------------------------------------

KAFKA_DIR=$FQ_STATE/kafka
KAFKA_PIDFILE=$KAFKA_DIR/kafka.pid
KAFKA_LOG=$FQ_LOGS/kafka.log

kafka_pid() {
    fq_pid_in "$KAFKA_PIDFILE" 'kafka.Kafka'
}

kafka_healthy() {
    # A metadata answer naming our broker means the broker and its controller are up.
    kcat -b "$FQ_HOST:$KAFKA_PORT" -L -m 5 2>/dev/null | grep -q "$FQ_HOST:$KAFKA_PORT"
}

# Fetches the broker jars once per pom; a partial download never counts as done.
kafka_fetch_jars() {
    local pom_sum
    pom_sum=$(sha256sum "$FQ_LOCAL_DIR/pom.xml" | cut -d' ' -f1)
    if [[ -f $KAFKA_JARS/.complete && $(cat "$KAFKA_JARS/.complete") == "$pom_sum" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || fq_die "mvn not found (install maven)"
    fq_say "kafka: fetching Kafka $KAFKA_VERSION jars into $KAFKA_JARS (first run only)"
    mkdir -p "$FQ_CACHE" "$FQ_LOGS"
    local tmp=$KAFKA_JARS.tmp.$$
    rm -rf "$tmp"
    if ! mvn -q -B -Dstyle.color=never -f "$FQ_LOCAL_DIR/pom.xml" \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$FQ_LOGS/kafka-fetch.log" 2>&1; then
        rm -rf "$tmp"
        fq_log_tail "$FQ_LOGS/kafka-fetch.log"
        fq_die "kafka: could not fetch the jars with mvn"
    fi
    printf '%s\n' "$pom_sum" >"$tmp/.complete"
    rm -rf "$KAFKA_JARS"
    mv "$tmp" "$KAFKA_JARS"
}

kafka_write_config() {
    mkdir -p "$KAFKA_DIR/data"
    cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by deploy/local/up on every start; edit lib.sh, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$FQ_HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$FQ_HOST:$KAFKA_PORT,CONTROLLER://$FQ_HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$FQ_HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=3
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
# KIP-848 groups (GROUP_PROTOCOL=consumer): the broker owns session and heartbeat. A short
# session lets a SIGKILLed worker's partitions move quickly (chaos); heartbeat as librdkafka's
# classic default (3 s), so both protocols are measured alike (tests/bench/bench_rebalance.sh).
group.consumer.min.session.timeout.ms=5000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=3000
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=16777216
EOF
    tls_kafka_config "$KAFKA_DIR/server.properties"
}

kafka_start() {
    kafka_restart_if_config_changed
    if fq_running_healthy kafka "$(kafka_pid)" kafka_healthy "$KAFKA_LOG" "$FQ_HOST:$KAFKA_PORT"; then
        return 0
    fi
    command -v java >/dev/null || fq_die "java not found (install openjdk-17-jre-headless)"
    command -v kcat >/dev/null || fq_die "kcat not found (install kcat)"
    fq_require_free_port kafka "$KAFKA_PORT"
    fq_require_free_port kafka "$KAFKA_CONTROLLER_PORT"
    kafka_fetch_jars
    kafka_write_config
    mkdir -p "$FQ_LOGS"
    local cp="$KAFKA_JARS/*"
    if [[ ! -f $KAFKA_DIR/data/meta.properties ]]; then
        # A random cluster id: 16 random bytes, URL-safe base64 without padding. It may start
        # with '-', so it is passed as --cluster-id=ID (a separate argument would read as an option).
        local cluster_id
        cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
        fq_say "kafka: formatting storage (cluster id $cluster_id)"
        if ! java -cp "$cp" -Dlog4j2.configurationFile="$FQ_LOCAL_DIR/log4j2.properties" \
            kafka.tools.StorageTool format --cluster-id="$cluster_id" \
            -c "$KAFKA_DIR/server.properties" >>"$KAFKA_LOG" 2>&1; then
            fq_log_tail "$KAFKA_LOG"
            fq_die "kafka: formatting the storage failed"
        fi
    fi
    fq_say "kafka: starting Kafka $KAFKA_VERSION on $FQ_HOST:$KAFKA_PORT"
    # setsid: the broker must outlive the shell (or test) that started it.
    setsid java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$FQ_LOCAL_DIR/log4j2.properties" \
        -cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties" \
        </dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
    echo $! >"$KAFKA_PIDFILE"
    fq_started_or_die kafka "the broker" kafka_pid kafka_healthy "$KAFKA_LOG"
    fq_say "kafka: healthy (pid $(kafka_pid))"
}

kafka_stop() {
    fq_stop_server kafka "$(kafka_pid)" "$KAFKA_PIDFILE" 60
}

# ---- PostgreSQL -----------------------------------------------------------------------------

# The server writes its log inside its own folder (reachable by the postgres user); the
# usual place, $FQ_LOGS/postgres.log, is a symlink to it.
PG_LOG=$FQ_LOGS/postgres.log

# PostgreSQL refuses to run as root: as root we run it as the `postgres` OS user.
pg_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The cluster lives in $FQ_STATE/pg unless the postgres user cannot reach that folder
# (e.g. a checkout under /root); then it lives in /tmp and $FQ_STATE/pg points to it.
pg_root() {
    if [[ -L $FQ_STATE/pg ]]; then
        readlink -f "$FQ_STATE/pg"
    else
        printf '%s' "$FQ_STATE/pg"
    fi
}

pg_prepare_root() {
    local root
    root=$(pg_root)
    if [[ -e $root ]]; then
        return 0
    fi
    mkdir -p "$FQ_STATE"
    if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$FQ_STATE"; then
        local alt
        alt=${TMPDIR:-/tmp}/frameq-pg-$(printf '%s' "$FQ_STATE" | md5sum | cut -c1-12)
        mkdir -p "$alt"
        ln -sfn "$alt" "$root"
    else
        mkdir -p "$root"
    fi
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres:postgres "$root/"
    fi
    chmod 700 "$root/"
}

pg_data() {
    printf '%s/data' "$(pg_root)"
}

# Unix socket paths are limited to 107 bytes: a deep checkout gets its socket in /tmp instead.
pg_sockdir() {
    local dir
    dir=$(pg_root)/run
    if ((${#dir} > 80)); then
        dir=${TMPDIR:-/tmp}/frameq-pg-run-$(printf '%s' "$FQ_STATE" | md5sum | cut -c1-12)
    fi
    printf '%s' "$dir"
}

pg_pid() {
    local pid
    pid=$(fq_read_pid "$(pg_data)/postmaster.pid")
    if fq_pid_alive "$pid"; then
        printf '%s' "$pid"
    fi
}

pg_healthy() {
    PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -At \
        "postgresql://$PG_USER@$FQ_HOST:$PG_PORT/$PG_DB" -c 'SELECT 1' 2>/dev/null | grep -qx 1
}

# Superuser session over the unix socket (trust), only used to create the role and database.
pg_admin() {
    PGCONNECT_TIMEOUT=3 pg_as_owner psql -X -q -At -v ON_ERROR_STOP=1 -h "$(pg_sockdir)" \
        -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_start() {
    [[ -x $PG_BIN/pg_ctl ]] || fq_die "postgresql: $PG_BIN/pg_ctl not found (install postgresql-15)"
    command -v psql >/dev/null || fq_die "psql not found (install postgresql-client-15)"
    pg_prepare_root
    mkdir -p "$FQ_LOGS"
    if fq_running_healthy postgresql "$(pg_pid)" pg_healthy "$PG_LOG" "$FQ_HOST:$PG_PORT"; then
        tls_pg_enable
        return 0
    fi
    fq_require_free_port postgresql "$PG_PORT"
    local data sockdir server_log
    data=$(pg_data)
    sockdir=$(pg_sockdir)
    server_log=$(pg_root)/postgres.log
    pg_as_owner touch "$server_log"
    if [[ ! -L $PG_LOG ]]; then
        rm -f "$PG_LOG"
        ln -s "$server_log" "$PG_LOG"
    fi
    if [[ ! -f $data/PG_VERSION ]]; then
        fq_say "postgresql: creating a cluster in $data"
        pg_as_owner mkdir -p "$sockdir"
        if ! pg_as_owner "$PG_BIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1; then
            fq_log_tail "$PG_LOG"
            fq_die "postgresql: initdb failed"
        fi
        # Throwaway test cluster: durability traded for speed.
        pg_as_owner tee -a "$data/postgresql.conf" >/dev/null <<EOF
# frameq local stack
listen_addresses = '$FQ_HOST'
port = $PG_PORT
unix_socket_directories = '$sockdir'
password_encryption = scram-sha-256
max_connections = 200
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    fi
    pg_as_owner mkdir -p "$sockdir"
    fq_say "postgresql: starting on $FQ_HOST:$PG_PORT"
    # setsid: the server must outlive the shell (or test) that started it.
    if ! pg_as_owner setsid "$PG_BIN/pg_ctl" -D "$data" -l "$server_log" -w -t "$FQ_START_TIMEOUT" \
        start >/dev/null 2>&1 9>&-; then
        fq_log_tail "$PG_LOG"
        fq_die "postgresql: pg_ctl start failed"
    fi
    # Role and database are created idempotently on every start.
    if ! pg_admin >>"$PG_LOG" 2>&1 <<EOF; then
SELECT 'CREATE ROLE $PG_USER LOGIN CREATEDB' WHERE NOT EXISTS
  (SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS
  (SELECT 1 FROM pg_database WHERE datname = '$PG_DB') \gexec
EOF
        fq_log_tail "$PG_LOG"
        fq_die "postgresql: creating role/database failed"
    fi
    if ! fq_wait_for "$FQ_START_TIMEOUT" pg_healthy; then
        fq_log_tail "$PG_LOG"
        fq_die "postgresql: not healthy after ${FQ_START_TIMEOUT}s"
    fi
    tls_pg_enable
    fq_say "postgresql: healthy (pid $(pg_pid))"
}

pg_stop() {
    local pid
    pid=$(pg_pid)
    if [[ -z $pid ]]; then
        fq_say "postgresql: not running"
        return 0
    fi
    if ! pg_as_owner "$PG_BIN/pg_ctl" -D "$(pg_data)" -m fast -w -t 60 stop >/dev/null 2>&1; then
        fq_stop_pid "$pid" 30
    fi
    fq_say "postgresql: stopped"
}

# ---- S3 (versitygw, posix backend) ----------------------------------------------------------

S3_DIR=$FQ_STATE/s3
S3_PIDFILE=$FQ_STATE/versitygw.pid
S3_LOG=$FQ_LOGS/s3.log
S3_ENDPOINT_URL=http://$FQ_HOST:$S3_PORT

s3_pid() {
    fq_pid_in "$S3_PIDFILE" 'versitygw'
}

# SHA-256 of the empty body; S3 servers require the header and curl signs it when given.
S3_EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# s3_curl SECRET ARGS...: a SigV4-signed request without a body; prints the HTTP status.
s3_curl() {
    local secret=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
        -H "x-amz-content-sha256: $S3_EMPTY_SHA256" \
        --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$secret" "$@"
}

s3_healthy() {
    [[ $(s3_curl "$S3_SECRET_KEY" "$S3_ENDPOINT_URL/") == 200 ]]
}

s3_fetch_binary() {
    [[ -x $VERSITYGW_BIN ]] && return 0
    command -v go >/dev/null || fq_die "go not found (install golang)"
    fq_say "s3: building versitygw $VERSITYGW_VERSION (first run only)"
    mkdir -p "$FQ_LOGS"
    local gobin
    gobin=$(dirname "$VERSITYGW_BIN")
    if ! GOBIN=$gobin go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
        >"$FQ_LOGS/s3-build.log" 2>&1; then
        fq_log_tail "$FQ_LOGS/s3-build.log"
        fq_die "s3: building versitygw failed"
    fi
}

s3_start() {
    if fq_running_healthy s3 "$(s3_pid)" s3_healthy "$S3_LOG" "$S3_ENDPOINT_URL"; then
        s3_make_buckets
        return 0
    fi
    command -v curl >/dev/null || fq_die "curl not found"
    fq_require_free_port s3 "$S3_PORT"
    s3_fetch_binary
    mkdir -p "$S3_DIR" "$FQ_LOGS"
    fq_say "s3: starting versitygw $VERSITYGW_VERSION on $S3_ENDPOINT_URL"
    # setsid: the server must outlive the shell (or test) that started it.
    ROOT_ACCESS_KEY=$S3_ACCESS_KEY ROOT_SECRET_KEY=$S3_SECRET_KEY \
        setsid "$VERSITYGW_BIN" --quiet --port "$FQ_HOST:$S3_PORT" --region "$S3_REGION" \
        posix "$S3_DIR" </dev/null >>"$S3_LOG" 2>&1 9>&- &
    echo $! >"$S3_PIDFILE"
    fq_started_or_die s3 versitygw s3_pid s3_healthy "$S3_LOG"
    # A server that accepts any signature would hide signing bugs in our code.
    local code
    code=$(s3_curl "wrong-$S3_SECRET_KEY" "$S3_ENDPOINT_URL/")
    if [[ $code != 403 ]]; then
        fq_die "s3: a request with a wrong secret got HTTP $code, expected 403"
    fi
    s3_make_buckets
    fq_say "s3: healthy (pid $(s3_pid))"
}

s3_make_buckets() {
    local bucket code
    for bucket in "${S3_BUCKETS[@]}"; do
        code=$(s3_curl "$S3_SECRET_KEY" -X PUT "$S3_ENDPOINT_URL/$bucket")
        case $code in
        200 | 409) ;; # 409: BucketAlreadyOwnedByYou, fine on a second `up`
        *) fq_die "s3: creating bucket $bucket got HTTP $code" ;;
        esac
    done
}

s3_stop() {
    fq_stop_server s3 "$(s3_pid)" "$S3_PIDFILE" 15
}

# ---- environment ----------------------------------------------------------------------------

fq_write_env() {
    local tmp=$FQ_STATE/env.tmp.$$
    cat >"$tmp" <<EOF
export KAFKA_BROKERS=$FQ_HOST:$KAFKA_PORT
export DATABASE_URL=postgresql://$PG_USER:$PG_PASSWORD@$FQ_HOST:$PG_PORT/$PG_DB
export S3_ENDPOINT=$S3_ENDPOINT_URL
export S3_REGION=$S3_REGION
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export FRAMEQ_STATE_DIR=$FQ_STATE
EOF
    tls_env_lines >>"$tmp"
    # A stack on other ports: whoever sources this env and runs up/down (the chaos scenarios)
    # must address the same servers.
    local v
    for v in FRAMEQ_KAFKA_PORT FRAMEQ_KAFKA_CONTROLLER_PORT FRAMEQ_KAFKA_SSL_PORT FRAMEQ_PG_PORT \
        FRAMEQ_S3_PORT; do
        if [[ -n ${!v:-} ]]; then
            printf 'export %s=%s\n' "$v" "${!v}" >>"$tmp"
        fi
    done
    mv "$tmp" "$FQ_STATE/env"
}

# shellcheck shell=bash
# TLS for the local stack: a local CA, PostgreSQL with ssl=on and a Kafka SSL listener.
# Sourced by lib.sh (which calls the functions below), not run.
#
# What `deploy/local/up` sets up (once, kept across `down --wipe`; delete $FQ_STATE/tls to renew):
#   $FQ_STATE/tls/ca.crt        local CA (P-256, 10 years); the only file a client needs
#   $FQ_STATE/tls/server.crt    server certificate, CN localhost, SAN DNS:localhost, IP:127.0.0.1
#   $FQ_STATE/tls/server.key    its key (mode 600); PostgreSQL gets its own copy owned by postgres
#   $FQ_STATE/tls/kafka.p12     the same key and chain as a PKCS12 keystore for the broker
# PostgreSQL: ssl=on (ALTER SYSTEM + reload; no restart); TCP clients MAY use TLS, plain
#   connections and password (scram) auth stay as they were.
# Kafka: PLAINTEXT stays on 127.0.0.1:19092; listener SSL on 127.0.0.1:19094 (FRAMEQ_KAFKA_SSL_PORT),
#   advertised as localhost:19094 so the name clients check matches the certificate. No client
#   certificates are asked for (ssl.client.auth=none).
#
# Client settings (also written to $FQ_STATE/env):
#   FRAMEQ_TLS_CA=$FQ_STATE/tls/ca.crt
#   FRAMEQ_KAFKA_SSL_BROKERS=localhost:19094
#   FRAMEQ_DATABASE_URL_TLS=postgresql://frameq:frameq-local@localhost:55432/frameq?sslmode=verify-full&sslrootcert=<ca>
# A worker over TLS to both:
#   KAFKA_BROKERS=$FRAMEQ_KAFKA_SSL_BROKERS KAFKA_CONFIG_SECURITY_PROTOCOL=SSL
#   KAFKA_CONFIG_SSL_CA_LOCATION=$FRAMEQ_TLS_CA DATABASE_URL=$FRAMEQ_DATABASE_URL_TLS
# librdkafka checks the broker's name by default (ssl.endpoint.identification.algorithm=https).

TLS_DIR=$FQ_STATE/tls
TLS_CA=$TLS_DIR/ca.crt
TLS_HOSTNAME=localhost
KAFKA_SSL_PORT=${FRAMEQ_KAFKA_SSL_PORT:-19094}
# PKCS12 keystores need a password; it protects nothing here (the key sits beside it in PEM).
TLS_KEYSTORE_PASSWORD=frameq-local-keystore
TLS_DAYS=3650

# True if the files exist and the server certificate is valid for at least another day.
tls_certs_ok() {
    [[ -f $TLS_DIR/.complete && -f $TLS_CA && -f $TLS_DIR/server.crt && -f $TLS_DIR/server.key &&
        -f $TLS_DIR/kafka.p12 ]] &&
        openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.crt" >/dev/null 2>&1
}

# Creates the CA and the server certificate once; built in a temporary folder and moved into
# place, so an interrupted run never leaves half a CA behind.
tls_ensure_certs() {
    tls_certs_ok && return 0
    command -v openssl >/dev/null || fq_die "openssl not found (install openssl)"
    fq_say "tls: creating a local CA and a server certificate for $TLS_HOSTNAME in $TLS_DIR"
    mkdir -p "$FQ_STATE" "$FQ_LOGS"
    local tmp=$TLS_DIR.tmp.$$ log=$FQ_LOGS/tls.log
    rm -rf "$tmp"
    mkdir -m 700 "$tmp"
    if ! (
        set -e
        cd "$tmp"
        umask 077
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
        openssl req -x509 -new -key ca.key -sha256 -days "$TLS_DAYS" \
            -subj "/O=frameq local stack/CN=frameq local CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
        openssl req -new -key server.key -subj "/O=frameq local stack/CN=$TLS_HOSTNAME" -out server.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" \
            "subjectAltName=DNS:$TLS_HOSTNAME,IP:127.0.0.1" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -sha256 -days "$TLS_DAYS" \
            -set_serial "0x$(openssl rand -hex 16)" -extfile server.ext -out server.crt
        openssl verify -CAfile ca.crt server.crt
        openssl pkcs12 -export -in server.crt -inkey server.key -certfile ca.crt -name "$TLS_HOSTNAME" \
            -passout "pass:$TLS_KEYSTORE_PASSWORD" -out kafka.p12
        rm -f server.csr server.ext
        chmod 644 ca.crt server.crt
        date -u +%FT%TZ >.complete
    ) >>"$log" 2>&1; then
        rm -rf "$tmp"
        fq_log_tail "$log"
        fq_die "tls: creating the certificates failed"
    fi
    chmod 755 "$tmp"
    rm -rf "$TLS_DIR"
    mv "$tmp" "$TLS_DIR"
}

# tls_kafka_config FILE: adds the SSL listener to the broker config kafka_write_config wrote.
tls_kafka_config() {
    local file=$1
    tls_ensure_certs
    grep -q '^listeners=' "$file" && grep -q '^advertised.listeners=' "$file" &&
        grep -q '^listener.security.protocol.map=' "$file" ||
        fq_die "tls: $file lacks listeners/advertised.listeners/listener.security.protocol.map"
    sed -i -e "s|^listeners=.*|&,SSL://$FQ_HOST:$KAFKA_SSL_PORT|" \
        -e "s|^advertised.listeners=.*|&,SSL://$TLS_HOSTNAME:$KAFKA_SSL_PORT|" \
        -e "s|^listener.security.protocol.map=.*|&,SSL:SSL|" "$file"
    local fingerprint
    fingerprint=$(openssl x509 -noout -fingerprint -sha256 -in "$TLS_DIR/server.crt" | cut -d= -f2)
    # The fingerprint makes a renewed certificate a config change, so the broker is restarted.
    cat >>"$file" <<EOF
# SSL listener (deploy/local/tls.sh): server authentication only, no client certificates.
# server certificate sha256 $fingerprint
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/kafka.p12
ssl.keystore.password=$TLS_KEYSTORE_PASSWORD
ssl.client.auth=none
EOF
}

# Restarts a running broker whose config differs from the one `up` would write now (e.g. a
# config written before the SSL listener existed): a running broker never rereads it.
kafka_restart_if_config_changed() {
    local conf=$KAFKA_DIR/server.properties
    [[ -n $(kafka_pid) && -f $conf ]] || return 0
    local old=$conf.running.$$
    cp "$conf" "$old"
    kafka_write_config
    if cmp -s "$old" "$conf"; then
        rm -f "$old"
        return 0
    fi
    rm -f "$old"
    fq_say "kafka: config changed since the broker started; restarting it"
    kafka_stop
}

# True if PostgreSQL answers over TLS with the name and the CA checked.
tls_pg_healthy() {
    PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -At \
        "host=$TLS_HOSTNAME port=$PG_PORT user=$PG_USER dbname=$PG_DB sslmode=verify-full sslrootcert=$TLS_CA" \
        -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>/dev/null | grep -qx t
}

# Turns on ssl in the running cluster (ssl settings take effect on reload). The files are
# copied next to the cluster: the postgres user may not reach $FQ_STATE, and it must own the key.
tls_pg_enable() {
    tls_ensure_certs
    local dir changed=0
    dir=$(pg_root)/tls
    pg_as_owner mkdir -p "$dir"
    local f
    for f in server.crt server.key; do
        if ! cmp -s "$TLS_DIR/$f" "$dir/$f" 2>/dev/null; then
            pg_as_owner tee "$dir/$f.tmp" <"$TLS_DIR/$f" >/dev/null
            pg_as_owner chmod 600 "$dir/$f.tmp"
            pg_as_owner mv "$dir/$f.tmp" "$dir/$f"
            changed=1
        fi
    done
    local current
    current=$(pg_admin -c 'SHOW ssl' -c 'SHOW ssl_cert_file' -c 'SHOW ssl_key_file' 2>>"$PG_LOG" | tr '\n' ' ')
    if ((changed)) || [[ $current != "on $dir/server.crt $dir/server.key " ]]; then
        if ! pg_admin >>"$PG_LOG" 2>&1 <<EOF; then
ALTER SYSTEM SET ssl_cert_file = '$dir/server.crt';
ALTER SYSTEM SET ssl_key_file = '$dir/server.key';
ALTER SYSTEM SET ssl = on;
SELECT pg_reload_conf();
EOF
            fq_log_tail "$PG_LOG"
            fq_die "postgresql: turning on ssl failed"
        fi
    fi
    # A key PostgreSQL refuses leaves ssl off after a reload, with the reason in its log only.
    if ! fq_wait_for 20 tls_pg_healthy; then
        fq_log_tail "$PG_LOG"
        fq_die "postgresql: no verify-full TLS session to $TLS_HOSTNAME:$PG_PORT with $TLS_CA"
    fi
}

# The env lines of the TLS endpoints (quoted: the URL holds '&').
tls_env_lines() {
    tls_ensure_certs
    printf "export FRAMEQ_TLS_CA='%s'\n" "$TLS_CA"
    printf "export FRAMEQ_KAFKA_SSL_BROKERS='%s'\n" "$TLS_HOSTNAME:$KAFKA_SSL_PORT"
    printf "export FRAMEQ_DATABASE_URL_TLS='%s'\n" \
        "postgresql://$PG_USER:$PG_PASSWORD@$TLS_HOSTNAME:$PG_PORT/$PG_DB?sslmode=verify-full&sslrootcert=$TLS_CA"
}

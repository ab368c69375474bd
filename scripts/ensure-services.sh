#!/usr/bin/env bash
# Make sure the two services this project needs on a development/CI machine are up:
#   PostgreSQL 15 at 127.0.0.1:5432 (user postgres, trust auth)
#   NATS with JetStream at 127.0.0.1:4222
# Starts whichever is down (the commands of DESIGN.md, "Configuration and running"), then waits
# up to 30 s for each to answer. Prints one line per service: "<name>: up" or "<name>: started".
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
NATS_HOST=127.0.0.1
NATS_PORT=4222
WAIT_SECS=30

pg_ready() {
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1
}

nats_ready() {
    # Open (and immediately close) a TCP connection with bash's /dev/tcp, in a subshell so the
    # descriptor never leaks; `timeout` keeps a filtered port from hanging us.
    timeout 2 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT" >/dev/null 2>&1
}

# wait_for NAME CHECK_FUNCTION: poll every 0.5 s for up to WAIT_SECS seconds.
wait_for() {
    local name=$1 check=$2 deadline=$((SECONDS + WAIT_SECS))
    until "$check"; do
        if ((SECONDS >= deadline)); then
            echo "ensure-services: $name did not become ready within ${WAIT_SECS}s" >&2
            return 1
        fi
        sleep 0.5
    done
}

if pg_ready; then
    pg_state=up
else
    pg_version=$(ls /etc/postgresql)
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start ||
        echo "ensure-services: 'pg_ctlcluster $pg_version main start' failed; waiting anyway" >&2
    pg_state=started
fi

if nats_ready; then
    nats_state=up
else
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a "$NATS_HOST" -p "$NATS_PORT" -js -sd /var/lib/nats-server -l /var/log/nats-server.log ||
        echo "ensure-services: starting nats-server failed; waiting anyway" >&2
    nats_state=started
fi

wait_for "postgres (${PG_HOST}:${PG_PORT})" pg_ready || exit 1
echo "postgres: $pg_state"
wait_for "nats (${NATS_HOST}:${NATS_PORT})" nats_ready || exit 1
echo "nats: $nats_state"

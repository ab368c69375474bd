#!/usr/bin/env bash
# A 3-node NATS JetStream cluster "ventros" on loopback, the same shape as deploy/nats/nats-*.conf,
# for tests and local use (with /usr/sbin/nats-server, no containers):
#
#   node    client            route (cluster)
#   nats-1  127.0.0.1:14222   127.0.0.1:16222
#   nats-2  127.0.0.1:14223   127.0.0.1:16223
#   nats-3  127.0.0.1:14224   127.0.0.1:16224
#
# Usage:
#   deploy/nats/local-cluster.sh [DIR]        start (DIR default: <repo>/.ventros/nats-cluster)
#   deploy/nats/local-cluster.sh stop [DIR]   stop the nodes started with that DIR
#
# DIR holds each node's JetStream store (DIR/nats-N/), its log (DIR/nats-N.log) and pid file
# (DIR/nats-N.pid). Starting is idempotent (a node already running is left alone); start waits
# until every client port accepts connections.
#
# The nodes take the logins of deploy/nats/auth.conf, as compose and Kubernetes do: no anonymous
# client; the passwords from NATS_COMMAND_PASSWORD, NATS_PROJECTION_PASSWORD and
# NATS_ADMIN_PASSWORD, with the development defaults of docker-compose.yml when unset. Point the
# services at the cluster with
#   NATS_URL=nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224 NATS_STREAM_REPLICAS=3
# and NATS_USER=command NATS_PASSWORD=dev-command-password NATS_INBOX_PREFIX=_INBOX_command
# (command-service), or NATS_USER=projection NATS_PASSWORD=dev-projection-password
# NATS_INBOX_PREFIX=_INBOX_projection (projection-service).
set -euo pipefail

NATS_SERVER=${NATS_SERVER:-/usr/sbin/nats-server}
HOST=127.0.0.1
CLIENT_PORTS=(14222 14223 14224)
ROUTE_PORTS=(16222 16223 16224)
WAIT_SECS=30

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
AUTH_CONF=$ROOT/deploy/nats/auth.conf
export NATS_COMMAND_PASSWORD=${NATS_COMMAND_PASSWORD:-dev-command-password}
export NATS_PROJECTION_PASSWORD=${NATS_PROJECTION_PASSWORD:-dev-projection-password}
export NATS_ADMIN_PASSWORD=${NATS_ADMIN_PASSWORD:-dev-admin-password}

action=start
if [[ ${1:-} == stop ]]; then
    action=stop
    shift
fi
DIR=${1:-$ROOT/.ventros/nats-cluster}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

# The pid in DIR/nats-N.pid, if that process is alive and is a nats-server.
running_pid() {
    local pidfile=$DIR/nats-$1.pid pid
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nats-server || return 1
    echo "$pid"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" >/dev/null 2>&1
}

start() {
    local i n routes j pid
    for i in 0 1 2; do
        n=$((i + 1))
        if pid=$(running_pid "$n"); then
            echo "nats-$n: already running (pid $pid)"
            continue
        fi
        routes=
        for j in 0 1 2; do
            ((j == i)) && continue
            routes+="${routes:+,}nats://$HOST:${ROUTE_PORTS[j]}"
        done
        mkdir -p "$DIR/nats-$n"
        # setsid + nohup: the node outlives this script and its terminal.
        # The config file first: the flags after it override what it does not decide.
        setsid nohup "$NATS_SERVER" \
            -c "$AUTH_CONF" \
            -a "$HOST" -p "${CLIENT_PORTS[i]}" \
            -js -sd "$DIR/nats-$n" \
            --server_name "nats-$n" \
            --cluster_name ventros \
            --cluster "nats://$HOST:${ROUTE_PORTS[i]}" \
            --routes "$routes" \
            -P "$DIR/nats-$n.pid" \
            -l "$DIR/nats-$n.log" \
            </dev/null >/dev/null 2>&1 &
        echo "nats-$n: started (client $HOST:${CLIENT_PORTS[i]}, route $HOST:${ROUTE_PORTS[i]})"
    done
    local deadline=$((SECONDS + WAIT_SECS))
    for i in 0 1 2; do
        until port_open "${CLIENT_PORTS[i]}"; do
            if ((SECONDS >= deadline)); then
                echo "local-cluster: nats-$((i + 1)) is not listening on $HOST:${CLIENT_PORTS[i]} after ${WAIT_SECS}s (log: $DIR/nats-$((i + 1)).log)" >&2
                exit 1
            fi
            sleep 0.2
        done
    done
    echo "cluster ventros ready: NATS_URL=nats://$HOST:${CLIENT_PORTS[0]},nats://$HOST:${CLIENT_PORTS[1]},nats://$HOST:${CLIENT_PORTS[2]}"
}

stop() {
    local n pid pids=()
    for n in 1 2 3; do
        if pid=$(running_pid "$n"); then
            kill -TERM "$pid"
            pids+=("$pid")
            echo "nats-$n: stopping (pid $pid)"
        else
            echo "nats-$n: not running"
        fi
    done
    local deadline=$((SECONDS + WAIT_SECS))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                echo "local-cluster: pid $pid did not stop in ${WAIT_SECS}s; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    done
    rm -f "$DIR"/nats-[123].pid
}

"$action"

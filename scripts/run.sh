#!/usr/bin/env bash
# Run the whole system locally, in the foreground:
#   - PostgreSQL and NATS started if down (scripts/ensure-services.sh);
#   - the release binaries of the three services built;
#   - a demo user/project/API key bootstrapped (the key lives in .ventros/demo-api-key and is
#     reused on later runs, so bootstrap stays idempotent; the database is created and migrated
#     by the binary);
#   - command-service and projection-service started, logs in .ventros/logs/;
#   - once both answer /readyz: the API key, the project id and two curls to try.
# Ctrl-C (or SIGTERM to this script) stops both services gracefully. If either service exits on
# its own, the other is stopped and the script exits non-zero.
#
# Environment: everything the services read (DESIGN.md, "Configuration and running") is passed
# through; COMMAND_ADDR (default 127.0.0.1:8080) and QUERY_ADDR (default 127.0.0.1:8081) are also
# used here to poll readiness and print the curls. Needs .ventros/ in .gitignore.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

# The services log in as their own least-privileged roles; the owner only migrates.
# shellcheck source=scripts/local.env
source scripts/local.env
export COMMAND_ADDR=${COMMAND_ADDR:-127.0.0.1:8080}
export QUERY_ADDR=${QUERY_ADDR:-127.0.0.1:8081}
READY_TIMEOUT_SECS=60

STATE_DIR=$ROOT/.ventros
LOG_DIR=$STATE_DIR/logs
KEY_FILE=$STATE_DIR/demo-api-key
COMMAND_LOG=$LOG_DIR/command-service.log
QUERY_LOG=$LOG_DIR/projection-service.log
BIN=$ROOT/target/release

say() { printf 'run.sh: %s\n' "$*" >&2; }

scripts/ensure-services.sh

say "building the release binaries…"
cargo build --release -p command-service -p projection-service -p replay-tool

mkdir -p "$LOG_DIR"
if [[ ! -s $KEY_FILE ]]; then
    (umask 077 && python3 -c 'import secrets; print("vk_demo_" + secrets.token_urlsafe(30))' >"$KEY_FILE")
    say "generated a demo API key in ${KEY_FILE#"$ROOT"/}"
fi
KEY=$(tr -d '[:space:]' <"$KEY_FILE")

say "bootstrapping the demo user, project and API key…"
# The binary logs to stdout too (e.g. "created database" on a first run): keep the JSON it prints
# last (pretty-printed, starting with a line "{").
BOOT_OUT=$("$BIN/command-service" bootstrap --api-key "$KEY")
PROJECT=$(python3 -c '
import json, sys
lines = sys.stdin.read().splitlines()
for i in reversed(range(len(lines))):
    if lines[i].strip() == "{":
        try:
            doc = json.loads("\n".join(lines[i:]))
        except ValueError:
            continue
        if "project_id" in doc:
            print(doc["project_id"])
            sys.exit(0)
sys.exit("no project_id in the bootstrap output")
' <<<"$BOOT_OUT") || { say "bootstrap output was:"; printf '%s\n' "$BOOT_OUT" >&2; exit 1; }

CMD_PID=
QRY_PID=
stopping=0

stop_services() {
    local pid
    for pid in $CMD_PID $QRY_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $CMD_PID $QRY_PID; do
        wait "$pid" 2>/dev/null || true
    done
    CMD_PID=
    QRY_PID=
}

on_signal() {
    stopping=1
    say "stopping the services…"
    stop_services
    say "stopped"
    exit 0
}

# Whatever happens from here on (an error, a signal), do not leave the services running.
trap stop_services EXIT
trap on_signal INT TERM

"$BIN/command-service" >"$COMMAND_LOG" 2>&1 &
CMD_PID=$!
"$BIN/projection-service" >"$QUERY_LOG" 2>&1 &
QRY_PID=$!
say "command-service pid $CMD_PID (log ${COMMAND_LOG#"$ROOT"/}), projection-service pid $QRY_PID (log ${QUERY_LOG#"$ROOT"/})"

alive() { kill -0 "$1" 2>/dev/null; }

# wait_ready NAME PID ADDR LOG (both services share one READY_TIMEOUT_SECS budget)
READY_DEADLINE=$((SECONDS + READY_TIMEOUT_SECS))
wait_ready() {
    local name=$1 pid=$2 addr=$3 log=$4 deadline=$READY_DEADLINE
    until curl -fsS -o /dev/null --max-time 2 "http://$addr/readyz" 2>/dev/null; do
        if ! alive "$pid"; then
            say "$name exited before becoming ready; the end of $log:"
            tail -n 40 "$log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            say "$name is not ready at http://$addr/readyz after ${READY_TIMEOUT_SECS}s; the end of $log:"
            tail -n 40 "$log" >&2
            return 1
        fi
        sleep 0.5
    done
}

wait_ready command-service "$CMD_PID" "$COMMAND_ADDR" "$COMMAND_LOG" || exit 1
wait_ready projection-service "$QRY_PID" "$QUERY_ADDR" "$QUERY_LOG" || exit 1

cat <<MSG

Ventros is running (Ctrl-C to stop).
  command-service     http://$COMMAND_ADDR   (log: ${COMMAND_LOG#"$ROOT"/})
  projection-service  http://$QUERY_ADDR   (log: ${QUERY_LOG#"$ROOT"/})

API key:    $KEY
Project id: $PROJECT
Console:    http://$QUERY_ADDR/console   (paste the project id and the key)

Create a contact:
curl -sS -i -X POST http://$COMMAND_ADDR/v1/projects/$PROJECT/contacts -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' -d '{"name":"Ada Lovelace","email":"ada@example.com","tags":["vip"]}'

Read the contacts back:
curl -sS http://$QUERY_ADDR/v1/projects/$PROJECT/contacts -H 'Authorization: Bearer $KEY'

Make a read-only (viewer) key, e.g. for a dashboard; its secret is in the answer, shown once:
curl -sS -X POST http://$COMMAND_ADDR/v1/projects/$PROJECT/api-keys -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' -d '{"name":"dashboard","role":"viewer"}'

MSG

# Wait until either service exits (a trapped signal interrupts this wait and runs on_signal).
status=0
wait -n "$CMD_PID" "$QRY_PID" || status=$?
if ((stopping == 0)); then
    if alive "$CMD_PID"; then dead=projection-service; log=$QUERY_LOG; else dead=command-service; log=$COMMAND_LOG; fi
    say "$dead exited on its own (status $status); stopping the other one. The end of $log:"
    tail -n 20 "$log" >&2
    stop_services
    exit $((status == 0 ? 1 : status))
fi

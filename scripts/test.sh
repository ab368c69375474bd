#!/usr/bin/env bash
# Run the whole test suite, as a newcomer (or CI, through .ci/run) would:
#   1. make sure PostgreSQL and NATS are up (scripts/ensure-services.sh), and the tools the suite
#      runs besides cargo are installed (scripts/ensure-tools.sh: schemathesis, openapi-spec-validator
#      and openapi-python-client in target/tools, promtool, sqlx-cli);
#   2. `scripts/sqlx-prepare.sh --check`: the committed query cache (.sqlx) matches the statements
#      and the migrations (a stale cache fails here, before any test);
#   3. `cargo nextest run --workspace --no-fail-fast` when cargo-nextest is installed, followed by
#      `cargo test --workspace --doc` (nextest does not run doctests);
#      otherwise `cargo test --workspace --no-fail-fast` (which runs doctests too).
# Extra arguments go to the test runner, e.g. `scripts/test.sh -p platform` or
# `scripts/test.sh -- some_test_name`. Exits with the test runner's status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/ensure-services.sh
scripts/ensure-tools.sh
scripts/sqlx-prepare.sh --check

if cargo nextest --version >/dev/null 2>&1; then
    status=0
    cargo nextest run --workspace --no-fail-fast "$@" || status=$?
    doc_status=0
    cargo test --workspace --doc || doc_status=$?
    if ((status == 0)); then
        status=$doc_status
    fi
    exit "$status"
else
    exec cargo test --workspace --no-fail-fast "$@"
fi

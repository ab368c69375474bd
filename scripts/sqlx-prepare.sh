#!/usr/bin/env bash
# The query cache: the statements written with `sqlx::query!` and friends are checked against the
# schema at compile time. Builds read the committed cache in `.sqlx` (`SQLX_OFFLINE`, set in
# .cargo/config.toml), so they need no database; this script compares the statements with a
# database migrated from `migrations/`, made for the purpose and dropped after:
#   scripts/sqlx-prepare.sh          rewrite .sqlx (run it after changing a statement or a migration)
#   scripts/sqlx-prepare.sh --check  fail when .sqlx is stale (the test suite runs this)
# Needs PostgreSQL (scripts/ensure-services.sh) and sqlx-cli (scripts/ensure-tools.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SQLX=target/tools/sqlx-cli/bin/sqlx
if [[ ! -x "$SQLX" ]]; then
    echo "sqlx-prepare: $SQLX is missing; run scripts/ensure-tools.sh" >&2
    exit 1
fi
ADMIN_URL=${SQLX_ADMIN_URL:-postgres://postgres@127.0.0.1:5432}
export DATABASE_URL="$ADMIN_URL/sqlx_prepare_$$"
trap '"$SQLX" database drop -y >/dev/null 2>&1 || true' EXIT
"$SQLX" database create
"$SQLX" migrate run --source migrations >/dev/null
# `cargo sqlx` finds its subcommand on PATH.
PATH="$PWD/target/tools/sqlx-cli/bin:$PATH" cargo sqlx prepare --workspace "$@"

#!/usr/bin/env bash
# Make sure the tools the test suite runs besides cargo are installed:
#   - from PyPI, pinned, in a Python virtual environment at target/tools/venv (the work tree only):
#     schemathesis (generated hostile requests), openapi-spec-validator (is each served document
#     valid OpenAPI 3.1?) and openapi-python-client (can an integrator generate a client from it?);
#   - promtool (Debian's `prometheus` package), to lint each service's /metrics;
#   - chromium and chromedriver (Debian's `chromium`, `chromium-driver`), for the console's browser test;
#   - sqlx-cli, from crates.io at the sqlx version of Cargo.lock, in target/tools/sqlx-cli: its
#     `cargo sqlx prepare --check` tells whether the committed query cache (.sqlx) is stale.
# Idempotent: does nothing when the pinned versions are already there. Needs python3 (>= 3.9) with
# the venv module and access to PyPI (and crates.io) the first time; for promtool, apt-get and root (or promtool
# already on PATH, or $PROMTOOL). Prints one line per tool.
# The e2e tests `schemathesis::*` and `conformance::*` run these and fail if one is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=target/tools/venv
# name==version, one per tool, installed together so pip resolves one consistent set.
PYPI_TOOLS=(
    schemathesis==4.32.5
    openapi-spec-validator==0.9.0
    openapi-python-client==0.29.1
)

installed_version() {
    "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}

all_installed() {
    local tool
    for tool in "${PYPI_TOOLS[@]}"; do
        [[ "$(installed_version "${tool%%==*}")" == "${tool##*==}" ]] || return 1
    done
}

if all_installed; then
    state=up
else
    PYTHON=${PYTHON:-python3}
    if [[ ! -x "$VENV/bin/python" ]]; then
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PYPI_TOOLS[@]}"
    state=installed
fi
for tool in "${PYPI_TOOLS[@]}"; do
    if [[ "$(installed_version "${tool%%==*}")" != "${tool##*==}" ]]; then
        echo "ensure-tools: ${tool%%==*} ${tool##*==} did not install" >&2
        exit 1
    fi
    echo "${tool%%==*}: ${tool##*==} $state"
done

# promtool: whichever is on PATH (any 2.x lints the text format the same way), else Debian's.
if [[ -n "${PROMTOOL:-}" ]] || command -v promtool >/dev/null 2>&1; then
    echo "promtool: up"
else
    if ! command -v apt-get >/dev/null 2>&1 || ((EUID != 0)); then
        echo "ensure-tools: promtool is missing; install Debian's 'prometheus' package (or set PROMTOOL)" >&2
        exit 1
    fi
    # The package also ships the Prometheus server as a service; policy-rc.d (containers) or
    # systemd decides whether it starts. Only promtool is used here.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    echo "promtool: installed"
fi

# Chromium and its chromedriver (Debian's packages, the same version): the console's browser test.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium: up"
else
    if ! command -v apt-get >/dev/null 2>&1 || ((EUID != 0)); then
        echo "ensure-tools: chromium is missing; install Debian's 'chromium' and 'chromium-driver' packages" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    echo "chromium: installed"
fi

# sqlx-cli: the same version as the sqlx the workspace builds with, so that `prepare` writes the
# query files its macros read.
SQLX_VERSION=$(awk '/^name = "sqlx"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
SQLX_ROOT=target/tools/sqlx-cli
if [[ "$("$SQLX_ROOT/bin/sqlx" --version 2>/dev/null)" == "sqlx-cli $SQLX_VERSION" ]]; then
    echo "sqlx-cli: $SQLX_VERSION up"
else
    cargo install --quiet --locked sqlx-cli --version "$SQLX_VERSION" \
        --no-default-features --features postgres,rustls --root "$SQLX_ROOT"
    echo "sqlx-cli: $SQLX_VERSION installed"
fi

#!/usr/bin/env bash
# Make sure the tools the test suite runs besides cargo are installed, into the work tree only:
#   schemathesis (PyPI), pinned, in a Python virtual environment at target/tools/venv.
# Idempotent: does nothing when the pinned version is already there. Needs python3 (>= 3.9) with
# the venv module and access to PyPI the first time. Prints one line per tool.
# The e2e test `schemathesis::*` runs target/tools/venv/bin/schemathesis (or $SCHEMATHESIS) and
# fails if it is missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=target/tools/venv

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true
}

if [[ "$(installed_version)" == "$SCHEMATHESIS_VERSION" ]]; then
    echo "schemathesis: $SCHEMATHESIS_VERSION up"
    exit 0
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION"

if [[ "$(installed_version)" != "$SCHEMATHESIS_VERSION" ]]; then
    echo "ensure-tools: schemathesis $SCHEMATHESIS_VERSION did not install" >&2
    exit 1
fi
echo "schemathesis: $SCHEMATHESIS_VERSION installed"

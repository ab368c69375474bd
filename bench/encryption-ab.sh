#!/usr/bin/env bash
# The cost of sealing personal data (issue 13) on bench rows 1-2: this tree against the last
# commit that stored personal data in the clear (d6f3204), through bench/ab.sh.
#
#   bench/encryption-ab.sh                  # --quick sizes, 2 rounds
#   ROUNDS=3 SIZES= bench/encryption-ab.sh  # full sizes
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BEFORE=${BEFORE:-d6f3204} ONLY=${ONLY:-1,2} exec bench/ab.sh

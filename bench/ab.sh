#!/usr/bin/env bash
# Same-run A/B of bench rows: this tree against an earlier commit, both built in release mode and
# run alternately on this machine (before, after, before, after, ...) so that the load of the
# moment weighs on both alike. Prints each round's figures and the after/before ratios.
#
#   BEFORE=<rev> bench/ab.sh                        # rows 1-5, --quick sizes, 2 rounds
#   BEFORE=<rev> ONLY=1,2 ROUNDS=3 SIZES= bench/ab.sh  # rows 1-2, full sizes, 3 rounds
#
# The old tree is a git worktree under target/ab/ (nothing is committed from it); its build has
# a target directory of its own, kept between runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

before_rev=${BEFORE:?set BEFORE to the commit to compare with}
only=${ONLY:-1,2,3,4,5}
rounds=${ROUNDS:-2}
sizes=${SIZES---quick}
work=target/ab
mkdir -p "$work"

if [[ -d $work/before ]]; then
    git -C "$work/before" checkout -q --detach "$before_rev"
else
    git worktree add --detach "$work/before" "$before_rev" >&2
fi
cargo build --release -p bench >&2
(cd "$work/before" && CARGO_TARGET_DIR="$PWD/../before-target" cargo build --release -p bench >&2)

declare -A bin=([before]="$work/before-target/release/bench" [after]="target/release/bench")
for round in $(seq "$rounds"); do
    for side in before after; do
        echo "round $round: $side" >&2
        # shellcheck disable=SC2086
        "${bin[$side]}" $sizes --only "$only" --json >"$work/$side-$round.json"
    done
done

python3 - "$work" "$rounds" <<'PY'
import json, sys
work, rounds = sys.argv[1], int(sys.argv[2])

def rows(side, r):
    return {row["id"]: row for row in json.load(open(f"{work}/{side}-{r}.json"))["rows"]}

print("| round | row | before | after | after/before | p99 before | p99 after |")
print("|---|---|---|---|---|---|---|")
ratios = {}
for r in range(1, rounds + 1):
    b, a = rows("before", r), rows("after", r)
    for rid in a:
        if rid not in b or not b[rid].get("ours") or not a[rid].get("ours"):
            continue
        vb, va = b[rid]["ours"]["value"], a[rid]["ours"]["value"]
        ratio = va / vb if vb else float("nan")
        ratios.setdefault(rid, []).append(ratio)
        unit = a[rid]["ours"]["unit"]
        print(f"| {r} | {rid} | {vb:,.1f} {unit} | {va:,.1f} {unit} | {ratio:.3f} | "
              f"{b[rid].get('p99_ms') or 0:.1f} ms | {a[rid].get('p99_ms') or 0:.1f} ms |")
print()
for rid, values in ratios.items():
    mean = sum(values) / len(values)
    print(f"{rid}: after/before {mean:.3f} on average over {len(values)} rounds "
          f"({', '.join(f'{v:.3f}' for v in values)})")
PY

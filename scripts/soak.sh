#!/usr/bin/env bash
# The fault harness's soak (docs/FAILOVER.md, "Fault harness"): many more
# seeded fault schedules than CI runs, on a release build, one world at a
# time. Prints each seed's schedule and report, then a table of seeds,
# faults and violations (also written to target/soak/soak-<first>-<last>.md).
#
#   scripts/soak.sh            # seeds 1-200
#   scripts/soak.sh 50 1000    # 50 seeds from 1000
#
# Nodes run on 127.0.90.x (override with SOAK_NET / SOAK_PORT); logs of a
# failing seed are kept and named in its report. A failing seed reruns in
# the debug test with FAULT_SEEDS=<seed> cargo test -p anykv --test faults.
set -euo pipefail
cd "$(dirname "$0")/.."

count="${1:-200}"
first="${2:-1}"
last=$((first + count - 1))
# (Not 127.0.48.x, which tests/faults.rs uses: a soak may run beside it.)
net="${SOAK_NET:-90}"
port="${SOAK_PORT:-25000}"
bin="${CARGO_TARGET_DIR:-target}/release"

cargo build --release -p anykv --bin anykv -p anykv-bench --example faults
mkdir -p target/soak
out="target/soak/soak-${first}-${last}.md"
"$bin/examples/faults" --anykv "$bin/anykv" \
  --seeds "${first}-${last}" --net "$net" --port "$port" --out "$out"
echo "table: $out"

#!/usr/bin/env bash
# The fault harness's soak (docs/FAILOVER.md, "Fault harness"): many more
# seeded fault schedules than CI runs, on a release build, one world at a
# time. Prints each seed's schedule and report, then a table of seeds,
# faults and violations (also written to target/soak/soak-<first>-<last>.md).
#
#   scripts/soak.sh            # seeds 1-200
#   scripts/soak.sh 50 1000    # 50 seeds from 1000
#
# Nodes run on 127.0.48.x (override with SOAK_NET / SOAK_PORT); logs of a
# failing seed are kept and named in its report. A failing seed reruns in
# the debug test with FAULT_SEEDS=<seed> cargo test -p anykv --test faults.
set -euo pipefail
cd "$(dirname "$0")/.."

count="${1:-200}"
first="${2:-1}"
last=$((first + count - 1))
net="${SOAK_NET:-48}"
port="${SOAK_PORT:-22100}"

cargo build --release -p anykv --bin anykv -p anykv-bench --example faults
mkdir -p target/soak
out="target/soak/soak-${first}-${last}.md"
target/release/examples/faults --anykv target/release/anykv \
  --seeds "${first}-${last}" --net "$net" --port "$port" --out "$out"
echo "table: $out"

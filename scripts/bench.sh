#!/usr/bin/env bash
# Whole-process benchmark of the release binary on a generated history.
# Usage: scripts/bench.sh [CUSTOMERS] (default 2300000, about 10M lines)
# Prints wall time and peak RSS (GNU time) for generate and for the full job.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-2300000}
work=${BENCH_DIR:-/tmp/loyalty-bench}
mkdir -p "$work"
cargo build --release --quiet
bin=target/release/loyalty
orders="$work/orders-$customers.parquet"
if [ ! -f "$orders" ]; then
    /usr/bin/time -f "generate: %e s wall, %M KB peak RSS" "$bin" generate --customers "$customers" --seed 7 --out "$orders"
fi
cat > "$work/bench.yaml" <<YAML
input:
  orders: $orders
  columns:
    category: category
    channel: channel
output:
  dir: $work/out
  formats: [parquet]
YAML
for run in 1 2 3; do
    /usr/bin/time -f "run $run: %e s wall, %U s user, %M KB peak RSS" \
        "$bin" --log-level warn run --config "$work/bench.yaml" >/dev/null
done

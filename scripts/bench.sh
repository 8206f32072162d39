#!/usr/bin/env bash
# Whole-process benchmark suite of the release binary (BENCHMARKS.md).
#
# Usage: scripts/bench.sh [LINES...]      e.g. scripts/bench.sh 1M 10M 30M   (default: 1M 10M)
#
# For each size: generates a history with `loyalty generate` (about 4.8 lines per
# customer; kept in BENCH_DIR, default /tmp/loyalty-bench), then times, best of 3
# (BENCH_RUNS), each as a whole process under GNU time (wall, user, peak RSS):
#   floor     a bare Parquet scan of the four needed columns (pyarrow)
#   duckdb    benches/duckdb/loyalty.sql, the same contract without the model
#   loyalty   the job without the predictive model (--set clv.model=none)
#   +model    the job with BG/NBD + Gamma-Gamma (the default)
#   fold      SPEC §1's roll-up by the job's fold against Polars' own group_by,
#             in-memory and streaming (examples/fold_vs_group_by.rs), with the
#             ratios: re-run at each Polars upgrade, the fold must stay ahead
# DuckDB's headline KPIs are checked against ours on every size.
# Then, per size, the warehouse-shaped export of ../shared/bench (issue 22):
# `gen_orders.py --seed 42` lines in date order, and in interleaved rounds the
# bare scan (DuckDB), the tuned DuckDB peer `peer_duckdb.py`, the default job
# (model, Parquet + CSV + report) and the job with `clv.model: none` and Parquet
# only; each as min / median / max wall over BENCH_RUNS rounds, with peak RSS.
# SHARED_BENCH names that folder (default ../shared/bench); BENCH_SUITES=peer
# (or generate) runs one of the two.
# Needs: pip install -r notebooks/requirements.txt (duckdb, polars, pyarrow, numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1M 10M)
work=${BENCH_DIR:-/tmp/loyalty-bench}
runs=${BENCH_RUNS:-3}
threads=$(nproc)
mkdir -p "$work"
cargo build --release --quiet
cargo build --release --quiet --example fold_vs_group_by
bin=target/release/loyalty

lines_of() {
    case $1 in
        *M) echo $(( ${1%M} * 1000000 )) ;;
        *k) echo $(( ${1%k} * 1000 )) ;;
        *) echo "$1" ;;
    esac
}

# job_config FILE ORDERS OUT: a job over ORDERS with category and channel mapped,
# writing to OUT; the caller appends what else it sets.
job_config() {
    cat > "$1" <<YAML
input:
  orders: $2
  columns:
    category: category
    channel: channel
output:
  dir: $3
YAML
}

rows_of() { python3 -c "import pyarrow.parquet as pq; print(pq.ParquetFile('$1').metadata.num_rows)"; }

# best LABEL COMMAND...: runs COMMAND $runs times; prints the best wall time with its user time and peak RSS.
best() {
    local label=$1; shift
    local best_line="" best_wall=""
    for _ in $(seq "$runs"); do
        /usr/bin/time -f "%e %U %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/stderr.txt" || {
            echo "$label failed:"; cat "$work/stderr.txt"; return 1; }
        read -r wall user rss < "$work/time.txt"
        if [ -z "$best_wall" ] || awk "BEGIN{exit !($wall < $best_wall)}"; then
            best_wall=$wall
            best_line=$(awk -v w="$wall" -v u="$user" -v r="$rss" 'BEGIN{printf "%8.2f s wall %8.2f s user %7.2f GiB peak RSS", w, u, r/1048576}')
        fi
    done
    printf "  %-8s %s\n" "$label" "$best_line"
}

suites=" ${BENCH_SUITES:-generate peer} "
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo); best of $runs"
if [[ $suites == *" generate "* ]]; then
for size in "${sizes[@]}"; do
    lines=$(lines_of "$size")
    customers=$(( lines * 10 / 48 ))
    orders="$work/orders-$customers.parquet"
    if [ ! -f "$orders" ]; then
        "$bin" --log-level warn generate --customers "$customers" --seed 7 --out "$orders" >/dev/null
    fi
    rows=$(rows_of "$orders")
    bytes=$(stat -c %s "$orders")
    job_config "$work/bench.yaml" "$orders" "$work/out"
    printf '  formats: [parquet]\n  report: false\n' >> "$work/bench.yaml"
    echo "$size: $rows lines, $customers customers, $(( bytes / 1048576 )) MiB Parquet"
    best floor python3 -c "import pyarrow.parquet as pq; pq.read_table('$orders', columns=['customer_id','order_id','order_date','amount'])"
    best duckdb python3 benches/duckdb/run.py "$orders" "$work/duck" --threads "$threads"
    best loyalty "$bin" --log-level warn run --config "$work/bench.yaml" --set clv.model=none
    python3 benches/duckdb/run.py "$orders" "$work/duck" --threads "$threads" --compare "$work/out" >/dev/null ||
        { echo "  DuckDB and loyalty disagree:"; python3 benches/duckdb/run.py "$orders" "$work/duck" --compare "$work/out"; }
    best +model "$bin" --log-level warn run --config "$work/bench.yaml"
    target/release/examples/fold_vs_group_by "$orders" "$runs" | sed 's/^/  fold: /'
done
fi
[[ $suites == *" peer "* ]] || exit 0
shared=${SHARED_BENCH:-../shared/bench}
[ -f "$shared/gen_orders.py" ] || { echo "no $shared/gen_orders.py: skipped the peer comparison"; exit 0; }
# spread LABEL: min / median / max of the walls in $work/walls-LABEL, and the largest peak RSS.
spread() {
    sort -n "$work/walls-$1" | awk -v label="$1" -v rss="$(sort -n "$work/rss-$1" | tail -1)" \
        '{w[NR] = $1} END {printf "  %-16s %6.2f / %6.2f / %6.2f s wall  %5.2f GiB peak RSS\n",
            label, w[1], w[int((NR + 1) / 2)], w[NR], rss / 1048576}'
}
# timed LABEL COMMAND...: one run, its wall and peak RSS appended to LABEL's lists.
timed() {
    local label=$1; shift
    /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" >/dev/null 2>"$work/stderr.txt" || {
        echo "$label failed:"; cat "$work/stderr.txt"; return 1; }
    read -r wall rss < "$work/time.txt"
    echo "$wall" >> "$work/walls-$label"
    echo "$rss" >> "$work/rss-$label"
}
for size in "${sizes[@]}"; do
    lines=$(lines_of "$size")
    orders="$work/gen-orders-$size.parquet"
    [ -f "$orders" ] || python3 "$shared/gen_orders.py" --lines "$lines" --seed 42 --out "$orders" >/dev/null
    job_config "$work/gen-default.yaml" "$orders" "$work/gen-out-default"
    job_config "$work/gen-no-model.yaml" "$orders" "$work/gen-out-no-model"
    printf '  formats: [parquet]\n  report: false\nclv:\n  model: none\n' >> "$work/gen-no-model.yaml"
    labels=(scan duckdb-peer loyalty loyalty-no-model)
    for label in "${labels[@]}"; do rm -f "$work/walls-$label" "$work/rss-$label"; done
    for _ in $(seq "$runs"); do
        timed scan python3 -c "import duckdb; duckdb.sql(\"SELECT count(*), count(DISTINCT customer_id), sum(amount) FROM read_parquet('$orders')\").fetchall()"
        timed duckdb-peer python3 "$shared/peer_duckdb.py" "$orders" "$work/peer-out" --threads "$threads"
        timed loyalty "$bin" --log-level warn run --config "$work/gen-default.yaml"
        timed loyalty-no-model "$bin" --log-level warn run --config "$work/gen-no-model.yaml"
    done
    rows=$(rows_of "$orders")
    echo "$size gen_orders.py (date-ordered): $rows lines; min / median / max of $runs interleaved rounds"
    for label in "${labels[@]}"; do spread "$label"; done
done

#!/usr/bin/env bash
# Are two builds' outputs byte-identical? For refactors that must not change a number.
#
# Usage: scripts/same_outputs.sh OLD_BINARY NEW_BINARY
#   e.g. git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release)
#        scripts/same_outputs.sh /tmp/base/target/release/loyalty target/release/loyalty
#
# Runs both on the shipped sample (config/example.yaml, with a holdout), CDNOW
# (config/cdnow.yaml) and a generated 1M-line history, each with the in-memory and
# the streaming engine, and compares every table file (Parquet and CSV) by sha256.
# The manifest and report.html hold timings and versions and are not compared;
# the manifest's cleaning counts and model fits are, through jq-free Python.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$(realpath "$1")
new=$(realpath "$2")
work=${SAME_DIR:-/tmp/loyalty-same}
mkdir -p "$work"
big="$work/orders-1m.parquet"
[ -f "$big" ] || "$new" --log-level warn generate --customers 210000 --seed 11 --out "$big" >/dev/null

status=0
compare() {
    local name=$1; shift
    for engine in in_memory streaming; do
        rm -rf "$work/old" "$work/new"
        "$old" --log-level warn run "$@" --set engine=$engine --out "$work/old" >/dev/null
        "$new" --log-level warn run "$@" --set engine=$engine --out "$work/new" >/dev/null
        if python3 - "$work/old" "$work/new" <<'PY'
import hashlib, json, pathlib, sys
old, new = (pathlib.Path(p) for p in sys.argv[1:3])
def tables(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.iterdir()) if p.suffix in (".parquet", ".csv")}
def facts(d):
    m = json.loads((d / "manifest.json").read_text())
    return {k: m[k] for k in ("as_of", "input_rows", "cleaning", "models", "warnings")}
a, b = tables(old), tables(new)
bad = [n for n in sorted(a.keys() | b.keys()) if a.get(n) != b.get(n)]
if facts(old) != facts(new):
    bad.append("manifest (cleaning, models, warnings)")
print(f"{len(a)} files" + (f", differ: {', '.join(bad)}" if bad else ", identical"))
sys.exit(1 if bad else 0)
PY
        then echo "  $name ($engine): same"; else echo "  $name ($engine): DIFFERENT"; status=1; fi
    done
}

compare sample --config config/example.yaml --set clv.holdout_days=90
compare cdnow --config config/cdnow.yaml
compare generated-1M --config config/example.yaml --set "input.orders=$big" --set clv.holdout_days=90
exit $status

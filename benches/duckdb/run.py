#!/usr/bin/env python3
"""Runs benches/duckdb/loyalty.sql (the contract without the predictive model, in
DuckDB) on an orders Parquet file, writing Parquet tables to OUT_DIR.

Usage: python3 benches/duckdb/run.py ORDERS.parquet OUT_DIR [--threads N] [--compare LOYALTY_OUT_DIR]
--compare prints the headline KPIs of both runs side by side (they must agree).
"""

import argparse
import pathlib
import sys
import time

import duckdb

SCRIPT = pathlib.Path(__file__).with_name("loyalty.sql")
HEADLINE = ["customers", "orders", "revenue", "repeat_purchase_rate", "churn_rate", "upsell_ratio",
            "gini", "customers_for_80pct"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("orders")
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compare", type=pathlib.Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    con.execute("SET VARIABLE orders = ?", [args.orders])
    con.execute("SET VARIABLE out = ?", [str(args.out)])
    con.execute(SCRIPT.read_text())
    print(f"duckdb: {time.perf_counter() - started:.2f} s ({args.threads} threads)")
    if args.compare:
        ours = duckdb.sql(f"SELECT * FROM read_parquet('{args.compare / 'kpis.parquet'}')").fetchall()
        names = [d[0] for d in duckdb.sql(f"SELECT * FROM read_parquet('{args.compare / 'kpis.parquet'}')").description]
        theirs = duckdb.sql(f"SELECT * FROM read_parquet('{args.out / 'kpis.parquet'}')").fetchall()
        their_names = [d[0] for d in duckdb.sql(f"SELECT * FROM read_parquet('{args.out / 'kpis.parquet'}')").description]
        mismatches = 0
        for name in HEADLINE:
            a, b = ours[0][names.index(name)], theirs[0][their_names.index(name)]
            same = a == b or (isinstance(a, float) and abs(a - b) <= 1e-9 * max(1.0, abs(a)))
            mismatches += not same
            print(f"  {name:24} loyalty {a!s:>22}  duckdb {b!s:>22}  {'ok' if same else 'DIFFERENT'}")
        return 1 if mismatches else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

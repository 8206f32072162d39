#!/usr/bin/env python3
"""Opens every output table of a loyalty run with pyarrow, pandas, DuckDB and
Python polars, checks the documented types, and checks that each CSV parses
back to the Parquet file's values.

Usage: python3 scripts/check_outputs.py OUT_DIR   (needs notebooks/requirements.txt)
Exits 1 with one line per problem.
"""

import json
import math
import pathlib
import sys

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

DATE_COLUMNS = {"first_order_date", "last_order_date", "cohort", "as_of", "nps_response_date"}


def documented_kind(name: str, arrow_type: pa.DataType) -> str | None:
    """The README's type rules; None when the column breaks them."""
    if pa.types.is_date32(arrow_type):
        return "date" if name in DATE_COLUMNS else None
    if name in DATE_COLUMNS:
        return None
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return "string"
    if name.endswith("_id"):
        return None
    if pa.types.is_int64(arrow_type):
        return "int64"
    if pa.types.is_float64(arrow_type):
        return "float64"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    return None  # unsigned, 32-bit, decimal, nested, ...


def same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def check(out: pathlib.Path) -> list[str]:
    problems = []
    manifest = json.loads((out / "manifest.json").read_text())
    # Action lists are in actions/: every table below the directory.
    parquet_files = sorted(out.rglob("*.parquet"))
    if not parquet_files:
        return [f"{out}: no Parquet outputs"]
    for path in parquet_files:
        name = path.relative_to(out).as_posix()
        rows = next(o["rows"] for o in manifest["outputs"] if o["file"] == name)

        arrow = pq.read_table(path)
        kinds = {}
        for field in arrow.schema:
            kind = documented_kind(field.name, field.type)
            if kind is None:
                problems.append(f"{path.name}: column {field.name} has type {field.type}")
            kinds[field.name] = kind
        if arrow.num_rows != rows:
            problems.append(f"{path.name}: pyarrow reads {arrow.num_rows} rows, the manifest says {rows}")

        frame = pd.read_parquet(path)
        if len(frame) != rows:
            problems.append(f"{path.name}: pandas reads {len(frame)} rows")
        for name, kind in kinds.items():
            dtype = frame[name].dtype
            ok = {
                # pandas reads an integer column with nulls as float64 (its own rule).
                "int64": (pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_unsigned_integer_dtype(dtype))
                or (pd.api.types.is_float_dtype(dtype) and arrow.column(name).null_count > 0),
                "float64": pd.api.types.is_float_dtype(dtype),
                "bool": pd.api.types.is_bool_dtype(dtype),
                "string": pd.api.types.is_string_dtype(dtype) or dtype == object,
                "date": dtype == object or pd.api.types.is_datetime64_any_dtype(dtype),
                None: True,
            }[kind]
            if not ok:
                problems.append(f"{path.name}: pandas reads {name} as {dtype}")

        described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()
        duck_types = {row[0]: row[1] for row in described}
        expected_duck = {"int64": "BIGINT", "float64": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR", "date": "DATE"}
        for name, kind in kinds.items():
            if kind and duck_types.get(name) != expected_duck[kind]:
                problems.append(f"{path.name}: DuckDB reads {name} as {duck_types.get(name)}")
        duck_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]
        if duck_rows != rows:
            problems.append(f"{path.name}: DuckDB counts {duck_rows} rows")

        polars_frame = pl.read_parquet(path)
        expected_polars = {"int64": pl.Int64, "float64": pl.Float64, "bool": pl.Boolean, "string": pl.String, "date": pl.Date}
        for name, kind in kinds.items():
            if kind and polars_frame.schema[name] != expected_polars[kind]:
                problems.append(f"{path.name}: polars reads {name} as {polars_frame.schema[name]}")

        # The CSV twin, read with the Parquet file's schema, holds the same values.
        csv_path = path.with_suffix(".csv")
        if csv_path.exists():
            csv = pl.read_csv(csv_path, schema=polars_frame.schema)
            if csv.shape != polars_frame.shape:
                problems.append(f"{csv_path.name}: shape {csv.shape}, Parquet {polars_frame.shape}")
                continue
            for name in polars_frame.columns:
                for i, (a, b) in enumerate(zip(csv[name].to_list(), polars_frame[name].to_list())):
                    if not same(a, b):
                        problems.append(f"{csv_path.name}: row {i} column {name}: CSV {a!r}, Parquet {b!r}")
                        break
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(sys.argv[1])
    problems = check(out)
    for problem in problems:
        print(problem, file=sys.stderr)
    tables = len(list(out.rglob("*.parquet")))
    print(f"{out}: {tables} Parquet tables checked with pyarrow, pandas, DuckDB and polars; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

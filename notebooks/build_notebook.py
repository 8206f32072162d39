#!/usr/bin/env python3
"""Writes notebooks/loyalty.ipynb (outputs cleared) from the cells below, so the
notebook's source is reviewable as plain Python. Run after editing this file."""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# Customer loyalty outputs

Charts of one `loyalty` output directory. Set `OUT_DIR` below (or the `LOYALTY_OUT`
environment variable) to the directory a run wrote, e.g. `out/` after

```sh
cargo run --release -- run --config config/example.yaml
```

Every table and column is documented in the README's *Output tables*; every number is
defined in the metric contract (SPEC)."""),
    ("code", """import json
import os
import pathlib

import matplotlib.pyplot as plt
import polars as pl

OUT_DIR = pathlib.Path(os.environ.get("LOYALTY_OUT", "../out"))

def table(name: str) -> pl.DataFrame:
    \"\"\"One output table: the Parquet file, or the CSV where only that was written.\"\"\"
    parquet, csv = OUT_DIR / f"{name}.parquet", OUT_DIR / f"{name}.csv"
    if parquet.exists():
        return pl.read_parquet(parquet)
    return pl.read_csv(csv, try_parse_dates=True, schema_overrides={"customer_id": pl.String})

manifest = json.loads((OUT_DIR / "manifest.json").read_text())
kpis = table("kpis")
cohorts = table("cohort_retention")
customers = table("customers")
segments = table("rfm_segments")
clv = table("clv_by_segment")
lorenz = table("lorenz")
holdout = table("clv_holdout")
plt.rcParams["figure.figsize"] = (10, 4.5)
print(f"{OUT_DIR.name}: orders before {manifest['as_of']}, {kpis['customers'][0]:,} customers")"""),
    ("md", "## Key figures"),
    ("code", """kpis.select(
    "as_of", "customers", "orders", "revenue", "aov", "repeat_purchase_rate", "churn_rate",
    "upsell_ratio", "gini", "top_20pct_revenue_share", "customers_for_80pct_share", "model",
).transpose(include_header=True, header_name="kpi", column_names=["value"])"""),
    ("md", "## Cohort retention\nShare of each cohort that bought in each period after the first purchase (period 0 is always 100%)."),
    ("code", """grid = (
    cohorts.filter(pl.col("period_index") >= 1)
    .pivot(on="period_index", index="cohort", values="retention_rate", sort_columns=True)
    .sort("cohort")
)
fig, ax = plt.subplots(figsize=(10, max(3, 0.25 * grid.height)))
image = ax.imshow(grid.drop("cohort").to_numpy(), aspect="auto", cmap="Blues")
ax.set_yticks(range(grid.height), [str(c) for c in grid["cohort"]])
ax.set_xticks(range(grid.width - 1), grid.columns[1:])
ax.set_xlabel("periods since first purchase")
fig.colorbar(image, label="retention rate")
ax.set_title("Cohort retention");"""),
    ("md", "## Revenue retention and cumulative revenue per customer\nUp to eight cohorts, spread from the first to the last."),
    ("code", """names = cohorts.filter(pl.col("period_index") >= 1)["cohort"].unique().sort()
chosen = names.gather([round(i * (len(names) - 1) / 7) for i in range(8)]).unique() if len(names) > 8 else names
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
for cohort in chosen:
    rows = cohorts.filter(pl.col("cohort") == cohort).sort("period_index")
    left.plot(rows["period_index"], rows["revenue_retention"], label=str(cohort))
    right.plot(rows["period_index"], rows["cumulative_revenue_per_customer"], label=str(cohort))
left.set(title="Revenue retention", xlabel="periods since first purchase", ylabel="revenue / period-0 revenue")
right.set(title="Cumulative revenue per customer", xlabel="periods since first purchase", ylabel="revenue per customer")
right.legend(fontsize=8);"""),
    ("md", "## Revenue concentration\nThe Lorenz curve; the red point is where the top customers reach 80% of revenue."),
    ("code", """top = kpis["customers_for_80pct_share"][0]
fig, ax = plt.subplots(figsize=(6, 6))
ax.plot(lorenz["customer_share"], lorenz["revenue_share"], label="Lorenz curve")
ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, label="equality")
ax.scatter([1 - top], [0.2], color="red", zorder=3)
ax.annotate(f"top {top:.1%} of customers → 80% of revenue", (1 - top, 0.2), xytext=(0.05, 0.35),
            arrowprops={"arrowstyle": "->"})
ax.set(xlabel="share of customers, lowest revenue first", ylabel="share of revenue",
       title=f"Gini {kpis['gini'][0]:.3f}")
ax.legend();"""),
    ("md", "## RFM segments: size against revenue"),
    ("code", """ordered = segments.sort("share_of_revenue")
fig, ax = plt.subplots(figsize=(9, 0.45 * ordered.height + 1))
y = range(ordered.height)
ax.barh([i + 0.2 for i in y], ordered["share_of_customers"], height=0.4, label="share of customers")
ax.barh([i - 0.2 for i in y], ordered["share_of_revenue"], height=0.4, label="share of revenue")
ax.set_yticks(list(y), ordered["segment"])
ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
ax.legend();"""),
    ("md", "## CLV by segment\nMean per customer: historical, rule-of-thumb formula and (with a model) predicted."),
    ("code", """by_segment = clv.filter(pl.col("dimension") == "segment").sort("historical_clv_mean")
columns = [c for c in ["historical_clv_mean", "formula_clv_mean", "predicted_clv_mean"]
           if by_segment[c].null_count() < by_segment.height]
fig, ax = plt.subplots(figsize=(9, 0.5 * by_segment.height + 1))
width = 0.8 / len(columns)
for k, column in enumerate(columns):
    ax.barh([i + (k - (len(columns) - 1) / 2) * width for i in range(by_segment.height)],
            by_segment[column].fill_null(0), height=width, label=column.removesuffix("_mean"))
ax.set_yticks(range(by_segment.height), by_segment["value"])
ax.set_xlabel("mean CLV per customer")
ax.legend();"""),
    ("md", "## P(alive) and expected purchases by frequency and recency\nShown when the run fitted a purchase model (`clv.model`)."),
    ("code", """if customers["p_alive"].null_count() == customers.height:
    print("no purchase model in this run: clv.model is none, or the fit was skipped")
else:
    max_t = customers["T"].max()
    cells = (
        customers.with_columns(
            pl.col("frequency").clip(upper_bound=15).cast(pl.Int64).alias("f"),
            (pl.col("t_x") / max_t * 20).floor().clip(upper_bound=19).cast(pl.Int64).alias("r"),
        )
        .group_by("f", "r")
        .agg(pl.col("p_alive").mean(), pl.col("expected_purchases").mean())
    )
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, column in zip(axes, ["p_alive", "expected_purchases"]):
        matrix = cells.pivot(on="r", index="f", values=column, sort_columns=True).sort("f")
        image = ax.imshow(matrix.drop("f").to_numpy(), origin="lower", aspect="auto", cmap="Blues")
        ax.set(title=f"mean {column}", xlabel="recency t_x (20 bins of 0 … max T)", ylabel="frequency (15 = 15+)")
        ax.set_yticks(range(matrix.height), matrix["f"])
        fig.colorbar(image, ax=ax)"""),
    ("md", "## Holdout calibration\nShown when the run held out the last `clv.holdout_days`."),
    ("code", """if holdout.height == 0:
    print("no holdout in this run: set clv.holdout_days")
else:
    fig, ax = plt.subplots()
    x = range(holdout.height)
    for column, label in [("actual_purchases", "actual"), ("predicted_purchases", "model"), ("naive_purchases", "naive")]:
        ax.plot(x, holdout[column], marker="o", label=label)
    ax.set_xticks(list(x), holdout["calibration_frequency"])
    ax.set(xlabel="purchases in the calibration period", ylabel="mean purchases in the holdout",
           title=f"Holdout of {kpis['holdout_days'][0]} days: MAE model {kpis['model_holdout_mae'][0]:.3f}, naive {kpis['naive_holdout_mae'][0]:.3f}")
    ax.legend()"""),
    ("md", "## Voice of the customer: NPS\nShown when the run had `input.surveys`: NPS = % promoters (9–10) − % detractors (0–6) over each customer's latest response, per segment."),
    ("code", """if not (OUT_DIR / "nps.parquet").exists() and not (OUT_DIR / "nps.csv").exists():
    print("no surveys in this run: set input.surveys (e.g. data/surveys.csv)")
else:
    nps = table("nps").filter(pl.col("dimension") == "segment").sort("nps")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(nps["value"], nps["nps"], color=["#c0392b" if v < 0 else "#27ae60" for v in nps["nps"]])
    for y, (score, n) in enumerate(zip(nps["nps"], nps["respondents"])):
        ax.annotate(f" n={n}", (max(score, 0), y), va="center", fontsize=8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="NPS", title="NPS by RFM segment")"""),
    ("md", "## Segment migration\nShown when the run had `compare_to`: customers per (previous segment → segment now); `(new)` were not customers in the previous snapshot."),
    ("code", """if not (OUT_DIR / "segment_migration.parquet").exists() and not (OUT_DIR / "segment_migration.csv").exists():
    print("no migration in this run: set compare_to (a previous output, or \\"{previous}\\")")
else:
    moves = table("segment_migration")
    sources = sorted(set(moves["from_segment"]))
    targets = sorted(set(moves["to_segment"]))
    grid = [[0] * len(targets) for _ in sources]
    for row in moves.iter_rows(named=True):
        grid[sources.index(row["from_segment"])][targets.index(row["to_segment"])] = row["customers"]
    fig, ax = plt.subplots(figsize=(8, 6))
    image = ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(len(targets)), targets, rotation=60, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    ax.set(xlabel="segment now", ylabel=f"segment as of {manifest['compared_to']['as_of']}", title="Customers by segment move")
    fig.colorbar(image, ax=ax)"""),
]


def main() -> None:
    notebook = new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, source in CELLS:
        notebook.cells.append(new_markdown_cell(source) if kind == "md" else new_code_cell(source))
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i:02d}"
    path = pathlib.Path(__file__).with_name("loyalty.ipynb")
    nbformat.write(notebook, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

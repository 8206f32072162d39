#!/usr/bin/env python3
"""Generates the shipped side tables for an order file: an identity map and survey
responses (both CSV), deterministic for a seed. Used for data/identities.csv,
data/surveys.csv (the sample) and data/cdnow_identities.csv, data/cdnow_surveys.csv.

  python3 scripts/make_side_tables.py ORDERS.parquet PREFIX [--seed N]

The identity map merges about 3% of the customers in pairs, a few in chains of
three, one cycle, adds e-mail-hash aliases that never order, a self-loop and a
conflict (one alias listed against two customers). Surveys: about a fifth of the
customers answer 1-3 times (scores skewed to the top, as real NPS surveys are), a
few respondents never bought, and a few answers are dated after the last order
(ignored by a run whose as_of is the day after it).
"""
import argparse
import hashlib
import random

import polars as pl

parser = argparse.ArgumentParser()
parser.add_argument("orders")
parser.add_argument("prefix")
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()
rng = random.Random(args.seed)

orders = pl.read_parquet(args.orders, columns=["customer_id", "order_date"]).with_columns(
    pl.col("customer_id").cast(pl.String)
)
ids = sorted(orders["customer_id"].drop_nulls().unique().to_list())
first, last = orders["order_date"].min(), orders["order_date"].max()

rows = []
pool = ids[:]
rng.shuffle(pool)
n = max(4, len(ids) * 3 // 100)
merged, pool = pool[:n], pool[n:]
for i in range(0, len(merged) - 1, 2):
    rows.append((merged[i], merged[i + 1]))
chains, pool = pool[:9], pool[9:]
for a, b, c in zip(chains[0::3], chains[1::3], chains[2::3]):
    rows += [(a, b), (b, c)]
x, y, z = pool[:3]
pool = pool[3:]
rows += [(x, y), (y, z), (z, x)]  # a cycle
for customer in rng.sample(ids, max(3, len(ids) // 200)):
    rows.append(("mail:" + hashlib.sha256(customer.encode()).hexdigest()[:16], customer))
rows.append((pool[0], pool[0]))  # a self-loop
rows += [("card:conflict", pool[1]), ("card:conflict", pool[2])]  # a conflict
rng.shuffle(rows)
pl.DataFrame(rows, schema=["alias_id", "customer_id"], orient="row").write_csv(f"{args.prefix}identities.csv")

span = (last - first).days
responses = []
for customer in rng.sample(ids, len(ids) // 5):
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        day = first.fromordinal(first.toordinal() + rng.randrange(span + 1))
        score = rng.choices(range(11), weights=[2, 1, 1, 2, 2, 4, 6, 10, 14, 16, 12])[0]
        responses.append((customer, day.isoformat(), score))
for i in range(5):
    responses.append((f"prospect-{i}", last.isoformat(), rng.randrange(11)))
for customer in rng.sample(ids, 5):
    after = last.fromordinal(last.toordinal() + 1 + rng.randrange(30))
    responses.append((customer, after.isoformat(), rng.randrange(11)))
rng.shuffle(responses)
pl.DataFrame(responses, schema=["customer_id", "response_date", "score"], orient="row").write_csv(
    f"{args.prefix}surveys.csv"
)
print(f"{args.prefix}identities.csv: {len(rows)} rows; {args.prefix}surveys.csv: {len(responses)} rows")

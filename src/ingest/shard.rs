//! SPEC §1 steps 3–5 for one part of the customers: a shard folds the lines of the
//! customers whose id hashes to it (step 4's verdict, step 5's aggregates) and keeps
//! a fingerprint of each line for step 3. Shards share nothing, so they fold in
//! parallel; [`shard_of`] and [`pass_of`] decide where a customer's lines go.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use polars::prelude::*;

use super::intern::{Interner, Labels, NONE, Slot, present, short_view, view};
use super::orders::Orders;

/// The columns of one batch of the line stream, as contiguous arrays.
pub(super) struct Batch<'a> {
    pub(super) rows: &'a <IdxType as PolarsDataType>::Array,
    pub(super) customers: &'a <StringType as PolarsDataType>::Array,
    pub(super) order_ids: &'a <StringType as PolarsDataType>::Array,
    pub(super) days: &'a <Int32Type as PolarsDataType>::Array,
    pub(super) values: &'a <Int64Type as PolarsDataType>::Array,
    /// Per-line gross margins, with `input.columns.cost` or `margin`.
    pub(super) margins: Option<&'a <Int64Type as PolarsDataType>::Array>,
    pub(super) verdicts: &'a <Int32Type as PolarsDataType>::Array,
    pub(super) channels: Option<&'a <StringType as PolarsDataType>::Array>,
    pub(super) categories: Option<&'a <StringType as PolarsDataType>::Array>,
    pub(super) others: Option<&'a <UInt64Type as PolarsDataType>::Array>,
}

/// A line's order, fingerprint and row: 12 bytes (1.2 GB at 100M lines). Equal lines
/// share their order, so the order and a 32-bit hash of the rest together tell
/// lines apart: two lines of one order collide once in 4 billion, and a collision
/// only makes one more candidate, compared on its raw values.
#[derive(Clone, Copy)]
pub(super) struct Print {
    pub(super) order: u32,
    pub(super) fingerprint: u32,
    pub(super) row: IdxSize,
}
const _: () = assert!(std::mem::size_of::<Print>() == 8 + std::mem::size_of::<IdxSize>());

impl Print {
    /// What equal lines share: the order and the fingerprint.
    pub(super) fn key(&self) -> u64 {
        (u64::from(self.order) << 32) | u64::from(self.fingerprint)
    }
}

/// A line whose fingerprint repeats: its row, and the sealed shard and order
/// (renumbered; `NONE` when the order kept no line) it was folded into.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub(super) row: IdxSize,
    pub(super) shard: u32,
    pub(super) order: u32,
}

/// Rows of lines whose fingerprint repeats, found in one batch's fold: in this batch,
/// and in the batch before (not found before).
#[derive(Default)]
pub(super) struct Repeated {
    pub(super) current: Vec<IdxSize>,
    pub(super) previous: Vec<IdxSize>,
}

/// The customers whose id hashes to one part of the hash space, with their orders.
/// Shards share nothing, so batches are folded by all shards in parallel; a
/// customer's lines, orders and duplicates all fall in one shard. At the end of its
/// pass a shard is sealed ([`Shard::seal`]): it keeps its customers' ids and the
/// aggregates of their kept orders, and frees everything else.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) customers: Interner,
    pub(super) channels: Labels,
    pub(super) categories: Labels,
    pub(super) orders: Orders,
    /// Step 3: lines taken out as exact duplicates. Step 4: drops per reason.
    pub(super) duplicates: u64,
    pub(super) dropped: Vec<u64>,
    /// Every line in the window, for step 3.
    pub(super) fingerprints: Vec<Print>,
    /// The current batch's fingerprints, and those seen twice in it or in it and
    /// the batch before.
    pub(super) batch_prints: hashbrown::HashSet<u64, FixedState>,
    pub(super) batch_repeats: Vec<u64>,
    /// The batch before's fingerprints, and those of them whose lines were held
    /// then (repeated within it or with the batch before it).
    pub(super) previous_prints: hashbrown::HashSet<u64, FixedState>,
    pub(super) previous_repeats: hashbrown::HashSet<u64, FixedState>,
    /// Where the current and the previous batch's lines start in `fingerprints`.
    pub(super) batch_start: usize,
    pub(super) previous_start: usize,
    /// The current batch's customer number per line (reused between batches).
    pub(super) batch_customers: Vec<u32>,
}

impl Shard {
    /// Bytes this shard's arrays hold (their capacities), for the debug log: the
    /// resident memory beyond the sealed shards is Polars' and the allocator's.
    pub(super) fn heap_bytes(&self) -> usize {
        fn of<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        let interner = |i: &Interner| {
            i.text.capacity() + of(&i.ends) + i.table.capacity() * (std::mem::size_of::<Slot>() + 1)
        };
        let o = &self.orders;
        interner(&self.customers)
            + interner(&o.ids)
            + o.table.capacity() * 9
            + of(&o.heads)
            + of(&o.previous)
            + of(&o.bits)
            + of(&o.customer)
            + of(&o.first_day)
            + of(&o.value)
            + of(&o.margin)
            + of(&o.kept_lines)
            + of(&o.channel)
            + of(&o.category_min)
            + of(&o.category_max)
            + of(&self.fingerprints)
    }

    /// Folds the given lines of a batch: (index in the batch, hash of the customer id).
    /// Returns the rows whose fingerprint repeats within this batch or with the
    /// batch before (exact copies of a line usually lie close together; lines in date
    /// order put a day's lines together, and a batch holds days of them): this
    /// batch's, and the batch before's not returned then.
    pub(super) fn fold(
        &mut self,
        hasher: &FixedState,
        batch: &Batch,
        lines: &[(u32, u64)],
        dedupe: bool,
    ) -> Repeated {
        std::mem::swap(&mut self.batch_prints, &mut self.previous_prints);
        self.batch_prints.clear();
        self.previous_repeats.clear();
        self.previous_repeats.extend(self.batch_repeats.drain(..));
        self.previous_start = self.batch_start;
        self.batch_start = self.fingerprints.len();
        // The customers first, in a loop of their own: its table lookups do not wait
        // on each other, so the processor overlaps their cache misses.
        let mut customers = std::mem::take(&mut self.batch_customers);
        customers.clear();
        let mut last_customer: Option<(u128, u32)> = None;
        for &(i, customer_hash) in lines {
            let i = i as usize;
            // Lines of one customer usually arrive together: reuse the last lookup.
            let customer_view = view(batch.customers, i);
            let customer = match last_customer {
                Some((v, key)) if v == customer_view => key,
                _ => {
                    let text = present(batch.customers.get(i)).unwrap_or_default();
                    let short = short_view(batch.customers, i);
                    self.customers.intern_hashed(text, customer_hash, short)
                }
            };
            last_customer = Some((customer_view, customer));
            customers.push(customer);
        }
        let mut last_order: Option<(u32, u128, u32)> = None;
        for (&(i, _), &customer) in lines.iter().zip(&customers) {
            let i = i as usize;
            let (day, value) = (batch.days.value(i), batch.values.value(i));
            let order_view = view(batch.order_ids, i);
            let order = match last_order {
                Some((c, v, key)) if c == customer && v == order_view => key,
                _ => {
                    let text = present(batch.order_ids.get(i)).unwrap_or_default();
                    self.orders.number(hasher, customer, text)
                }
            };
            last_order = Some((customer, order_view, order));
            let channel = batch.channels.map_or(NONE, |a| self.channels.id(hasher, a, i));
            let category = batch
                .categories
                .map_or(NONE, |a| self.categories.id(hasher, a, i));

            // Step 4's verdict, then step 5's aggregates over the kept lines.
            let verdict = batch.verdicts.get(i).unwrap_or(0);
            if verdict == 0 {
                let o = order as usize;
                let orders = &mut self.orders;
                orders.kept_lines[o] += 1;
                orders.value[o] += i128::from(value);
                if let Some(margins) = batch.margins {
                    // Orders get a margin slot when a line with one is kept.
                    if orders.margin.len() <= o {
                        orders.margin.resize(o + 1, 0);
                    }
                    orders.margin[o] += i128::from(margins.get(i).unwrap_or(0));
                }
                orders.first_day[o] = orders.first_day[o].min(day);
                let current = orders.channel[o];
                if channel != NONE
                    && channel != current
                    && (current == NONE || self.channels.get(channel) < self.channels.get(current))
                {
                    orders.channel[o] = channel;
                }
                if value > 0 && category != NONE {
                    let (min, max) = (&mut orders.category_min[o], &mut orders.category_max[o]);
                    *min = if *min == NONE {
                        category
                    } else {
                        (*min).min(category)
                    };
                    *max = if *max == NONE {
                        category
                    } else {
                        (*max).max(category)
                    };
                }
            } else {
                self.dropped[verdict as usize - 1] += 1;
            }
            if dedupe {
                let other = batch.others.and_then(|a| a.get(i)).unwrap_or(0);
                let print = Print {
                    order,
                    fingerprint: hasher.hash_one((day, value, channel, category, other)) as u32,
                    row: batch.rows.value(i),
                };
                self.fingerprints.push(print);
                if !self.batch_prints.insert(print.key()) || self.previous_prints.contains(&print.key()) {
                    self.batch_repeats.push(print.key());
                }
            }
        }
        self.batch_customers = customers;
        if self.batch_repeats.is_empty() {
            return Repeated::default();
        }
        let repeats: hashbrown::HashSet<u64> = self.batch_repeats.iter().copied().collect();
        let rows = |prints: &[Print], skip: &hashbrown::HashSet<u64, FixedState>| -> Vec<IdxSize> {
            prints
                .iter()
                .filter(|print| repeats.contains(&print.key()) && !skip.contains(&print.key()))
                .map(|print| print.row)
                .collect()
        };
        Repeated {
            current: rows(&self.fingerprints[self.batch_start..], &Default::default()),
            previous: rows(
                &self.fingerprints[self.previous_start..self.batch_start],
                &self.previous_repeats,
            ),
        }
    }

    /// Seals the shard at the end of its pass (see [`Shard`]). Returns the lines
    /// whose fingerprint repeats within the shard (equal rows share a customer, so a
    /// shard holds every copy), with their renumbered orders.
    pub(super) fn seal(&mut self, shard: u32) -> Vec<Candidate> {
        let mut fingerprints = std::mem::take(&mut self.fingerprints);
        self.batch_prints = Default::default();
        self.batch_repeats = Vec::new();
        self.previous_prints = Default::default();
        self.previous_repeats = Default::default();
        fingerprints.sort_unstable_by_key(Print::key);
        let repeated: Vec<Print> = fingerprints
            .chunk_by(|a, b| a.key() == b.key())
            .filter(|run| run.len() > 1)
            .flatten()
            .copied()
            .collect();
        drop(fingerprints);
        // Only the customers' ids stay: the finish orders customers by them.
        self.customers.table = HashTable::new();
        self.customers.text.shrink_to_fit();
        self.customers.ends.shrink_to_fit();
        let renumbered = self.orders.seal(self.customers.len());
        repeated
            .iter()
            .map(|print| Candidate {
                row: print.row,
                shard,
                order: renumbered[print.order as usize],
            })
            .collect()
    }
}

/// The shard of a customer id's hash, from bits the shard's own table does not use first.
pub(super) fn shard_of(hash: u64, shards: usize) -> usize {
    ((hash >> 24) % shards as u64) as usize
}

/// The pass that folds a customer id's hash, from bits that neither the shard nor
/// the tables use first.
pub(super) fn pass_of(hash: u64, passes: usize) -> usize {
    ((hash >> 40) % passes as u64) as usize
}

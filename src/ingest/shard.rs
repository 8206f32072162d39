//! SPEC §1 steps 3–5 for one part of the customers: a shard folds the lines of the
//! customers whose id hashes to it (step 4's verdict, step 5's aggregates) and keeps
//! a fingerprint of each line for step 3. Shards share nothing, so they fold in
//! parallel; [`shard_of`] and [`pass_of`] decide where a customer's lines go.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use polars::prelude::*;

use super::customers::{CustomerTable, Ranked};
use super::intern::{NONE, present, short_view, view};
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
    /// Each line's channel and category number (`NONE`: null), and each channel
    /// number's place in text order.
    pub(super) channels: Option<&'a [u32]>,
    pub(super) categories: Option<&'a [u32]>,
    pub(super) channel_ranks: &'a [u32],
    pub(super) others: Option<&'a <UInt64Type as PolarsDataType>::Array>,
}

/// A line's fingerprint, its order's line before it and its row: 12 bytes (1.2 GB
/// at 100M lines). Exact copies share their order (customer and order_id), so a
/// line is compared with its order's earlier lines only: a 32-bit hash of its other
/// values tells them apart, two lines of one order colliding once in 4 billion, and
/// a collision only makes two more candidates, compared on their raw values.
#[derive(Clone, Copy)]
pub(super) struct Print {
    pub(super) fingerprint: u32,
    /// The same order's line before this one (its index in the prints), or `NONE`.
    pub(super) previous: u32,
    pub(super) row: IdxSize,
}
const _: () = assert!(std::mem::size_of::<Print>() == 8 + std::mem::size_of::<IdxSize>());

/// [`Orders::last_print`] of an order whose lines went to [`Shard::many_lines`].
const MAPPED: u32 = NONE - 1;

/// Lines of one order compared one by one; an order with more has its lines'
/// fingerprints in a hash map, so a basket of thousands of lines is no quadratic walk.
const ORDER_LINES_WALKED: usize = 32;

/// A line whose fingerprint repeats: its row, and the sealed shard and order
/// (renumbered; `NONE` when the order kept no line) it was folded into.
#[derive(Clone, Copy, Debug)]
pub(super) struct Candidate {
    pub(super) row: IdxSize,
    pub(super) shard: u32,
    pub(super) order: u32,
}

/// Lines of a shard looked up this many lines ahead of their fold
/// ([`CustomerTable::prefetch`]): enough to overlap the misses of a dozen lines.
const PREFETCH_LINES: usize = 16;

/// The customers whose id hashes to one part of the hash space, with their orders.
/// Shards share nothing, so batches are folded by all shards in parallel; a
/// customer's lines, orders and duplicates all fall in one shard. At the end of its
/// pass a shard is sealed ([`Shard::seal`]): it keeps its customers' ids and the
/// aggregates of their kept orders, and frees everything else.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) customers: CustomerTable,
    /// Once sealed: the customers in id text order, and their orders numbered in
    /// that order ([`Orders::seal`]), so that the finish, which merges the shards'
    /// lists, reads each shard's orders front to back (read in the order of a
    /// global sort they were a cache miss per customer: 0.4 s at 30M lines).
    pub(super) by_text: Vec<Ranked>,
    pub(super) orders: Orders,
    /// Step 3: lines taken out as exact duplicates. Step 4: drops per reason.
    pub(super) duplicates: u64,
    pub(super) dropped: Vec<u64>,
    /// Every line in the window, for step 3, chained by order
    /// ([`Orders::last_print`]).
    pub(super) prints: Vec<Print>,
    /// (order, fingerprint) -> row, for the lines of orders with many lines.
    pub(super) many_lines: hashbrown::HashMap<(u32, u32), IdxSize, FixedState>,
    /// Lines whose fingerprint repeats an earlier line's of their order (both
    /// copies), with the order, and their rows (each once).
    pub(super) candidates: Vec<(IdxSize, u32)>,
    pub(super) candidate_rows: hashbrown::HashSet<IdxSize, FixedState>,
    /// The current batch's lines for this shard (reused between batches).
    pub(super) routed: Vec<(u32, u64)>,
}

impl Shard {
    /// Bytes this shard's arrays hold (their capacities), for the debug log: the
    /// resident memory beyond the sealed shards is Polars' and the allocator's.
    pub(super) fn heap_bytes(&self) -> usize {
        fn of<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        let o = &self.orders;
        self.customers.heap_bytes()
            + o.ids.text.capacity()
            + of(&o.ids.ends)
            + o.table.capacity() * 9
            + of(&o.links)
            + of(&o.customer)
            + of(&o.rollups)
            + of(&o.margin)
            + of(&o.last_print)
            + of(&self.prints)
    }

    /// Folds the given lines of a batch: (index in the batch, hash of the customer id).
    /// Returns the lines whose fingerprint repeats an earlier line's of their order,
    /// as (row, the earlier line's row): exact copies of a line usually lie close
    /// together (lines in date order put a day's lines together), so the caller can
    /// mostly hold both from the batches it has.
    pub(super) fn fold(
        &mut self,
        hasher: &FixedState,
        batch: &Batch,
        lines: &[(u32, u64)],
        dedupe: bool,
    ) -> Vec<(IdxSize, IdxSize)> {
        let mut repeats = Vec::new();
        // Lines of one customer, and of one order, often arrive together (input
        // sorted by customer): the last lookups are reused.
        let mut last_customer: Option<(u128, usize)> = None;
        let mut last_order: Option<(u32, u128, u32)> = None;
        for (k, &(i, customer_hash)) in lines.iter().enumerate() {
            if let Some(&(_, ahead)) = lines.get(k + PREFETCH_LINES) {
                self.customers.prefetch(ahead);
            }
            let i = i as usize;
            let customer_view = view(batch.customers, i);
            let at = match last_customer {
                Some((v, at)) if v == customer_view => at,
                _ => {
                    let text = present(batch.customers.get(i)).unwrap_or_default();
                    self.customers
                        .find_or_insert(text, customer_hash, short_view(batch.customers, i))
                }
            };
            last_customer = Some((customer_view, at));
            let customer = self.customers.number(at);
            let (day, value) = (batch.days.value(i), batch.values.value(i));
            let order_view = view(batch.order_ids, i);
            let order = match last_order {
                Some((c, v, key)) if c == customer && v == order_view => key,
                _ => {
                    let text = present(batch.order_ids.get(i)).unwrap_or_default();
                    let view = short_view(batch.order_ids, i);
                    self.orders
                        .number(hasher, customer, self.customers.head(at), text, view)
                }
            };
            last_order = Some((customer, order_view, order));
            let channel = batch.channels.map_or(NONE, |numbers| numbers[i]);
            let category = batch.categories.map_or(NONE, |numbers| numbers[i]);

            // Step 4's verdict, then step 5's aggregates over the kept lines.
            let verdict = batch.verdicts.get(i).unwrap_or(0);
            if verdict == 0 {
                let o = order as usize;
                let orders = &mut self.orders;
                if let Some(margins) = batch.margins {
                    // Orders get a margin slot when a line with one is kept.
                    if orders.margin.len() <= o {
                        orders.margin.resize(o + 1, 0);
                    }
                    orders.margin[o] += i128::from(margins.get(i).unwrap_or(0));
                }
                let rollup = &mut orders.rollups[o];
                rollup.value += i128::from(value);
                rollup.first_day = rollup.first_day.min(day);
                let current = rollup.channel;
                if channel != NONE
                    && channel != current
                    && (current == NONE
                        || batch.channel_ranks[channel as usize] < batch.channel_ranks[current as usize])
                {
                    rollup.channel = channel;
                }
                if value > 0 && category != NONE {
                    let (min, max) = (&mut rollup.category_min, &mut rollup.category_max);
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
                let fingerprint = hasher.hash_one((day, value, channel, category, other)) as u32;
                let row = batch.rows.value(i);
                if let Some(twin) = self.earlier_copy(order, fingerprint, row) {
                    for copy in [twin, row] {
                        if self.candidate_rows.insert(copy) {
                            self.candidates.push((copy, order));
                        }
                    }
                    repeats.push((row, twin));
                }
            }
        }
        repeats
    }

    /// Records the line (its order, fingerprint and row) for step 3, and returns the
    /// row of an earlier line of the order with the same fingerprint, if any.
    fn earlier_copy(&mut self, order: u32, fingerprint: u32, row: IdxSize) -> Option<IdxSize> {
        let o = order as usize;
        let newest = self.orders.last_print[o];
        if newest == MAPPED {
            return self.many_lines.insert((order, fingerprint), row);
        }
        let mut p = newest;
        let mut walked = 0;
        let mut twin = None;
        while p != NONE {
            let print = self.prints[p as usize];
            if print.fingerprint == fingerprint {
                twin = Some(print.row);
                break;
            }
            p = print.previous;
            walked += 1;
        }
        if walked >= ORDER_LINES_WALKED {
            // A long order: its lines go to the map from now on.
            let mut p = newest;
            while p != NONE {
                let print = self.prints[p as usize];
                self.many_lines
                    .entry((order, print.fingerprint))
                    .or_insert(print.row);
                p = print.previous;
            }
            self.many_lines.insert((order, fingerprint), row);
            self.orders.last_print[o] = MAPPED;
            return twin;
        }
        self.orders.last_print[o] = self.prints.len() as u32;
        self.prints.push(Print {
            fingerprint,
            previous: newest,
            row,
        });
        twin
    }

    /// Once sealed: the customer id at rank `r` of [`Shard::by_text`].
    pub(super) fn id_at_rank(&self, r: u32) -> &str {
        self.id_of(&self.by_text[r as usize])
    }

    /// Once sealed: the id of one of this shard's [`Shard::by_text`] customers.
    pub(super) fn id_of(&self, customer: &Ranked) -> &str {
        self.customers.get(customer.number)
    }

    /// Seals the shard at the end of its pass (see [`Shard`]). Returns the lines
    /// whose fingerprint repeats within the shard (equal rows share a customer, so a
    /// shard holds every copy), with their renumbered orders.
    pub(super) fn seal(&mut self, shard: u32) -> Vec<Candidate> {
        self.prints = Vec::new();
        self.many_lines = Default::default();
        self.candidate_rows = Default::default();
        // Only the customers' ids stay: the finish orders customers by them.
        self.customers.seal();
        self.by_text = self.customers.in_text_order();
        let mut rank = vec![0u32; self.by_text.len()];
        for (r, customer) in self.by_text.iter().enumerate() {
            rank[customer.number as usize] = r as u32;
        }
        let renumbered = self.orders.seal(&rank);
        std::mem::take(&mut self.candidates)
            .into_iter()
            .map(|(row, order)| Candidate {
                row,
                shard,
                order: renumbered[order as usize],
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

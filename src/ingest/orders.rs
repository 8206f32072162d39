//! SPEC §1 step 5, the roll-up: lines to orders, key (customer_id, order_id). Each
//! order's aggregates (earliest kept date, summed value, smallest channel, category
//! range) live in one array per column, indexed by the order's number; a customer's
//! orders are found in its run while its lines come together, else in a hash table.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::intern::{Interner, NONE, bytes_of, hash_bits, table_hash};

/// A customer's first run of orders: numbers `start..start + len`, made one after
/// another (no other order in between) and not in the lookup table. `len` is
/// [`TABLED`] once the customer's orders are all in the table.
#[derive(Clone, Copy, Default)]
pub(super) struct Run {
    pub(super) start: u32,
    pub(super) len: u32,
}

/// [`Run::len`] of a customer whose orders are in the lookup table.
pub(super) const TABLED: u32 = u32::MAX;

/// Orders a run holds before they go to the table: a new order is compared with
/// each order of its customer's run.
pub(super) const RUN_ORDERS: u32 = 16;

/// Per order, indexed by the order's number: the step 5 aggregates of its kept lines.
#[derive(Default)]
pub(super) struct Orders {
    /// (customer, order_id) -> (order number, 32 bits of the hash), for the orders
    /// of customers whose lines do not come together (see [`Orders::number`]).
    pub(super) table: HashTable<(u32, u32)>,
    /// Per customer: its run of orders not in the table.
    pub(super) runs: Vec<Run>,
    /// order_id text per order.
    pub(super) ids: Interner,
    pub(super) customer: Vec<u32>,
    /// Earliest date of a kept line; `i32::MAX` while none.
    pub(super) first_day: Vec<i32>,
    /// Summed line values in micro-units. Lines are Int64 (SPEC); their sums are
    /// Int128, which no order can overflow (at most 2^32 lines of at most 2^63 each).
    pub(super) value: Vec<i128>,
    /// Summed gross margins in micro-units, with `input.columns.cost` or `margin`
    /// (else empty; grown as kept lines arrive, so shorter than the orders until sealed).
    pub(super) margin: Vec<i128>,
    pub(super) kept_lines: Vec<u32>,
    /// Smallest channel (in text order) among kept lines.
    pub(super) channel: Vec<u32>,
    /// Smallest and largest category number among kept positive lines: two
    /// distinct categories exist exactly when they differ.
    pub(super) category_min: Vec<u32>,
    pub(super) category_max: Vec<u32>,
}

impl Orders {
    pub(super) fn with_capacity(orders: usize) -> Self {
        Self {
            ids: Interner {
                text: String::with_capacity(orders * 12),
                ends: Vec::with_capacity(orders),
                ..Interner::default()
            },
            customer: Vec::with_capacity(orders),
            first_day: Vec::with_capacity(orders),
            value: Vec::with_capacity(orders),
            kept_lines: Vec::with_capacity(orders),
            channel: Vec::with_capacity(orders),
            category_min: Vec::with_capacity(orders),
            category_max: Vec::with_capacity(orders),
            ..Orders::default()
        }
    }

    /// The table hash bits of (customer, order_id).
    pub(super) fn hash_bits(hasher: &FixedState, customer: u32, id: &[u8]) -> u32 {
        hash_bits(hasher.hash_one((customer, id)))
    }

    pub(super) fn id(&self, o: u32) -> &[u8] {
        bytes_of(&self.ids.text, &self.ids.ends, o)
    }

    /// The number of the customer's order `id`, a new one if it has none.
    ///
    /// When a customer's lines come together (histories sorted by customer, as
    /// exports often are) its orders are made one after another, and a new one is
    /// found among them (its run) without the table: at 30M lines the table, written
    /// at random and far larger than the caches, took 30% of the fold. Once another
    /// order has been made since, or the run is full, the customer's orders go in
    /// the table, where all its later orders are looked up.
    pub(super) fn number(&mut self, hasher: &FixedState, customer: u32, id: &str) -> u32 {
        let c = customer as usize;
        if c >= self.runs.len() {
            self.runs.resize(c + 1, Run::default());
        }
        let run = self.runs[c];
        let next = self.customer.len() as u32;
        if run.len != TABLED {
            if let Some(o) = (run.start..run.start + run.len).find(|&o| self.id(o) == id.as_bytes()) {
                return o;
            }
            if run.len == 0 || (run.start + run.len == next && run.len < RUN_ORDERS) {
                let start = if run.len == 0 { next } else { run.start };
                self.runs[c] = Run {
                    start,
                    len: run.len + 1,
                };
                return self.push(customer, id);
            }
            self.move_run_to_table(hasher, customer);
        }
        let Self {
            table,
            ids,
            customer: customers,
            ..
        } = self;
        let bits = Self::hash_bits(hasher, customer, id.as_bytes());
        let entry = table.entry(
            table_hash(bits),
            |&(o, stored)| {
                stored == bits
                    && customers[o as usize] == customer
                    && bytes_of(&ids.text, &ids.ends, o) == id.as_bytes()
            },
            |&(_, stored)| table_hash(stored),
        );
        match entry {
            Entry::Occupied(e) => e.get().0,
            Entry::Vacant(e) => {
                e.insert((next, bits));
                self.push(customer, id)
            }
        }
    }

    /// Moves the customer's run into the table.
    pub(super) fn move_run_to_table(&mut self, hasher: &FixedState, customer: u32) {
        let run = std::mem::replace(
            &mut self.runs[customer as usize],
            Run {
                start: 0,
                len: TABLED,
            },
        );
        for o in run.start..run.start + run.len {
            let bits = Self::hash_bits(hasher, customer, self.id(o));
            self.table
                .insert_unique(table_hash(bits), (o, bits), |&(_, stored)| table_hash(stored));
        }
    }

    /// A new order of the customer; returns its number.
    pub(super) fn push(&mut self, customer: u32, id: &str) -> u32 {
        let o = self.customer.len() as u32;
        // Order ids are stored per order, not deduplicated: (customer, id) is the key.
        self.ids.push(id);
        self.customer.push(customer);
        self.first_day.push(i32::MAX);
        self.value.push(0);
        self.kept_lines.push(0);
        self.channel.push(NONE);
        self.category_min.push(NONE);
        self.category_max.push(NONE);
        o
    }

    /// Once the pass is over: keeps the orders with a kept line, renumbered in
    /// (customer, order_id) order, and frees the lookup table, the order ids and the
    /// line counts. Returns each old number's new one (`NONE`: the order is gone).
    /// `customers`: how many customers the orders' numbers range over.
    pub(super) fn seal(&mut self, customers: usize) -> Vec<u32> {
        self.table = HashTable::new();
        self.runs = Vec::new();
        let ids = std::mem::take(&mut self.ids);
        // Kept orders grouped by customer, each customer's by order_id.
        let (mut kept, starts) = grouped_by_key(
            || (0..self.customer.len() as u32).filter(|&o| self.kept_lines[o as usize] > 0),
            customers,
            |o| self.customer[o as usize] as usize,
        );
        let id = |o: u32| bytes_of(&ids.text, &ids.ends, o);
        for window in starts.windows(2).filter(|w| w[1] - w[0] > 1) {
            kept[window[0]..window[1]].sort_unstable_by(|&a, &b| id(a).cmp(id(b)));
        }
        drop((starts, ids));
        self.kept_lines = Vec::new();
        let mut renumbered = vec![NONE; self.customer.len()];
        for (new, &old) in kept.iter().enumerate() {
            renumbered[old as usize] = new as u32;
        }
        // One array at a time, each freed as its copy is made.
        fn in_kept_order<T: Copy>(values: &mut Vec<T>, kept: &[u32]) {
            let ordered = kept.iter().map(|&o| values[o as usize]).collect();
            *values = ordered;
        }
        in_kept_order(&mut self.customer, &kept);
        in_kept_order(&mut self.first_day, &kept);
        in_kept_order(&mut self.value, &kept);
        if !self.margin.is_empty() {
            self.margin.resize(renumbered.len(), 0);
            in_kept_order(&mut self.margin, &kept);
        }
        in_kept_order(&mut self.channel, &kept);
        in_kept_order(&mut self.category_min, &kept);
        in_kept_order(&mut self.category_max, &kept);
        renumbered
    }
}

/// The items grouped by key (a counting sort: stable, so each key's items keep their
/// order), with where each key's items start (`keys + 1` entries). `items` is called
/// twice: once to count, once to place.
pub(super) fn grouped_by_key<T: Copy + Default, I: Iterator<Item = T>>(
    items: impl Fn() -> I,
    keys: usize,
    key: impl Fn(T) -> usize,
) -> (Vec<T>, Vec<usize>) {
    let mut starts = vec![0usize; keys + 1];
    for item in items() {
        starts[key(item) + 1] += 1;
    }
    for k in 1..starts.len() {
        starts[k] += starts[k - 1];
    }
    let mut grouped = vec![T::default(); starts[keys]];
    // `starts` serves as each key's cursor (no copy: at 20M customers one is 0.17 GB),
    // ending at the next key's start; shifted back by one, it is `starts` again.
    for item in items() {
        let k = key(item);
        grouped[starts[k]] = item;
        starts[k] += 1;
    }
    starts.rotate_right(1);
    starts[0] = 0;
    (grouped, starts)
}

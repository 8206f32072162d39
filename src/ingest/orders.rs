//! SPEC §1 step 5, the roll-up: lines to orders, key (customer_id, order_id). Each
//! order's aggregates (earliest kept date, summed value, smallest channel, category
//! range) live in one record ([`Rollup`]), indexed by the order's number. A
//! customer's orders are found from its [`Head`] (its newest order, and a filter of
//! the rest), kept in its customer table entry, and past [`CHAIN_ORDERS`] orders in
//! a hash table.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;

use super::intern::{Interner, NO_VIEW, NONE, bytes_of, hash_bits, prefix_at, table_hash, view_halves};

/// What the fold knows of a customer's orders, in one place (its customer table
/// entry, one cache line's read per line): its newest order, that order's hash bits
/// and Arrow view, how many orders it has, and a Bloom filter of their hashes.
///
/// Lines in date order have a new customer on nearly every line, and their orders
/// are spread over the whole history: a hash table of all orders, much larger than
/// the caches, was a miss or two on every line, 40% of the fold at 10M lines. Here
/// an order's later lines find it as the newest order (its lines come on its day),
/// and a new order is known to be new from the filter, without a lookup anywhere.
#[derive(Clone, Copy)]
pub(super) struct Head {
    pub(super) order: u32,
    pub(super) bits: u32,
    /// The customer's orders, or [`TABLED`] once they are in the table.
    pub(super) orders: u32,
    /// The filter: 96 bits, three per order ([`Filter`]), in what would be the
    /// head's padding and a word.
    pub(super) filter: Filter,
    /// The view the newest order's id was first read from, when it holds the whole
    /// id: its later lines are known by it, without hashing or reading the id.
    pub(super) view: [u64; 2],
}

impl Head {
    /// A customer without orders.
    pub(super) const NEW: Head = Head {
        order: NONE,
        bits: 0,
        orders: 0,
        filter: Filter::EMPTY,
        view: NO_VIEW,
    };
}

const _: () = assert!(std::mem::size_of::<Head>() == 40);

/// [`Head::orders`] of a customer whose orders are in the lookup table.
pub(super) const TABLED: u32 = u32::MAX;

/// Orders of a customer found through its chain (newest first, see
/// [`Orders::links`]) before they go to the table: an order the filter may hold
/// is compared with each.
pub(super) const CHAIN_ORDERS: u32 = 16;

/// A Bloom filter of a customer's orders: 96 bits, three set per order, at places
/// from the top 48 bits of its hash (the table uses the low bits). An order whose
/// bits are not all set is new without a look at the customer's chain of orders, a
/// dependent cache miss per order walked. With two bits in 64, a new order of a
/// customer with 8 orders was taken for a known one 3.8% of the time, with 16
/// orders 14.5% (and the whole chain walked each time); here 1.9% and 9.7%. At 30M
/// lines the chains' steps went from 3.0M to 1.1M.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub(super) struct Filter {
    low: u64,
    high: u32,
}

impl Filter {
    const EMPTY: Filter = Filter { low: 0, high: 0 };

    /// The filter with only the bits of an order with hash `hash`.
    fn of(hash: u64) -> Filter {
        let mut filter = Filter::EMPTY;
        for part in 1..4 {
            // A 16-bit part of the hash scaled to a place in 0..96.
            let place = (((hash >> (16 * part)) & 0xFFFF) * 96) >> 16;
            if place < 64 {
                filter.low |= 1 << place;
            } else {
                filter.high |= 1 << (place - 64);
            }
        }
        filter
    }

    fn with(self, other: Filter) -> Filter {
        Filter {
            low: self.low | other.low,
            high: self.high | other.high,
        }
    }

    /// Whether every bit of `other` is set here.
    fn holds(self, other: Filter) -> bool {
        self.with(other) == self
    }
}

/// An order's place in its customer's chain: the order before it, and its hash bits.
#[derive(Clone, Copy, Default)]
pub(super) struct Link {
    pub(super) previous: u32,
    pub(super) bits: u32,
}

/// Step 5's aggregates of one order's kept lines, side by side in 32 bytes (half a
/// cache line): the fold updates, and the seal and the finish move, one record per
/// order. As six arrays an order's aggregates were six cache misses wherever its
/// lines came apart or it was moved: at 30M lines the seal and the finish, which
/// move every order twice, took 3.2 of the scan's 10.7 s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Rollup {
    /// Summed line values in micro-units. Lines are Int64 (SPEC); their sums are
    /// Int128, which no order can overflow (at most 2^32 lines of at most 2^63 each).
    pub(super) value: i128,
    /// Earliest date of a kept line; `i32::MAX` while none (dates are within the
    /// years 1–9999, [`super::plan`]).
    pub(super) first_day: i32,
    /// Smallest channel (in text order) among kept lines.
    pub(super) channel: u32,
    /// Smallest and largest category number among kept positive lines: two
    /// distinct categories exist exactly when they differ.
    pub(super) category_min: u32,
    pub(super) category_max: u32,
}
const _: () = assert!(std::mem::size_of::<Rollup>() == 32);

impl Rollup {
    /// An order without a kept line.
    pub(super) const NONE: Rollup = Rollup {
        value: 0,
        first_day: i32::MAX,
        channel: NONE,
        category_min: NONE,
        category_max: NONE,
    };

    pub(super) fn has_kept_line(&self) -> bool {
        self.first_day != i32::MAX
    }
}

/// Per order, indexed by the order's number: the step 5 aggregates of its kept lines.
#[derive(Default)]
pub(super) struct Orders {
    /// (customer, order_id) -> (order number, 32 bits of the hash), for the orders
    /// of customers with more than [`CHAIN_ORDERS`] orders.
    pub(super) table: HashTable<(u32, u32)>,
    /// Per order: the customer's order made before it (`NONE` for its first), and
    /// the order's hash bits, side by side (a walk down the chain reads one place
    /// per order, not two).
    pub(super) links: Vec<Link>,
    /// order_id text per order.
    pub(super) ids: Interner,
    pub(super) customer: Vec<u32>,
    /// Once sealed: where each customer's orders start, by the customer's rank
    /// (one more entry than customers; orders are numbered in rank, then order_id,
    /// order).
    pub(super) customer_starts: Vec<u32>,
    /// Each order's aggregates ([`Rollup`]).
    pub(super) rollups: Vec<Rollup>,
    /// Summed gross margins in micro-units, with `input.columns.cost` or `margin`
    /// (else empty; grown as kept lines arrive, so shorter than the orders until sealed).
    pub(super) margin: Vec<i128>,
    /// The order's latest line in the shard's prints (step 3; `NONE` while none).
    pub(super) last_print: Vec<u32>,
}

impl Orders {
    pub(super) fn with_capacity(orders: usize) -> Self {
        Self {
            ids: Interner {
                text: String::with_capacity(orders * 12),
                ends: Vec::with_capacity(orders),
                ..Interner::default()
            },
            links: Vec::with_capacity(orders),
            customer: Vec::with_capacity(orders),
            rollups: Vec::with_capacity(orders),
            last_print: Vec::with_capacity(orders),
            ..Orders::default()
        }
    }

    pub(super) fn id(&self, o: u32) -> &[u8] {
        bytes_of(&self.ids.text, &self.ids.ends, o)
    }

    /// The number of the customer's order `id`, a new one if it has none; `head` is
    /// the customer's, `view` the Arrow view `id` was read from when it holds the
    /// whole id (before trimming).
    ///
    /// The newest order is compared first (by its view, else by hash bits kept in
    /// the head, then text); then, unless the filter rules it out, the customer's
    /// chain of orders newest first, or the table once the customer has more than
    /// [`CHAIN_ORDERS`]. Only an order's first line after another order of its
    /// customer reads anything outside the head and the newest orders.
    pub(super) fn number(
        &mut self,
        hasher: &FixedState,
        customer: u32,
        head: &mut Head,
        id: &str,
        view: Option<u128>,
    ) -> u32 {
        let view = view_halves(view);
        if head.order != NONE && view != NO_VIEW && head.view == view {
            return head.order;
        }
        let hash = hasher.hash_one((customer, id.as_bytes()));
        let bits = hash_bits(hash);
        if head.order != NONE && head.bits == bits && self.id(head.order) == id.as_bytes() {
            return head.order;
        }
        let found = if head.orders == TABLED {
            self.in_table(customer, id.as_bytes(), bits)
        } else if head.filter.holds(Filter::of(hash)) {
            self.in_chain(head.order, id.as_bytes(), bits)
        } else {
            None
        };
        if let Some(o) = found {
            return o;
        }
        let o = self.push(customer, id, bits, head.order);
        *head = Head {
            order: o,
            bits,
            orders: head.orders.saturating_add(1),
            filter: head.filter.with(Filter::of(hash)),
            view,
        };
        if head.orders == TABLED {
            self.table
                .insert_unique(table_hash(bits), (o, bits), |&(_, stored)| table_hash(stored));
        } else if head.orders > CHAIN_ORDERS {
            self.move_chain_to_table(o);
            head.orders = TABLED;
        }
        o
    }

    /// The order `id` among the chain from `newest` back, by hash bits then text.
    fn in_chain(&self, newest: u32, id: &[u8], bits: u32) -> Option<u32> {
        let mut o = newest;
        while o != NONE {
            let link = self.links[o as usize];
            if link.bits == bits && self.id(o) == id {
                return Some(o);
            }
            o = link.previous;
        }
        None
    }

    /// The customer's order `id` in the table.
    fn in_table(&self, customer: u32, id: &[u8], bits: u32) -> Option<u32> {
        self.table
            .find(table_hash(bits), |&(o, stored)| {
                stored == bits && self.customer[o as usize] == customer && self.id(o) == id
            })
            .map(|&(o, _)| o)
    }

    /// Moves the chain from `newest` back into the table.
    pub(super) fn move_chain_to_table(&mut self, newest: u32) {
        let mut o = newest;
        while o != NONE {
            let Link { previous, bits } = self.links[o as usize];
            self.table
                .insert_unique(table_hash(bits), (o, bits), |&(_, stored)| table_hash(stored));
            o = previous;
        }
    }

    /// A new order of the customer, made after `previous`; returns its number.
    pub(super) fn push(&mut self, customer: u32, id: &str, bits: u32, previous: u32) -> u32 {
        let o = self.customer.len() as u32;
        // Order ids are stored per order, not deduplicated: (customer, id) is the key.
        self.ids.push(id);
        self.links.push(Link { previous, bits });
        self.customer.push(customer);
        self.rollups.push(Rollup::NONE);
        self.last_print.push(NONE);
        o
    }

    /// Once the pass is over: keeps the orders with a kept line, renumbered in
    /// (customer rank, order_id) order, and frees the lookup table and the order ids.
    /// Returns each old number's new one (`NONE`: the order is gone).
    /// `rank`: each customer's place in the order the orders are to follow.
    pub(super) fn seal(&mut self, rank: &[u32]) -> Vec<u32> {
        self.table = HashTable::new();
        self.last_print = Vec::new();
        self.links = Vec::new();
        let ids = std::mem::take(&mut self.ids);
        let id = |o: u32| bytes_of(&ids.text, &ids.ends, o);
        // Kept orders grouped by customer, each customer's by order_id. Each goes with
        // the first 16 bytes of its id, read in order number order: sorted by id
        // text, a customer's orders (made months apart) read ids far apart in the
        // arena, a cache miss per comparison (1.2 CPU-s of memcmp at 30M lines).
        let (mut keyed, starts) = grouped_by_key(
            || {
                (0..self.customer.len() as u32)
                    .filter(|&o| self.rollups[o as usize].has_kept_line())
                    .map(|o| (prefix_at(&ids.text, &ids.ends, o), o))
            },
            rank.len(),
            |(_, o)| rank[self.customer[o as usize] as usize] as usize,
        );
        for window in starts.windows(2).filter(|w| w[1] - w[0] > 1) {
            keyed[window[0]..window[1]]
                .sort_unstable_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| id(*a).cmp(id(*b))));
        }
        let kept: Vec<u32> = keyed.into_iter().map(|(_, o)| o).collect();
        drop(ids);
        self.customer_starts = starts.into_iter().map(|start| start as u32).collect();
        let mut renumbered = vec![NONE; self.customer.len()];
        for (new, &old) in kept.iter().enumerate() {
            renumbered[old as usize] = new as u32;
        }
        fn in_kept_order<T: Copy>(values: &mut Vec<T>, kept: &[u32]) {
            let ordered = kept.iter().map(|&o| values[o as usize]).collect();
            *values = ordered;
        }
        // Each customer's orders are found by `customer_starts` from now on.
        self.customer = Vec::new();
        in_kept_order(&mut self.rollups, &kept);
        if !self.margin.is_empty() {
            self.margin.resize(renumbered.len(), 0);
            in_kept_order(&mut self.margin, &kept);
        }
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

#[cfg(test)]
mod filter_tests {
    use super::Filter;
    use foldhash::fast::FixedState;
    use std::hash::BuildHasher;

    /// Of 50 new orders per customer with `held` orders, the share the filter
    /// takes for held ones; `add` and `holds` are the filter's two operations.
    fn mistaken<F: Copy>(
        held: u64,
        empty: F,
        of: impl Fn(u64) -> F,
        add: impl Fn(F, F) -> F,
        holds: impl Fn(F, F) -> bool,
    ) -> f64 {
        let hasher = FixedState::with_seed(11);
        let (mut mistaken, mut asked) = (0, 0);
        for customer in 0..2_000u64 {
            let hash = |order: u64| of(hasher.hash_one((customer, order)));
            let filter = (0..held).fold(empty, |filter, order| add(filter, hash(order)));
            // Never a held order taken for a new one.
            assert!((0..held).all(|order| holds(filter, hash(order))));
            for order in held..held + 50 {
                mistaken += usize::from(holds(filter, hash(order)));
                asked += 1;
            }
        }
        mistaken as f64 / asked as f64
    }

    /// Fewer new orders taken for held ones than with the two bits in 64 it
    /// replaced (3.8% and 14.5% of them, with 8 and 16 orders held): 1.9% and 9.7%.
    #[test]
    fn the_filter_holds_its_orders_and_few_others() {
        let two_in_64 = |hash: u64| (1u64 << (hash >> 58)) | (1u64 << ((hash >> 52) & 63));
        for (held, at_most) in [(8, 0.025), (16, 0.11)] {
            let rate = mistaken(held, Filter::EMPTY, Filter::of, Filter::with, Filter::holds);
            let before = mistaken(held, 0, two_in_64, |a, b| a | b, |f, b| f & b == b);
            assert!(
                rate < at_most && rate < before,
                "{held} orders: {rate} (before: {before})"
            );
        }
    }
}

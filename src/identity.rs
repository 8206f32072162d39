//! One customer reference: several ids of one person (web account, store card,
//! e-mail hash) merged to one canonical id before any metric sees them.
//!
//! `input.identities` lists (alias_id, customer_id) pairs. Each pair says the two
//! ids are one person; chains and cycles resolve transitively (union-find), and every
//! id of a group maps to the group's canonical id: the smallest id in text (byte)
//! order, so the result does not depend on the table's row order. An id that no
//! pair names keeps its own. Self-loops (alias_id = customer_id) change nothing and
//! are counted; an alias_id listed against two or more different customer_ids is a
//! conflict, counted, and merges them all (the map says they are one person).
//!
//! The merge happens after SPEC §1's roll-up, on customers: the orders of every id
//! of one person become that person's orders (an order_id listed under two of
//! their ids stays two orders; step 3's duplicates are judged per id as recorded).

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::io::side;
use crate::schema::internal::{CUSTOMER_ID, ORDER_RANK};

/// The alias table's columns.
pub const ALIAS_ID: &str = "alias_id";
pub const CANONICAL_ID: &str = "customer_id";

/// What the manifest says of the identity map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityReport {
    pub file: String,
    /// Rows in the table.
    pub rows: u64,
    /// Rows with a missing or empty id, ignored.
    pub incomplete_rows: u64,
    /// Rows whose alias_id is its customer_id.
    pub self_loops: u64,
    /// alias_ids listed against two or more different customer_ids.
    pub conflicts: u64,
    /// Distinct ids in the table.
    pub ids: u64,
    /// Groups of two or more ids (people with several ids).
    pub groups: u64,
    /// Customers with an order, before and after the merge.
    pub customers_before: u64,
    pub customers_after: u64,
}

/// The identity map, resolved: every id of the table to its canonical id.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    canonical: BTreeMap<String, String>,
    pub report: IdentityReport,
}

/// Union-find over dense indices; the root of a set is its smallest index.
struct Groups {
    parent: Vec<u32>,
}

impl Groups {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
        }
    }

    fn root(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            // Path halving: each step points a node at its grandparent.
            let grandparent = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = grandparent;
            i = grandparent;
        }
        i
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.root(a), self.root(b));
        let (low, high) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[high as usize] = low;
    }
}

impl Identities {
    /// Resolves (alias_id, customer_id) pairs; `None` ids are incomplete rows.
    pub fn resolve<'a>(
        pairs: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)>,
        file: &str,
    ) -> Self {
        let mut report = IdentityReport {
            file: file.into(),
            ..Default::default()
        };
        let mut edges: Vec<(&str, &str)> = Vec::new();
        for pair in pairs {
            report.rows += 1;
            match pair {
                (Some(alias), Some(customer)) if alias == customer => report.self_loops += 1,
                (Some(alias), Some(customer)) => edges.push((alias, customer)),
                _ => report.incomplete_rows += 1,
            }
        }
        // Dense indices in text order: the smallest index of a group is its smallest id.
        let mut ids: Vec<&str> = edges.iter().flat_map(|&(a, c)| [a, c]).collect();
        ids.sort_unstable();
        ids.dedup();
        let index = |id: &str| ids.binary_search(&id).unwrap_or_default() as u32;
        let mut groups = Groups::new(ids.len());
        for &(alias, customer) in &edges {
            groups.union(index(alias), index(customer));
        }
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        let mut conflicted: BTreeSet<&str> = BTreeSet::new();
        for &(alias, customer) in &edges {
            match targets.insert(alias, customer) {
                Some(previous) if previous != customer => {
                    conflicted.insert(alias);
                }
                _ => {}
            }
        }
        report.conflicts = conflicted.len() as u64;
        let mut canonical = BTreeMap::new();
        let mut sizes: BTreeMap<u32, u64> = BTreeMap::new();
        for i in 0..ids.len() as u32 {
            let root = groups.root(i);
            *sizes.entry(root).or_default() += 1;
            if root != i {
                canonical.insert(ids[i as usize].to_string(), ids[root as usize].to_string());
            }
        }
        report.ids = ids.len() as u64;
        report.groups = sizes.values().filter(|&&n| n > 1).count() as u64;
        Self { canonical, report }
    }

    /// Reads `input.identities` (Parquet or CSV with `alias_id` and `customer_id`).
    pub fn read(path: &str) -> Result<Self> {
        let key = "input.identities";
        let frame = side::read_table(key, path, &[ALIAS_ID, CANONICAL_ID])?;
        let aliases = side::id_text(&frame, ALIAS_ID, key, path)?;
        let customers = side::id_text(&frame, CANONICAL_ID, key, path)?;
        Ok(Self::resolve(aliases.iter().zip(customers.iter()), path))
    }

    /// The canonical id of `id` (itself when the map does not name it).
    pub fn canonical<'a>(&'a self, id: &'a str) -> &'a str {
        self.canonical.get(id).map_or(id, String::as_str)
    }

    /// The orders of SPEC §1 (sorted by customer key, keys in customer_id text order)
    /// re-keyed to canonical customers: returns the orders, sorted again by the new
    /// keys, and the canonical customer_id text by new key. Within a customer the
    /// orders keep their order (by former id, then order_id). The report's customer
    /// counts are filled in.
    pub fn rekey(&self, orders: DataFrame, customer_ids: &Series) -> Result<Rekeyed> {
        let ids = customer_ids.str()?;
        let canonical: Vec<&str> = ids.no_null_iter().map(|id| self.canonical(id)).collect();
        let mut distinct = canonical.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let mut report = self.report.clone();
        report.customers_before = canonical.len() as u64;
        report.customers_after = distinct.len() as u64;
        if distinct.len() == canonical.len() {
            return Ok(Rekeyed {
                orders,
                customer_ids: customer_ids.clone(),
                report,
            });
        }
        let new_key: Vec<u32> = canonical
            .iter()
            .map(|id| distinct.binary_search(id).unwrap_or_default() as u32)
            .collect();
        let keys = orders.column(CUSTOMER_ID)?.u32()?;
        let rekeyed: UInt32Chunked = keys.iter().map(|k| k.map(|k| new_key[k as usize])).collect();
        let mut orders = orders;
        orders.replace(CUSTOMER_ID, rekeyed.with_name(CUSTOMER_ID.into()).into_column())?;
        let orders = orders.sort(
            [CUSTOMER_ID, ORDER_RANK],
            SortMultipleOptions::default().with_maintain_order(true),
        )?;
        let names = Series::new(customer_ids.name().clone(), distinct);
        Ok(Rekeyed {
            orders,
            customer_ids: names,
            report,
        })
    }
}

/// Orders and customers after the merge.
pub struct Rekeyed {
    pub orders: DataFrame,
    pub customer_ids: Series,
    pub report: IdentityReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)]) -> Identities {
        Identities::resolve(pairs.iter().map(|&(a, c)| (Some(a), Some(c))), "ids.csv")
    }

    /// A chain, a cycle, a self-loop and a conflict, resolved by hand.
    #[test]
    fn chains_and_cycles_resolve_to_the_smallest_id() {
        let ids = resolve(&[
            ("web-9", "card-5"), // chain: web-9 → card-5 → mail-2
            ("card-5", "mail-2"),
            ("x3", "x1"), // cycle x1 → x2 → x3 → x1
            ("x1", "x2"),
            ("x2", "x3"),
            ("solo", "solo"), // self-loop
            ("p", "q"),       // conflict: p names q and r
            ("p", "r"),
        ]);
        assert_eq!(ids.canonical("web-9"), "card-5");
        assert_eq!(ids.canonical("mail-2"), "card-5");
        assert_eq!(ids.canonical("card-5"), "card-5");
        for id in ["x1", "x2", "x3"] {
            assert_eq!(ids.canonical(id), "x1");
        }
        for id in ["p", "q", "r"] {
            assert_eq!(ids.canonical(id), "p");
        }
        assert_eq!(ids.canonical("solo"), "solo");
        assert_eq!(ids.canonical("unknown"), "unknown");
        let report = &ids.report;
        assert_eq!((report.rows, report.self_loops, report.conflicts), (8, 1, 1));
        assert_eq!((report.ids, report.groups), (9, 3));
    }

    #[test]
    fn incomplete_rows_are_counted_and_ignored() {
        let ids = Identities::resolve(
            [(Some("a"), None), (None, Some("b")), (Some("b"), Some("a"))],
            "f",
        );
        assert_eq!(ids.report.incomplete_rows, 2);
        assert_eq!(ids.canonical("b"), "a");
    }

    /// Orders of two ids of one person become one customer's, in key order.
    #[test]
    fn rekeyed_orders_are_sorted_by_the_canonical_key() {
        let ids = resolve(&[("c", "a")]);
        let names = Series::new("id".into(), ["a", "b", "c"]);
        let orders = df!(
            CUSTOMER_ID => [0u32, 1, 2, 2],
            ORDER_RANK => [0u32, 1, 2, 3],
            "value" => [10i64, 20, 30, 40],
        )
        .unwrap();
        let Rekeyed {
            orders,
            customer_ids: names,
            report,
        } = ids.rekey(orders, &names).unwrap();
        let keys: Vec<u32> = orders
            .column(CUSTOMER_ID)
            .unwrap()
            .u32()
            .unwrap()
            .into_no_null_iter()
            .collect();
        let values: Vec<i64> = orders
            .column("value")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(keys, [0, 0, 0, 1]);
        assert_eq!(values, [10, 30, 40, 20]);
        let names: Vec<&str> = names.str().unwrap().no_null_iter().collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!((report.customers_before, report.customers_after), (3, 2));
    }
}

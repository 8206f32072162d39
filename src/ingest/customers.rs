//! SPEC §1 steps 1 and 5, the customer key: a shard's customers, each id numbered
//! once, in an open-addressing table whose entry holds all the fold needs of the
//! customer per line: the id's view and hash bits, its number, and its orders'
//! [`Head`]. One entry is one cache line, found at a place its hash gives, so the
//! fold asks for it lines ahead ([`CustomerTable::prefetch`]).
//!
//! Why: on lines in date order nearly every line's customer is another one, spread
//! over a table far larger than the caches. A hash table whose entries and heads
//! lay apart was two or three dependent misses per line (40% of the fold at 10M
//! lines); here it is one, requested while earlier lines are folded.

use super::intern::{NO_VIEW, bytes_of, hash_bits, prefix_at, span, view_halves};
use super::orders::Head;
use crate::memory::HugeZeroed;

/// One customer: 64 bytes, one cache line. All zero bytes: a free entry.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Entry {
    /// The Arrow view the id was first seen in when it holds the whole id
    /// ([`super::intern::SHORT`]): an id met again in the same form is recognised
    /// without reading its text.
    view: [u64; 2],
    bits: u32,
    /// The customer's number + 1; 0 in a free entry.
    number: u32,
    pub(super) head: Head,
}
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

/// Distinct customer ids, numbered in order of first appearance, with their text.
#[derive(Default)]
pub(super) struct CustomerTable {
    /// A power of two long (or empty); linear probing from the place of the hash bits.
    /// In huge pages of its own: read at random, in small pages nearly every lookup
    /// also walked the page tables.
    entries: Option<HugeZeroed<Entry>>,
    /// Every id's text, one after the other; id `n` ends at `ends[n]`.
    pub(super) text: String,
    pub(super) ends: Vec<usize>,
}

/// A customer in id text order ([`CustomerTable::in_text_order`]): its id's sort
/// [`prefix`] and length, and its number.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ranked {
    pub(super) prefix: u128,
    pub(super) number: u32,
    pub(super) len: u32,
}

impl Ranked {
    /// The order of customer ids: by sort prefix, the texts (`texts`, this one's
    /// and `other`'s) read only on a tie. The seal's sort and the finish's merge
    /// both order by it.
    pub(super) fn cmp_ids<'a>(
        &self,
        other: &Ranked,
        texts: impl FnOnce() -> (&'a str, &'a str),
    ) -> std::cmp::Ordering {
        self.prefix.cmp(&other.prefix).then_with(|| {
            let (mine, theirs) = texts();
            mine.cmp(theirs)
        })
    }
}

/// Entries in use at most, per entry of the table, before it doubles (3/4): the
/// probes stay short, and each is one cache line.
const LOAD: (usize, usize) = (3, 4);

impl CustomerTable {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn get(&self, number: u32) -> &str {
        &self.text[span(&self.ends, number)]
    }

    fn entries(&self) -> &[Entry] {
        self.entries.as_deref().unwrap_or_default()
    }

    /// Bytes the table holds (capacities), for the debug log.
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.entries())
            + self.text.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
    }

    fn place(&self, bits: u32) -> usize {
        bits as usize & (self.entries().len() - 1)
    }

    /// Asks the processor for the entry of the id with hash `hash`, so that its
    /// lookup some lines later finds it in the cache.
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        if self.entries().is_empty() {
            return;
        }
        let entry = &self.entries()[self.place(hash_bits(hash))];
        prefetch(entry as *const Entry as *const i8);
    }

    /// The entry of customer id `text` (trimmed), with hash `hash`, read from a view
    /// that holds it whole (`view`, before trimming) or not; a new customer is
    /// numbered next. Returns the entry's place, for [`Self::number`] and [`Self::head`].
    pub(super) fn find_or_insert(&mut self, text: &str, hash: u64, view: Option<u128>) -> usize {
        if (self.len() + 1) * LOAD.1 > self.entries().len() * LOAD.0 {
            self.grow();
        }
        let bits = hash_bits(hash);
        let view = view_halves(view);
        let mask = self.entries().len() - 1;
        let mut at = self.place(bits);
        loop {
            let entry = &self.entries()[at];
            if entry.number == 0 {
                break;
            }
            if entry.bits == bits
                && ((view != NO_VIEW && entry.view == view)
                    || bytes_of(&self.text, &self.ends, entry.number - 1) == text.as_bytes())
            {
                return at;
            }
            at = (at + 1) & mask;
        }
        let number = self.ends.len() as u32;
        self.text.push_str(text);
        self.ends.push(self.text.len());
        self.entries_mut()[at] = Entry {
            view,
            bits,
            number: number + 1,
            head: Head::NEW,
        };
        at
    }

    fn entries_mut(&mut self) -> &mut [Entry] {
        self.entries.as_deref_mut().unwrap_or_default()
    }

    /// The customer's number at place `at`.
    pub(super) fn number(&self, at: usize) -> u32 {
        self.entries()[at].number - 1
    }

    /// The head of the customer at place `at`.
    pub(super) fn head(&mut self, at: usize) -> &mut Head {
        &mut self.entries_mut()[at].head
    }

    /// Twice the entries (at first 4096), every customer moved to its new place.
    fn grow(&mut self) {
        let capacity = (self.entries().len() * 2).max(4096);
        // SAFETY: an Entry of zero bytes is a valid (free) entry.
        let fresh = unsafe { HugeZeroed::<Entry>::new(capacity) };
        let old = self.entries.replace(fresh);
        let mask = capacity - 1;
        for entry in old.iter().flat_map(|old| old.iter()).filter(|e| e.number != 0) {
            let mut at = self.place(entry.bits);
            while self.entries()[at].number != 0 {
                at = (at + 1) & mask;
            }
            self.entries_mut()[at] = *entry;
        }
    }

    /// The customers in id text order: sorted on the first 16 bytes as an integer,
    /// the text compared only on a tie (ids of up to 16 bytes, most, never are).
    pub(super) fn in_text_order(&self) -> Vec<Ranked> {
        let mut ranked: Vec<Ranked> = (0..self.len() as u32)
            .map(|number| {
                let id = bytes_of(&self.text, &self.ends, number);
                Ranked {
                    prefix: prefix_at(&self.text, &self.ends, number),
                    number,
                    len: id.len() as u32,
                }
            })
            .collect();
        ranked.sort_unstable_by(|a, b| a.cmp_ids(b, || (self.get(a.number), self.get(b.number))));
        ranked
    }

    /// Keeps only the ids (the finish orders customers by them); frees the table.
    pub(super) fn seal(&mut self) {
        self.entries = None;
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

/// A hint to load the cache line at `address` (no fault, no effect on results).
#[inline(always)]
fn prefetch(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; SSE is part of x86_64.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::intern::{present, short_view};
    use foldhash::fast::FixedState;
    use polars::prelude::*;
    use std::hash::BuildHasher;

    /// The view is a shortcut only: an id met in another raw form (padded) or too
    /// long for its view is still found by its text.
    #[test]
    fn an_id_met_again_in_another_form_keeps_its_number() {
        let ids = StringChunked::new(
            "ids".into(),
            &[
                "c1",
                " c1",
                "c1",
                "c2",
                "a-long-customer-id",
                "a-long-customer-id ",
                "c2",
            ],
        );
        let array = ids.downcast_iter().next().unwrap();
        let hasher = FixedState::with_seed(7);
        let mut table = CustomerTable::default();
        let numbers: Vec<u32> = (0..array.len())
            .map(|i| {
                let text = present(array.get(i)).unwrap();
                let at = table.find_or_insert(text, hasher.hash_one(text.as_bytes()), short_view(array, i));
                table.number(at)
            })
            .collect();
        assert_eq!(numbers, [0, 0, 0, 1, 2, 2, 1]);
        assert_eq!(
            (0..3).map(|i| table.get(i)).collect::<Vec<_>>(),
            ["c1", "c2", "a-long-customer-id"]
        );
    }

    /// Numbers as a map gives them, through growth, probing past other ids and
    /// ids met in another raw form (views differ, text equal).
    #[test]
    fn ids_keep_their_numbers_through_growth() {
        let hasher = FixedState::with_seed(3);
        let mut table = CustomerTable::default();
        let mut expected = std::collections::BTreeMap::new();
        for round in 0..3 {
            for i in 0..20_000u32 {
                let id = format!("c{}", (i * 7919) % 15_000);
                let hash = hasher.hash_one(id.as_bytes());
                // A fake view: distinct per round, so the text decides in later rounds.
                let view = (round == 0).then(|| u128::from(i) | (1 << 100));
                let at = table.find_or_insert(&id, hash, view);
                let next = expected.len() as u32;
                let want = *expected.entry(id.clone()).or_insert(next);
                assert_eq!(table.number(at), want, "{id}");
                assert_eq!(table.get(want), id);
            }
        }
        assert_eq!(table.len(), 15_000);
    }
}

//! SPEC §1 steps 1 and 5, the keys: each customer id, order id, channel and category
//! is read once, trimmed ([`present`]), and numbered, so the fold and every later
//! stage work on dense integers instead of hashing text again.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use polars::prelude::*;

/// No channel or category.
pub(super) const NONE: u32 = u32::MAX;

/// A table entry of an [`Interner`]: the string's number and 32 bits of its hash
/// (growing the table rehashes from them, never reading the text again: at 30M
/// lines, reading each id again at every doubling, from all over memory, was 3% of
/// the job's time).
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) number: u32,
    pub(super) bits: u32,
}

/// A whole-string view ([`short_view`]) as two halves (8-byte aligned, for table
/// entries), or [`NO_VIEW`] when the view holds a prefix only.
pub(super) fn view_halves(view: Option<u128>) -> [u64; 2] {
    view.map_or(NO_VIEW, |v| [v as u64, (v >> 64) as u64])
}

/// [`view_halves`] of a view that does not hold its string whole.
pub(super) const NO_VIEW: [u64; 2] = [u64::MAX, u64::MAX];

/// Longest string an Arrow view holds whole: equal such views are equal strings,
/// in any array.
pub(super) const SHORT: u32 = 12;

/// Distinct strings, each stored once, numbered in order of first appearance.
#[derive(Default)]
pub(super) struct Interner {
    pub(super) table: HashTable<Slot>,
    pub(super) text: String,
    pub(super) ends: Vec<usize>,
}

/// Where string `i` of an arena lies in its text.
pub(super) fn span(ends: &[usize], i: u32) -> std::ops::Range<usize> {
    let i = i as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] };
    start..ends[i]
}

/// The first 16 bytes of a string as a big-endian integer (zero-padded): integers
/// compare as the strings' byte order does, up to ties. Ids of up to 16 bytes
/// (most) differ in it, so sorting them never reads their text.
pub(super) fn prefix(text: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = text.len().min(16);
    bytes[..n].copy_from_slice(&text[..n]);
    u128::from_be_bytes(bytes)
}

/// The sort [`prefix`] of string `i` of an arena, as one 16-byte load where the
/// arena holds 16 bytes from the string's start (the bytes past its end masked
/// off), instead of a copy of its bytes into a buffer read back whole: the
/// profile put 40% of the seal's samples on that copy, and the load took the
/// seal's grouping of orders from 0.72-0.76 to 0.67-0.71 CPU-s at 30M lines.
pub(super) fn prefix_at(text: &str, ends: &[usize], i: u32) -> u128 {
    let span = span(ends, i);
    let (start, len) = (span.start, span.len());
    match text.as_bytes().get(start..start + 16).map(<[u8; 16]>::try_from) {
        Some(Ok(sixteen)) if len > 0 => {
            let whole = u128::from_be_bytes(sixteen);
            if len >= 16 {
                whole
            } else {
                whole & (u128::MAX << ((16 - len) * 8))
            }
        }
        _ => prefix(&text.as_bytes()[span]),
    }
}

/// The bytes of string `i` of an arena (bytes: no char-boundary checks in hot loops).
pub(super) fn bytes_of<'a>(text: &'a str, ends: &[usize], i: u32) -> &'a [u8] {
    &text.as_bytes()[span(ends, i)]
}

/// 32 bits of a 64-bit hash, both halves mixed: the shard and the pass are chosen
/// by some of the hash's bits, which are then the same for every key of a table.
pub(super) fn hash_bits(hash: u64) -> u32 {
    (hash ^ (hash >> 32)) as u32
}

/// The table hash of [`hash_bits`]: its bits twice over, so that the bits hashbrown
/// takes for the slot (the low ones) and for the tag (the top 7) both vary.
pub(super) fn table_hash(bits: u32) -> u64 {
    (u64::from(bits) << 32) | u64::from(bits)
}

impl Interner {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn get(&self, i: u32) -> &str {
        &self.text[span(&self.ends, i)]
    }

    pub(super) fn intern(&mut self, hasher: &FixedState, s: &str) -> u32 {
        let Self { table, text, ends } = self;
        let bits = hash_bits(hasher.hash_one(s.as_bytes()));
        let entry = table.entry(
            table_hash(bits),
            |slot| slot.bits == bits && bytes_of(text, ends, slot.number) == s.as_bytes(),
            |slot| table_hash(slot.bits),
        );
        match entry {
            Entry::Occupied(e) => e.get().number,
            Entry::Vacant(e) => {
                let number = ends.len() as u32;
                e.insert(Slot { number, bits });
                self.push(s);
                number
            }
        }
    }

    pub(super) fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }
}

/// The view of the string at `i` when it holds the whole string ([`SHORT`]).
pub(super) fn short_view(array: &<StringType as PolarsDataType>::Array, i: usize) -> Option<u128> {
    (array.views()[i].length <= SHORT).then(|| view(array, i))
}

/// A string's 16-byte view in its array. Within one array, equal views are equal
/// strings (a string of up to 12 bytes is held whole in its view), so a repeated id
/// is recognised by comparing two integers.
pub(super) fn view(array: &<StringType as PolarsDataType>::Array, i: usize) -> u128 {
    array.views()[i].as_u128()
}

/// Low-cardinality text (channels, categories), numbered. Short strings are found by
/// their view, which holds the whole string, before any text is read or hashed:
/// first in a small direct-mapped cache (two lookups per line, so a hash map's
/// hashing of 16 bytes was a tenth of the fold), then in a map of every view seen.
#[derive(Default)]
pub(super) struct Labels {
    pub(super) names: Interner,
    pub(super) by_view: hashbrown::HashMap<u128, u32, FixedState>,
    recent: RecentViews,
}

/// Views recently looked up, at a place their bits give: (view, number); `NONE` free.
struct RecentViews(Box<[(u128, u32); RECENT_VIEWS]>);

const RECENT_VIEWS: usize = 64;

impl Default for RecentViews {
    fn default() -> Self {
        RecentViews(Box::new([(0, NONE); RECENT_VIEWS]))
    }
}

impl RecentViews {
    fn place(view: u128) -> usize {
        let mixed = ((view as u64) ^ ((view >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> (64 - RECENT_VIEWS.trailing_zeros())) as usize
    }
}

impl Labels {
    /// The number of the string at `i` of `array`, or NONE when it is null.
    pub(super) fn id(
        &mut self,
        hasher: &FixedState,
        array: &<StringType as PolarsDataType>::Array,
        i: usize,
    ) -> u32 {
        let Some(text) = array.get(i) else {
            return NONE;
        };
        // Arrow keeps strings of up to 12 bytes inside the view itself.
        let short = array.views()[i].length <= SHORT;
        let key = view(array, i);
        let place = RecentViews::place(key);
        if short {
            let (seen, id) = self.recent.0[place];
            if seen == key && id != NONE {
                return id;
            }
            if let Some(&id) = self.by_view.get(&key) {
                self.recent.0[place] = (key, id);
                return id;
            }
        }
        let id = self.names.intern(hasher, text);
        if short {
            self.by_view.insert(key, id);
            self.recent.0[place] = (key, id);
        }
        id
    }

    pub(super) fn get(&self, id: u32) -> &str {
        self.names.get(id)
    }

    pub(super) fn len(&self) -> usize {
        self.names.len()
    }
}

/// An id as the fold sees it: trimmed, and missing when empty (SPEC §1 step 1).
pub(super) fn present(id: Option<&str>) -> Option<&str> {
    id.map(trimmed).filter(|id| !id.is_empty())
}

/// `str::trim`, without its scan of the ends for Unicode white space when both
/// ends are visible ASCII (nearly every id: 2% of the fold's time at 10M lines).
fn trimmed(id: &str) -> &str {
    match (id.as_bytes().first(), id.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => id,
        _ => id.trim(),
    }
}

#[cfg(test)]
mod tests {
    /// The shortcut trims as `str::trim` does: ASCII and Unicode white space,
    /// control characters kept, empty and one-character ids.
    #[test]
    fn trimmed_is_str_trim() {
        for id in [
            "",
            " ",
            "c1",
            " c1",
            "c1 ",
            "\tc1\n",
            "\u{a0}c1",
            "c1\u{2003}",
            "\u{1}c1\u{1f}",
            "é",
            " é ",
            "x",
            "\u{85}",
            "a b",
        ] {
            assert_eq!(super::trimmed(id), id.trim(), "{id:?}");
        }
    }

    /// The one-load prefix is the copied one: ids of every length from 0 to 20
    /// bytes, multi-byte text, and the last ids, with fewer than 16 bytes after
    /// their start.
    #[test]
    fn prefix_at_is_prefix() {
        let mut arena = super::Interner::default();
        for len in 0..=20 {
            arena.push(&"k".repeat(len));
            arena.push(&"é9".repeat(len / 3));
        }
        for tail in ["", "z", "zyx", "0123456789abcdefg"] {
            arena.push(tail);
        }
        for i in 0..arena.len() as u32 {
            let bytes = super::bytes_of(&arena.text, &arena.ends, i);
            assert_eq!(
                super::prefix_at(&arena.text, &arena.ends, i),
                super::prefix(bytes),
                "{:?}",
                arena.get(i)
            );
        }
    }
}

//! SPEC §1 steps 1–2 and the whole fold: [`OrderBook`] counts and drops each batch's
//! lines without the required values or dated on or after `as_of`, routes the rest
//! to their customer's shard, and at the end gathers every shard's orders into the
//! order table (customers keyed in customer_id text order) and the cleaning counts.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use chrono::NaiveDate;
use foldhash::fast::FixedState;
use polars::prelude::*;
use polars::series::IsSorted;
use rayon::prelude::*;

use super::Ingested;
use super::intern::{Labels, NONE, present, view};
use super::orders::Orders;
use super::plan::{CleaningStep, LinePlan, line};
use super::shard::{Batch, Candidate, Shard, pass_of, shard_of};
use crate::dates::epoch_days;
use crate::error::Result;
use crate::schema::internal::{
    CATEGORY, CATEGORY_MAX, CATEGORY_MIN, CHANNEL, CUSTOMER_ID, MARGIN, ORDER_DATE, ORDER_ID, ORDER_RANK,
    VALUE,
};

/// Row counts of SPEC §1 steps 1–2, over the whole input.
#[derive(Default, Debug, Clone)]
pub(super) struct Counts {
    pub(super) rows: u64,
    pub(super) null_customer: u64,
    pub(super) null_order: u64,
    pub(super) null_date: u64,
    pub(super) null_value: u64,
    pub(super) after_as_of: u64,
    /// Lines left after step 2, before step 3.
    pub(super) in_window: u64,
    /// Latest date among lines with every required value (the default as_of − 1).
    pub(super) latest_valid_day: Option<i32>,
}

/// Lines of a part of a batch routed ([`OrderBook::route`]): their step 1–2 counts,
/// and per shard the lines left (index in the batch, hash of the customer id).
type Routed = (Counts, Vec<Vec<(u32, u64)>>);

/// The fold of the line stream into orders; see the module documentation.
pub struct OrderBook {
    pub(super) hasher: FixedState,
    pub(super) as_of: Option<i32>,
    pub(super) dedupe: bool,
    /// Passes over the input, and the current one: pass p folds the customers whose
    /// id hashes to part p ([`pass_of`]); the first also counts every line.
    pub(super) passes: usize,
    pub(super) pass: usize,
    /// The current pass's shards, and those of the passes before it, sealed.
    pub(super) shards: Vec<Shard>,
    pub(super) sealed: Vec<Shard>,
    /// Lines and orders each shard reserves room for, and step 4's reason count.
    pub(super) per_shard: usize,
    pub(super) reasons: usize,
    pub(super) counts: Counts,
    /// Per parse check: failures and the example with the smallest row number.
    /// Per parse check: failing lines, and the first one's row.
    pub(super) parse_failures: Vec<(u64, Option<IdxSize>)>,
    /// Shards per pass ([`super::SHARDS_PER_THREAD`] per thread).
    pub(super) shard_count: usize,
    /// Channels and categories, numbered in order of first appearance, for every
    /// shard: each batch's labels are numbered in one pass down the column, before
    /// the shards fold (read in each shard's scattered lines, the column's views
    /// were a cache miss per line and label). The channels' places in text order,
    /// which the fold's smallest channel compares.
    pub(super) channels: Labels,
    pub(super) categories: Labels,
    pub(super) channel_ranks: Vec<u32>,
    /// The current batch's label numbers per line (`NONE`: null), reused.
    pub(super) channel_numbers: Vec<u32>,
    pub(super) category_numbers: Vec<u32>,
    /// The input's own columns, which decide exact duplicates (step 3).
    pub(super) raw_columns: Vec<PlSmallStr>,
    /// Whether lines carry a gross margin, summed per order like the value.
    pub(super) has_margin: bool,
    /// Lines whose fingerprint repeats, held from their batch or the next with
    /// their [`plan::duplicate_check_columns`], and their rows (each once).
    pub(super) held: Vec<DataFrame>,
    pub(super) held_rows: Vec<IdxSize>,
    pub(super) held_row_set: hashbrown::HashSet<IdxSize>,
    /// The batch before the current one, whose lines may repeat in it, with its
    /// first and last rows.
    pub(super) previous: Option<(DataFrame, (IdxSize, IdxSize))>,
    /// Lines whose fingerprint repeats, from every sealed pass, by row.
    pub(super) candidates: Vec<Candidate>,
    /// Time spent folding, and batches folded (for the debug log).
    pub(super) busy_seconds: f64,
    pub(super) batches: u64,
}

/// A customer id as the finish writes it: from its sort
/// [`prefix`](super::intern::prefix) when that holds it whole, else its text.
enum IdText<'a> {
    /// Bytes that are valid UTF-8 up to the length (checked when made).
    Short([u8; 16], usize),
    Long(&'a str),
}

impl<'a> IdText<'a> {
    fn of(prefix: u128, len: u32, text: impl FnOnce() -> &'a str) -> Self {
        let bytes = prefix.to_be_bytes();
        match bytes.get(..len as usize).map(std::str::from_utf8) {
            Some(Ok(_)) => IdText::Short(bytes, len as usize),
            _ => IdText::Long(text()),
        }
    }
}

impl AsRef<str> for IdText<'_> {
    fn as_ref(&self) -> &str {
        match self {
            // SAFETY: `of` checked that these bytes are UTF-8.
            IdText::Short(bytes, len) => unsafe { std::str::from_utf8_unchecked(&bytes[..*len]) },
            IdText::Long(text) => text,
        }
    }
}

/// A column of a batch as one contiguous array.
pub(super) fn array<'a, T: PolarsDataType>(ca: &'a std::borrow::Cow<'a, ChunkedArray<T>>) -> &'a T::Array {
    ca.downcast_as_array()
}

impl OrderBook {
    /// `shards`: how many parts the customers of a pass are split into, folded in
    /// parallel; `passes`: how many passes over the input ([`passes_for`]).
    /// `expected_lines`: the input's row count, an upper bound on each shard's
    /// lines and orders. Their arrays are reserved for it up front: untouched
    /// capacity costs no memory, while growing by doubling copies every array
    /// (transient copies were a fifth of the fold's peak memory).
    pub fn new(
        raw_columns: &[PlSmallStr],
        plan: &LinePlan,
        as_of: Option<NaiveDate>,
        dedupe: bool,
        (shards, passes): (usize, usize),
        expected_lines: usize,
    ) -> Self {
        let (shards, passes) = (shards.max(1), passes.max(1));
        // Customers hash to parts evenly; a tenth more leaves room for chance.
        let per_part = expected_lines / (shards * passes);
        let mut book = Self {
            hasher: FixedState::with_seed(0x006c_6f79_616c_7479),
            as_of: as_of.map(epoch_days),
            dedupe,
            passes,
            pass: 0,
            shards: Vec::new(),
            sealed: Vec::new(),
            per_shard: per_part + per_part / 10 + 1024,
            reasons: plan.reasons.len(),
            counts: Counts::default(),
            parse_failures: vec![(0, None); plan.parse_checks],
            shard_count: shards,
            channels: Labels::default(),
            categories: Labels::default(),
            channel_ranks: Vec::new(),
            channel_numbers: Vec::new(),
            category_numbers: Vec::new(),
            raw_columns: raw_columns.to_vec(),
            has_margin: plan.has_margin,
            held: Vec::new(),
            held_rows: Vec::new(),
            held_row_set: Default::default(),
            previous: None,
            candidates: Vec::new(),
            busy_seconds: 0.0,
            batches: 0,
        };
        book.shards = book.fresh_shards();
        book
    }

    pub(super) fn fresh_shards(&self) -> Vec<Shard> {
        (0..self.shard_count)
            .map(|_| Shard {
                dropped: vec![0; self.reasons],
                orders: Orders::with_capacity(self.per_shard),
                prints: Vec::with_capacity(if self.dedupe { self.per_shard } else { 0 }),
                ..Shard::default()
            })
            .collect()
    }

    pub fn passes(&self) -> usize {
        self.passes
    }

    /// Ends the current pass: its shards are sealed (in parallel), and the next
    /// pass, if any, starts with empty ones.
    pub fn end_pass(&mut self) {
        let first = self.sealed.len() as u32;
        let shards = std::mem::take(&mut self.shards);
        let (shards, candidates): (Vec<Shard>, Vec<Vec<Candidate>>) = shards
            .into_par_iter()
            .enumerate()
            .map(|(i, mut shard)| {
                let candidates = shard.seal(first + i as u32);
                (shard, candidates)
            })
            .unzip();
        self.sealed.extend(shards);
        self.candidates.extend(candidates.into_iter().flatten());
        self.candidates.sort_unstable_by_key(|c| c.row);
        self.pass += 1;
        self.previous = None;
        if self.pass < self.passes {
            self.shards = self.fresh_shards();
        }
    }

    /// Folds one batch of the line stream (the columns of [`plan::line_plan`]):
    /// steps 1–2 here, then each shard folds its customers' lines in parallel.
    pub fn add(&mut self, batch: &DataFrame) -> PolarsResult<()> {
        let series =
            |name: &str| -> PolarsResult<&Series> { Ok(batch.column(name)?.as_materialized_series()) };
        let optional = |name: &str| batch.column(name).ok().map(|c| c.as_materialized_series());
        let rows = series(line::ROW)?.idx()?.rechunk();
        let customers = series(CUSTOMER_ID)?.str()?.rechunk();
        let order_ids = series(ORDER_ID)?.str()?.rechunk();
        let days = series(ORDER_DATE)?.date()?.physical().rechunk();
        let values = series(VALUE)?.i64()?.rechunk();
        let margins = optional(MARGIN)
            .map(|s| s.i64().map(|c| c.rechunk()))
            .transpose()?;
        let verdicts = series(line::DROPPED_BY)?.i32()?.rechunk();
        let channels = optional(CHANNEL)
            .map(|s| s.str().map(|c| c.rechunk()))
            .transpose()?;
        let categories = optional(CATEGORY)
            .map(|s| s.str().map(|c| c.rechunk()))
            .transpose()?;
        let others = optional(line::OTHER_COLUMNS_HASH)
            .map(|s| s.u64().map(|c| c.rechunk()))
            .transpose()?;
        // The two label columns are numbered side by side (each a lookup per line,
        // on this thread while the shards wait).
        let known_channels = self.channels.len();
        let hasher = &self.hasher;
        let number = |labels: &mut Labels, numbers: &mut Vec<u32>, column: &Option<_>| {
            if let Some(column) = column {
                number_labels(labels, hasher, array(column), numbers);
            }
        };
        rayon::join(
            || number(&mut self.channels, &mut self.channel_numbers, &channels),
            || number(&mut self.categories, &mut self.category_numbers, &categories),
        );
        if self.channels.len() != known_channels {
            self.channel_ranks = text_order(&self.channels).1;
        }
        let batch_arrays = Batch {
            rows: array(&rows),
            customers: array(&customers),
            order_ids: array(&order_ids),
            days: array(&days),
            values: array(&values),
            margins: margins.as_ref().map(array),
            verdicts: array(&verdicts),
            channels: channels.as_ref().map(|_| self.channel_numbers.as_slice()),
            categories: categories.as_ref().map(|_| self.category_numbers.as_slice()),
            channel_ranks: &self.channel_ranks,
            others: others.as_ref().map(array),
        };
        let b = &batch_arrays;

        // Every line is counted and checked once, in the first pass.
        let first_pass = self.pass == 0;
        for check in (0..self.parse_failures.len()).filter(|_| first_pass) {
            let failed = series(&line::parse_failed(check))?.bool()?.rechunk();
            let failed = array(&failed);
            if failed.values().set_bits() == 0 {
                continue;
            }
            for i in (0..batch.height()).filter(|&i| failed.get(i) == Some(true)) {
                let (count, first) = &mut self.parse_failures[check];
                *count += 1;
                let row = b.rows.value(i);
                if first.is_none_or(|first| row < first) {
                    *first = Some(row);
                }
            }
        }

        // Steps 1–2, and each remaining line routed to its customer's shard: the
        // batch in parts, one per thread, each part's lines kept in input order.
        let height = batch.height();
        let part = height.div_ceil(rayon::current_num_threads().max(1)).max(1);
        let parts: Vec<Routed> = (0..height)
            .step_by(part)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| self.route(b, start..(start + part).min(height)))
            .collect();
        if first_pass {
            let counts = &mut self.counts;
            counts.rows += height as u64;
            for (part_counts, _) in &parts {
                counts.null_customer += part_counts.null_customer;
                counts.null_order += part_counts.null_order;
                counts.null_date += part_counts.null_date;
                counts.null_value += part_counts.null_value;
                counts.after_as_of += part_counts.after_as_of;
                counts.in_window += part_counts.in_window;
                counts.latest_valid_day = counts.latest_valid_day.max(part_counts.latest_valid_day);
            }
        }

        let (hasher, dedupe) = (&self.hasher, self.dedupe);
        let repeats: Vec<Vec<(IdxSize, IdxSize)>> = self
            .shards
            .par_iter_mut()
            .enumerate()
            .map(|(s, shard)| {
                let mut lines = std::mem::take(&mut shard.routed);
                lines.clear();
                lines.extend(parts.iter().flat_map(|(_, routed)| routed[s].iter().copied()));
                let repeats = shard.fold(hasher, b, &lines, dedupe);
                shard.routed = lines;
                repeats
            })
            .collect();
        // Both copies of each repeat are held from this batch or the one before,
        // unless held already; a copy further back is not (then step 3 reads the
        // input again). Batches come in input order, so each spans a row range.
        let rows_of = |batch: &DataFrame| -> PolarsResult<(IdxSize, IdxSize)> {
            let rows = batch.column(line::ROW)?.idx()?;
            Ok((rows.first().unwrap_or_default(), rows.last().unwrap_or_default()))
        };
        let span = rows_of(batch)?;
        let within = |(first, last): (IdxSize, IdxSize), row: IdxSize| first <= row && row <= last;
        let (mut current, mut previous) = (hashbrown::HashSet::new(), hashbrown::HashSet::new());
        for copy in repeats.into_iter().flatten().flat_map(|(row, twin)| [row, twin]) {
            if self.held_row_set.contains(&copy) {
                continue;
            }
            if within(span, copy) {
                current.insert(copy);
            } else if self
                .previous
                .as_ref()
                .is_some_and(|(_, before)| within(*before, copy))
            {
                previous.insert(copy);
            }
        }
        if !current.is_empty() {
            self.hold(batch, &current)?;
        }
        if let Some((before, _)) = self.previous.take().filter(|_| !previous.is_empty()) {
            self.hold(&before, &previous)?;
        }
        if dedupe {
            self.previous = Some((batch.clone(), span));
        }
        Ok(())
    }

    /// Steps 1–2 over lines `rows` of a batch: their counts, and per shard the lines
    /// left (index in the batch, hash of the customer id) that this pass folds.
    fn route(&self, b: &Batch, rows: std::ops::Range<usize>) -> Routed {
        let mut counts = Counts::default();
        let mut routed = vec![Vec::new(); self.shards.len()];
        let mut last: Option<(u128, u64)> = None;
        for i in rows {
            // The first missing required value is the reason.
            let (customer, day) = match (
                present(b.customers.get(i)),
                present(b.order_ids.get(i)),
                b.days.get(i),
                b.values.get(i),
            ) {
                (Some(customer), Some(_), Some(day), Some(_)) => (customer, day),
                (None, ..) => {
                    counts.null_customer += 1;
                    continue;
                }
                (_, None, ..) => {
                    counts.null_order += 1;
                    continue;
                }
                (_, _, None, _) => {
                    counts.null_date += 1;
                    continue;
                }
                (.., None) => {
                    counts.null_value += 1;
                    continue;
                }
            };
            counts.latest_valid_day = counts.latest_valid_day.max(Some(day));
            if self.as_of.is_some_and(|as_of| day >= as_of) {
                counts.after_as_of += 1;
                continue;
            }
            counts.in_window += 1;
            let customer_view = view(b.customers, i);
            let hash = match last {
                Some((v, hash)) if v == customer_view => hash,
                _ => self.hasher.hash_one(customer.as_bytes()),
            };
            last = Some((customer_view, hash));
            if pass_of(hash, self.passes) == self.pass {
                routed[shard_of(hash, self.shards.len())].push((i as u32, hash));
            }
        }
        (counts, routed)
    }

    /// Per parse check: how many values failed, and the row of the first.
    pub fn parse_failures(&self) -> Vec<(u64, Option<IdxSize>)> {
        self.parse_failures.clone()
    }

    /// The as_of a run without a configured one uses: the latest valid date + 1 day.
    pub fn default_as_of(&self) -> Option<NaiveDate> {
        self.counts
            .latest_valid_day
            .map(|day| NaiveDate::default() + chrono::Duration::days(day as i64 + 1))
    }

    /// The orders with at least one kept line, keyed by customer; see [`Ingested`].
    /// Every pass has ended.
    pub fn finish(self, reasons: &[String]) -> Result<Ingested> {
        let Self {
            sealed: mut shards,
            counts,
            channels: channel_labels,
            categories: category_labels,
            ..
        } = self;
        // Customer keys in customer_id text order, so sorting by key sorts by id:
        // each shard's customers come sorted from its seal, and are merged, in
        // parts. Each part's id column is made in parallel from the ids' sort
        // prefixes and lengths (an id of at most 16 bytes is written from its
        // prefix), and the order runs are laid out from the shards' order starts,
        // all read front to back.
        let (by_text, customer_ids, offsets) = {
            let parts = merged_by_text(&shards);
            let id_parts: Vec<StringChunked> = parts
                .par_iter()
                .map(|part| {
                    StringChunked::from_iter_values(
                        CUSTOMER_ID.into(),
                        part.iter().map(|&(s, r)| {
                            let shard = &shards[s as usize];
                            let customer = &shard.by_text[r as usize];
                            IdText::of(customer.prefix, customer.len, || shard.id_at_rank(r))
                        }),
                    )
                })
                .collect();
            let mut ids = StringChunked::from_iter_values(CUSTOMER_ID.into(), std::iter::empty::<&str>());
            for part in &id_parts {
                ids.append(part)?;
            }
            let ids = ids.rechunk().into_owned().into_series();
            let by_text = parts.concat();
            let mut offsets: Vec<usize> = Vec::with_capacity(by_text.len() + 1);
            offsets.push(0);
            for &(s, r) in &by_text {
                let starts = &shards[s as usize].orders.customer_starts;
                let orders = starts[r as usize + 1] - starts[r as usize];
                offsets.push(offsets[offsets.len() - 1] + orders as usize);
            }
            (by_text, ids, offsets)
        };
        for shard in &mut shards {
            shard.customers = Default::default();
            shard.by_text = Vec::new();
        }

        // Orders in customer key order: each customer's orders are one run of its
        // sealed shard, in order_id order, copied in key order (in parallel, each
        // part of the keys into its own part of the output).
        let run = |&(s, c): &(u32, u32)| {
            let starts = &shards[s as usize].orders.customer_starts;
            starts[c as usize]..starts[c as usize + 1]
        };
        let total = offsets[by_text.len()];
        // Uninitialised, like the columns below: the parts write every place.
        let mut sorted = Vec::<(u32, u32)>::with_capacity(total);
        let mut keys = Vec::<u32>::with_capacity(total);
        let parts = (rayon::current_num_threads() * 8).max(1);
        let per_part = by_text.len().div_ceil(parts).max(1);
        let mut outputs = Vec::new();
        let (mut sorted_rest, mut keys_rest) = (
            &mut sorted.spare_capacity_mut()[..total],
            &mut keys.spare_capacity_mut()[..total],
        );
        for first in (0..by_text.len()).step_by(per_part) {
            let last = (first + per_part).min(by_text.len());
            let len = offsets[last] - offsets[first];
            let (sorted_part, sorted_next) = std::mem::take(&mut sorted_rest).split_at_mut(len);
            let (keys_part, keys_next) = std::mem::take(&mut keys_rest).split_at_mut(len);
            (sorted_rest, keys_rest) = (sorted_next, keys_next);
            outputs.push((first..last, sorted_part, keys_part));
        }
        outputs
            .into_par_iter()
            .for_each(|(customers, sorted_part, keys_part)| {
                let mut at = 0;
                for k in customers {
                    let sc = by_text[k];
                    for o in run(&sc) {
                        sorted_part[at].write((sc.0, o));
                        keys_part[at].write(k as u32);
                        at += 1;
                    }
                }
            });
        // SAFETY: the parts cover places 0..total (the customers' order counts sum
        // to it), and each wrote every place of its customers' runs.
        unsafe {
            sorted.set_len(total);
            keys.set_len(total);
        }
        drop(by_text);
        let mut customer_key = UInt32Chunked::from_vec(CUSTOMER_ID.into(), keys);
        customer_key.set_sorted_flag(IsSorted::Ascending);
        for shard in &mut shards {
            shard.orders.customer_starts = Vec::new();
        }
        let mut ranks = Vec::new();
        (0..sorted.len() as u32)
            .into_par_iter()
            .collect_into_vec(&mut ranks);
        let mut order_rank = UInt32Chunked::from_vec(ORDER_RANK.into(), ranks);
        order_rank.set_sorted_flag(IsSorted::Ascending);
        // Channels and categories as their numbers in text order: an order's
        // category min and max by the fold's numbering (first appearance) stay two
        // of its categories; in text order, a customer has two distinct categories
        // exactly when the smallest min and the largest max of its orders differ
        // (upsell), and the numbers compare across the customers an identity merge
        // brings together. Channels are named by `channels`: a text column would
        // take 16 bytes per order.
        let channel_order = (channel_labels.len() > 0).then(|| text_order(&channel_labels));
        let category_place = (category_labels.len() > 0).then(|| text_order(&category_labels).1);
        // The columns, written straight from each order's aggregates (read once, in
        // runs: a customer's orders lie together in its shard), in parallel parts.
        // Every place of every column is written by the parallel parts, so the
        // columns start uninitialised: filled first (channels and categories with
        // NONE), on this thread, they took as long as the parts (0.13 s at 30M lines).
        let n = sorted.len();
        let label_numbers = |present: bool| Vec::<u32>::with_capacity(if present { n } else { 0 });
        let (mut days, mut values) = (Vec::<i32>::with_capacity(n), Vec::<i128>::with_capacity(n));
        let mut channels = label_numbers(channel_order.is_some());
        let mut category_min = label_numbers(category_place.is_some());
        let mut category_max = label_numbers(category_place.is_some());
        let chunk = n.div_ceil(rayon::current_num_threads() * 8).max(1);
        let (mut channel_parts, mut min_parts, mut max_parts) = (
            label_slots(&mut channels, n, chunk),
            label_slots(&mut category_min, n, chunk),
            label_slots(&mut category_max, n, chunk),
        );
        let parts: Vec<_> = sorted
            .chunks(chunk)
            .zip(
                days.spare_capacity_mut()[..n]
                    .chunks_mut(chunk)
                    .zip(values.spare_capacity_mut()[..n].chunks_mut(chunk)),
            )
            .map(|(orders, columns)| {
                let labels = (channel_parts.next(), min_parts.next(), max_parts.next());
                (orders, columns, labels)
            })
            .collect();
        let in_text_order = |place: &[u32], number: u32| {
            if number == NONE {
                NONE
            } else {
                place[number as usize]
            }
        };
        // Each part writes its places of every column, and counts its purchases.
        let purchases: u64 = parts
            .into_par_iter()
            .map(|(orders, (days, values), (mut channels, mut mins, mut maxes))| {
                let mut purchases = 0;
                for (j, &(s, o)) in orders.iter().enumerate() {
                    let rollup = &shards[s as usize].orders.rollups[o as usize];
                    days[j].write(rollup.first_day);
                    values[j].write(rollup.value);
                    purchases += u64::from(rollup.value > 0);
                    if let (Some(channels), Some((_, place))) = (channels.as_deref_mut(), &channel_order) {
                        channels[j].write(in_text_order(place, rollup.channel));
                    }
                    if let (Some(mins), Some(maxes), Some(place)) =
                        (mins.as_deref_mut(), maxes.as_deref_mut(), &category_place)
                    {
                        // Both NONE (no kept positive line), or both set.
                        let (a, b) = (
                            in_text_order(place, rollup.category_min),
                            in_text_order(place, rollup.category_max),
                        );
                        mins[j].write(a.min(b));
                        maxes[j].write(a.max(b));
                    }
                }
                purchases
            })
            .sum();
        // SAFETY: the parts cover places 0..n of each column (the label columns when
        // present: else their capacity is 0), and each part wrote every one of its
        // places above.
        unsafe {
            days.set_len(n);
            values.set_len(n);
            for column in [&mut channels, &mut category_min, &mut category_max] {
                column.set_len(column.capacity().min(n));
            }
        }
        for shard in &mut shards {
            shard.orders.rollups = Vec::new();
        }
        let margins = self.has_margin.then(|| {
            let margins = gathered(&sorted, &shards, |o| &o.margin);
            for shard in &mut shards {
                shard.orders.margin = Vec::new();
            }
            margins
        });
        // A label number per order as a column, null where it is NONE (the validity
        // made by one vectorised compare: collecting options took 0.1 s per column
        // at 5M orders).
        let labelled = |numbers: Vec<u32>, name: &str| {
            let numbers = UInt32Chunked::from_vec(name.into(), numbers);
            let present = numbers.not_equal(NONE);
            let validity = present.downcast_as_array().values().clone();
            let array = numbers.downcast_as_array().clone().with_validity(Some(validity));
            UInt32Chunked::with_chunk(name.into(), array).into_column()
        };
        let days = Int32Chunked::from_vec(ORDER_DATE.into(), days);
        let values = Int128Chunked::from_vec(VALUE.into(), values);
        let mut columns = vec![
            customer_key.into_column(),
            order_rank.into_column(),
            days.into_date().into_column(),
            values.into_column(),
        ];
        if let Some(margins) = margins {
            columns.push(Int128Chunked::from_vec(MARGIN.into(), margins).into_column());
        }
        let channels = channel_order.map(|(labels, _)| {
            columns.push(labelled(channels, CHANNEL));
            StringChunked::from_iter_values("channel_labels".into(), labels.iter().map(String::as_str))
                .into_series()
        });
        if category_place.is_some() {
            columns.push(labelled(category_min, CATEGORY_MIN));
            columns.push(labelled(category_max, CATEGORY_MAX));
        }
        let duplicates = shards.iter().map(|s| s.duplicates).sum();
        let dropped: Vec<u64> = (0..reasons.len())
            .map(|r| shards.iter().map(|s| s.dropped[r]).sum())
            .collect();
        Ok(Ingested {
            orders: DataFrame::new_infer_height(columns)?,
            customer_ids,
            channels,
            cleaning: cleaning_steps(
                &counts,
                duplicates,
                &dropped,
                reasons,
                sorted.len() as u64,
                purchases,
            ),
            purchases,
        })
    }
}

/// Every shard's customers in id text order, as (shard, rank), in consecutive
/// parts: each shard's list is sorted ([`Shard::by_text`]), so the lists are merged.
/// A global sort of every customer (with the id column) took 0.59 s at 30M lines,
/// the merge on one thread 0.08 s; here the parts, cut at ids of the longest list,
/// are merged in parallel.
fn merged_by_text(shards: &[Shard]) -> Vec<Vec<(u32, u32)>> {
    let before = |(s, r): (u32, u32), (t, q): (u32, u32)| {
        let (mine, theirs) = (&shards[s as usize], &shards[t as usize]);
        mine.by_text[r as usize]
            .cmp_ids(&theirs.by_text[q as usize], || {
                (mine.id_at_rank(r), theirs.id_at_rank(q))
            })
            .is_lt()
    };
    let Some(longest) = (0..shards.len() as u32).max_by_key(|&s| shards[s as usize].by_text.len()) else {
        return Vec::new();
    };
    let cut_ranks = shards[longest as usize].by_text.len() as u32;
    if cut_ranks == 0 {
        return Vec::new();
    }
    let parts = (rayon::current_num_threads() * 4) as u32;
    // Per cut, each shard's customers before it; the last cut is past every id.
    let cuts: Vec<Vec<u32>> = (1..=parts)
        .map(|p| {
            let cut = (
                longest,
                (u64::from(cut_ranks) * u64::from(p) / u64::from(parts)) as u32,
            );
            (0..shards.len() as u32)
                .map(|t| match (p == parts, t == longest) {
                    (true, _) => shards[t as usize].by_text.len() as u32,
                    (false, true) => cut.1,
                    (false, false) => {
                        let (shard, at_cut) = (&shards[t as usize], &shards[longest as usize]);
                        let cut_id = &at_cut.by_text[cut.1 as usize];
                        shard.by_text.partition_point(|customer| {
                            customer
                                .cmp_ids(cut_id, || (shard.id_of(customer), at_cut.id_at_rank(cut.1)))
                                .is_lt()
                        }) as u32
                    }
                })
                .collect()
        })
        .collect();
    let zero = vec![0u32; shards.len()];
    (0..parts as usize)
        .into_par_iter()
        .map(|p| {
            let from = if p == 0 { &zero } else { &cuts[p - 1] };
            merge_part(from.clone(), &cuts[p], before)
        })
        .collect()
}

/// Each shard's customers of ranks `next[s]..end[s]`, merged: the first of those
/// left taken each time, one head per shard scanned per pick (8 per pass: inputs
/// folded in many passes pay more per customer here).
fn merge_part(
    mut next: Vec<u32>,
    end: &[u32],
    before: impl Fn((u32, u32), (u32, u32)) -> bool,
) -> Vec<(u32, u32)> {
    let mut merged = Vec::with_capacity(end.iter().zip(&next).map(|(e, n)| (e - n) as usize).sum());
    // The shards with customers left.
    let mut left: Vec<u32> = (0..next.len() as u32)
        .filter(|&s| next[s as usize] < end[s as usize])
        .collect();
    while !left.is_empty() {
        let mut first = 0;
        for k in 1..left.len() {
            if before(
                (left[k], next[left[k] as usize]),
                (left[first], next[left[first] as usize]),
            ) {
                first = k;
            }
        }
        let s = left[first];
        merged.push((s, next[s as usize]));
        next[s as usize] += 1;
        if next[s as usize] == end[s as usize] {
            left.swap_remove(first);
        }
    }
    merged
}

/// The places of a label column (`n`, or none when it is absent, made with no
/// capacity) in parts of `chunk`.
fn label_slots(
    column: &mut Vec<u32>,
    n: usize,
    chunk: usize,
) -> std::slice::ChunksMut<'_, std::mem::MaybeUninit<u32>> {
    let len = column.capacity().min(n);
    column.spare_capacity_mut()[..len].chunks_mut(chunk)
}

/// One per-order array of every shard, read in `sorted` order (shard, order).
fn gathered<T: Copy + Send + Sync>(
    sorted: &[(u32, u32)],
    shards: &[Shard],
    pick: impl Fn(&Orders) -> &Vec<T> + Sync,
) -> Vec<T> {
    sorted
        .par_iter()
        .map(|&(s, o)| pick(&shards[s as usize].orders)[o as usize])
        .collect()
}

/// Labels in text order, and each label number's place in it.
fn text_order(labels: &Labels) -> (Vec<String>, Vec<u32>) {
    let mut sorted: Vec<String> = (0..labels.len() as u32)
        .map(|c| labels.get(c).to_string())
        .collect();
    sorted.sort_unstable();
    let place = (0..labels.len() as u32)
        .map(|c| sorted.partition_point(|l| l.as_str() < labels.get(c)) as u32)
        .collect();
    (sorted, place)
}

/// The number of each line's label in `column` (`NONE` when null), into `numbers`.
fn number_labels(
    labels: &mut Labels,
    hasher: &FixedState,
    column: &<StringType as PolarsDataType>::Array,
    numbers: &mut Vec<u32>,
) {
    numbers.clear();
    numbers.extend((0..column.len()).map(|i| labels.id(hasher, column, i)));
}

pub(super) fn cleaning_steps(
    counts: &Counts,
    duplicates: u64,
    dropped: &[u64],
    reasons: &[String],
    orders: u64,
    purchases: u64,
) -> Vec<CleaningStep> {
    let step =
        |step: u8, name: &str, rows_in: u64, rows_out: u64, reasons: BTreeMap<String, u64>| CleaningStep {
            step,
            name: name.into(),
            rows_in,
            rows_out,
            dropped: rows_in - rows_out,
            reasons,
        };
    let reasons1: BTreeMap<String, u64> = [
        ("null customer_id", counts.null_customer),
        ("null order_id", counts.null_order),
        ("null order_date", counts.null_date),
        ("null or non-finite line value", counts.null_value),
    ]
    .into_iter()
    .map(|(r, n)| (r.to_string(), n))
    .collect();
    let after1 = counts.rows - reasons1.values().sum::<u64>();
    let after3 = counts.in_window - duplicates;
    let after4 = after3 - dropped.iter().sum::<u64>();
    vec![
        step(1, "required values present", counts.rows, after1, reasons1),
        step(
            2,
            "dated before as_of",
            after1,
            counts.in_window,
            BTreeMap::from([("dated on or after as_of".into(), counts.after_as_of)]),
        ),
        step(
            3,
            "exact duplicate rows",
            counts.in_window,
            after3,
            BTreeMap::from([("exact duplicate".into(), duplicates)]),
        ),
        step(
            4,
            "exclude filters and returns",
            after3,
            after4,
            reasons.iter().cloned().zip(dropped.iter().copied()).collect(),
        ),
        CleaningStep {
            step: 5,
            name: "lines rolled up to orders".into(),
            rows_in: after4,
            rows_out: orders,
            dropped: 0,
            reasons: BTreeMap::from([
                ("orders".into(), orders),
                ("purchases (value > 0)".into(), purchases),
            ]),
        },
    ]
}

//! The catalog at a point in time: each SKU's listing (seller, category) and each
//! category's commission, read by settlements (SPEC §5.3) and sales facts (SPEC §5.5).
//!
//! Ledgers need the opposite of a join: a settlement uses the seller and commission *at
//! confirmation* and a sale belongs to the seller *at placement*; later catalog changes
//! must not rewrite them. The catalog operator, partitioned by SKU (every worker also
//! keeps every category, they are few), handles each time's catalog updates first, then
//! its queries. It keeps every version of the catalog rather than each line's answer: a
//! line's later facts and refund entries look the terms up again as of the time they were
//! frozen (its placement, its confirmation). A query about a SKU or category not yet known
//! waits, holding no capability, and is answered when both become known, at that time.

use std::collections::HashMap;

use shopflow_model::id::IdBuf;
use shopflow_model::{EntryCause, Millis, SalesEffect, SalesFact, SettlementEntry};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Exchange};

use crate::effects::{FactDraft, SkuMsg};
use crate::ordered::{ordered, Ctx, Timed};
use crate::settlements::SellerMsg;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Where an upsert was read; the largest (time first) is the latest.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
struct EventKey {
    /// Its dataflow time.
    time: Millis,
    /// Its partition.
    partition: i32,
    /// Its offset in the partition.
    offset: i64,
}

/// A catalog record's values over time, for lookups "as of" a past time. An upsert that
/// does not change the value (a product's new price or name: the catalog keeps only its
/// seller and category) adds nothing, so this grows with reassignments, not with upserts.
#[derive(serde::Serialize, serde::Deserialize)]
struct Versions<V> {
    /// Key of the latest upsert: a later one replaces it, an earlier one is ignored.
    latest: EventKey,
    /// (dataflow time, value from then on), in time order, consecutive values different.
    history: Vec<(Millis, V)>,
}

impl<V: Copy + PartialEq> Versions<V> {
    fn new(key: EventKey, value: V) -> Self {
        Versions {
            latest: key,
            history: vec![(key.time, value)],
        }
    }

    /// Applies an upsert at `key` (upserts come in time order); returns whether it is the
    /// latest now.
    fn upsert(&mut self, key: EventKey, value: V) -> bool {
        if key <= self.latest {
            return false;
        }
        self.latest = key;
        let (time, current) = *self.history.last().expect("a version");
        if current == value {
            return true;
        }
        if time == key.time {
            self.history.pop();
            // Back to the value before this time: the two runs join.
            if self.history.last().is_some_and(|(_, v)| *v == value) {
                return true;
            }
        }
        self.history.push((key.time, value));
        true
    }

    /// The value in force at time `t` (set at a time ≤ t).
    fn as_of(&self, t: Millis) -> Option<V> {
        let n = self.history.partition_point(|(at, _)| *at <= t);
        n.checked_sub(1).map(|i| self.history[i].1)
    }

    /// Drops the versions no lookup at `cutoff` or later can need: those before the last
    /// one set at or before `cutoff`.
    fn forget_before(&mut self, cutoff: Millis) {
        let n = self.history.partition_point(|(at, _)| *at <= cutoff);
        if n > 1 {
            self.history.drain(..n - 1);
        }
    }

    /// When the record first had a value (of the versions kept).
    fn first(&self) -> Millis {
        self.history[0].0
    }

    /// Times at which the value changed.
    fn times(&self) -> impl Iterator<Item = Millis> + '_ {
        self.history.iter().map(|(t, _)| *t)
    }
}

/// Applies an upsert to a record's versions (creating them), then forgets the versions
/// no lookup at `keep_from` or later can need; returns whether it is the latest now.
fn upsert<V: Copy + PartialEq>(
    map: &mut FastMap<u64, Versions<V>>,
    id: u64,
    key: EventKey,
    value: V,
    keep_from: Millis,
) -> bool {
    match map.get_mut(&id) {
        Some(v) => {
            let latest = v.upsert(key, value);
            v.forget_before(keep_from);
            latest
        }
        None => {
            map.insert(id, Versions::new(key, value));
            true
        }
    }
}

/// What the catalog operator of one worker keeps: the catalog's versions, and the queries
/// still waiting for a SKU or category to become known. Nothing per order line: a line's
/// listing at placement and its settlement terms at confirmation are looked up in the
/// versions again when a later fact or refund needs them.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Catalog {
    /// Listings of each SKU: (seller, category).
    listings: FastMap<u64, Versions<(u64, u64)>>,
    /// Commission of every category.
    categories: FastMap<u64, Versions<u32>>,
    /// Facts of lines whose SKU was not listed at placement, per SKU, in arrival order.
    waiting_facts: FastMap<u64, Vec<FactDraft>>,
    /// Settlement queries waiting for the SKU or its category, per SKU, in arrival order.
    waiting_settle: FastMap<u64, Vec<SkuMsg>>,
    /// Per SKU, the earliest time a lookup for one of its lines asked about (a line's
    /// placement: its first fact, handled before any later query of the line, which asks
    /// about its placement or its confirmation). A line not seen yet is placed no earlier
    /// than the time being handled. So versions of a SKU older than the one in force at
    /// the smaller of the two are never looked up again, and are dropped: the history grows
    /// with the reassignments of SKUs that have orders back then, not with every upsert.
    oldest_lookup: FastMap<u64, Millis>,
    /// The earliest of them all: a category's versions are kept back to it.
    oldest_any: Option<Millis>,
}

impl Catalog {
    /// Notes a lookup for `sku` at `t` (see [`Catalog::oldest_lookup`]).
    fn looked_up(&mut self, sku: u64, t: Millis) {
        let o = self.oldest_lookup.entry(sku).or_insert(t);
        *o = (*o).min(t);
        self.oldest_any = Some(self.oldest_any.map_or(t, |a| a.min(t)));
    }

    /// The earliest time a lookup for `sku` may still ask about, handling time `now`.
    fn keep_sku_from(&self, sku: u64, now: Millis) -> Millis {
        self.oldest_lookup.get(&sku).map_or(now, |&o| o.min(now))
    }

    /// The earliest time a lookup of any category may still ask about, handling `now`.
    fn keep_categories_from(&self, now: Millis) -> Millis {
        self.oldest_any.map_or(now, |o| o.min(now))
    }

    /// (seller, category) of a SKU at time `t`.
    fn listing_at(&self, sku: u64, t: Millis) -> Option<(u64, u64)> {
        self.listings.get(&sku)?.as_of(t)
    }

    /// (seller, commission_bp) of a SKU at time `t`, if the SKU and its category are known.
    fn terms_at(&self, sku: u64, t: Millis) -> Option<(u64, u32)> {
        let (seller, category) = self.listing_at(sku, t)?;
        let bp = self.categories.get(&category)?.as_of(t)?;
        Some((seller, bp))
    }

    /// The terms a line confirmed at `c` was settled on, and when: at `c` if the SKU and
    /// its category were known then, else at the first later time both were (SPEC §8: the
    /// entry is made then, with that time's seller and rate). `None` while still unknown.
    fn settled_terms(&self, sku: u64, c: Millis) -> Option<(u64, u32, Millis)> {
        if let Some((seller, bp)) = self.terms_at(sku, c) {
            return Some((seller, bp, c));
        }
        // The terms change only at versions of the SKU or of a category it was listed in.
        let listings = self.listings.get(&sku)?;
        let mut times: Vec<Millis> = listings.times().collect();
        for (_, (_, category)) in &listings.history {
            if let Some(h) = self.categories.get(category) {
                times.extend(h.times());
            }
        }
        times.retain(|&t| t > c);
        times.sort_unstable();
        times.dedup();
        times
            .into_iter()
            .find_map(|t| self.terms_at(sku, t).map(|(seller, bp)| (seller, bp, t)))
    }

    /// A fact on its line's listing at placement (or when the SKU was first listed, if
    /// later), keyed by its seller, or `None` if the SKU is not listed yet.
    fn fact(&self, sku: u64, d: &FactDraft) -> Option<(u64, SellerMsg)> {
        let listings = self.listings.get(&sku)?;
        let (seller, category) = listings.as_of(d.placed.max(listings.first()))?;
        let fact = complete_fact(sku, d, seller, category);
        Some((seller, SellerMsg::Fact(fact, d.paid)))
    }

    /// A settlement query's entry, or `None` if it must wait.
    fn settle(&self, sku: u64, q: &SkuMsg, time: Millis) -> Option<SettlementEntry> {
        match *q {
            SkuMsg::Settle {
                order_id,
                line_no,
                qty,
                unit_price,
            } => {
                let (seller, bp) = self.terms_at(sku, time)?;
                let line = Line {
                    order_id,
                    line_no,
                    sku,
                    unit_price,
                };
                Some(line.entry(EntryCause::Confirmed, 0, time, qty, seller, bp))
            }
            SkuMsg::SettleRefund {
                order_id,
                line_no,
                refund,
                qty,
                unit_price,
                confirmed,
            } => {
                let (seller, bp, dated) = self.settled_terms(sku, confirmed)?;
                let line = Line {
                    order_id,
                    line_no,
                    sku,
                    unit_price,
                };
                Some(line.entry(EntryCause::Refund, refund, time.max(dated), qty, seller, bp))
            }
            _ => None,
        }
    }
}

/// Builds settlement entries and sales facts from the catalog records and the order
/// effects for it, keyed by SKU; categories go to every worker. The output is keyed by
/// seller (see [`crate::settlements::sellers`]).
pub fn catalog<'s>(
    by_sku: Timed<'s, (u64, SkuMsg)>,
    categories: Timed<'s, (u64, SkuMsg)>,
    ctx: &Ctx,
) -> Timed<'s, (u64, SellerMsg)> {
    let records = by_sku
        .exchange(|((sku, _), _)| *sku)
        .concat(categories.broadcast());
    ordered(
        records,
        Pipeline,
        "Catalog",
        ctx,
        move |c: &mut Catalog, time, records, out| {
            // Catalog updates at this time first: a lookup at t sees every update at t.
            let mut listed: Vec<u64> = Vec::new();
            let mut categories_changed = false;
            for (sku, msg) in records.iter() {
                match *msg {
                    SkuMsg::Listing {
                        partition,
                        offset,
                        seller_id,
                        category_id,
                    } => {
                        let key = EventKey {
                            time,
                            partition,
                            offset,
                        };
                        let keep = c.keep_sku_from(*sku, time);
                        let value = (seller_id, category_id);
                        if upsert(&mut c.listings, *sku, key, value, keep) {
                            listed.push(*sku);
                        }
                    }
                    SkuMsg::Category {
                        category_id,
                        partition,
                        offset,
                        commission_bp,
                    } => {
                        let key = EventKey {
                            time,
                            partition,
                            offset,
                        };
                        let keep = c.keep_categories_from(time);
                        if upsert(&mut c.categories, category_id, key, commission_bp, keep) {
                            categories_changed = true;
                        }
                    }
                    _ => {}
                }
            }
            // Queries that were waiting for what just became known.
            listed.sort_unstable();
            listed.dedup();
            for sku in &listed {
                if c.listing_at(*sku, time).is_some() {
                    if let Some(facts) = c.waiting_facts.remove(sku) {
                        for d in facts {
                            let keyed = c.fact(*sku, &d).expect("the SKU is listed");
                            out.push((keyed, time));
                        }
                    }
                }
            }
            let mut waiting: Vec<u64> = if categories_changed {
                c.waiting_settle.keys().copied().collect()
            } else {
                listed
            };
            waiting.sort_unstable();
            for sku in waiting {
                if c.terms_at(sku, time).is_none() {
                    continue;
                }
                if let Some(queries) = c.waiting_settle.remove(&sku) {
                    for q in queries {
                        if let Some(e) = c.settle(sku, &q, time) {
                            out.push(((e.seller_id, SellerMsg::Entry(e)), time));
                        }
                    }
                }
            }
            // Then this time's queries, in arrival order.
            for (sku, msg) in records.drain(..) {
                match &msg {
                    SkuMsg::Fact(d) => c.looked_up(sku, d.placed),
                    SkuMsg::Settle { .. } => c.looked_up(sku, time),
                    SkuMsg::SettleRefund { confirmed, .. } => c.looked_up(sku, *confirmed),
                    SkuMsg::Listing { .. } | SkuMsg::Category { .. } => {}
                }
                match msg {
                    SkuMsg::Listing { .. } | SkuMsg::Category { .. } => {}
                    SkuMsg::Fact(d) => match c.fact(sku, &d) {
                        Some(keyed) => out.push((keyed, time)),
                        None => c.waiting_facts.entry(sku).or_default().push(d),
                    },
                    q @ SkuMsg::Settle { .. } => match c.settle(sku, &q, time) {
                        Some(e) => out.push(((e.seller_id, SellerMsg::Entry(e)), time)),
                        None => c.waiting_settle.entry(sku).or_default().push(q),
                    },
                    q @ SkuMsg::SettleRefund { .. } => match c.settle(sku, &q, time) {
                        Some(e) => out.push(((e.seller_id, SellerMsg::Entry(e)), time)),
                        None => {
                            // The line's confirmation is still waiting (a line never confirmed
                            // has no refund entries).
                            if let Some(w) = c.waiting_settle.get_mut(&sku) {
                                w.push(q);
                            }
                        }
                    },
                }
            }
        },
    )
}

/// One order line as a settlement entry needs it.
struct Line {
    order_id: u64,
    line_no: u64,
    sku: u64,
    unit_price: u64,
}

impl Line {
    /// The entry of `qty` units on the frozen terms, negated for a refund (SPEC §5.3).
    fn entry(
        &self,
        cause: EntryCause,
        refund: u32,
        ts: Millis,
        qty: u64,
        seller: u64,
        bp: u32,
    ) -> SettlementEntry {
        let sign = match cause {
            EntryCause::Confirmed => 1,
            EntryCause::Refund => -1,
        };
        let (gross, commission, payment_fee, payout) =
            SettlementEntry::amounts(qty, self.unit_price, bp);
        SettlementEntry {
            id: SettlementEntry::entry_id(self.order_id, self.line_no, cause, refund),
            seller_id: seller,
            order_id: self.order_id,
            line_no: self.line_no,
            sku: self.sku,
            cause,
            ts,
            qty: sign * qty as i64,
            unit_price: self.unit_price as i64,
            commission_bp: bp,
            gross: sign * gross,
            commission: sign * commission,
            payment_fee: sign * payment_fee,
            payout: sign * payout,
        }
    }
}

/// A fact with its seller and category.
fn complete_fact(sku: u64, d: &FactDraft, seller_id: u64, category_id: u64) -> SalesFact {
    let id = match d.effect {
        SalesEffect::Refunded => IdBuf::new()
            .num(d.order_id)
            .num(d.line_no)
            .word("refunded")
            .num(d.refund.into())
            .finish(),
        effect => IdBuf::new()
            .num(d.order_id)
            .num(d.line_no)
            .word(effect.as_str())
            .finish(),
    };
    let amount =
        (d.qty as i128 * d.unit_price as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    SalesFact {
        id,
        order_id: d.order_id,
        line_no: d.line_no,
        sku,
        seller_id,
        category_id,
        member_id: d.member_id,
        effect: d.effect,
        qty: d.qty,
        amount,
        ts: d.ts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The versions answer every "as of" lookup like the full list of upserts would
        /// (the value of the largest key with a time ≤ t), and say which upsert is latest.
        #[test]
        fn versions_answer_like_every_upsert_kept(
            steps in prop::collection::vec((0..4u64, 0..3i32, 0..3i64, 0..3u32), 1..40),
        ) {
            let mut time = 0;
            let mut all: Vec<(EventKey, u32)> = Vec::new();
            let mut versions: Option<Versions<u32>> = None;
            for (dt, partition, offset, value) in steps {
                time += dt;
                let key = EventKey {
                    time,
                    partition,
                    offset,
                };
                if all.iter().any(|(k, _)| *k == key) {
                    continue; // an offset is read once
                }
                let latest = all.iter().map(|(k, _)| *k).max();
                let expect_latest = latest.is_none_or(|l| key > l);
                let got = match versions.as_mut() {
                    Some(v) => v.upsert(key, value),
                    None => {
                        versions = Some(Versions::new(key, value));
                        true
                    }
                };
                prop_assert_eq!(got, expect_latest);
                all.push((key, value));
                let v = versions.as_ref().expect("versions");
                for t in 0..=time + 1 {
                    let expected = all
                        .iter()
                        .filter(|(k, _)| k.time <= t)
                        .max_by_key(|(k, _)| *k)
                        .map(|(_, v)| *v);
                    prop_assert_eq!(v.as_of(t), expected, "as of {}", t);
                }
                prop_assert!(v.history.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 != w[1].1));
            }
        }
    }
}

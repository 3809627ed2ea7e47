//! Members, points and seller settlements (SPEC §5.2, §5.3, §8), straight from the rules.
//!
//! Every view here is on the applied-time axis: "the state at T" is what replaying the
//! accepted events with applied time ≤ T (in time, then log order) gives. Rather than
//! maintaining anything incrementally, the replay records, per order, its state after each
//! of its events, and per SKU and category every upsert; a question "at T" then looks up
//! the last record with time ≤ T.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shopflow_model::time::{kst_month_start, kst_week_start};
use shopflow_model::{
    Alert, EntryCause, EventBody, Grade, MemberOrders, MemberView, Millis, Payout, PointsEntry,
    SettlementEntry, TaxInvoice,
};

use crate::{new_order, Applied, Order, Stage};

/// How long a payment counts towards the member's spend: 183 days.
pub(crate) const SPEND_WINDOW_MS: Millis = 183 * 86_400_000;

/// A member's recent-orders list holds at most this many orders.
const RECENT_ORDERS: usize = 20;

/// What this module adds to the views.
#[derive(Debug, Default)]
pub(crate) struct Ledgers {
    pub members: BTreeMap<u64, MemberView>,
    pub member_orders: BTreeMap<u64, MemberOrders>,
    pub points: BTreeMap<String, PointsEntry>,
    pub settlements: BTreeMap<String, SettlementEntry>,
    pub payouts: BTreeMap<(u64, Millis), Payout>,
    pub invoices: BTreeMap<(u64, Millis), TaxInvoice>,
    pub sellers: BTreeSet<u64>,
    pub grade_alerts: Vec<Alert>,
}

/// The part of an order's state that its spend depends on, after one of its events.
#[derive(Clone, Copy, Debug)]
struct Snap {
    /// Applied time of the event.
    time: Millis,
    /// Effective time of `payment.approved`, once paid.
    paid_at: Option<Millis>,
    /// Paid − refunded.
    net: i128,
    /// The order is CANCELLED.
    cancelled: bool,
}

/// The order's state right after `order.confirmed` (in the order's log order).
#[derive(Clone, Debug)]
struct Confirmation {
    /// Applied time.
    time: Millis,
    /// Paid − refunded so far.
    amount: u64,
    /// (line_no, qty − refunded so far), by line_no.
    remaining: Vec<(u64, u64)>,
}

/// One accepted `refund.completed`.
#[derive(Clone, Debug)]
struct Refund {
    /// Its number among the order's refunds, from 1.
    n: u32,
    /// Applied time.
    time: Millis,
    /// Money refunded.
    amount: u64,
    /// (line_no, qty).
    lines: Vec<(u64, u64)>,
    /// It came after the order's confirmation in log order.
    after_confirmation: bool,
}

/// One order line as placed.
#[derive(Clone, Copy, Debug)]
struct PlacedLine {
    sku: u64,
    unit_price: u64,
}

/// Everything recorded about one order.
#[derive(Clone, Debug)]
struct Track {
    member: u64,
    /// Effective time of `order.placed`.
    placed_at: Millis,
    lines: BTreeMap<u64, PlacedLine>,
    /// The state after each of the order's events, in log order (= applied time order).
    snaps: Vec<Snap>,
    confirmation: Option<Confirmation>,
    refunds: Vec<Refund>,
}

impl Track {
    /// The order's spend counted in its member's 6-month window at `t` (SPEC §5.2).
    fn spend_at(&self, t: Millis) -> i128 {
        let i = self.snaps.partition_point(|s| s.time <= t);
        if i == 0 {
            return 0; // not placed yet
        }
        let s = &self.snaps[i - 1];
        match s.paid_at {
            Some(p) if !s.cancelled && p <= t && t < p + SPEND_WINDOW_MS => s.net,
            _ => 0,
        }
    }
}

/// Everything recorded about one member.
#[derive(Clone, Debug, Default)]
struct Member {
    /// Orders placed by the member.
    orders: Vec<u64>,
    /// (applied time, subscribed) of each wow event, in time then log order.
    wow: Vec<(Millis, bool)>,
}

/// (seller, category) of a product upsert.
type Listing = (u64, u64);

/// Every catalog upsert, in time then log order.
#[derive(Debug, Default)]
struct Catalog {
    /// sku → (applied time, seller, category).
    products: HashMap<u64, Vec<(Millis, Listing)>>,
    /// category → (applied time, commission_bp).
    categories: HashMap<u64, Vec<(Millis, u32)>>,
    /// Applied times of all catalog upserts, ascending, distinct.
    times: BTreeSet<Millis>,
}

/// The value of the last record with time ≤ `t`.
pub(crate) fn last_at<T: Copy>(records: &[(Millis, T)], t: Millis) -> Option<T> {
    let i = records.partition_point(|r| r.0 <= t);
    (i > 0).then(|| records[i - 1].1)
}

impl Catalog {
    /// (seller, commission_bp) of `sku` at `t`, when the SKU and its category are known.
    fn lookup(&self, sku: u64, t: Millis) -> Option<(u64, u32)> {
        let (seller, category) = last_at(self.products.get(&sku)?, t)?;
        let bp = last_at(self.categories.get(&category)?, t)?;
        Some((seller, bp))
    }

    /// The first time ≥ `c` at which `sku` can be looked up, with the lookup then.
    fn first_known(&self, sku: u64, c: Millis) -> Option<(Millis, (u64, u32))> {
        std::iter::once(c)
            .chain(self.times.range(c + 1..).copied())
            .find_map(|t| self.lookup(sku, t).map(|l| (t, l)))
    }
}

/// Computes the member and seller views as of `as_of` from the accepted events, sorted
/// stably by applied time (log order within a time).
pub(crate) fn ledgers(applied: &[Applied], as_of: Millis) -> Ledgers {
    let mut out = Ledgers::default();
    let mut members: BTreeMap<u64, Member> = BTreeMap::new();
    let mut orders: HashMap<u64, Order> = HashMap::new();
    let mut tracks: BTreeMap<u64, Track> = BTreeMap::new();
    let mut catalog = Catalog::default();

    for a in applied {
        match &a.event.body {
            EventBody::MemberJoined { member_id } => {
                members.entry(*member_id).or_default();
            }
            EventBody::WowSubscribed { member_id } => {
                members
                    .entry(*member_id)
                    .or_default()
                    .wow
                    .push((a.time, true));
            }
            EventBody::WowCancelled { member_id } => {
                members
                    .entry(*member_id)
                    .or_default()
                    .wow
                    .push((a.time, false));
            }
            EventBody::ProductUpserted {
                sku,
                seller_id,
                category_id,
                ..
            } => {
                out.sellers.insert(*seller_id);
                catalog
                    .products
                    .entry(*sku)
                    .or_default()
                    .push((a.time, (*seller_id, *category_id)));
                catalog.times.insert(a.time);
            }
            EventBody::CategoryUpserted {
                category_id,
                commission_bp,
                ..
            } => {
                let bp = u32::try_from(*commission_bp).expect("validated: 500..=1500");
                catalog
                    .categories
                    .entry(*category_id)
                    .or_default()
                    .push((a.time, bp));
                catalog.times.insert(a.time);
            }
            body => {
                let Some(id) = body.order_id() else { continue };
                if let EventBody::OrderPlaced {
                    member_id, lines, ..
                } = body
                {
                    orders.insert(id, new_order(body, a.effective).expect("placed"));
                    members.entry(*member_id).or_default().orders.push(id);
                    let lines = lines
                        .iter()
                        .map(|l| {
                            let line = PlacedLine {
                                sku: l.sku,
                                unit_price: l.unit_price,
                            };
                            (l.line_no, line)
                        })
                        .collect();
                    tracks.insert(
                        id,
                        Track {
                            member: *member_id,
                            placed_at: a.effective,
                            lines,
                            snaps: Vec::new(),
                            confirmation: None,
                            refunds: Vec::new(),
                        },
                    );
                } else {
                    orders
                        .get_mut(&id)
                        .expect("accepted events name placed orders")
                        .step(body, a.effective)
                        .expect("accepted events replay cleanly");
                }
                let o = &orders[&id];
                let track = tracks.get_mut(&id).expect("placed");
                // An order lives in one stream, where applied times never decrease: the
                // time order of its events is their log order.
                assert!(track.snaps.last().is_none_or(|s| s.time <= a.time));
                track.snaps.push(Snap {
                    time: a.time,
                    paid_at: o.paid_at,
                    net: o.paid as i128 - o.refunded as i128,
                    cancelled: o.stage == Stage::Cancelled,
                });
                match body {
                    EventBody::OrderConfirmed { .. } => {
                        track.confirmation = Some(Confirmation {
                            time: a.time,
                            amount: o.paid - o.refunded,
                            remaining: o
                                .lines
                                .iter()
                                .map(|(&no, l)| (no, l.qty - l.refunded))
                                .collect(),
                        });
                    }
                    EventBody::RefundCompleted { amount, lines, .. } => {
                        let n = track.refunds.len() as u32 + 1;
                        track.refunds.push(Refund {
                            n,
                            time: a.time,
                            amount: *amount,
                            lines: lines.iter().map(|l| (l.line_no, l.qty)).collect(),
                            after_confirmation: track.confirmation.is_some(),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    // Spend and grade of a member at any time.
    let spend_at =
        |m: &Member, t: Millis| -> i128 { m.orders.iter().map(|id| tracks[id].spend_at(t)).sum() };
    let grade_at = |member: u64, t: Millis| -> Grade {
        members
            .get(&member)
            .map_or(Grade::Bronze, |m| Grade::of_spend(spend_at(m, t)))
    };

    for (&member_id, m) in &members {
        // The member's row at as_of.
        let wow = last_at(&m.wow, as_of).unwrap_or(false);
        out.members.insert(
            member_id,
            MemberView::new(member_id, spend_at(m, as_of), wow),
        );

        // Recent orders.
        if !m.orders.is_empty() {
            let mut ids: Vec<(Millis, u64)> = m
                .orders
                .iter()
                .map(|id| (tracks[id].placed_at, *id))
                .collect();
            ids.sort_by(|a, b| b.cmp(a));
            ids.truncate(RECENT_ORDERS);
            out.member_orders.insert(
                member_id,
                MemberOrders {
                    member_id,
                    order_ids: ids.into_iter().map(|(_, id)| id).collect(),
                },
            );
        }

        // Grade changes: the grade can only change when one of the member's orders has an
        // event or a payment leaves the window.
        let mut candidates: BTreeSet<Millis> = BTreeSet::new();
        for id in &m.orders {
            for s in &tracks[id].snaps {
                candidates.insert(s.time);
                if let Some(p) = s.paid_at {
                    candidates.insert(p + SPEND_WINDOW_MS);
                }
            }
        }
        let mut before = Grade::Bronze;
        for t in candidates.into_iter().filter(|&t| t <= as_of) {
            let now = Grade::of_spend(spend_at(m, t));
            if now != before {
                out.grade_alerts
                    .push(Alert::grade(member_id, t, before, now));
            }
            before = now;
        }
    }

    for (&order_id, track) in &tracks {
        let Some(conf) = &track.confirmation else {
            continue;
        };
        // Points (SPEC §5.2, §8): the rate is the grade's at c, frozen.
        let rate = grade_at(track.member, conf.time).accrual_bp();
        let points_of = |amount: u64| (amount as i128 * rate as i128 / 10_000) as i64;
        let mut points = vec![PointsEntry {
            id: PointsEntry::entry_id(order_id, EntryCause::Confirmed, 0),
            member_id: track.member,
            order_id,
            cause: EntryCause::Confirmed,
            ts: conf.time,
            rate_bp: rate,
            amount: conf.amount as i64,
            points: points_of(conf.amount),
        }];
        for r in track.refunds.iter().filter(|r| r.after_confirmation) {
            points.push(PointsEntry {
                id: PointsEntry::entry_id(order_id, EntryCause::Refund, r.n),
                member_id: track.member,
                order_id,
                cause: EntryCause::Refund,
                ts: r.time,
                rate_bp: rate,
                amount: -(r.amount as i64),
                points: -points_of(r.amount),
            });
        }
        for e in points.into_iter().filter(|e| e.ts <= as_of) {
            out.points.insert(e.id.clone(), e);
        }

        // Settlements (SPEC §5.3, §8): per line with units left, dated when the SKU and
        // its category are both known (at c or later), with that time's seller and rate.
        let mut confirmed: BTreeMap<u64, (Millis, u64, u32)> = BTreeMap::new(); // line → (k, seller, bp)
        let mut entries: Vec<SettlementEntry> = Vec::new();
        for &(line_no, q) in &conf.remaining {
            let line = track.lines[&line_no];
            if q == 0 {
                continue;
            }
            let Some((k, (seller, bp))) = catalog.first_known(line.sku, conf.time) else {
                continue;
            };
            confirmed.insert(line_no, (k, seller, bp));
            let (gross, commission, payment_fee, payout) =
                SettlementEntry::amounts(q, line.unit_price, bp);
            entries.push(SettlementEntry {
                id: SettlementEntry::entry_id(order_id, line_no, EntryCause::Confirmed, 0),
                seller_id: seller,
                order_id,
                line_no,
                sku: line.sku,
                cause: EntryCause::Confirmed,
                ts: k,
                qty: q as i64,
                unit_price: line.unit_price as i64,
                commission_bp: bp,
                gross,
                commission,
                payment_fee,
                payout,
            });
        }
        for r in track.refunds.iter().filter(|r| r.after_confirmation) {
            for &(line_no, qty) in &r.lines {
                let Some(&(k, seller, bp)) = confirmed.get(&line_no) else {
                    continue;
                };
                let line = track.lines[&line_no];
                let (gross, commission, payment_fee, payout) =
                    SettlementEntry::amounts(qty, line.unit_price, bp);
                entries.push(SettlementEntry {
                    id: SettlementEntry::entry_id(order_id, line_no, EntryCause::Refund, r.n),
                    seller_id: seller,
                    order_id,
                    line_no,
                    sku: line.sku,
                    cause: EntryCause::Refund,
                    ts: r.time.max(k),
                    qty: -(qty as i64),
                    unit_price: line.unit_price as i64,
                    commission_bp: bp,
                    gross: -gross,
                    commission: -commission,
                    payment_fee: -payment_fee,
                    payout: -payout,
                });
            }
        }
        for e in entries.into_iter().filter(|e| e.ts <= as_of) {
            out.settlements.insert(e.id.clone(), e);
        }
    }

    // Weekly payouts and monthly tax invoices over the entries (SPEC §5.3).
    let mut supply: BTreeMap<(u64, Millis), (i128, u64)> = BTreeMap::new();
    for e in out.settlements.values() {
        let week_start = kst_week_start(e.ts);
        let p = out
            .payouts
            .entry((e.seller_id, week_start))
            .or_insert(Payout {
                seller_id: e.seller_id,
                week_start,
                amount: 0,
                entries: 0,
            });
        p.amount += e.payout as i128;
        p.entries += 1;
        let s = supply
            .entry((e.seller_id, kst_month_start(e.ts)))
            .or_default();
        s.0 += e.commission as i128 + e.payment_fee as i128;
        s.1 += 1;
    }
    out.invoices = supply
        .into_iter()
        .map(|((seller, month), (sum, n))| {
            ((seller, month), TaxInvoice::new(seller, month, sum, n))
        })
        .collect();
    out
}

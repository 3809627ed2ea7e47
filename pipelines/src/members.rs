//! Members (SPEC §5.2): 6-month spend, grades, Rocket WOW, grade-change alerts, the
//! points ledger and each member's recent orders.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::{AsCollection, VecCollection};
use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::{Alert, EntryCause, Grade, MemberOrders, MemberView, Millis, PointsEntry};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, Concat};
use timely::dataflow::Stream;

use crate::lookup::lookup_when_known;

/// One accepted member event: (dataflow time, partition, offset, WOW after it:
/// `Some(true)` subscribed, `Some(false)` cancelled, `None` joined).
pub type MemberEvent = (Millis, i32, i64, Option<bool>);

/// An order's placement, keyed by member: (effective time of `order.placed`, order id).
pub type Placement = (Millis, u64);

/// How many recent orders a member's list keeps (SPEC §6).
pub const RECENT_ORDERS: usize = 20;

/// Everything the member views produce.
pub struct MemberOutputs<'s> {
    /// One row per known member.
    pub views: VecCollection<'s, Millis, MemberView, isize>,
    /// `member.grade_changed` alerts.
    pub alerts: Stream<'s, Millis, Vec<(Alert, Millis, isize)>>,
    /// Points ledger entries (only ever added).
    pub points: VecCollection<'s, Millis, PointsEntry, isize>,
    /// Each member's most recent orders.
    pub recent_orders: VecCollection<'s, Millis, MemberOrders, isize>,
}

/// Builds the member views from order states, member events and placements.
///
/// Spend: each paid order's spend (paid − refunded, 0 once cancelled) counts from its
/// payment time p while p ≤ T < p + `window`. Every version of an order's spend is
/// retracted at p + `window` by an update scheduled at that time, so spends leave the
/// window on time with no new events.
pub fn members<'s>(
    states: VecCollection<'s, Millis, (u64, OrderState), isize>,
    events: VecCollection<'s, Millis, (u64, MemberEvent), isize>,
    placements: VecCollection<'s, Millis, (u64, Placement), isize>,
    window: Millis,
) -> MemberOutputs<'s> {
    // (member, (spend, mentions)) with the amounts in the difference.
    let spend = states
        .clone()
        .flat_map(|(_, s)| {
            s.spend()
                .filter(|(_, v)| *v != 0)
                .map(|(p, v)| (s.member_id, p, v))
        })
        .inner
        .flat_map(move |((member, paid_at, spend), t, d)| {
            let end = paid_at.saturating_add(window).max(t);
            let amount = spend * d as i128;
            [
                (member, t, (amount, 0i128)),
                (member, end, (-amount, 0i128)),
            ]
        });
    let mentions = events
        .clone()
        .inner
        .map(|((member, _), t, d)| (member, t, (0i128, d as i128)))
        .concat(
            placements
                .clone()
                .inner
                .map(|((member, _), t, d)| (member, t, (0i128, d as i128))),
        );
    let totals = spend
        .concat(mentions)
        .as_collection()
        .count_total()
        .map(|(member, (spend, _mentions))| (member, spend));

    let alerts = grade_changes(totals.clone());

    // The member row: spend and the latest WOW event, in one reduce.
    let views = totals
        .clone()
        .map(|(member, spend)| (member, (None, spend)))
        .concat(
            events
                .filter(|(_, (_, _, _, wow))| wow.is_some())
                .map(|(member, ev)| (member, (Some(ev), 0))),
        )
        .reduce_named("MemberView", |member, input, output| {
            let mut spend = None;
            let mut wow = false;
            // Sorted: `None` (the spend) first, then WOW events in (time, partition,
            // offset) order, so the last one seen is the latest.
            for ((ev, s), _) in input {
                match ev {
                    None => spend = Some(*s),
                    Some((_, _, _, w)) => wow = w.unwrap_or(wow),
                }
            }
            if let Some(spend_6m) = spend {
                output.push((MemberView::new(*member, spend_6m, wow), 1));
            }
        })
        .map(|(_, view)| view);

    // Points: the rate is the grade at confirmation, read once and frozen.
    let confirmations = states
        .clone()
        .flat_map(|(order_id, s)| s.confirmed_applied.map(|_| (s.member_id, order_id)));
    let rate_table = totals.map(|(member, spend)| (member, Grade::of_spend(spend).accrual_bp()));
    let rates = lookup_when_known(confirmations, rate_table, "PointsRate")
        .map(|(order_id, rate, _at)| (order_id, rate));
    let points = states
        .join_map(rates, |_, state, rate| points_entries(state, *rate))
        .flat_map(|e| e);

    let recent_orders = recent_orders(placements);

    MemberOutputs {
        views,
        alerts,
        points,
        recent_orders,
    }
}

/// The points entries of a confirmed order at `rate_bp` (SPEC §5.2, §8): one at the
/// confirmation on paid − refunded, and one per later refund, negated, at the same rate.
pub fn points_entries(state: &OrderState, rate_bp: u32) -> Vec<PointsEntry> {
    let Some(confirmed) = state.confirmed_applied else {
        return Vec::new();
    };
    let rate = rate_bp as i128;
    let refunded_before: u64 = state.refunds[..state.confirmed_refunds]
        .iter()
        .map(|r| r.amount)
        .sum();
    let amount = state.paid as i128 - refunded_before as i128;
    let mut entries = vec![PointsEntry {
        id: PointsEntry::entry_id(state.order_id, EntryCause::Confirmed, 0),
        member_id: state.member_id,
        order_id: state.order_id,
        cause: EntryCause::Confirmed,
        ts: confirmed,
        rate_bp,
        amount: amount as i64,
        points: (amount * rate / 10_000) as i64,
    }];
    for (n, refund) in state
        .refunds
        .iter()
        .enumerate()
        .skip(state.confirmed_refunds)
    {
        let amount = refund.amount as i128;
        entries.push(PointsEntry {
            id: PointsEntry::entry_id(state.order_id, EntryCause::Refund, n as u32 + 1),
            member_id: state.member_id,
            order_id: state.order_id,
            cause: EntryCause::Refund,
            ts: refund.applied,
            rate_bp,
            amount: -amount as i64,
            points: -(amount * rate / 10_000) as i64,
        });
    }
    entries
}

/// Each member's [`RECENT_ORDERS`] newest orders by placement (ties: larger id first).
///
/// Placements are only ever added, so each worker keeps, per member it owns, just the
/// newest [`RECENT_ORDERS`] and updates them in O(log k) per placement. (A `reduce` would
/// re-read all of a member's placements at every change: quadratic for a member with many
/// orders.) When the frontier passes a time, every member whose list changed at it gets
/// its old row retracted and the new one added.
fn recent_orders<'s>(
    placements: VecCollection<'s, Millis, (u64, Placement), isize>,
) -> VecCollection<'s, Millis, MemberOrders, isize> {
    type Newest = BTreeSet<(Reverse<Millis>, Reverse<u64>)>;
    let by_member = Exchange::new(|x: &((u64, Placement), Millis, isize)| (x.0).0);
    placements
        .inner
        .unary_frontier(by_member, "RecentOrders", move |_cap, _info| {
            type Pending = BTreeMap<Millis, (Capability<Millis>, Vec<(u64, Placement)>)>;
            let mut pending: Pending = BTreeMap::new();
            let mut newest: HashMap<u64, Newest> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for ((member, placement), time, diff) in data.drain(..) {
                        debug_assert!(diff > 0, "placements are only ever added");
                        if diff > 0 {
                            pending
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                                .1
                                .push((member, placement));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let time = *entry.key();
                    if frontier.less_equal(&time) {
                        break;
                    }
                    let (cap, mut added) = entry.remove();
                    added.sort_unstable();
                    let mut session = output.session(&cap);
                    for group in added.chunk_by(|a, b| a.0 == b.0) {
                        let member = group[0].0;
                        let list = newest.entry(member).or_default();
                        let before = row(member, list);
                        let mut changed = false;
                        for (_, (placed, order_id)) in group {
                            changed |= list.insert((Reverse(*placed), Reverse(*order_id)));
                            if list.len() > RECENT_ORDERS {
                                list.pop_last();
                            }
                        }
                        let after = row(member, list);
                        if changed && after != before {
                            if !before.order_ids.is_empty() {
                                session.give((before, time, -1));
                            }
                            session.give((after, time, 1));
                        }
                    }
                }
            }
        })
        .as_collection()
}

fn row(member_id: u64, newest: &BTreeSet<(Reverse<Millis>, Reverse<u64>)>) -> MemberOrders {
    MemberOrders {
        member_id,
        order_ids: newest.iter().map(|(_, Reverse(id))| *id).collect(),
    }
}

/// `member.grade_changed` alerts: compares each member's grade at consecutive times at
/// which their spend changes. Members start BRONZE without an alert.
///
/// The input must be partitioned by member (as `count_total`'s output is).
fn grade_changes<'s>(
    totals: VecCollection<'s, Millis, (u64, i128), isize>,
) -> Stream<'s, Millis, Vec<(Alert, Millis, isize)>> {
    totals
        .inner
        .unary_frontier(Pipeline, "GradeChanges", move |_cap, _info| {
            type Pending = BTreeMap<Millis, (Capability<Millis>, Vec<(u64, Grade)>)>;
            let mut pending: Pending = BTreeMap::new();
            let mut last: HashMap<u64, Grade> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for ((member, spend), time, diff) in data.drain(..) {
                        if diff > 0 {
                            pending
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                                .1
                                .push((member, Grade::of_spend(spend)));
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let time = *entry.key();
                    if frontier.less_equal(&time) {
                        break;
                    }
                    let (cap, mut grades) = entry.remove();
                    grades.sort_unstable();
                    let mut session = output.session(&cap);
                    for (member, grade) in grades {
                        let before = last.insert(member, grade).unwrap_or_default();
                        if before != grade {
                            session.give((Alert::grade(member, time, before, grade), time, 1));
                        }
                    }
                }
            }
        })
}

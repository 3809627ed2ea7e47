//! Turns the views' changes into [`ViewBatch`]es as the frontier advances.
//!
//! Every view's rows are routed to the last worker, where one operator waits until the frontier
//! passes their times and then hands the sink writer each changed row's value as of
//! T = frontier − 1. Rows of a batch are mutually consistent: they are all as of T.

use std::collections::{BTreeMap, HashMap};

use crate::ordered::{Ctx, Timed};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use shopflow_model::{
    Alert, AlsoBought, DeadLetter, MemberOrders, MemberView, Millis, OrderView, Payout,
    PointsEntry, RatingView, SalesFact, SalesMinute, SettlementEntry, StockLevel, TaxInvoice,
};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub use shopflow_model::{Output, ViewBatch};

/// A change to some view: an upsert (the row's new value replaces the one of its key), a
/// removal, or an append-only record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Row {
    /// A stock row (upsert by SKU).
    Stock(StockLevel),
    /// An order row (upsert by order).
    Order(OrderView),
    /// An alert (only ever added).
    Alert(Alert),
    /// A SKU's rating row, `None` when its last review went (upsert by SKU).
    Rating(u64, Option<RatingView>),
    /// A SKU's recommendations, `None` when no current basket pairs it (upsert by SKU).
    AlsoBought(u64, Option<AlsoBought>),
    /// A member row (upsert by member).
    Member(MemberView),
    /// A member's recent orders (upsert by member).
    MemberOrders(MemberOrders),
    /// A points ledger entry (only ever added).
    Points(PointsEntry),
    /// A settlement entry (only ever added).
    Settlement(SettlementEntry),
    /// A weekly payout row (upsert by seller and week).
    Payout(Payout),
    /// A monthly tax invoice row (upsert by seller and month).
    Invoice(TaxInvoice),
    /// A known seller (only ever added).
    Seller(u64),
    /// A sales fact (only ever added).
    SalesFact(SalesFact),
    /// A per-seller minute rollup (upsert by seller and minute).
    SalesMinute(SalesMinute),
    /// A rejected message (only ever added; written to the dead-letter sink as it comes,
    /// ahead of the batch it travels with).
    DeadLetter(DeadLetter),
}

/// Sends batches of view changes to `out` from the last worker as the frontier advances: each
/// batch holds, for every key changed at a time ≤ T = frontier − 1, its value as of T
/// (the last one written), and every append-only record dated ≤ T. The other workers'
/// instances of the operator receive nothing and send nothing.
///
/// When the input ends the last batch is marked complete; it is as of the last frontier
/// (the worker loop drives the frontier past the largest event time first), and rows
/// dated after it (windows that would end later) are not applied.
///
/// If the receiver is gone, sets `failed` and drops further batches (the worker loop
/// notices and stops).
///
/// The returned stream carries nothing: its frontier says which times have been handed to
/// the writer (a probe on it sees every row before the sink, including rows in flight to
/// the last worker).
pub fn send_batches<'s>(
    rows: Timed<'s, Row>,
    out: SyncSender<Output>,
    failed: Arc<AtomicBool>,
    ctx: &Ctx,
) -> Timed<'s, ()> {
    let end = ctx.end.clone();
    // The last worker writes: worker 0 reads a file source alone (one stream), so the
    // batches are put together where the other half of the work is.
    let last = rows.scope().peers() - 1;
    let sender = rows.scope().index() == last;
    let to_last = last as u64;
    // Rows not yet handed over, by time (many are far in the future: the scheduled end
    // of a basket's or a payment's window, so they are kept ordered and only the ready
    // prefix is taken each time); the `as_of` of the last batch; whether the last batch
    // (of a bounded input) went.
    type Pending = (BTreeMap<Millis, Vec<Row>>, Option<Millis>, bool);
    let state = ctx.states.register::<Pending>("SendViewBatches");
    rows.unary_frontier::<CapacityContainerBuilder<Vec<((), Millis)>>, _, _, _>(
        Exchange::new(move |_: &(Row, Millis)| to_last),
        "SendViewBatches",
        move |_cap, _info| {
            move |(input, frontier), _output| {
                let mut guard = state.borrow_mut();
                let (pending, as_of, done) = &mut *guard;
                input.for_each(|_cap, data| {
                    for (row, t) in data.drain(..) {
                        pending.entry(t).or_default().push(row);
                    }
                });
                if *done || !sender {
                    return;
                }
                let (mut new_as_of, mut complete) = match frontier.frontier().first() {
                    Some(&0) => return,
                    Some(&f) => (f - 1, false),
                    None => ((*as_of).unwrap_or(0), true),
                };
                if let Some(e) = end.get() {
                    if new_as_of >= e {
                        new_as_of = e;
                        complete = true;
                    }
                }
                if !complete && *as_of == Some(new_as_of) {
                    return;
                }
                let later = pending.split_off(&(new_as_of + 1));
                let ready = std::mem::replace(pending, later);
                let (mut batch, dead) = consolidate(ready.into_values().flatten(), new_as_of);
                batch.complete = complete;
                if !dead.is_empty() && out.send(Output::DeadLetters(dead)).is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                if complete {
                    pending.clear();
                }
                *as_of = Some(new_as_of);
                *done = complete;
                if out.send(Output::Views(batch)).is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
            }
        },
    )
}

/// The rows of `rows` (in time order, all dated ≤ `as_of`) as one batch: the last value
/// of every key, and every append-only record; and the dead letters among them, in order.
fn consolidate(rows: impl Iterator<Item = Row>, as_of: Millis) -> (ViewBatch, Vec<DeadLetter>) {
    let mut stock: FastMap<u64, StockLevel> = FastMap::default();
    let mut orders: FastMap<u64, OrderView> = FastMap::default();
    let mut ratings: FastMap<u64, Option<RatingView>> = FastMap::default();
    let mut also_bought: FastMap<u64, Option<AlsoBought>> = FastMap::default();
    let mut members: FastMap<u64, MemberView> = FastMap::default();
    let mut member_orders: FastMap<u64, MemberOrders> = FastMap::default();
    let mut payouts: FastMap<(u64, Millis), Payout> = FastMap::default();
    let mut invoices: FastMap<(u64, Millis), TaxInvoice> = FastMap::default();
    let mut minutes: FastMap<(u64, Millis), SalesMinute> = FastMap::default();
    let mut batch = ViewBatch {
        as_of,
        complete: false,
        ..ViewBatch::default()
    };
    let mut dead = Vec::new();
    for row in rows {
        match row {
            Row::Stock(s) => {
                stock.insert(s.sku, s);
            }
            Row::Order(o) => {
                orders.insert(o.order_id, o);
            }
            Row::Alert(a) => batch.alerts.push(a),
            Row::Rating(sku, r) => {
                ratings.insert(sku, r);
            }
            Row::AlsoBought(sku, r) => {
                also_bought.insert(sku, r);
            }
            Row::Member(m) => {
                members.insert(m.member_id, m);
            }
            Row::MemberOrders(m) => {
                member_orders.insert(m.member_id, m);
            }
            Row::Points(e) => batch.points.push(e),
            Row::Settlement(e) => batch.settlements.push(e),
            Row::Payout(p) => {
                payouts.insert((p.seller_id, p.week_start), p);
            }
            Row::Invoice(i) => {
                invoices.insert((i.seller_id, i.month_start), i);
            }
            Row::Seller(s) => batch.sellers.push(s),
            Row::SalesFact(f) => batch.sales_facts.push(f),
            Row::SalesMinute(m) => {
                minutes.insert((m.seller_id, m.minute), m);
            }
            Row::DeadLetter(d) => dead.push(d),
        }
    }
    batch.stock = stock.into_values().collect();
    batch.orders = orders.into_values().collect();
    for (sku, r) in ratings {
        match r {
            Some(r) => batch.ratings.push(r),
            None => batch.ratings_removed.push(sku),
        }
    }
    for (sku, r) in also_bought {
        match r {
            Some(r) => batch.also_bought.push(r),
            None => batch.also_bought_removed.push(sku),
        }
    }
    batch.members = members.into_values().collect();
    batch.member_orders = member_orders.into_values().collect();
    batch.payouts = payouts.into_values().collect();
    batch.invoices = invoices.into_values().collect();
    batch.sales_minutes = minutes.into_values().collect();
    batch.ratings.sort_unstable_by_key(|r| r.sku);
    batch.also_bought.sort_unstable_by_key(|r| r.sku);
    batch.ratings_removed.sort_unstable();
    batch.also_bought_removed.sort_unstable();
    batch.stock.sort_unstable_by_key(|s| s.sku);
    batch.orders.sort_unstable_by_key(|o| o.order_id);
    batch.members.sort_unstable_by_key(|m| m.member_id);
    batch.member_orders.sort_unstable_by_key(|m| m.member_id);
    batch
        .points
        .sort_unstable_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    batch
        .settlements
        .sort_unstable_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    batch
        .payouts
        .sort_unstable_by_key(|p| (p.seller_id, p.week_start));
    batch
        .invoices
        .sort_unstable_by_key(|i| (i.seller_id, i.month_start));
    batch.sellers.sort_unstable();
    batch
        .sales_facts
        .sort_unstable_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    batch
        .sales_minutes
        .sort_unstable_by_key(|m| (m.seller_id, m.minute));
    batch
        .alerts
        .sort_unstable_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
    (batch, dead)
}

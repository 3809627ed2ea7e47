//! Turns the views' changes into [`ViewBatch`]es as the frontier advances.
//!
//! Every view's updates are routed to worker 0, where one operator waits until the
//! frontier passes their times and then hands the sink writer each changed row's value as
//! of T = frontier − 1. Rows of a batch are mutually consistent: they are all as of T.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use shopflow_model::{
    Alert, AlsoBought, MemberOrders, MemberView, Millis, OrderView, Payout, PointsEntry,
    RatingView, SalesFact, SalesMinute, SettlementEntry, StockLevel, TaxInvoice,
};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

pub use shopflow_model::{Output, ViewBatch};

/// A change to some view.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Row {
    /// A stock row.
    Stock(StockLevel),
    /// An order row.
    Order(OrderView),
    /// An alert (only ever added).
    Alert(Alert),
    /// A rating row.
    Rating(RatingView),
    /// A recommendation row.
    AlsoBought(AlsoBought),
    /// A member row.
    Member(MemberView),
    /// A member's recent orders.
    MemberOrders(MemberOrders),
    /// A points ledger entry (only ever added).
    Points(PointsEntry),
    /// A settlement entry (only ever added).
    Settlement(SettlementEntry),
    /// A weekly payout row.
    Payout(Payout),
    /// A monthly tax invoice row.
    Invoice(TaxInvoice),
    /// A known seller (only ever added).
    Seller(u64),
    /// A sales fact (only ever added).
    SalesFact(SalesFact),
    /// A per-seller minute rollup.
    SalesMinute(SalesMinute),
    /// A time marker: the latest event time a worker accepted, so the final `as_of` of a
    /// bounded run is the largest event time seen even if that event changed no row.
    Tick,
}

/// Sends batches of view changes to `out` from worker 0 as the frontier advances. The
/// other workers' instances of the operator receive nothing and send nothing.
///
/// If the receiver is gone, sets `failed` and drops further batches (the worker loop
/// notices and stops).
pub fn send_batches<'s>(
    rows: Stream<'s, Millis, Vec<(Row, Millis, isize)>>,
    out: SyncSender<Output>,
    failed: Arc<AtomicBool>,
) {
    let sender = rows.scope().index() == 0;
    rows.sink(
        Exchange::new(|_: &(Row, Millis, isize)| 0u64),
        "SendViewBatches",
        {
            // Updates not yet handed over, by time. Many are far in the future (the
            // scheduled end of a basket's or a payment's window), so they are kept ordered
            // and only the ready prefix is taken each time, not scanned again.
            let mut pending: BTreeMap<Millis, Vec<(Row, isize)>> = BTreeMap::new();
            let mut as_of: Option<Millis> = None;
            let mut max_tick: Option<Millis> = None;
            let mut done = false;
            move |(input, frontier)| {
                input.for_each(|_cap, data| {
                    for (row, t, d) in data.drain(..) {
                        if row == Row::Tick {
                            max_tick = Some(max_tick.map_or(t, |m| m.max(t)));
                        }
                        pending.entry(t).or_default().push((row, d));
                    }
                });
                if done || !sender {
                    return;
                }
                // At the end of a bounded input the views are as of the largest event time;
                // updates scheduled after it (basket expiries) are not applied.
                let (new_as_of, complete) = match frontier.frontier().first() {
                    Some(&0) => return,
                    Some(&f) => (f - 1, false),
                    None => (max_tick.max(as_of).unwrap_or(0), true),
                };
                let upto = new_as_of.saturating_add(1);
                if !complete && as_of == Some(new_as_of) {
                    return;
                }
                let later = pending.split_off(&upto);
                let ready = std::mem::replace(&mut pending, later)
                    .into_values()
                    .flatten();
                let batch = consolidate(ready, new_as_of, complete);
                as_of = Some(new_as_of);
                done = complete;
                if out.send(Output::Views(batch)).is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
            }
        },
    );
}

/// Net effect of `updates` (all with time ≤ `as_of`) as one batch.
fn consolidate(
    updates: impl Iterator<Item = (Row, isize)>,
    as_of: Millis,
    complete: bool,
) -> ViewBatch {
    let mut net: HashMap<Row, isize> = HashMap::new();
    for (row, d) in updates {
        *net.entry(row).or_insert(0) += d;
    }
    let mut batch = ViewBatch {
        as_of,
        complete,
        ..ViewBatch::default()
    };
    for (row, d) in net {
        if d > 0 {
            match row {
                Row::Stock(s) => batch.stock.push(s),
                Row::Order(o) => batch.orders.push(o),
                Row::Alert(a) => batch.alerts.push(a),
                Row::Rating(r) => batch.ratings.push(r),
                Row::AlsoBought(r) => batch.also_bought.push(r),
                Row::Member(m) => batch.members.push(m),
                Row::MemberOrders(m) => batch.member_orders.push(m),
                Row::Points(e) => batch.points.push(e),
                Row::Settlement(e) => batch.settlements.push(e),
                Row::Payout(p) => batch.payouts.push(p),
                Row::Invoice(i) => batch.invoices.push(i),
                Row::Seller(s) => batch.sellers.push(s),
                Row::SalesFact(f) => batch.sales_facts.push(f),
                Row::SalesMinute(m) => batch.sales_minutes.push(m),
                Row::Tick => {}
            }
        } else if d < 0 {
            // A row retracted: removed unless a new value for its key came in.
            match row {
                Row::Rating(r) => batch.ratings_removed.push(r.sku),
                Row::AlsoBought(r) => batch.also_bought_removed.push(r.sku),
                _ => {}
            }
        }
    }
    let kept: std::collections::HashSet<u64> = batch.ratings.iter().map(|r| r.sku).collect();
    batch.ratings_removed.retain(|s| !kept.contains(s));
    let kept: std::collections::HashSet<u64> = batch.also_bought.iter().map(|r| r.sku).collect();
    batch.also_bought_removed.retain(|s| !kept.contains(s));
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
    batch
}

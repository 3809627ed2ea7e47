//! Turns the views' changes into [`ViewBatch`]es as the frontier advances.
//!
//! Every view's rows are routed to the last worker (in a cluster with a writer per process,
//! the last worker of the process that owns the row's key), where one operator waits until
//! the frontier passes their times and then hands the sink writer each changed row's value
//! as of T = frontier − 1. Rows of a batch are mutually consistent: they are all as of T.

use std::collections::hash_map::Entry;
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

impl Row {
    /// The key whose writer writes the row (see [`shopflow_model::Writers`]); `None` for the
    /// rows of the logs (alerts, dead letters), which the last process writes.
    pub fn owner_key(&self) -> Option<u64> {
        match self {
            Row::Stock(s) => Some(s.sku),
            Row::Order(o) => Some(o.order_id),
            Row::Rating(sku, _) | Row::AlsoBought(sku, _) => Some(*sku),
            Row::Member(m) => Some(m.member_id),
            Row::MemberOrders(m) => Some(m.member_id),
            Row::Points(e) => Some(e.member_id),
            Row::Settlement(e) => Some(e.seller_id),
            Row::Payout(p) => Some(p.seller_id),
            Row::Invoice(i) => Some(i.seller_id),
            Row::Seller(s) => Some(*s),
            Row::SalesFact(f) => Some(f.seller_id),
            Row::SalesMinute(m) => Some(m.seller_id),
            Row::Alert(_) | Row::DeadLetter(_) => None,
        }
    }
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
/// With `writing` processes writing (a writer per process, see [`shopflow_model::Writers`]),
/// each row goes to the last worker of the process that owns its key, and each of those
/// workers sends its process's batches; with 1, every row goes to the last worker.
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
    writing: usize,
) -> Timed<'s, ()> {
    let end = ctx.end.clone();
    // The last worker of a process writes: worker 0 reads a file source alone (one
    // stream), so the batches are put together where the other half of the work is.
    let peers = rows.scope().peers();
    let threads = peers / writing;
    let sender = (rows.scope().index() + 1) % threads == 0
        && (writing > 1 || rows.scope().index() == peers - 1);
    let writers = shopflow_model::Writers::new(0, writing);
    let route = move |row: &Row| match row.owner_key() {
        Some(key) => (writers.owner(key) + 1) * threads - 1,
        None => (writers.logs() + 1) * threads - 1,
    };
    let state = ctx.states.register::<Pending>("SendViewBatches");
    rows.unary_frontier::<CapacityContainerBuilder<Vec<((), Millis)>>, _, _, _>(
        Exchange::new(move |(row, _): &(Row, Millis)| route(row) as u64),
        "SendViewBatches",
        move |_cap, _info| {
            // Rows of later times, set aside while a batch is put together.
            let mut later: Vec<(Row, Millis)> = Vec::new();
            move |(input, frontier), _output| {
                let mut guard = state.borrow_mut();
                let Pending { rows, as_of, done } = &mut *guard;
                input.for_each(|_cap, data| rows.append(data));
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
                let ready = rows.drain(..).filter_map(|(row, t)| {
                    if t <= new_as_of {
                        Some((row, t))
                    } else {
                        later.push((row, t));
                        None
                    }
                });
                let (mut batch, dead) = consolidate(ready, new_as_of);
                std::mem::swap(rows, &mut later);
                batch.complete = complete;
                if !dead.is_empty() && out.send(Output::DeadLetters(dead)).is_err() {
                    failed.store(true, Ordering::SeqCst);
                }
                if complete {
                    rows.clear();
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

/// The output's state: rows not yet handed over, in arrival order (nearly all are dated
/// before the next batch's `as_of`: operators date their rows at the time they work on);
/// the `as_of` of the last batch; whether the last batch (of a bounded input) went.
///
/// A checkpoint saves the rows grouped by time, in arrival order within a time (the form
/// of format 4), so files written before and after read the same.
#[derive(Default)]
struct Pending {
    rows: Vec<(Row, Millis)>,
    as_of: Option<Millis>,
    done: bool,
}

impl serde::Serialize for Pending {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut by_time: BTreeMap<Millis, Vec<&Row>> = BTreeMap::new();
        for (row, t) in &self.rows {
            by_time.entry(*t).or_default().push(row);
        }
        (by_time, self.as_of, self.done).serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Pending {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        type Saved = (BTreeMap<Millis, Vec<Row>>, Option<Millis>, bool);
        let (by_time, as_of, done) = Saved::deserialize(deserializer)?;
        let rows = by_time
            .into_iter()
            .flat_map(|(t, rows)| rows.into_iter().map(move |row| (row, t)))
            .collect();
        Ok(Pending { rows, as_of, done })
    }
}

/// The rows of `rows` (in arrival order, all dated ≤ `as_of`) as one batch: the value of
/// every key at its latest time (the last to arrive, among rows of one time), and every
/// append-only record; and the dead letters among them, in time order.
fn consolidate(
    rows: impl Iterator<Item = (Row, Millis)>,
    as_of: Millis,
) -> (ViewBatch, Vec<DeadLetter>) {
    let mut stock: Latest<u64, StockLevel> = FastMap::default();
    let mut orders: Latest<u64, OrderView> = FastMap::default();
    let mut ratings: Latest<u64, Option<RatingView>> = FastMap::default();
    let mut also_bought: Latest<u64, Option<AlsoBought>> = FastMap::default();
    let mut members: Latest<u64, MemberView> = FastMap::default();
    let mut member_orders: Latest<u64, MemberOrders> = FastMap::default();
    let mut payouts: Latest<(u64, Millis), Payout> = FastMap::default();
    let mut invoices: Latest<(u64, Millis), TaxInvoice> = FastMap::default();
    let mut minutes: Latest<(u64, Millis), SalesMinute> = FastMap::default();
    let mut batch = ViewBatch {
        as_of,
        complete: false,
        ..ViewBatch::default()
    };
    let mut dead = Vec::new();
    for (row, t) in rows {
        match row {
            Row::Stock(s) => upsert(&mut stock, s.sku, t, s),
            Row::Order(o) => upsert(&mut orders, o.order_id, t, o),
            Row::Alert(a) => batch.alerts.push(a),
            Row::Rating(sku, r) => upsert(&mut ratings, sku, t, r),
            Row::AlsoBought(sku, r) => upsert(&mut also_bought, sku, t, r),
            Row::Member(m) => upsert(&mut members, m.member_id, t, m),
            Row::MemberOrders(m) => upsert(&mut member_orders, m.member_id, t, m),
            Row::Points(e) => batch.points.push(e),
            Row::Settlement(e) => batch.settlements.push(e),
            Row::Payout(p) => upsert(&mut payouts, (p.seller_id, p.week_start), t, p),
            Row::Invoice(i) => upsert(&mut invoices, (i.seller_id, i.month_start), t, i),
            Row::Seller(s) => batch.sellers.push(s),
            Row::SalesFact(f) => batch.sales_facts.push(f),
            Row::SalesMinute(m) => upsert(&mut minutes, (m.seller_id, m.minute), t, m),
            Row::DeadLetter(d) => dead.push((t, d)),
        }
    }
    // Stable: arrival order within a time.
    dead.sort_by_key(|(t, _)| *t);
    let dead = dead.into_iter().map(|(_, d)| d).collect();
    batch.stock = values(stock).collect();
    batch.orders = values(orders).collect();
    for (sku, (_, r)) in ratings {
        match r {
            Some(r) => batch.ratings.push(r),
            None => batch.ratings_removed.push(sku),
        }
    }
    for (sku, (_, r)) in also_bought {
        match r {
            Some(r) => batch.also_bought.push(r),
            None => batch.also_bought_removed.push(sku),
        }
    }
    batch.members = values(members).collect();
    batch.member_orders = values(member_orders).collect();
    batch.payouts = values(payouts).collect();
    batch.invoices = values(invoices).collect();
    batch.sales_minutes = values(minutes).collect();
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

/// The latest row of each key and its time.
type Latest<K, V> = FastMap<K, (Millis, V)>;

/// Makes `v` the row of `k` unless it has a row of a later time.
fn upsert<K: std::hash::Hash + Eq, V>(map: &mut Latest<K, V>, k: K, t: Millis, v: V) {
    match map.entry(k) {
        Entry::Occupied(mut e) => {
            if t >= e.get().0 {
                *e.get_mut() = (t, v);
            }
        }
        Entry::Vacant(e) => {
            e.insert((t, v));
        }
    }
}

/// The rows of `map`, without their times.
fn values<K, V>(map: Latest<K, V>) -> impl Iterator<Item = V> {
    map.into_values().map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(sku: u64, on_hand: i64) -> Row {
        Row::Stock(StockLevel {
            sku,
            on_hand,
            reserved: 0,
            available: on_hand,
        })
    }

    fn dead(offset: i64) -> Row {
        Row::DeadLetter(DeadLetter {
            reason: shopflow_model::DeadLetterReason::MalformedJson,
            detail: String::new(),
            topic: "t".into(),
            partition: 0,
            offset,
            key: None,
            payload: Vec::new(),
        })
    }

    #[test]
    fn a_key_shows_its_latest_time_and_the_last_arrival_within_it() {
        // Arrival order is not time order: the row of time 5 arrives after that of time 7.
        let rows = vec![
            (stock(1, 10), 7),
            (stock(1, 20), 5),
            (stock(2, 1), 3),
            (stock(2, 2), 3),
        ];
        let (batch, _) = consolidate(rows.into_iter(), 9);
        let levels: Vec<(u64, i64)> = batch.stock.iter().map(|s| (s.sku, s.on_hand)).collect();
        assert_eq!(levels, vec![(1, 10), (2, 2)], "batch: {batch:?}");
        assert_eq!(batch.as_of, 9);
    }

    #[test]
    fn dead_letters_come_in_time_order_then_arrival_order() {
        let rows = vec![(dead(0), 8), (dead(1), 2), (dead(2), 8), (dead(3), 2)];
        let (_, dead) = consolidate(rows.into_iter(), 9);
        let offsets: Vec<i64> = dead.iter().map(|d| d.offset).collect();
        assert_eq!(offsets, vec![1, 3, 0, 2]);
    }

    #[test]
    fn pending_rows_are_saved_grouped_by_time_as_format_4_wrote_them() {
        let pending = Pending {
            rows: vec![(stock(1, 1), 7), (stock(2, 2), 3), (stock(3, 3), 7)],
            as_of: Some(2),
            done: false,
        };
        let bytes = bincode::serialize(&pending).expect("serializes");
        // The form of format 4: rows by time, arrival order within a time.
        let mut by_time: BTreeMap<Millis, Vec<Row>> = BTreeMap::new();
        by_time.insert(3, vec![stock(2, 2)]);
        by_time.insert(7, vec![stock(1, 1), stock(3, 3)]);
        let old = bincode::serialize(&(by_time, Some(2u64), false)).expect("serializes");
        assert_eq!(bytes, old);
        let back: Pending = bincode::deserialize(&bytes).expect("reads back");
        assert_eq!(
            back.rows,
            vec![(stock(2, 2), 3), (stock(1, 1), 7), (stock(3, 3), 7)]
        );
        assert_eq!((back.as_of, back.done), (Some(2), false));
    }
}

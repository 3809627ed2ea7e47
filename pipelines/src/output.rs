//! Turns the views' changes into [`ViewBatch`]es as the frontier advances.
//!
//! Every view's updates are routed to worker 0, where one operator waits until the
//! frontier passes their times and then hands the sink writer each changed row's value as
//! of T = frontier − 1. Rows of a batch are mutually consistent: they are all as of T.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use shopflow_model::{Alert, Millis, OrderView, StockLevel};
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
            let mut pending: Vec<(Row, Millis, isize)> = Vec::new();
            let mut as_of: Option<Millis> = None;
            let mut max_time: Option<Millis> = None;
            let mut done = false;
            move |(input, frontier)| {
                input.for_each(|_cap, data| {
                    for (_, t, _) in data.iter() {
                        max_time = Some(max_time.map_or(*t, |m| m.max(*t)));
                    }
                    pending.append(data);
                });
                if done || !sender {
                    return;
                }
                let (upto, complete) = match frontier.frontier().first() {
                    Some(&f) => (f, false),
                    None => (Millis::MAX, true),
                };
                let new_as_of = if complete {
                    max_time.max(as_of).unwrap_or(0)
                } else if upto == 0 {
                    return;
                } else {
                    upto - 1
                };
                if !complete && as_of == Some(new_as_of) {
                    return;
                }
                let ready: Vec<_>;
                (ready, pending) = pending.drain(..).partition(|(_, t, _)| *t < upto);
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
fn consolidate(updates: Vec<(Row, Millis, isize)>, as_of: Millis, complete: bool) -> ViewBatch {
    let mut net: HashMap<Row, (isize, Millis)> = HashMap::new();
    for (row, t, d) in updates {
        let e = net.entry(row).or_insert((0, t));
        e.0 += d;
        e.1 = e.1.max(t);
    }
    let mut batch = ViewBatch {
        as_of,
        complete,
        ..ViewBatch::default()
    };
    for (row, (d, _t)) in net {
        if d <= 0 {
            continue;
        }
        match row {
            Row::Stock(s) => batch.stock.push(s),
            Row::Order(o) => batch.orders.push(o),
            Row::Alert(a) => batch.alerts.push(a),
            Row::Tick => {}
        }
    }
    batch.stock.sort_unstable_by_key(|s| s.sku);
    batch.orders.sort_unstable_by_key(|o| o.order_id);
    batch
        .alerts
        .sort_unstable_by(|a, b| (a.ts, &a.event_id).cmp(&(b.ts, &b.event_id)));
    batch
}

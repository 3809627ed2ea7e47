//! Stock levels per SKU and the low-stock alerts (SPEC §5.1, §8).

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::VecCollection;
use shopflow_model::{Alert, Millis, StockLevel};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::orders::StockDelta;

/// Sums stock effects per SKU into stock levels, one update per SKU and event time.
pub fn stock_levels<'s>(
    effects: VecCollection<'s, Millis, u64, StockDelta>,
) -> VecCollection<'s, Millis, StockLevel, isize> {
    effects
        .count_total()
        .map(|(sku, (on_hand, reserved, _mentions))| StockLevel {
            sku,
            on_hand: on_hand as i64,
            reserved: reserved as i64,
            available: (on_hand - reserved) as i64,
        })
}

/// Low-stock alerts: compares each SKU's available stock at consecutive event times and
/// emits `stock.low` when it falls from ≥ `threshold` to below, `stock.restored` when it
/// rises back. A SKU starts at 0 with no alert outstanding.
///
/// The input must be partitioned by SKU (as [`stock_levels`]' output is); each worker
/// keeps the last level of its SKUs.
pub fn low_stock_alerts<'s>(
    levels: VecCollection<'s, Millis, StockLevel, isize>,
    threshold: i64,
) -> Stream<'s, Millis, Vec<(Alert, Millis, isize)>> {
    levels
        .inner
        .unary_frontier(Pipeline, "LowStockAlerts", move |_cap, _info| {
            let mut pending: BTreeMap<Millis, (Capability<Millis>, Vec<StockLevel>)> =
                BTreeMap::new();
            let mut last: HashMap<u64, i64> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for (level, time, diff) in data.drain(..) {
                        if diff > 0 {
                            pending
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()))
                                .1
                                .push(level);
                        }
                    }
                });
                while let Some(entry) = pending.first_entry() {
                    let time = *entry.key();
                    if frontier.less_equal(&time) {
                        break;
                    }
                    let (cap, mut levels) = entry.remove();
                    levels.sort_unstable();
                    let mut session = output.session(&cap);
                    for level in levels {
                        let prev = last.insert(level.sku, level.available).unwrap_or(0);
                        let was_ok = prev >= threshold;
                        let is_ok = level.available >= threshold;
                        if was_ok != is_ok {
                            let alert =
                                Alert::stock(level.sku, time, level.available, threshold, !is_ok);
                            session.give((alert, time, 1));
                        }
                    }
                }
            }
        })
}

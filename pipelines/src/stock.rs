//! Stock levels per SKU and the low-stock alerts (SPEC §5.1, §8).

use std::collections::HashMap;

use shopflow_model::{Alert, Millis, StockLevel};
use timely::dataflow::channels::pact::Exchange;

use crate::effects::StockDelta;
use crate::ordered::{ordered, Ctx, Timed};
use crate::output::Row;

/// Sums stock deltas per SKU into stock levels and raises the low-stock alerts.
///
/// At every time at which a SKU's deltas do not cancel out, its new level is a row, and
/// its available stock is compared with its level at the previous such time: `stock.low`
/// when it falls from ≥ `threshold` to below, `stock.restored` when it rises back. A SKU
/// starts at 0 with no alert outstanding. Each worker keeps the level of its SKUs.
pub fn stock_levels<'s>(
    deltas: Timed<'s, (u64, StockDelta)>,
    threshold: i64,
    ctx: &Ctx,
) -> Timed<'s, Row> {
    let by_sku = Exchange::new(|((sku, _), _): &((u64, StockDelta), Millis)| *sku);
    // (on_hand, reserved) per known SKU.
    type Levels = HashMap<u64, (i64, i64), foldhash::fast::RandomState>;
    ordered(
        deltas,
        by_sku,
        "StockLevels",
        ctx,
        move |levels: &mut Levels, time, deltas, out| {
            deltas.sort_unstable_by_key(|(sku, _)| *sku);
            for group in deltas.chunk_by(|a, b| a.0 == b.0) {
                let sku = group[0].0;
                let net = group
                    .iter()
                    .fold(StockDelta::default(), |acc, (_, d)| acc.plus(*d));
                if net.is_zero() {
                    continue;
                }
                let level = levels.entry(sku).or_insert((0, 0));
                let before = level.0 - level.1;
                level.0 += net.on_hand;
                level.1 += net.reserved;
                let available = level.0 - level.1;
                out.push((
                    Row::Stock(StockLevel {
                        sku,
                        on_hand: level.0,
                        reserved: level.1,
                        available,
                    }),
                    time,
                ));
                let was_ok = before >= threshold;
                let is_ok = available >= threshold;
                if was_ok != is_ok {
                    let alert = Alert::stock(sku, time, available, threshold, !is_ok);
                    out.push((Row::Alert(alert), time));
                }
            }
        },
    )
}

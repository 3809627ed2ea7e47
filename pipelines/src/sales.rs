//! Seller sales analytics (SPEC §5.5, §8): a fact per order line and effect, and
//! per-seller per-minute rollups.

use differential_dataflow::VecCollection;
use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::sales::MINUTE_MS;
use shopflow_model::{EventBody, Millis, SalesEffect, SalesFact, SalesMinute};

use crate::lookup::lookup_when_known;

/// A line's frozen terms: (line_no, seller, category).
type LineListing = (u64, u64, u64);

/// A fact and whether its order had been paid (a cancellation after payment is a refund
/// in the rollups).
type FactRow = (SalesFact, bool);

/// Everything the sales views produce.
pub struct SalesOutputs<'s> {
    /// Facts (only ever added).
    pub facts: VecCollection<'s, Millis, SalesFact, isize>,
    /// Per-seller minute rollups.
    pub minutes: VecCollection<'s, Millis, SalesMinute, isize>,
}

/// Builds the sales views from each order's owning placement (see
/// [`crate::orders::placements`]) and state. `listing` is each SKU's current (seller, category); a line's
/// sale belongs to the listing at the order's placement (or, for a SKU not yet known
/// then, the listing when it becomes known).
pub fn sales<'s>(
    placements: VecCollection<'s, Millis, (u64, (Millis, EventBody)), isize>,
    states: VecCollection<'s, Millis, (u64, OrderState), isize>,
    listing: VecCollection<'s, Millis, (u64, (u64, u64)), isize>,
) -> SalesOutputs<'s> {
    let placed_lines = placements.flat_map(|(order_id, (_, body))| match body {
        EventBody::OrderPlaced { lines, .. } => lines
            .iter()
            .map(|l| (l.sku, (order_id, l.line_no)))
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    });
    let terms = lookup_when_known(placed_lines, listing, "SaleListing").map(
        |((order_id, line_no), (seller, category), _at)| (order_id, (line_no, seller, category)),
    );
    let rows = states
        .join_map(terms, |_, state, terms| line_facts(state, *terms))
        .flat_map(|f| f);
    let facts = rows.clone().map(|(f, _)| f);
    let minutes = rows
        .flat_map(|(f, paid)| {
            let counts = match f.effect {
                SalesEffect::Paid | SalesEffect::Refunded => true,
                SalesEffect::Cancelled => paid,
                _ => false,
            };
            counts.then(|| {
                (
                    (f.seller_id, f.ts - f.ts % MINUTE_MS),
                    (f.effect, f.order_id, f.qty, f.amount),
                )
            })
        })
        .reduce_named("SalesMinute", |&(seller_id, minute), input, output| {
            let mut row = SalesMinute {
                seller_id,
                minute,
                orders: 0,
                units: 0,
                gross: 0,
                refunds: 0,
                net: 0,
            };
            let mut last_paid_order = None;
            // Sorted by (effect, order, …): paid facts of one order are adjacent.
            for ((effect, order_id, qty, amount), n) in input {
                let n = *n as i64;
                match effect {
                    SalesEffect::Paid => {
                        if last_paid_order != Some(*order_id) {
                            row.orders += 1;
                            last_paid_order = Some(*order_id);
                        }
                        row.units = row.units.saturating_add(qty.saturating_mul(n));
                        row.gross = row.gross.saturating_add(amount.saturating_mul(n));
                    }
                    _ => {
                        row.refunds = row.refunds.saturating_add(amount.saturating_mul(n).abs());
                    }
                }
            }
            row.net = row.gross.saturating_sub(row.refunds);
            output.push((row, 1isize));
        })
        .map(|(_, row)| row);
    SalesOutputs { facts, minutes }
}

/// The facts of one order line under its frozen listing: one per step the order took,
/// dated at the step's dataflow time, and one per refund of the line.
pub fn line_facts(state: &OrderState, (line_no, seller, category): LineListing) -> Vec<FactRow> {
    let Some(i) = state.lines.iter().position(|l| l.line.line_no == line_no) else {
        return Vec::new();
    };
    let line = state.lines[i].line;
    let paid = state.steps.paid.is_some();
    let fact = |effect: SalesEffect, id: String, ts, qty: i64| {
        let amount = (qty as i128 * line.unit_price as i128)
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        (
            SalesFact {
                id,
                order_id: state.order_id,
                line_no,
                sku: line.sku,
                seller_id: seller,
                category_id: category,
                member_id: state.member_id,
                effect,
                qty,
                amount,
                ts,
            },
            paid,
        )
    };
    let id = |effect: SalesEffect| format!("{}:{line_no}:{}", state.order_id, effect.as_str());
    let qty = line.qty as i64;
    let s = &state.steps;
    let mut facts = vec![fact(
        SalesEffect::Placed,
        id(SalesEffect::Placed),
        s.placed,
        qty,
    )];
    for (effect, at, sign) in [
        (SalesEffect::Paid, s.paid, 1),
        (SalesEffect::Cancelled, s.cancelled, -1),
        (SalesEffect::Shipped, s.shipped, 1),
        (SalesEffect::Delivered, s.delivered, 1),
    ] {
        if let Some(ts) = at {
            facts.push(fact(effect, id(effect), ts, sign * qty));
        }
    }
    if let Some(ts) = state.confirmed_applied {
        let settled = state.settled_qty(i) as i64;
        if settled > 0 {
            let effect = SalesEffect::Confirmed;
            facts.push(fact(effect, id(effect), ts, settled));
        }
    }
    for (n, refund) in state.refunds.iter().enumerate() {
        for &(li, q) in &refund.lines {
            if li == i {
                let id = format!("{}:{line_no}:refunded:{}", state.order_id, n + 1);
                facts.push(fact(SalesEffect::Refunded, id, refund.applied, -(q as i64)));
            }
        }
    }
    facts
}

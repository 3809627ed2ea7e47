//! Seller sales analytics (SPEC §5.5, §8), straight from the rules.
//!
//! Same time axis as the ledgers: every fact is dated by the applied time of its event,
//! and a question "at T" sees the accepted events with applied time ≤ T. A line's terms
//! (seller, category) are the SKU's listing at k, the first time ≥ the order's placement
//! (applied time) at which a `product.upserted` of the SKU has been seen; the category
//! itself need not be known. A line whose SKU is still unknown at the final `as_of` has no
//! facts. A fact keeps its event's time even when k is later.
//!
//! The minute rollups are computed from the facts alone: a `cancelled` fact counts as a
//! refund when its line also has a `paid` fact (a cancel can only follow the payment, and
//! both facts share the line's terms, so the `paid` fact exists whenever the cancelled
//! one does and the order was paid).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use shopflow_model::sales::MINUTE_MS;
use shopflow_model::{EventBody, Millis, SalesEffect, SalesFact, SalesMinute};

use crate::ledgers::last_at;
use crate::{new_order, Applied, Order};

/// What this module adds to the views.
#[derive(Debug, Default)]
pub(crate) struct Sales {
    pub facts: BTreeMap<String, SalesFact>,
    pub minutes: BTreeMap<(u64, Millis), SalesMinute>,
}

/// One effect on one line, before its terms are known.
#[derive(Clone, Copy, Debug)]
struct RawFact {
    line_no: u64,
    effect: SalesEffect,
    /// The refund's number among the order's refunds (from 1); 0 otherwise.
    n: u32,
    qty: i64,
    /// Applied time of the event.
    ts: Millis,
}

/// One order as placed, with the effects of its events on its lines.
#[derive(Clone, Debug)]
struct Placed {
    member: u64,
    /// Applied time of `order.placed`.
    placed_at: Millis,
    /// line_no → (sku, unit_price).
    lines: BTreeMap<u64, (u64, u64)>,
    facts: Vec<RawFact>,
    refunds: u32,
}

/// (seller, category) of a product upsert.
type Listing = (u64, u64);

/// The first time ≥ `placed` at which `records` (ascending by time) hold a listing, with
/// the listing then.
fn terms_at(records: &[(Millis, Listing)], placed: Millis) -> Option<(Millis, Listing)> {
    let first = records.first()?.0;
    let k = placed.max(first);
    last_at(records, k).map(|l| (k, l))
}

/// qty × unit_price; saturates at the `i64` bounds (unreachable within SPEC §8's bounds:
/// |qty| ≤ 10^6 and unit_price ≤ 10^12).
fn amount(qty: i64, unit_price: u64) -> i64 {
    let price = i64::try_from(unit_price).unwrap_or(i64::MAX);
    qty.saturating_mul(price)
}

/// Computes the sales facts and minute rollups as of `as_of` from the accepted events,
/// sorted stably by applied time (log order within a time).
pub(crate) fn sales(applied: &[Applied], as_of: Millis) -> Sales {
    let mut out = Sales::default();
    let mut products: HashMap<u64, Vec<(Millis, Listing)>> = HashMap::new();
    let mut orders: HashMap<u64, Order> = HashMap::new();
    let mut placed: BTreeMap<u64, Placed> = BTreeMap::new();

    for a in applied {
        let body = &a.event.body;
        if let EventBody::ProductUpserted {
            sku,
            seller_id,
            category_id,
            ..
        } = body
        {
            products
                .entry(*sku)
                .or_default()
                .push((a.time, (*seller_id, *category_id)));
            continue;
        }
        let Some(id) = body.order_id() else { continue };
        if let EventBody::OrderPlaced {
            member_id, lines, ..
        } = body
        {
            orders.insert(id, new_order(body, a.effective).expect("placed"));
            placed.insert(
                id,
                Placed {
                    member: *member_id,
                    placed_at: a.time,
                    lines: lines
                        .iter()
                        .map(|l| (l.line_no, (l.sku, l.unit_price)))
                        .collect(),
                    facts: Vec::new(),
                    refunds: 0,
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
        let p = placed.get_mut(&id).expect("placed");
        let effect = match body {
            EventBody::OrderPlaced { .. } => Some(SalesEffect::Placed),
            EventBody::PaymentApproved { .. } => Some(SalesEffect::Paid),
            EventBody::OrderCancelled { .. } => Some(SalesEffect::Cancelled),
            EventBody::OrderShipped { .. } => Some(SalesEffect::Shipped),
            EventBody::OrderDelivered { .. } => Some(SalesEffect::Delivered),
            EventBody::OrderConfirmed { .. } => Some(SalesEffect::Confirmed),
            _ => None,
        };
        if let Some(effect) = effect {
            for (&line_no, l) in &o.lines {
                let qty = match effect {
                    SalesEffect::Cancelled => -(l.qty as i64),
                    // The units left after the refunds before the confirmation (log order).
                    SalesEffect::Confirmed => (l.qty - l.refunded) as i64,
                    _ => l.qty as i64,
                };
                if qty != 0 {
                    p.facts.push(RawFact {
                        line_no,
                        effect,
                        n: 0,
                        qty,
                        ts: a.time,
                    });
                }
            }
        }
        if let EventBody::RefundCompleted { lines, .. } = body {
            // Numbered among all the order's refunds, before or after the confirmation.
            p.refunds += 1;
            for rl in lines {
                p.facts.push(RawFact {
                    line_no: rl.line_no,
                    effect: SalesEffect::Refunded,
                    n: p.refunds,
                    qty: -(rl.qty as i64),
                    ts: a.time,
                });
            }
        }
    }

    for (&order_id, p) in &placed {
        for f in &p.facts {
            let (sku, unit_price) = p.lines[&f.line_no];
            let Some((k, (seller_id, category_id))) = products
                .get(&sku)
                .and_then(|records| terms_at(records, p.placed_at))
            else {
                continue; // the SKU is never known: no facts for the line
            };
            if f.ts > as_of || k > as_of {
                continue;
            }
            let id = match f.effect {
                SalesEffect::Refunded => format!("{order_id}:{}:refunded:{}", f.line_no, f.n),
                e => format!("{order_id}:{}:{}", f.line_no, e.as_str()),
            };
            out.facts.insert(
                id.clone(),
                SalesFact {
                    id,
                    order_id,
                    line_no: f.line_no,
                    sku,
                    seller_id,
                    category_id,
                    member_id: p.member,
                    effect: f.effect,
                    qty: f.qty,
                    amount: amount(f.qty, unit_price),
                    ts: f.ts,
                },
            );
        }
    }
    out.minutes = minutes(&out.facts);
    out
}

/// Per-(seller, minute) rollups of `facts` (SPEC §5.5, §8). Sums saturate at the `i64`
/// bounds; every addend of a sum has the same sign, so the result does not depend on the
/// order of addition, and `net` = gross − refunds of two non-negative sums cannot overflow.
fn minutes(facts: &BTreeMap<String, SalesFact>) -> BTreeMap<(u64, Millis), SalesMinute> {
    let mut out: BTreeMap<(u64, Millis), SalesMinute> = BTreeMap::new();
    let mut paid_orders: BTreeMap<(u64, Millis), BTreeSet<u64>> = BTreeMap::new();
    for f in facts.values() {
        let refund = match f.effect {
            SalesEffect::Paid => false,
            SalesEffect::Refunded => true,
            SalesEffect::Cancelled => {
                facts.contains_key(&format!("{}:{}:paid", f.order_id, f.line_no))
            }
            _ => continue,
        };
        if f.effect == SalesEffect::Cancelled && !refund {
            continue; // cancelled before payment
        }
        let minute = f.ts - f.ts % MINUTE_MS;
        let row = out.entry((f.seller_id, minute)).or_insert(SalesMinute {
            seller_id: f.seller_id,
            minute,
            orders: 0,
            units: 0,
            gross: 0,
            refunds: 0,
            net: 0,
        });
        if refund {
            row.refunds = row.refunds.saturating_add(f.amount.saturating_abs());
        } else {
            paid_orders
                .entry((f.seller_id, minute))
                .or_default()
                .insert(f.order_id);
            row.units = row.units.saturating_add(f.qty);
            row.gross = row.gross.saturating_add(f.amount);
        }
    }
    for (key, row) in &mut out {
        row.orders = paid_orders.get(key).map_or(0, |o| o.len() as u64);
        row.net = row.gross - row.refunds;
    }
    out
}

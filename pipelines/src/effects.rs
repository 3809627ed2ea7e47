//! What one accepted order event changes, computed once, where the order's state is known.
//!
//! The stream validator folds every order's events through the life cycle as it accepts
//! them (it must, to reject what the life cycle forbids). [`order_effects`] compares the
//! order's state before and after an event and turns the difference into the few records
//! each view needs: stock deltas per SKU, basket changes, spend changes, points and
//! settlement queries, new sales facts, and the order's tracking row. The dataflow never
//! folds an order's events again and keeps no copy of the order's state.

use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::{EntryCause, Millis, OrderView, SalesEffect};

use crate::dataflow::ViewConfig;

/// Stock effect on one SKU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockDelta {
    /// Change of the units on hand.
    pub on_hand: i64,
    /// Change of the units reserved by open orders.
    pub reserved: i64,
    /// Accepted events naming the SKU, so a SKU is known from its first mention even when
    /// its amounts sum to nothing.
    pub mentions: i64,
}

impl StockDelta {
    /// A change of `on_hand` and `reserved` by an event naming the SKU.
    pub fn mention(on_hand: i64, reserved: i64) -> Self {
        StockDelta {
            on_hand,
            reserved,
            mentions: 1,
        }
    }

    /// The sum of two deltas.
    pub fn plus(self, other: StockDelta) -> Self {
        StockDelta {
            on_hand: self.on_hand + other.on_hand,
            reserved: self.reserved + other.reserved,
            mentions: self.mentions + other.mentions,
        }
    }

    /// Whether it changes nothing (and names nothing).
    pub fn is_zero(self) -> bool {
        self == StockDelta::default()
    }
}

/// One record for the member views, keyed by member.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemberMsg {
    /// `member.joined`: the member is known.
    Joined,
    /// A Rocket WOW event at (its dataflow time, partition, offset): the latest wins.
    Wow {
        /// Partition it was read from (a tie-break after the time).
        partition: i32,
        /// Offset in that partition.
        offset: i64,
        /// Subscribed (`true`) or cancelled.
        on: bool,
    },
    /// A change of the member's 6-month spend (an order's spend entering or leaving it).
    /// (An order's spend is paid − refunded, at most 10^12 KRW: it fits.)
    Spend(i64),
    /// An order placed by the member (it is known, and the order is one of its recent ones).
    Placed {
        /// Effective time of `order.placed`.
        placed_at: Millis,
        /// The order.
        order_id: u64,
    },
    /// A points ledger entry to write at the grade the member has now (a confirmation),
    /// or at the rate frozen at the order's confirmation (a later refund).
    Points {
        /// The order.
        order_id: u64,
        /// Confirmation or refund.
        cause: EntryCause,
        /// For a refund, its number among the order's refunds (from 1).
        refund: u32,
        /// The amount the points are computed on (paid − refunded, or the refund).
        amount: u64,
    },
}

/// A sales fact still without its seller and category (the listing of the line's SKU at
/// the order's placement, known only where the catalog is).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FactDraft {
    /// Order.
    pub order_id: u64,
    /// Line.
    pub line_no: u64,
    /// Buyer.
    pub member_id: u64,
    /// Effect.
    pub effect: SalesEffect,
    /// For a refund, its number among the order's refunds (from 1).
    pub refund: u32,
    /// Signed units.
    pub qty: i64,
    /// Unit price of the line.
    pub unit_price: u64,
    /// Dataflow time of the step.
    pub ts: Millis,
    /// Dataflow time of the order's placement: the sale belongs to the SKU's seller then.
    pub placed: Millis,
    /// Whether the order had been paid (a cancellation after payment is a refund).
    pub paid: bool,
}

/// One record for the catalog operator, keyed by SKU.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SkuMsg {
    /// `product.upserted` at (its dataflow time, partition, offset): the latest wins.
    Listing {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Seller.
        seller_id: u64,
        /// Category.
        category_id: u64,
    },
    /// `category.upserted` (every worker's catalog operator gets every category).
    Category {
        /// Category.
        category_id: u64,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Commission in basis points.
        commission_bp: u32,
    },
    /// A confirmed line with units left: its settlement entry, on the terms of now.
    Settle {
        /// Order.
        order_id: u64,
        /// Line.
        line_no: u64,
        /// Units settled.
        qty: u64,
        /// Unit price.
        unit_price: u64,
    },
    /// A refund of a confirmed line: a negated entry on the line's frozen terms.
    SettleRefund {
        /// Order.
        order_id: u64,
        /// Line.
        line_no: u64,
        /// The refund's number among the order's refunds (from 1).
        refund: u32,
        /// Units refunded.
        qty: u64,
        /// Unit price.
        unit_price: u64,
        /// Dataflow time of the order's confirmation: the line's entry was made on the
        /// terms of then (or of when the SKU and its category became known).
        confirmed: Millis,
    },
    /// A sales fact of a line of this SKU.
    Fact(FactDraft),
}

/// One effect of an order event.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    /// The order's new tracking row.
    View(OrderView),
    /// A stock change of a SKU.
    Stock(u64, StockDelta),
    /// A co-purchase basket (its distinct SKUs, sorted) starts (+1) or stops (−1) counting.
    Basket(Vec<u64>, i64),
    /// A record for the member views.
    Member(u64, MemberMsg),
    /// A record for the catalog operator (settlements, sales facts).
    Sku(u64, SkuMsg),
}

/// The effects of one accepted order event, applied at dataflow time `time`: `before` is
/// the order's state before the event (`None` for `order.placed`), `after` its state
/// after. Effects are dated `time`, except that a basket or a spend leaving its window is
/// dated at the window's end.
pub fn order_effects(
    before: Option<&OrderState>,
    after: &OrderState,
    time: Millis,
    config: &ViewConfig,
    out: &mut Vec<(Effect, Millis)>,
) {
    let order_id = after.order_id;
    // The tracking row, when what it shows changed.
    let shown_changed = before
        .is_none_or(|b| b.history.len() != after.history.len() || b.location != after.location);
    if shown_changed {
        out.push((Effect::View(after.view()), time));
    }

    // Stock: the change of every line's effect (lines never change in number).
    match before {
        None => {
            for (sku, (on_hand, reserved)) in stock_effects(after) {
                out.push((
                    Effect::Stock(sku, StockDelta::mention(on_hand, reserved)),
                    time,
                ));
            }
        }
        Some(b) => {
            for ((sku, old), (_, new)) in stock_effects(b).zip(stock_effects(after)) {
                let delta = StockDelta {
                    on_hand: new.0 - old.0,
                    reserved: new.1 - old.1,
                    mentions: 0,
                };
                if !delta.is_zero() {
                    out.push((Effect::Stock(sku, delta), time));
                }
            }
        }
    }

    // Baskets and spend: the old version stops counting now and its scheduled end is
    // cancelled; the new version counts from now until its end.
    let old_basket = before.and_then(|b| b.basket(config.basket_max_skus));
    let new_basket = after.basket(config.basket_max_skus);
    if old_basket != new_basket {
        for (basket, sign) in [(old_basket, -1), (new_basket, 1)] {
            if let Some((paid_at, skus)) = basket {
                let end = paid_at.saturating_add(config.basket_window_ms).max(time);
                if end > time {
                    out.push((Effect::Basket(skus.clone(), sign), time));
                    out.push((Effect::Basket(skus, -sign), end));
                }
            }
        }
    }
    let old_spend = before.and_then(OrderState::spend);
    let new_spend = after.spend();
    if old_spend != new_spend {
        for (spend, sign) in [(old_spend, -1), (new_spend, 1)] {
            if let Some((paid_at, amount)) = spend {
                let end = paid_at.saturating_add(config.spend_window_ms).max(time);
                if amount != 0 && end > time {
                    let member = after.member_id;
                    out.push((
                        Effect::Member(member, MemberMsg::Spend((sign * amount) as i64)),
                        time,
                    ));
                    out.push((
                        Effect::Member(member, MemberMsg::Spend((-sign * amount) as i64)),
                        end,
                    ));
                }
            }
        }
    }

    if before.is_none() {
        let placed = MemberMsg::Placed {
            placed_at: after.history.first().map_or(time, |h| h.ts),
            order_id,
        };
        out.push((Effect::Member(after.member_id, placed), time));
    }

    // Points and settlements: at the confirmation, and at every refund after it.
    let old_refunds = before.map_or(0, |b| b.refunds.len());
    let newly_confirmed =
        after.confirmed_applied.is_some() && before.is_none_or(|b| b.confirmed_applied.is_none());
    if newly_confirmed {
        let refunded_before: u64 = after.refunds[..after.confirmed_refunds]
            .iter()
            .map(|r| r.amount)
            .sum();
        let points = MemberMsg::Points {
            order_id,
            cause: EntryCause::Confirmed,
            refund: 0,
            amount: after.paid - refunded_before,
        };
        out.push((Effect::Member(after.member_id, points), time));
        for (i, l) in after.lines.iter().enumerate() {
            let qty = after.settled_qty(i);
            if qty > 0 {
                let settle = SkuMsg::Settle {
                    order_id,
                    line_no: l.line.line_no,
                    qty,
                    unit_price: l.line.unit_price,
                };
                out.push((Effect::Sku(l.line.sku, settle), time));
            }
        }
    }
    if let Some(confirmed) = after.confirmed_applied {
        let first = old_refunds.max(after.confirmed_refunds);
        for (n, refund) in after.refunds.iter().enumerate().skip(first) {
            let points = MemberMsg::Points {
                order_id,
                cause: EntryCause::Refund,
                refund: n as u32 + 1,
                amount: refund.amount,
            };
            out.push((Effect::Member(after.member_id, points), time));
            for &(li, qty) in &refund.lines {
                let line = after.lines[li].line;
                let settle = SkuMsg::SettleRefund {
                    order_id,
                    line_no: line.line_no,
                    refund: n as u32 + 1,
                    qty,
                    unit_price: line.unit_price,
                    confirmed,
                };
                out.push((Effect::Sku(line.sku, settle), time));
            }
        }
    }

    sales_facts(before, after, time, out);
}

/// What an order contributes to stock per line (SPEC §5.1): (sku, (on_hand, reserved)).
/// Its lines are reserved in PLACED or PAID, leave `on_hand` once shipped, and come back
/// when refunded with restock.
pub fn stock_effects(state: &OrderState) -> impl Iterator<Item = (u64, (i64, i64))> + '_ {
    state.lines.iter().map(move |l| {
        let qty = l.line.qty as i64;
        let reserved = if state.stage.reserves_stock() { qty } else { 0 };
        let shipped = if state.stage.reached_shipped() {
            qty
        } else {
            0
        };
        (l.line.sku, (l.restocked as i64 - shipped, reserved))
    })
}

/// The sales facts the event adds (SPEC §5.5): one per line and step the order took, one
/// per line at the confirmation (its settled units), one per refunded line.
fn sales_facts(
    before: Option<&OrderState>,
    after: &OrderState,
    time: Millis,
    out: &mut Vec<(Effect, Millis)>,
) {
    let paid = after.steps.paid.is_some();
    let draft = |line_no, effect, refund, qty: i64, unit_price, ts| FactDraft {
        order_id: after.order_id,
        line_no,
        member_id: after.member_id,
        effect,
        refund,
        qty,
        unit_price,
        ts,
        placed: after.steps.placed,
        paid,
    };
    let old = before.map(|b| b.steps);
    let s = &after.steps;
    let mut steps: Vec<(SalesEffect, Millis, i64)> = Vec::new();
    if old.is_none() {
        steps.push((SalesEffect::Placed, s.placed, 1));
    }
    for (effect, was, is, sign) in [
        (SalesEffect::Paid, old.and_then(|o| o.paid), s.paid, 1),
        (
            SalesEffect::Cancelled,
            old.and_then(|o| o.cancelled),
            s.cancelled,
            -1,
        ),
        (
            SalesEffect::Shipped,
            old.and_then(|o| o.shipped),
            s.shipped,
            1,
        ),
        (
            SalesEffect::Delivered,
            old.and_then(|o| o.delivered),
            s.delivered,
            1,
        ),
    ] {
        if let (None, Some(ts)) = (was, is) {
            steps.push((effect, ts, sign));
        }
    }
    for &(effect, ts, sign) in &steps {
        for l in &after.lines {
            let fact = draft(
                l.line.line_no,
                effect,
                0,
                sign * l.line.qty as i64,
                l.line.unit_price,
                ts,
            );
            out.push((Effect::Sku(l.line.sku, SkuMsg::Fact(fact)), time));
        }
    }
    let confirmed_now = before.map_or(after.confirmed_applied, |b| {
        b.confirmed_applied.xor(after.confirmed_applied)
    });
    if let Some(ts) = confirmed_now {
        for (i, l) in after.lines.iter().enumerate() {
            let settled = after.settled_qty(i) as i64;
            if settled > 0 {
                let fact = draft(
                    l.line.line_no,
                    SalesEffect::Confirmed,
                    0,
                    settled,
                    l.line.unit_price,
                    ts,
                );
                out.push((Effect::Sku(l.line.sku, SkuMsg::Fact(fact)), time));
            }
        }
    }
    let old_refunds = before.map_or(0, |b| b.refunds.len());
    for (n, refund) in after.refunds.iter().enumerate().skip(old_refunds) {
        for &(li, q) in &refund.lines {
            let line = after.lines[li].line;
            let fact = draft(
                line.line_no,
                SalesEffect::Refunded,
                n as u32 + 1,
                -(q as i64),
                line.unit_price,
                refund.applied,
            );
            out.push((Effect::Sku(line.sku, SkuMsg::Fact(fact)), time));
        }
    }
}

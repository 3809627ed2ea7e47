//! The order life cycle in differential dataflow: each order's accepted events, in log
//! order, folded through the life cycle state machine.

use differential_dataflow::VecCollection;
use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::{EventBody, Millis};

/// One accepted order event: (effective time, offset in its stream, dataflow time, body).
/// Ordering by this tuple is the order's log order (the dataflow time never decreases
/// within an order either).
pub type OrderEvent = (Millis, i64, Millis, EventBody);

/// Stock effect of one SKU: (on_hand, reserved, mentions). `mentions` counts accepted
/// events naming the SKU, so a known SKU never sums to nothing.
pub type StockDelta = (isize, isize, isize);

/// Folds each order's events into its current [`OrderState`].
pub fn order_states<'s>(
    events: VecCollection<'s, Millis, (u64, OrderEvent), isize>,
) -> VecCollection<'s, Millis, (u64, OrderState), isize> {
    events.reduce_named("OrderLifecycle", |_order_id, input, output| {
        let mut state: Option<OrderState> = None;
        for ((time, _offset, applied, body), mult) in input {
            debug_assert!(*mult > 0, "order events only accumulate");
            match state.as_mut() {
                None => {
                    state = OrderState::placed(body, *time);
                    if let Some(s) = state.as_mut() {
                        s.steps.placed = *applied;
                    }
                }
                // Every event here passed the same checks in the validator, in this order.
                Some(s) => {
                    let _ = s.apply_at(body, *time, *applied);
                }
            }
        }
        if let Some(s) = state {
            output.push((s, 1));
        }
    })
}

/// What an order contributes to stock, per SKU (SPEC §5.1): its lines are reserved in
/// PLACED or PAID, leave `on_hand` once shipped, and come back when refunded with restock.
pub fn stock_effects(state: &OrderState) -> impl Iterator<Item = (u64, StockDelta)> + '_ {
    state.lines.iter().map(move |l| {
        let qty = l.line.qty as isize;
        let reserved = if state.stage.reserves_stock() { qty } else { 0 };
        let shipped = if state.stage.reached_shipped() {
            qty
        } else {
            0
        };
        (l.line.sku, (l.restocked as isize - shipped, reserved, 1))
    })
}

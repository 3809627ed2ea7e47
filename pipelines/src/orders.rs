//! The order life cycle in differential dataflow: each order's accepted events, in log
//! order, folded through the life cycle state machine.

use differential_dataflow::VecCollection;
use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::{EventBody, Millis};

/// One accepted order event: (effective time, stream, offset in its stream, dataflow time,
/// body). `stream` identifies the partition it came from (see [`stream_id`]). Within one
/// stream, ordering by this tuple is the order's log order (the dataflow time never
/// decreases within an order either).
pub type OrderEvent = (Millis, u64, i64, Millis, EventBody);

/// A number that identifies the stream (topic, partition) an event came from, the same in
/// every worker and run (FNV-1a over the topic name, then the partition).
pub fn stream_id(topic: &str, partition: i32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes().chain(partition.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The stream that owns an order: validation is per partition, so hostile input can place
/// one order id in two partitions. The placement applied first owns the order (ties: the
/// smaller placement body, then the smaller stream id); the other partitions' events of
/// that id are left out of every view. With producers keyed by order id (SPEC §1) every
/// order has one placement and this changes nothing.
pub fn owner<'a>(events: impl Iterator<Item = &'a OrderEvent>) -> Option<u64> {
    events
        .filter(|e| matches!(e.4, EventBody::OrderPlaced { .. }))
        .min_by(|a, b| (a.3, &a.4, a.1).cmp(&(b.3, &b.4, b.1)))
        .map(|e| e.1)
}

/// Stock effect of one SKU: (on_hand, reserved, mentions). `mentions` counts accepted
/// events naming the SKU, so a known SKU never sums to nothing.
pub type StockDelta = (isize, isize, isize);

/// Folds each order's events (those of the stream that owns it, see [`owner`]) into its
/// current [`OrderState`].
pub fn order_states<'s>(
    events: VecCollection<'s, Millis, (u64, OrderEvent), isize>,
) -> VecCollection<'s, Millis, (u64, OrderState), isize> {
    events.reduce_named("OrderLifecycle", |_order_id, input, output| {
        let Some(stream) = owner(input.iter().map(|(e, _)| *e)) else {
            return;
        };
        let mut state: Option<OrderState> = None;
        for ((time, _, _offset, applied, body), mult) in input.iter().filter(|(e, _)| e.1 == stream)
        {
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

/// Each order's owning placement: (order, (effective time, `order.placed` body)).
pub fn placements<'s>(
    events: VecCollection<'s, Millis, (u64, OrderEvent), isize>,
) -> VecCollection<'s, Millis, (u64, (Millis, EventBody)), isize> {
    events
        .filter(|(_, e)| matches!(e.4, EventBody::OrderPlaced { .. }))
        .reduce_named("OrderPlacement", |_order_id, input, output| {
            if let Some(stream) = owner(input.iter().map(|(e, _)| *e)) {
                if let Some(((effective, _, _, _, body), _)) =
                    input.iter().find(|(e, _)| e.1 == stream)
                {
                    output.push(((*effective, body.clone()), 1));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use shopflow_model::{OrderLine, Shipping};

    fn placed(member_id: u64) -> EventBody {
        EventBody::OrderPlaced {
            order_id: 1,
            member_id,
            shipping: Shipping::Rocket,
            lines: vec![OrderLine {
                line_no: 1,
                sku: 1,
                qty: 1,
                unit_price: 100,
            }],
        }
    }

    #[test]
    fn the_placement_applied_first_owns_the_order() {
        let a: OrderEvent = (10, 7, 0, 20, placed(1));
        let b: OrderEvent = (15, 9, 0, 15, placed(2));
        let paid: OrderEvent = (5, 3, 1, 5, EventBody::PaymentFailed { order_id: 1 });
        // b was applied first although its effective time is later.
        assert_eq!(owner([&a, &b, &paid].into_iter()), Some(9));
        // Same applied time: the smaller placement body, whatever the stream.
        let c: OrderEvent = (15, 1, 0, 15, placed(3));
        assert_eq!(owner([&c, &b].into_iter()), Some(9));
        // No placement: nobody owns the order.
        assert_eq!(owner([&paid].into_iter()), None);
        // Stream ids differ by topic and by partition.
        assert_ne!(stream_id("shop.orders", 0), stream_id("shop.orders", 1));
        assert_ne!(stream_id("shop.orders", 0), stream_id("shop.catalog", 0));
    }
}

//! Orders: which stream owns an order, and the owner's effects handed on to the views.

use std::collections::HashMap;

use shopflow_model::{EventBody, Millis};
use timely::dataflow::channels::pact::Exchange;

use crate::effects::Effect;
use crate::ordered::{ordered, Ctx, Timed};

/// What one accepted order event of one stream changes (see [`crate::effects`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderMsg {
    /// The order.
    pub order_id: u64,
    /// The stream (topic, partition) the event came from (see [`stream_id`]).
    pub stream: u64,
    /// The `order.placed` body, for a placement.
    pub placement: Option<EventBody>,
    /// The event's effects, each dated.
    pub effects: Vec<(Effect, Millis)>,
}

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

/// The effects of the events of each order's owning stream.
///
/// Validation is per partition, so hostile input can place one order id in two
/// partitions. The placement applied first owns the order (ties: the smaller placement
/// body, then the smaller stream id); the other partitions' events of that id are left out
/// of every view. With producers keyed by order id (SPEC §1) every order has one placement
/// and this changes nothing. Each worker remembers the owner of the orders it is given
/// (one number per order).
pub fn owned_effects<'s>(changes: Timed<'s, OrderMsg>, ctx: &Ctx) -> Timed<'s, Effect> {
    let by_order = Exchange::new(|(m, _): &(OrderMsg, Millis)| m.order_id);
    // One entry per order ever placed: read back lazily after a restart.
    type Owners = shopflow_state::LazyMap<u64, u64>;
    ordered(
        changes,
        by_order,
        "OrderOwner",
        ctx,
        move |owners: &mut Owners, _time, msgs, out| {
            // Placements of orders not yet owned: the best one at this time wins.
            let mut contested: HashMap<u64, (&EventBody, u64)> = HashMap::new();
            for m in msgs.iter() {
                if let Some(body) = &m.placement {
                    if owners.contains_key(&m.order_id) {
                        continue;
                    }
                    contested
                        .entry(m.order_id)
                        .and_modify(|best| {
                            if (body, m.stream) < *best {
                                *best = (body, m.stream);
                            }
                        })
                        .or_insert((body, m.stream));
                }
            }
            let winners: Vec<(u64, u64)> = contested
                .into_iter()
                .map(|(order, (_, stream))| (order, stream))
                .collect();
            owners.extend(winners);
            for m in msgs.drain(..) {
                if owners.get(&m.order_id) == Some(&m.stream) {
                    out.extend(m.effects);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_differ_by_topic_and_partition() {
        assert_ne!(stream_id("shop.orders", 0), stream_id("shop.orders", 1));
        assert_ne!(stream_id("shop.orders", 0), stream_id("shop.catalog", 0));
    }
}

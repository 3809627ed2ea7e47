//! Everything between a decoded event and the dataflow: dedup, order existence, the life
//! cycle, effective time and the time at which the event is applied (SPEC §2–§4, §8).
//!
//! One [`StreamValidator`] owns one input stream (a Kafka partition or a file) and sees its
//! messages in log order. Orders are keyed by `order_id`, so all events of an order share a
//! stream and the order's state lives with the stream. Dedup is per stream too: a re-sent
//! message carries the same key and so lands in the same partition.

use std::borrow::Cow;

use shopflow_model::{DeadLetterReason, Event, EventBody, Millis};

use crate::decode::{decode, Rejection};
use crate::dedup::SeenIds;
use crate::lifecycle::OrderState;
use crate::orderbook::OrderBook;

/// Default dedup horizon: 7 days of event time.
pub const DEFAULT_DEDUP_HORIZON_MS: Millis = 7 * 24 * 3600 * 1000;
/// Default allowed lateness: 5 s.
pub const DEFAULT_LATENESS_MS: Millis = 5_000;

/// What became of one message.
#[derive(Debug)]
pub enum Outcome {
    /// Apply the event at `time`.
    Accepted(Accepted),
    /// Same `event_id` seen within the horizon: dropped and counted.
    Duplicate,
    /// Not applied: goes to the dead-letter topic.
    Rejected(Rejection),
}

/// An accepted event with its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The event.
    pub event: Event,
    /// Effective time: for order events never before the order's previous event.
    pub effective_time: Millis,
    /// The dataflow time it is applied at: `max(effective_time, stream frontier)`.
    pub time: Millis,
    /// Whether it arrived below the frontier (a late event, applied at the frontier).
    pub late: bool,
    /// For an order event other than `order.placed`: the order's state before the event
    /// (the state after it is [`StreamValidator::order`]).
    pub before: Option<Box<OrderState>>,
}

/// Dedup, life cycle and time for one input stream. Serializable: a checkpoint saves it
/// whole, and a restart continues the stream with it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StreamValidator {
    horizon: Millis,
    lateness: Millis,
    /// `event_id` → event time at which it was (last) accepted as new.
    seen: SeenIds,
    max_seen_ts: Millis,
    orders: OrderBook,
    /// Largest effective time of an accepted event.
    max_time: Option<Millis>,
    /// Lower bound of future dataflow times on this stream, raised by the wall clock or
    /// the worker when the stream is idle.
    floor: Millis,
    evict_at: usize,
}

impl StreamValidator {
    /// A validator with the given dedup horizon and allowed lateness.
    pub fn new(horizon: Millis, lateness: Millis) -> Self {
        StreamValidator {
            horizon,
            lateness,
            seen: SeenIds::default(),
            max_seen_ts: 0,
            orders: OrderBook::default(),
            max_time: None,
            floor: 0,
            evict_at: 1 << 16,
        }
    }

    /// Decodes and validates one message, updating the stream's state only if the event is
    /// accepted (or marks its id as seen, for schema-valid events).
    pub fn process(&mut self, payload: &[u8]) -> Outcome {
        self.process_at(payload, 0)
    }

    /// [`StreamValidator::process`] for a worker whose dataflow is already at `min_time`:
    /// an accepted event is applied at `max(effective time, stream frontier, min_time)`.
    pub fn process_at(&mut self, payload: &[u8], min_time: Millis) -> Outcome {
        match decode(payload) {
            Err(r) => Outcome::Rejected(r),
            Ok(event) => self.process_event_at(event, min_time),
        }
    }

    /// [`StreamValidator::process`] for an already decoded (schema-valid) event.
    pub fn process_event(&mut self, event: Event) -> Outcome {
        self.process_event_at(event, 0)
    }

    /// [`StreamValidator::process_at`] for an already decoded (schema-valid) event.
    pub fn process_event_at(&mut self, event: Event, min_time: Millis) -> Outcome {
        if self.is_duplicate(&event) {
            return Outcome::Duplicate;
        }
        let floor = self.frontier().max(min_time);
        let (effective_time, before) = match self.apply_order_rules(&event, floor) {
            Ok(t) => t,
            Err(r) => return Outcome::Rejected(r),
        };
        let time = effective_time.max(floor);
        self.max_time = Some(
            self.max_time
                .map_or(effective_time, |m| m.max(effective_time)),
        );
        Outcome::Accepted(Accepted {
            event,
            effective_time,
            time,
            late: effective_time < floor,
            before,
        })
    }

    /// The current state of an order this stream placed.
    pub fn order(&self, order_id: u64) -> Option<Cow<'_, OrderState>> {
        self.orders.get(order_id)
    }

    /// Dedup (SPEC §8): every schema-valid event marks its id; a duplicate is an id first
    /// seen at ts′ with ts − ts′ ≤ horizon.
    fn is_duplicate(&mut self, event: &Event) -> bool {
        if let Some(first) = self.seen.get(&event.event_id) {
            if event.ts <= first || event.ts - first <= self.horizon {
                return true;
            }
        }
        self.seen.insert(&event.event_id, event.ts);
        self.max_seen_ts = self.max_seen_ts.max(event.ts);
        if self.seen.len() >= self.evict_at {
            self.evict();
        }
        false
    }

    /// Forgets ids first seen more than two horizons before the newest event: no event at
    /// most one horizon older than the newest can be their duplicate.
    fn evict(&mut self) {
        let cutoff = self.max_seen_ts.saturating_sub(2 * self.horizon);
        self.seen.retain_since(cutoff);
        self.evict_at = (self.seen.len() * 2).max(1 << 16);
    }

    /// Order existence and life cycle; returns the effective time and, for an order event
    /// other than a placement, the order's state before it. An accepted order event is
    /// applied at max(effective time, `floor`). Non-order events are always allowed at
    /// their own `ts`.
    fn apply_order_rules(
        &mut self,
        event: &Event,
        floor: Millis,
    ) -> Result<(Millis, Option<Box<OrderState>>), Rejection> {
        let Some(order_id) = event.body.order_id() else {
            return Ok((event.ts, None));
        };
        if let EventBody::OrderPlaced { .. } = event.body {
            if self.orders.contains(order_id) {
                return Err(Rejection::new(
                    DeadLetterReason::Lifecycle,
                    format!("order {order_id} was already placed"),
                ));
            }
            let mut state = OrderState::placed(&event.body, event.ts).expect("order.placed");
            state.steps.placed = event.ts.max(floor);
            self.orders.insert(state);
            return Ok((event.ts, None));
        }
        let Some(state) = self.orders.get_mut(order_id) else {
            return Err(Rejection::new(
                DeadLetterReason::UnknownOrder,
                format!("order {order_id} was never placed"),
            ));
        };
        let time = state.effective_time(event.ts);
        let before = Box::new(state.clone());
        state.apply_at(&event.body, time, time.max(floor))?;
        Ok((time, Some(before)))
    }

    /// Sets the dedup horizon and the allowed lateness (a restart from a checkpoint with
    /// other settings: they apply from there on).
    pub fn set_limits(&mut self, horizon: Millis, lateness: Millis) {
        self.horizon = horizon;
        self.lateness = lateness;
    }

    /// The stream's frontier: no later event is applied before it. It is the latest
    /// accepted event time minus the allowed lateness, or higher when raised while idle.
    pub fn frontier(&self) -> Millis {
        let by_events = self.max_time.map_or(0, |m| m.saturating_sub(self.lateness));
        by_events.max(self.floor)
    }

    /// Raises the frontier to at least `t` (the stream is caught up and time moved on).
    pub fn raise_frontier(&mut self, t: Millis) {
        self.floor = self.floor.max(t);
    }

    /// The latest effective time of an accepted event, if any.
    pub fn max_time(&self) -> Option<Millis> {
        self.max_time
    }

    /// Number of orders whose state is kept.
    pub fn orders_tracked(&self) -> usize {
        self.orders.len()
    }

    /// Number of those kept in the compact form (see [`OrderBook`]).
    pub fn orders_compact(&self) -> usize {
        self.orders.compact_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, ty: &str, ts: u64, rest: &str) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","type":"{ty}","ts":{ts}{rest}}}"#).into_bytes()
    }

    fn reason(o: Outcome) -> Option<DeadLetterReason> {
        match o {
            Outcome::Rejected(r) => Some(r.reason),
            _ => None,
        }
    }

    #[test]
    fn dedup_horizon_and_order_of_checks() {
        let mut v = StreamValidator::new(DEFAULT_DEDUP_HORIZON_MS, DEFAULT_LATENESS_MS);
        let day = 24 * 3600 * 1000;
        assert!(matches!(
            v.process(&msg("a", "member.joined", 10 * day, r#","member_id":1"#)),
            Outcome::Accepted(_)
        ));
        // Exactly 7 days later: duplicate. 1 ms more: new.
        assert!(matches!(
            v.process(&msg("a", "member.joined", 17 * day, r#","member_id":1"#)),
            Outcome::Duplicate
        ));
        assert!(matches!(
            v.process(&msg(
                "a",
                "member.joined",
                17 * day + 1,
                r#","member_id":1"#
            )),
            Outcome::Accepted(_)
        ));
        // A schema-invalid event does not mark its id.
        assert_eq!(
            reason(v.process(&msg("b", "member.joined", day, r#","member_id":0"#))),
            Some(DeadLetterReason::OutOfRange)
        );
        // Dedup runs before the unknown-order check; a rejected-but-valid event marks its id.
        assert_eq!(
            reason(v.process(&msg("b", "order.shipped", day, r#","order_id":5"#))),
            Some(DeadLetterReason::UnknownOrder)
        );
        assert!(matches!(
            v.process(&msg("b", "order.shipped", day, r#","order_id":5"#)),
            Outcome::Duplicate
        ));
    }

    #[test]
    fn effective_time_never_goes_back_and_late_events_move_to_the_frontier() {
        let mut v = StreamValidator::new(DEFAULT_DEDUP_HORIZON_MS, 5_000);
        let placed = msg(
            "p",
            "order.placed",
            100_000,
            r#","order_id":1,"member_id":1,"shipping":"rocket","lines":[{"line_no":1,"sku":1,"qty":1,"unit_price":5}]"#,
        );
        let Outcome::Accepted(a) = v.process(&placed) else {
            panic!()
        };
        assert_eq!(
            (a.effective_time, a.time, a.late),
            (100_000, 100_000, false)
        );
        let Outcome::Accepted(b) = v.process(&msg(
            "q",
            "payment.approved",
            50_000,
            r#","order_id":1,"amount":5"#,
        )) else {
            panic!()
        };
        assert_eq!(
            (b.effective_time, b.time, b.late),
            (100_000, 100_000, false)
        );
        let Outcome::Accepted(c) =
            v.process(&msg("r", "stock.received", 90_000, r#","sku":1,"qty":5"#))
        else {
            panic!()
        };
        assert_eq!((c.effective_time, c.time, c.late), (90_000, 95_000, true));
    }
}

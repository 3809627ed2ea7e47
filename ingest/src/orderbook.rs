//! Where a stream validator keeps its orders: recently touched orders as [`OrderState`]s,
//! the others encoded in a compact byte form.
//!
//! SPEC §2 lets an order change forever (a return can be opened on a confirmed order at
//! any time), so every order's life-cycle state is kept. Most orders are quiet most of
//! their life, though: an order whose state was not touched during a whole sweep period
//! is encoded ([`encode`]: variable-length integers, times as differences from the
//! placement) — about a tenth of the in-memory form — and decoded again the next time an
//! event names it. Which form an order is in never changes what the validator decides;
//! checkpoints save every order in the compact form, in buckets a restart reads back
//! lazily ([`LazyMap`]).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shopflow_model::{Millis, OrderLine, OrderStatus, StatusChange};
use shopflow_state::LazyMap;

use crate::lifecycle::{LineState, OrderState, Refund, Stage, Steps};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Orders touched since the last sweep stay decoded; a sweep happens when the decoded
/// orders have doubled since the last one, and never below this many.
const MIN_SWEEP: usize = 8_192;

/// The orders of one stream, each in its decoded or its compact form.
#[derive(Debug)]
pub struct OrderBook {
    /// Orders touched recently, with the sweep period they were last touched in.
    hot: FastMap<u64, (OrderState, u32)>,
    /// The others, encoded (after a restart, partly still in the checkpoint's buckets).
    cold: LazyMap<u64, Compact>,
    /// The current sweep period.
    epoch: u32,
    /// Size of `hot` at which the next sweep runs.
    sweep_at: usize,
}

impl Default for OrderBook {
    fn default() -> Self {
        OrderBook {
            hot: FastMap::default(),
            cold: LazyMap::default(),
            epoch: 0,
            sweep_at: MIN_SWEEP,
        }
    }
}

impl OrderBook {
    /// Number of orders kept (both forms).
    pub fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }

    /// Whether no order is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of orders kept in the compact form.
    pub fn compact_len(&self) -> usize {
        self.cold.len()
    }

    /// Whether the order is known.
    pub fn contains(&mut self, order_id: u64) -> bool {
        self.hot.contains_key(&order_id) || self.cold.contains_key(&order_id)
    }

    /// The order's state (decoded on the fly if it is in the compact form).
    pub fn get(&self, order_id: u64) -> Option<Cow<'_, OrderState>> {
        if let Some((state, _)) = self.hot.get(&order_id) {
            return Some(Cow::Borrowed(state));
        }
        let bytes = self.cold.peek(&order_id)?;
        Some(Cow::Owned(decode_own(order_id, &bytes.0)))
    }

    /// Adds a newly placed order (the caller checked it is not known).
    pub fn insert(&mut self, state: OrderState) {
        self.maybe_sweep();
        self.hot.insert(state.order_id, (state, self.epoch));
    }

    /// The order's state, to change in place; it stays decoded until a sweep finds it
    /// untouched for a whole period.
    pub fn get_mut(&mut self, order_id: u64) -> Option<&mut OrderState> {
        self.maybe_sweep();
        let epoch = self.epoch;
        if let Some(bytes) = self.cold.remove(&order_id) {
            let state = decode_own(order_id, &bytes.0);
            self.hot.insert(order_id, (state, epoch));
        }
        let (state, touched) = self.hot.get_mut(&order_id)?;
        *touched = epoch;
        Some(state)
    }

    /// Encodes the orders not touched since the previous sweep, once the decoded ones
    /// have doubled.
    fn maybe_sweep(&mut self) {
        if self.hot.len() < self.sweep_at {
            return;
        }
        let epoch = self.epoch;
        let mut buf = Vec::with_capacity(256);
        let cold = &mut self.cold;
        self.hot.retain(|&id, (state, touched)| {
            if *touched == epoch {
                return true;
            }
            buf.clear();
            encode(state, &mut buf);
            cold.insert(id, Compact(buf.as_slice().into()));
            false
        });
        self.epoch = epoch.wrapping_add(1);
        self.sweep_at = (self.hot.len() * 2).max(MIN_SWEEP);
        self.hot.shrink_to(self.sweep_at);
    }
}

/// Decodes bytes this process encoded itself (or that a checkpoint load has checked).
fn decode_own(order_id: u64, bytes: &[u8]) -> OrderState {
    match decode(order_id, bytes) {
        Ok(state) => state,
        // Only bytes written by `encode` get here: a failure is a bug in the codec.
        Err(e) => panic!("order {order_id}: its compact form does not decode: {e}"),
    }
}

/// Why a compact order does not decode.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    /// The bytes end inside a value.
    #[error("truncated")]
    Truncated,
    /// A value that no encoded order has.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

// Flag bits of the first value.
const RETURN_OPEN: u64 = 1 << 3;
const PAID_AT: u64 = 1 << 4;
const CONFIRMED_AT: u64 = 1 << 5;
const CONFIRMED_APPLIED: u64 = 1 << 6;
const STEP_PAID: u64 = 1 << 7;
const STEP_CANCELLED: u64 = 1 << 8;
const STEP_SHIPPED: u64 = 1 << 9;
const STEP_DELIVERED: u64 = 1 << 10;
const LOCATION: u64 = 1 << 11;

const STAGES: [Stage; 7] = [
    Stage::Placed,
    Stage::Paid,
    Stage::Failed,
    Stage::Cancelled,
    Stage::Shipped,
    Stage::Delivered,
    Stage::Confirmed,
];

const STATUSES: [OrderStatus; 9] = [
    OrderStatus::Placed,
    OrderStatus::Paid,
    OrderStatus::Failed,
    OrderStatus::Cancelled,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
    OrderStatus::Confirmed,
    OrderStatus::ReturnRequested,
    OrderStatus::Refunded,
];

/// Appends the compact form of `s` (all but its `order_id`, the map's key) to `out`:
/// LEB128 integers; every time as a zig-zag difference from the placement's dataflow time.
pub fn encode(s: &OrderState, out: &mut Vec<u8>) {
    let base = s.steps.placed;
    let stage = STAGES.iter().position(|&x| x == s.stage).unwrap_or(0) as u64;
    let mut flags = stage;
    for (bit, on) in [
        (RETURN_OPEN, s.return_open),
        (PAID_AT, s.paid_at.is_some()),
        (CONFIRMED_AT, s.confirmed_at.is_some()),
        (CONFIRMED_APPLIED, s.confirmed_applied.is_some()),
        (STEP_PAID, s.steps.paid.is_some()),
        (STEP_CANCELLED, s.steps.cancelled.is_some()),
        (STEP_SHIPPED, s.steps.shipped.is_some()),
        (STEP_DELIVERED, s.steps.delivered.is_some()),
        (LOCATION, s.location.is_some()),
    ] {
        if on {
            flags |= bit;
        }
    }
    put(out, flags);
    put(out, s.member_id);
    put(out, base);
    put_time(out, base, s.last_time);
    put(out, s.paid);
    put(out, s.refunded_amount);
    put(out, s.confirmed_refunds as u64);
    for t in [
        s.paid_at,
        s.confirmed_at,
        s.confirmed_applied,
        s.steps.paid,
        s.steps.cancelled,
        s.steps.shipped,
        s.steps.delivered,
    ]
    .into_iter()
    .flatten()
    {
        put_time(out, base, t);
    }
    put(out, s.lines.len() as u64);
    for l in &s.lines {
        for v in [
            l.line.line_no,
            l.line.sku,
            l.line.qty,
            l.line.unit_price,
            l.refunded,
            l.restocked,
        ] {
            put(out, v);
        }
    }
    put(out, s.refunds.len() as u64);
    for r in &s.refunds {
        put_time(out, base, r.time);
        put_time(out, base, r.applied);
        put(out, r.amount);
        put(out, r.lines.len() as u64);
        for &(i, q) in &r.lines {
            put(out, i as u64);
            put(out, q);
        }
    }
    if let Some(loc) = &s.location {
        put(out, loc.len() as u64);
        out.extend_from_slice(loc.as_bytes());
    }
    put(out, s.history.len() as u64);
    for h in &s.history {
        let status = STATUSES.iter().position(|&x| x == h.status).unwrap_or(0);
        put(out, status as u64);
        put_time(out, base, h.ts);
    }
}

/// Reads back what [`encode`] wrote for order `order_id`.
pub fn decode(order_id: u64, bytes: &[u8]) -> Result<OrderState, CompactError> {
    let mut r = Reader { bytes, at: 0 };
    let flags = r.get()?;
    let stage = *STAGES
        .get((flags & 7) as usize)
        .ok_or(CompactError::Invalid("stage"))?;
    let member_id = r.get()?;
    let base = r.get()?;
    let last_time = r.time(base)?;
    let paid = r.get()?;
    let refunded_amount = r.get()?;
    let confirmed_refunds = r.get()? as usize;
    let mut opt = |bit: u64| -> Result<Option<Millis>, CompactError> {
        if flags & bit != 0 {
            r.time(base).map(Some)
        } else {
            Ok(None)
        }
    };
    let paid_at = opt(PAID_AT)?;
    let confirmed_at = opt(CONFIRMED_AT)?;
    let confirmed_applied = opt(CONFIRMED_APPLIED)?;
    let steps = Steps {
        placed: base,
        paid: opt(STEP_PAID)?,
        cancelled: opt(STEP_CANCELLED)?,
        shipped: opt(STEP_SHIPPED)?,
        delivered: opt(STEP_DELIVERED)?,
    };
    let n = r.count()?;
    let mut lines = Vec::with_capacity(n);
    for _ in 0..n {
        let line = OrderLine {
            line_no: r.get()?,
            sku: r.get()?,
            qty: r.get()?,
            unit_price: r.get()?,
        };
        lines.push(LineState {
            line,
            refunded: r.get()?,
            restocked: r.get()?,
        });
    }
    let n = r.count()?;
    let mut refunds = Vec::with_capacity(n);
    for _ in 0..n {
        let time = r.time(base)?;
        let applied = r.time(base)?;
        let amount = r.get()?;
        let k = r.count()?;
        let mut rl = Vec::with_capacity(k);
        for _ in 0..k {
            let i = r.get()? as usize;
            if i >= lines.len() {
                return Err(CompactError::Invalid("refund line"));
            }
            rl.push((i, r.get()?));
        }
        refunds.push(Refund {
            time,
            applied,
            amount,
            lines: rl,
        });
    }
    if confirmed_refunds > refunds.len() {
        return Err(CompactError::Invalid("confirmed refunds"));
    }
    let location = if flags & LOCATION != 0 {
        let len = r.count()?;
        let raw = r.take(len)?;
        Some(String::from_utf8(raw.to_vec()).map_err(|_| CompactError::Invalid("location"))?)
    } else {
        None
    };
    let n = r.count()?;
    let mut history = Vec::with_capacity(n);
    for _ in 0..n {
        let status = *STATUSES
            .get(r.get()? as usize)
            .ok_or(CompactError::Invalid("status"))?;
        history.push(StatusChange {
            status,
            ts: r.time(base)?,
        });
    }
    if r.at != bytes.len() {
        return Err(CompactError::Invalid("trailing bytes"));
    }
    Ok(OrderState {
        order_id,
        member_id,
        stage,
        return_open: flags & RETURN_OPEN != 0,
        lines,
        paid,
        paid_at,
        refunded_amount,
        refunds,
        confirmed_at,
        confirmed_applied,
        confirmed_refunds,
        steps,
        last_time,
        location,
        history,
    })
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_time(out: &mut Vec<u8>, base: Millis, t: Millis) {
    let d = t.wrapping_sub(base) as i64;
    put(out, ((d << 1) ^ (d >> 63)) as u64);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn get(&mut self) -> Result<u64, CompactError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or(CompactError::Truncated)?;
            self.at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CompactError::Invalid("integer"))
    }

    fn time(&mut self, base: Millis) -> Result<Millis, CompactError> {
        let z = self.get()?;
        let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
        Ok(base.wrapping_add(d as u64))
    }

    /// A count of items that each take at least one byte: never more than the bytes left.
    fn count(&mut self) -> Result<usize, CompactError> {
        let n = self.get()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(CompactError::Truncated);
        }
        Ok(n as usize)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CompactError> {
        let end = self.at.checked_add(n).ok_or(CompactError::Truncated)?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or(CompactError::Truncated)?;
        self.at = end;
        Ok(s)
    }
}

/// One order in the compact form, (de)serialized as a byte string.
#[derive(Clone, Debug)]
struct Compact(Box<[u8]>);

impl Serialize for Compact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Compact {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Compact;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an encoded order")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Compact, E> {
                Ok(Compact(v.into()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Compact, E> {
                Ok(Compact(v.into_boxed_slice()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Compact, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Compact(v.into_boxed_slice()))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// A checkpoint holds every order in the compact form, the decoded ones encoded for it.
impl Serialize for OrderBook {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::with_capacity(256);
        let hot: Vec<(u64, Compact)> = self
            .hot
            .iter()
            .map(|(id, (state, _))| {
                buf.clear();
                encode(state, &mut buf);
                (*id, Compact(buf.as_slice().into()))
            })
            .collect();
        self.cold.serialize_with(&hot, s)
    }
}

/// Orders read back stay in the compact form (and, from a checkpoint, in its buckets until
/// an event names one of their orders); each is decoded when it is next named. The file's
/// checksum is what refuses a damaged checkpoint.
impl<'de> Deserialize<'de> for OrderBook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(OrderBook {
            cold: LazyMap::deserialize(d)?,
            ..OrderBook::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_time() -> impl Strategy<Value = Millis> {
        prop_oneof![
            0..10_000u64,
            1_700_000_000_000..1_900_000_000_000u64,
            Just(u64::MAX >> 11),
        ]
    }

    fn arb_state() -> impl Strategy<Value = OrderState> {
        let line = (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(line_no, sku, qty, unit_price, refunded, restocked)| LineState {
                    line: OrderLine {
                        line_no,
                        sku,
                        qty,
                        unit_price,
                    },
                    refunded,
                    restocked,
                },
            );
        let refund = (
            arb_time(),
            arb_time(),
            any::<u64>(),
            prop::collection::vec((0..3usize, any::<u64>()), 0..3),
        )
            .prop_map(|(time, applied, amount, lines)| Refund {
                time,
                applied,
                amount,
                lines,
            });
        let change = (0..9usize, arb_time()).prop_map(|(i, ts)| StatusChange {
            status: STATUSES[i],
            ts,
        });
        let opt = || prop::option::of(arb_time());
        (
            (
                any::<u64>(),
                any::<u64>(),
                0..7usize,
                any::<bool>(),
                prop::collection::vec(line, 3..5),
            ),
            (
                any::<u64>(),
                opt(),
                any::<u64>(),
                prop::collection::vec(refund, 0..3),
                opt(),
                opt(),
            ),
            (arb_time(), opt(), opt(), opt(), opt(), arb_time()),
            (
                prop::option::of("[a-z가-힣 ]{0,20}"),
                prop::collection::vec(change, 1..8),
            ),
        )
            .prop_map(
                |(
                    (order_id, member_id, stage, return_open, lines),
                    (paid, paid_at, refunded_amount, refunds, confirmed_at, confirmed_applied),
                    (placed, spaid, cancelled, shipped, delivered, last_time),
                    (location, history),
                )| {
                    let confirmed_refunds = refunds.len() / 2;
                    OrderState {
                        order_id,
                        member_id,
                        stage: STAGES[stage],
                        return_open,
                        lines,
                        paid,
                        paid_at,
                        refunded_amount,
                        refunds,
                        confirmed_at,
                        confirmed_applied,
                        confirmed_refunds,
                        steps: Steps {
                            placed,
                            paid: spaid,
                            cancelled,
                            shipped,
                            delivered,
                        },
                        last_time,
                        location,
                        history,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_state_round_trips(s in arb_state()) {
            let mut buf = Vec::new();
            encode(&s, &mut buf);
            prop_assert_eq!(decode(s.order_id, &buf), Ok(s.clone()));
            // Any strict prefix is refused, never misread.
            for cut in 0..buf.len() {
                prop_assert!(decode(s.order_id, &buf[..cut]).is_err(), "prefix of {} bytes", cut);
            }
        }

        #[test]
        fn the_book_returns_what_was_stored_whatever_the_form(
            states in prop::collection::vec(arb_state(), 1..40),
            touches in prop::collection::vec(0..40usize, 0..200),
        ) {
            let mut book = OrderBook { sweep_at: 4, ..OrderBook::default() };
            let mut expected: std::collections::BTreeMap<u64, OrderState> = Default::default();
            for s in &states {
                if expected.contains_key(&s.order_id) {
                    continue;
                }
                book.insert(s.clone());
                expected.insert(s.order_id, s.clone());
            }
            let ids: Vec<u64> = expected.keys().copied().collect();
            for t in touches {
                let id = ids[t % ids.len()];
                let state = book.get_mut(id).expect("known");
                state.paid = state.paid.wrapping_add(1);
                expected.get_mut(&id).unwrap().paid = state.paid;
                book.sweep_at = book.sweep_at.min(4);
            }
            prop_assert_eq!(book.len(), expected.len());
            for (id, s) in &expected {
                let got = book.get(*id).map(Cow::into_owned);
                prop_assert_eq!(got.as_ref(), Some(s));
            }
            let bytes = bincode::serialize(&book).unwrap();
            let back: OrderBook = bincode::deserialize(&bytes).unwrap();
            prop_assert_eq!(back.compact_len(), expected.len());
            for (id, s) in &expected {
                let got = back.get(*id).map(Cow::into_owned);
                prop_assert_eq!(got.as_ref(), Some(s));
            }
        }
    }

    #[test]
    fn a_typical_order_is_small() {
        let body = shopflow_model::EventBody::OrderPlaced {
            order_id: 123_456,
            member_id: 4_321,
            shipping: shopflow_model::Shipping::Rocket,
            lines: (1..=3)
                .map(|n| OrderLine {
                    line_no: n,
                    sku: 1_000 + n,
                    qty: 2,
                    unit_price: 19_900,
                })
                .collect(),
        };
        let t = 1_793_577_600_000;
        let mut s = OrderState::placed(&body, t).unwrap();
        let steps = [
            shopflow_model::EventBody::PaymentApproved {
                order_id: 123_456,
                amount: 119_400,
            },
            shopflow_model::EventBody::OrderShipped { order_id: 123_456 },
            shopflow_model::EventBody::DeliveryUpdated {
                order_id: 123_456,
                location: "Seoul hub".into(),
            },
            shopflow_model::EventBody::OrderDelivered { order_id: 123_456 },
            shopflow_model::EventBody::OrderConfirmed { order_id: 123_456 },
        ];
        for (i, e) in steps.iter().enumerate() {
            s.apply(e, t + 60_000 * (i as u64 + 1)).unwrap();
        }
        let mut buf = Vec::new();
        encode(&s, &mut buf);
        assert_eq!(decode(123_456, &buf), Ok(s));
        assert!(buf.len() < 100, "{} bytes", buf.len());
    }
}

//! Rows of the seller sales analytics (SPEC §5.5): fact rows per order line and effect,
//! and per-seller per-minute rollups.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// What happened to an order line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SalesEffect {
    /// `order.placed`.
    Placed,
    /// `payment.approved`.
    Paid,
    /// `order.cancelled` (signed negative).
    Cancelled,
    /// `order.shipped`.
    Shipped,
    /// `order.delivered`.
    Delivered,
    /// `order.confirmed` (the units not refunded by then).
    Confirmed,
    /// `refund.completed`, per refunded line (signed negative).
    Refunded,
}

impl SalesEffect {
    /// The spelling used in ids and in ClickHouse.
    pub fn as_str(self) -> &'static str {
        match self {
            SalesEffect::Placed => "placed",
            SalesEffect::Paid => "paid",
            SalesEffect::Cancelled => "cancelled",
            SalesEffect::Shipped => "shipped",
            SalesEffect::Delivered => "delivered",
            SalesEffect::Confirmed => "confirmed",
            SalesEffect::Refunded => "refunded",
        }
    }
}

/// One fact: an effect on one order line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SalesFact {
    /// Deterministic id: `{order}:{line}:{effect}`, or `{order}:{line}:refunded:{n}` with n
    /// counting the order's refunds from 1.
    pub id: String,
    /// Order.
    pub order_id: u64,
    /// Line of the order.
    pub line_no: u64,
    /// Product.
    pub sku: u64,
    /// The SKU's seller when the order was placed (or when the SKU became known).
    pub seller_id: u64,
    /// The SKU's category at the same moment.
    pub category_id: u64,
    /// Buyer.
    pub member_id: u64,
    /// What happened.
    pub effect: SalesEffect,
    /// Units, negative for cancellations and refunds.
    pub qty: i64,
    /// qty × unit_price (same sign as `qty`).
    pub amount: i64,
    /// Dataflow time of the event.
    pub ts: Millis,
}

/// One seller's sales in one minute (SPEC §5.5, §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SalesMinute {
    /// Seller.
    pub seller_id: u64,
    /// Start of the minute, epoch ms.
    pub minute: Millis,
    /// Distinct orders paid in the minute with a line of the seller.
    pub orders: u64,
    /// Units of the seller's paid lines.
    pub units: i64,
    /// Σ qty × unit_price of the seller's paid lines.
    pub gross: i64,
    /// Line value of cancellations after payment plus refunded qty × unit_price.
    pub refunds: i64,
    /// gross − refunds.
    pub net: i64,
}

/// Milliseconds in a minute.
pub const MINUTE_MS: Millis = 60_000;

/// How sales are grouped in a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// One minute.
    Minute,
    /// One hour (KST hours and UTC hours share their boundaries).
    Hour,
    /// One KST day.
    Day,
}

impl Bucket {
    /// Parses `minute`, `hour` or `day`.
    pub fn parse(text: &str) -> Option<Bucket> {
        match text {
            "minute" => Some(Bucket::Minute),
            "hour" => Some(Bucket::Hour),
            "day" => Some(Bucket::Day),
            _ => None,
        }
    }

    /// The spelling in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }

    /// (offset, size) in ms (what a SQL store groups by): a bucket starts at ⌊(t + offset) / size⌋ × size − offset.
    pub fn offset_size(self) -> (i64, i64) {
        match self {
            Bucket::Minute => (0, MINUTE_MS as i64),
            Bucket::Hour => (0, 3_600_000),
            Bucket::Day => (crate::time::KST_OFFSET_MS, 86_400_000),
        }
    }

    /// The start of the bucket holding `t` (may be negative near the epoch for days).
    pub fn start(self, t: Millis) -> i64 {
        let (offset, size) = self.offset_size();
        (t as i64 + offset).div_euclid(size) * size - offset
    }
}

/// One bucket of a seller's sales series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesPoint {
    /// Bucket start, epoch ms.
    pub start: i64,
    /// Distinct paid orders.
    pub orders: u64,
    /// Units paid.
    pub units: i64,
    /// Gross paid.
    pub gross: i64,
    /// Refunds (cancelled after payment + refunded line value).
    pub refunds: i64,
    /// gross − refunds.
    pub net: i64,
}

/// Groups minute rollups (of one seller, minutes in the wanted range) into a series.
pub fn series(minutes: impl IntoIterator<Item = SalesMinute>, bucket: Bucket) -> Vec<SalesPoint> {
    let mut out: std::collections::BTreeMap<i64, SalesPoint> = Default::default();
    for m in minutes {
        let start = bucket.start(m.minute);
        let p = out.entry(start).or_insert(SalesPoint {
            start,
            orders: 0,
            units: 0,
            gross: 0,
            refunds: 0,
            net: 0,
        });
        p.orders += m.orders;
        p.units = p.units.saturating_add(m.units);
        p.gross = p.gross.saturating_add(m.gross);
        p.refunds = p.refunds.saturating_add(m.refunds);
        p.net = p.net.saturating_add(m.net);
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_kst_days() {
        // 2026-11-02 00:00 KST = 2026-11-01T15:00:00Z.
        let monday = 1_793_545_200_000u64;
        assert_eq!(Bucket::Day.start(monday), monday as i64);
        assert_eq!(Bucket::Day.start(monday - 1), monday as i64 - 86_400_000);
        assert_eq!(Bucket::Hour.start(monday + 3_599_999), monday as i64);
        assert_eq!(
            Bucket::Minute.start(monday + 61_000),
            monday as i64 + 60_000
        );
        let m = |minute, gross| SalesMinute {
            seller_id: 1,
            minute,
            orders: 1,
            units: 1,
            gross,
            refunds: 0,
            net: gross,
        };
        let s = series(
            [m(monday - 60_000, 5), m(monday, 7), m(monday + 60_000, 11)],
            Bucket::Day,
        );
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].gross, s[1].gross, s[1].orders), (5, 18, 2));
    }
}

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

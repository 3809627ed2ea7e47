//! The typed input events of SPEC §1, as they are after decoding.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// One decoded, schema-valid input event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Producer-assigned unique id (1–128 Unicode scalar values).
    pub event_id: String,
    /// Event time in ms since the Unix epoch, as sent (before the effective-time rule).
    pub ts: Millis,
    /// The type-specific payload.
    pub body: EventBody,
}

/// Shipping option of an order (`shipping` of `order.placed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shipping {
    /// 로켓배송: next-morning delivery.
    Rocket,
    /// 로켓프레시: fresh food before 7 am.
    Fresh,
    /// 새벽배송: dawn delivery.
    Dawn,
    /// 일반배송: 2–3 days.
    Standard,
}

impl Shipping {
    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rocket" => Some(Self::Rocket),
            "fresh" => Some(Self::Fresh),
            "dawn" => Some(Self::Dawn),
            "standard" => Some(Self::Standard),
            _ => None,
        }
    }
}

/// One line of an `order.placed` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    /// Line number, unique within the order.
    pub line_no: u64,
    /// Product.
    pub sku: u64,
    /// Units ordered (1..=1,000,000).
    pub qty: u64,
    /// Price of one unit in KRW (1..=10^12).
    pub unit_price: u64,
}

/// One line of a `refund.completed` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RefundLine {
    /// The order line refunded.
    pub line_no: u64,
    /// Units refunded (1..=1,000,000).
    pub qty: u64,
}

/// The type-specific part of an event; one variant per `type` of SPEC §1.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventBody {
    /// `category.upserted`
    CategoryUpserted {
        /// Category.
        category_id: u64,
        /// Display name.
        name: String,
        /// Commission in basis points (500..=1500).
        commission_bp: u64,
    },
    /// `product.upserted`
    ProductUpserted {
        /// Product.
        sku: u64,
        /// Seller selling it.
        seller_id: u64,
        /// Its category.
        category_id: u64,
        /// Display name.
        name: String,
        /// List price in KRW.
        price: u64,
    },
    /// `stock.received`
    StockReceived {
        /// Product.
        sku: u64,
        /// Units received.
        qty: u64,
    },
    /// `stock.adjusted`
    StockAdjusted {
        /// Product.
        sku: u64,
        /// Correction; never 0.
        delta: i64,
    },
    /// `member.joined`
    MemberJoined {
        /// Member.
        member_id: u64,
    },
    /// `wow.subscribed`
    WowSubscribed {
        /// Member.
        member_id: u64,
    },
    /// `wow.cancelled`
    WowCancelled {
        /// Member.
        member_id: u64,
    },
    /// `order.placed`
    OrderPlaced {
        /// Order.
        order_id: u64,
        /// Buyer.
        member_id: u64,
        /// Shipping option.
        shipping: Shipping,
        /// 1..=200 lines with distinct `line_no`.
        lines: Vec<OrderLine>,
    },
    /// `payment.approved`
    PaymentApproved {
        /// Order.
        order_id: u64,
        /// Amount charged in KRW.
        amount: u64,
    },
    /// `payment.failed`
    PaymentFailed {
        /// Order.
        order_id: u64,
    },
    /// `order.cancelled`
    OrderCancelled {
        /// Order.
        order_id: u64,
    },
    /// `order.shipped`
    OrderShipped {
        /// Order.
        order_id: u64,
    },
    /// `delivery.updated`
    DeliveryUpdated {
        /// Order.
        order_id: u64,
        /// Free text, ≤ 200 characters.
        location: String,
    },
    /// `order.delivered`
    OrderDelivered {
        /// Order.
        order_id: u64,
    },
    /// `order.confirmed` (구매확정)
    OrderConfirmed {
        /// Order.
        order_id: u64,
    },
    /// `return.requested`
    ReturnRequested {
        /// Order.
        order_id: u64,
        /// Free-text reason.
        reason: String,
    },
    /// `return.rejected`
    ReturnRejected {
        /// Order.
        order_id: u64,
    },
    /// `refund.completed`
    RefundCompleted {
        /// Order.
        order_id: u64,
        /// Money returned in KRW (may be 0).
        amount: u64,
        /// The goods passed inspection and go back on hand.
        restock: bool,
        /// 0..=200 refunded lines (none: a money-only refund).
        lines: Vec<RefundLine>,
    },
    /// `review.posted`
    ReviewPosted {
        /// Review; posting an existing id replaces it.
        review_id: u64,
        /// Product reviewed.
        sku: u64,
        /// Author.
        member_id: u64,
        /// 1..=5.
        rating: u64,
    },
    /// `review.deleted`
    ReviewDeleted {
        /// Review.
        review_id: u64,
    },
}

impl EventBody {
    /// The contract's `type` string of this event.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::CategoryUpserted { .. } => "category.upserted",
            Self::ProductUpserted { .. } => "product.upserted",
            Self::StockReceived { .. } => "stock.received",
            Self::StockAdjusted { .. } => "stock.adjusted",
            Self::MemberJoined { .. } => "member.joined",
            Self::WowSubscribed { .. } => "wow.subscribed",
            Self::WowCancelled { .. } => "wow.cancelled",
            Self::OrderPlaced { .. } => "order.placed",
            Self::PaymentApproved { .. } => "payment.approved",
            Self::PaymentFailed { .. } => "payment.failed",
            Self::OrderCancelled { .. } => "order.cancelled",
            Self::OrderShipped { .. } => "order.shipped",
            Self::DeliveryUpdated { .. } => "delivery.updated",
            Self::OrderDelivered { .. } => "order.delivered",
            Self::OrderConfirmed { .. } => "order.confirmed",
            Self::ReturnRequested { .. } => "return.requested",
            Self::ReturnRejected { .. } => "return.rejected",
            Self::RefundCompleted { .. } => "refund.completed",
            Self::ReviewPosted { .. } => "review.posted",
            Self::ReviewDeleted { .. } => "review.deleted",
        }
    }

    /// The order this event belongs to, for the events of `shop.orders`.
    pub fn order_id(&self) -> Option<u64> {
        match self {
            Self::OrderPlaced { order_id, .. }
            | Self::PaymentApproved { order_id, .. }
            | Self::PaymentFailed { order_id }
            | Self::OrderCancelled { order_id }
            | Self::OrderShipped { order_id }
            | Self::DeliveryUpdated { order_id, .. }
            | Self::OrderDelivered { order_id }
            | Self::OrderConfirmed { order_id }
            | Self::ReturnRequested { order_id, .. }
            | Self::ReturnRejected { order_id }
            | Self::RefundCompleted { order_id, .. } => Some(*order_id),
            _ => None,
        }
    }
}

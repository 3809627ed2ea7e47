//! The API's answers as types (SPEC §6): what each route returns, field by field.
//!
//! Fields are declared in alphabetical order, the order the JSON objects had when they were
//! built with `json!` (a sorted map), so the bytes on the wire did not change. List entries
//! are typed here too; a page of them is handed to [`crate::paging`] as JSON values, and a
//! list's envelope (its id, totals, `next_cursor`, `as_of`) is put together by its handler.

use serde::Serialize;
use serde_json::Value;
use shopflow_model::sales::SalesPoint;
use shopflow_model::time::{kst_date, kst_month};
use shopflow_model::{
    AlsoBought, MemberView, Millis, OrderView, Payout, PointsEntry, RatingView, SettlementEntry,
    StockLevel, TaxInvoice,
};

/// A sum of money: a JSON number, or a decimal string beyond ±(2^63 − 1), which no real
/// workload reaches but a 128-bit sum can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money(pub i128);

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(n) => s.serialize_i64(n),
            Err(_) => s.serialize_str(&self.0.to_string()),
        }
    }
}

/// `GET /v1/stock/{sku}`.
#[derive(Debug, Serialize)]
pub struct Stock {
    /// When the answer's data is complete up to.
    pub as_of: Millis,
    /// `on_hand − reserved`.
    pub available: i64,
    /// Units on hand.
    pub on_hand: i64,
    /// Units reserved by open orders.
    pub reserved: i64,
    /// The SKU.
    pub sku: u64,
}

impl Stock {
    /// The answer for `row` as of `as_of`.
    pub fn new(row: &StockLevel, as_of: Millis) -> Self {
        Stock {
            as_of,
            available: row.available,
            on_hand: row.on_hand,
            reserved: row.reserved,
            sku: row.sku,
        }
    }
}

/// One step of an order's history.
#[derive(Debug, Serialize)]
pub struct Step {
    /// The status reached.
    pub status: &'static str,
    /// When (effective time, epoch ms).
    pub ts: Millis,
}

/// `GET /v1/orders/{order_id}` (with `as_of`), and each order of a member's orders.
#[derive(Debug, Serialize)]
pub struct Order<'a> {
    /// When the answer's data is complete up to (not in a member's list of orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<Millis>,
    /// Status changes in time order.
    pub history: Vec<Step>,
    /// Where the delivery is, if known.
    pub location: &'a Option<String>,
    /// The buyer.
    pub member_id: u64,
    /// The order.
    pub order_id: u64,
    /// The current status.
    pub status: &'static str,
}

impl<'a> Order<'a> {
    /// The answer for `row`, with `as_of` when it is a whole answer.
    pub fn new(row: &'a OrderView, as_of: Option<Millis>) -> Self {
        Order {
            as_of,
            history: row
                .history
                .iter()
                .map(|h| Step {
                    status: h.status.as_str(),
                    ts: h.ts,
                })
                .collect(),
            location: &row.location,
            member_id: row.member_id,
            order_id: row.order_id,
            status: row.status.as_str(),
        }
    }
}

/// `GET /v1/members/{member_id}`.
#[derive(Debug, Serialize)]
pub struct Member {
    /// Points accrual rate of the grade, in basis points.
    pub accrual_bp: u32,
    /// When the answer's data is complete up to.
    pub as_of: Millis,
    /// The grade.
    pub grade: &'static str,
    /// The member.
    pub member_id: u64,
    /// Confirmed spend of the last 183 days (KRW).
    pub spend_6m: i64,
    /// Whether the member holds Rocket WOW.
    pub wow: bool,
}

impl Member {
    /// The answer for member `id`'s `row` as of `as_of`.
    pub fn new(id: u64, row: &MemberView, as_of: Millis) -> Self {
        Member {
            accrual_bp: row.accrual_bp,
            as_of,
            grade: row.grade.as_str(),
            member_id: id,
            spend_6m: row.spend_6m,
            wow: row.wow,
        }
    }
}

/// Counts of 1- to 5-star reviews.
#[derive(Debug, Serialize)]
pub struct Histogram {
    #[serde(rename = "1")]
    one: u64,
    #[serde(rename = "2")]
    two: u64,
    #[serde(rename = "3")]
    three: u64,
    #[serde(rename = "4")]
    four: u64,
    #[serde(rename = "5")]
    five: u64,
}

/// `GET /v1/products/{sku}/rating`.
#[derive(Debug, Serialize)]
pub struct Rating {
    /// When the answer's data is complete up to.
    pub as_of: Millis,
    /// `sum / count`; null without reviews.
    pub average: Option<f64>,
    /// Reviews counted.
    pub count: u64,
    /// Reviews by stars.
    pub histogram: Histogram,
    /// The SKU.
    pub sku: u64,
    /// Sum of the stars.
    pub sum: u64,
}

impl Rating {
    /// The answer for `sku`'s `row` as of `as_of`.
    pub fn new(sku: u64, row: &RatingView, as_of: Millis) -> Self {
        let h = row.histogram;
        Rating {
            as_of,
            average: row.average(),
            count: row.count,
            histogram: Histogram {
                one: h[0],
                two: h[1],
                three: h[2],
                four: h[3],
                five: h[4],
            },
            sku,
            sum: row.sum,
        }
    }
}

/// One recommendation.
#[derive(Debug, Serialize)]
pub struct Partner {
    /// The SKU bought with it.
    pub sku: u64,
    /// How often (paid orders within the window).
    pub weight: u64,
}

/// `GET /v1/products/{sku}/also-bought`.
#[derive(Debug, Serialize)]
pub struct AlsoBoughtAnswer {
    /// When the answer's data is complete up to.
    pub as_of: Millis,
    /// The first `limit` partners, by weight descending, then SKU.
    pub items: Vec<Partner>,
    /// The SKU.
    pub sku: u64,
}

impl AlsoBoughtAnswer {
    /// The first `limit` of `row`'s partners as of `as_of`.
    pub fn new(sku: u64, row: &AlsoBought, limit: usize, as_of: Millis) -> Self {
        AlsoBoughtAnswer {
            as_of,
            items: row
                .items
                .iter()
                .take(limit)
                .map(|&(sku, weight)| Partner { sku, weight })
                .collect(),
            sku,
        }
    }
}

/// One points entry of `GET /v1/members/{id}/points`.
#[derive(Debug, Serialize)]
pub struct PointsItem<'a> {
    /// Amount the points were computed from (KRW).
    pub amount: i64,
    /// Why (accrual, clawback).
    pub cause: &'static str,
    /// The entry's id.
    pub id: &'a str,
    /// The order.
    pub order_id: u64,
    /// Points (negative for a clawback).
    pub points: i64,
    /// Rate frozen at confirmation, in basis points.
    pub rate_bp: u32,
    /// When (epoch ms).
    pub ts: Millis,
}

impl<'a> From<&'a PointsEntry> for PointsItem<'a> {
    fn from(e: &'a PointsEntry) -> Self {
        PointsItem {
            amount: e.amount,
            cause: e.cause.as_str(),
            id: &e.id,
            order_id: e.order_id,
            points: e.points,
            rate_bp: e.rate_bp,
            ts: e.ts,
        }
    }
}

/// One settlement entry of `GET /v1/sellers/{id}/settlements`.
#[derive(Debug, Serialize)]
pub struct SettlementItem<'a> {
    /// Why (confirmation, refund).
    pub cause: &'static str,
    /// Commission (KRW).
    pub commission: i64,
    /// Commission rate frozen at confirmation, in basis points.
    pub commission_bp: u32,
    /// Gross (KRW).
    pub gross: i64,
    /// The entry's id.
    pub id: &'a str,
    /// The order line.
    pub line_no: u64,
    /// The order.
    pub order_id: u64,
    /// Payment fee (KRW).
    pub payment_fee: i64,
    /// Payout (KRW).
    pub payout: i64,
    /// Units.
    pub qty: i64,
    /// The SKU.
    pub sku: u64,
    /// When (epoch ms).
    pub ts: Millis,
    /// Unit price (KRW).
    pub unit_price: i64,
}

impl<'a> From<&'a SettlementEntry> for SettlementItem<'a> {
    fn from(e: &'a SettlementEntry) -> Self {
        SettlementItem {
            cause: e.cause.as_str(),
            commission: e.commission,
            commission_bp: e.commission_bp,
            gross: e.gross,
            id: &e.id,
            line_no: e.line_no,
            order_id: e.order_id,
            payment_fee: e.payment_fee,
            payout: e.payout,
            qty: e.qty,
            sku: e.sku,
            ts: e.ts,
            unit_price: e.unit_price,
        }
    }
}

/// One bucket of `GET /v1/sellers/{id}/sales`.
#[derive(Debug, Serialize)]
pub struct SalesItem {
    /// Gross paid (KRW).
    pub gross: i64,
    /// `gross − refunds`.
    pub net: i64,
    /// Distinct paid orders.
    pub orders: u64,
    /// Refunds (KRW).
    pub refunds: i64,
    /// Bucket start (epoch ms).
    pub start: i64,
    /// Units paid.
    pub units: i64,
}

impl From<&SalesPoint> for SalesItem {
    fn from(p: &SalesPoint) -> Self {
        SalesItem {
            gross: p.gross,
            net: p.net,
            orders: p.orders,
            refunds: p.refunds,
            start: p.start,
            units: p.units,
        }
    }
}

/// One week of `GET /v1/sellers/{id}/payouts`.
#[derive(Debug, Serialize)]
pub struct PayoutItem {
    /// Sum of the week's payouts (KRW).
    pub amount: Money,
    /// Entries summed.
    pub entries: u64,
    /// Whether the week is over (the amount no longer changes).
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The week's Monday (KST), `YYYY-MM-DD`.
    pub week_start: String,
}

impl PayoutItem {
    /// The row for `p`.
    pub fn new(p: &Payout, is_final: bool) -> Self {
        PayoutItem {
            amount: Money(p.amount),
            entries: p.entries,
            is_final,
            week_start: kst_date(p.week_start),
        }
    }
}

/// One month of `GET /v1/sellers/{id}/tax-invoices`.
#[derive(Debug, Serialize)]
pub struct InvoiceItem {
    /// Entries summed.
    pub entries: u64,
    /// Whether the month is over.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The month (KST), `YYYY-MM`.
    pub month: String,
    /// Supply value: commissions and payment fees (KRW).
    pub supply: Money,
    /// `supply + vat`.
    pub total: Money,
    /// VAT on the supply.
    pub vat: Money,
}

impl InvoiceItem {
    /// The row for `i`.
    pub fn new(i: &TaxInvoice, is_final: bool) -> Self {
        InvoiceItem {
            entries: i.entries,
            is_final,
            month: kst_month(i.month_start),
            supply: Money(i.supply),
            total: Money(i.total),
            vat: Money(i.vat),
        }
    }
}

/// Entries as the JSON values [`crate::paging::page`] pages.
pub fn values<T: Serialize>(items: impl IntoIterator<Item = T>) -> Vec<Value> {
    items
        .into_iter()
        .map(|i| serde_json::to_value(i).expect("an answer is JSON"))
        .collect()
}

//! Rows of the member and seller views: grades, the points ledger, settlement entries,
//! weekly payouts and monthly tax invoices (SPEC §5.2, §5.3).
//!
//! Entry amounts are `i64` (one line is at most 10^6 × 10^12 KRW); sums over many entries
//! are `i128` so no workload can overflow them.

use serde::{Deserialize, Serialize};

use crate::id::IdBuf;
use crate::Millis;

/// Member grade by 6-month spend (SPEC §5.2).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Grade {
    /// Below 100,000 KRW.
    #[default]
    Bronze,
    /// From 100,000 KRW.
    Silver,
    /// From 500,000 KRW.
    Gold,
    /// From 1,000,000 KRW.
    Vip,
}

impl MemberView {
    /// The row of a member with an exact 6-month spend.
    pub fn new(member_id: u64, spend_6m: i128, wow: bool) -> Self {
        let grade = Grade::of_spend(spend_6m);
        MemberView {
            member_id,
            grade,
            spend_6m: spend_6m.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            accrual_bp: grade.accrual_bp(),
            wow,
        }
    }
}

impl Grade {
    /// The grade of a 6-month spend.
    pub fn of_spend(spend: i128) -> Grade {
        if spend >= 1_000_000 {
            Grade::Vip
        } else if spend >= 500_000 {
            Grade::Gold
        } else if spend >= 100_000 {
            Grade::Silver
        } else {
            Grade::Bronze
        }
    }

    /// Points accrual rate in basis points.
    pub fn accrual_bp(self) -> u32 {
        match self {
            Grade::Bronze => 100,
            Grade::Silver => 200,
            Grade::Gold => 300,
            Grade::Vip => 500,
        }
    }

    /// The contract's spelling, e.g. `VIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::Bronze => "BRONZE",
            Grade::Silver => "SILVER",
            Grade::Gold => "GOLD",
            Grade::Vip => "VIP",
        }
    }
}

/// One member's serving row (SPEC §6 `/v1/members/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberView {
    /// Member.
    pub member_id: u64,
    /// Grade of `spend_6m`.
    pub grade: Grade,
    /// Spend of the member's orders paid in the last 183 days, after refunds (saturating
    /// at the `i64` bounds, far beyond any real spend; the grade uses the exact sum).
    pub spend_6m: i64,
    /// Accrual rate of `grade` in basis points.
    pub accrual_bp: u32,
    /// Rocket WOW subscriber.
    pub wow: bool,
}

/// Why a ledger entry exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryCause {
    /// Purchase confirmation.
    Confirmed,
    /// A refund after confirmation (amounts negated).
    Refund,
}

impl EntryCause {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryCause::Confirmed => "confirmed",
            EntryCause::Refund => "refund",
        }
    }
}

/// One points ledger entry (SPEC §8): immutable once written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PointsEntry {
    /// Deterministic id: `{order_id}:confirmed` or `{order_id}:refund:{n}` where n counts
    /// the order's refunds from 1.
    pub id: String,
    /// Owner of the points.
    pub member_id: u64,
    /// Order.
    pub order_id: u64,
    /// Confirmation or refund.
    pub cause: EntryCause,
    /// Dataflow time of the confirmation or refund.
    pub ts: Millis,
    /// Rate frozen at confirmation.
    pub rate_bp: u32,
    /// Base amount: paid − refunded at confirmation, or −(refund amount).
    pub amount: i64,
    /// floor(|amount| × rate / 10000), negated for refunds.
    pub points: i64,
}

impl PointsEntry {
    /// The entry id for `cause` (`refund` is the order's refund number, from 1).
    pub fn entry_id(order_id: u64, cause: EntryCause, refund: u32) -> String {
        match cause {
            EntryCause::Confirmed => IdBuf::new().num(order_id).word("confirmed").finish(),
            EntryCause::Refund => IdBuf::new()
                .num(order_id)
                .word("refund")
                .num(refund.into())
                .finish(),
        }
    }
}

/// One settlement entry for one order line (SPEC §5.3): immutable once written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SettlementEntry {
    /// Deterministic id: `{order_id}:{line_no}:confirmed` or
    /// `{order_id}:{line_no}:refund:{n}` where n counts the order's refunds from 1.
    pub id: String,
    /// Seller paid (the SKU's seller at the confirmation entry).
    pub seller_id: u64,
    /// Order.
    pub order_id: u64,
    /// Line of the order.
    pub line_no: u64,
    /// Product.
    pub sku: u64,
    /// Confirmation or refund.
    pub cause: EntryCause,
    /// Dataflow time the entry is dated.
    pub ts: Millis,
    /// Units settled (negative for a refund).
    pub qty: i64,
    /// Unit price of the line.
    pub unit_price: i64,
    /// Category commission rate frozen at the confirmation entry.
    pub commission_bp: u32,
    /// qty × unit_price.
    pub gross: i64,
    /// floor(|gross| × commission_bp / 10000), negated for refunds.
    pub commission: i64,
    /// floor(|gross| × 250 / 10000), negated for refunds.
    pub payment_fee: i64,
    /// gross − commission − payment_fee.
    pub payout: i64,
}

/// The payment fee rate in basis points (2.5 %).
pub const PAYMENT_FEE_BP: i128 = 250;

impl SettlementEntry {
    /// The entry id for a line and cause.
    pub fn entry_id(order_id: u64, line_no: u64, cause: EntryCause, refund: u32) -> String {
        match cause {
            EntryCause::Confirmed => IdBuf::new()
                .num(order_id)
                .num(line_no)
                .word("confirmed")
                .finish(),
            EntryCause::Refund => IdBuf::new()
                .num(order_id)
                .num(line_no)
                .word("refund")
                .num(refund.into())
                .finish(),
        }
    }

    /// (gross, commission, payment_fee, payout) of `qty` units, all floor-rounded on the
    /// positive amounts (SPEC §5.3).
    pub fn amounts(qty: u64, unit_price: u64, commission_bp: u32) -> (i64, i64, i64, i64) {
        let gross = qty as i128 * unit_price as i128;
        let commission = gross * commission_bp as i128 / 10_000;
        let fee = gross * PAYMENT_FEE_BP / 10_000;
        let payout = gross - commission - fee;
        (gross as i64, commission as i64, fee as i64, payout as i64)
    }
}

/// The weekly payout of one seller (SPEC §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Payout {
    /// Seller.
    pub seller_id: u64,
    /// Monday 00:00 KST of the week, epoch ms.
    pub week_start: Millis,
    /// Σ payout of the seller's entries dated in the week.
    pub amount: i128,
    /// Number of those entries.
    pub entries: u64,
}

/// The monthly tax invoice (세금계산서) of one seller for the platform's fees (SPEC §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaxInvoice {
    /// Seller.
    pub seller_id: u64,
    /// The 1st 00:00 KST of the month, epoch ms.
    pub month_start: Millis,
    /// Σ (commission + payment_fee) of the entries dated in the month.
    pub supply: i128,
    /// supply / 10, truncated toward zero.
    pub vat: i128,
    /// supply + vat.
    pub total: i128,
    /// Number of entries.
    pub entries: u64,
}

impl TaxInvoice {
    /// The invoice of a month's supply.
    pub fn new(seller_id: u64, month_start: Millis, supply: i128, entries: u64) -> Self {
        let vat = supply / 10; // Rust's integer division truncates toward zero.
        TaxInvoice {
            seller_id,
            month_start,
            supply,
            vat,
            total: supply + vat,
            entries,
        }
    }
}

/// A member's most recent orders by placement, newest first (at most 20).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberOrders {
    /// Member.
    pub member_id: u64,
    /// Order ids, newest placement first (ties: larger id first).
    pub order_ids: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_thresholds_are_inclusive() {
        assert_eq!(Grade::of_spend(99_999), Grade::Bronze);
        assert_eq!(Grade::of_spend(100_000), Grade::Silver);
        assert_eq!(Grade::of_spend(499_999), Grade::Silver);
        assert_eq!(Grade::of_spend(500_000), Grade::Gold);
        assert_eq!(Grade::of_spend(999_999), Grade::Gold);
        assert_eq!(Grade::of_spend(1_000_000), Grade::Vip);
        assert_eq!(Grade::of_spend(-5), Grade::Bronze);
    }

    #[test]
    fn settlement_amounts_floor_and_fit() {
        // 3 × 33,333 = 99,999: commission 10.8 % → 10,799.892 → 10,799; fee 2,499.975 → 2,499.
        assert_eq!(
            SettlementEntry::amounts(3, 33_333, 1080),
            (99_999, 10_799, 2_499, 86_701)
        );
        // The largest line: 10^6 × 10^12 at 15 % needs 128-bit intermediates.
        let (g, c, f, p) = SettlementEntry::amounts(1_000_000, 1_000_000_000_000, 1500);
        assert_eq!(g, 1_000_000_000_000_000_000);
        assert_eq!(c, 150_000_000_000_000_000);
        assert_eq!(f, 25_000_000_000_000_000);
        assert_eq!(g - c - f, p);
    }

    #[test]
    fn vat_truncates_toward_zero() {
        assert_eq!(TaxInvoice::new(1, 0, 1_234, 1).vat, 123);
        assert_eq!(TaxInvoice::new(1, 0, -1_234, 1).vat, -123);
        assert_eq!(TaxInvoice::new(1, 0, -1_234, 1).total, -1_357);
    }
}

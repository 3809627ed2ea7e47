//! Seller settlements (SPEC §5.3, §8): the commission ledger, weekly payouts and monthly
//! tax invoices.

use differential_dataflow::operators::count::CountTotal;
use differential_dataflow::{AsCollection, VecCollection};
use shopflow_ingest::lifecycle::OrderState;
use shopflow_model::time::{kst_month_start, kst_week_start};
use shopflow_model::{EntryCause, Millis, Payout, SettlementEntry, TaxInvoice};
use timely::dataflow::operators::vec::Map;

use crate::lookup::lookup_when_known;

/// One accepted `product.upserted`: (dataflow time, partition, offset, (seller, category)).
/// The latest by this tuple is the product's current listing.
pub type ProductEvent = (Millis, i32, i64, (u64, u64));

/// One accepted `category.upserted`: (dataflow time, partition, offset, commission_bp).
pub type CategoryEvent = (Millis, i32, i64, u32);

/// What a line's settlement is frozen at: (line_no, seller, commission_bp, dated).
type LineTerms = (u64, u64, u32, Millis);

/// Everything the settlement views produce.
pub struct SettlementOutputs<'s> {
    /// Ledger entries (only ever added).
    pub entries: VecCollection<'s, Millis, SettlementEntry, isize>,
    /// Weekly payouts per seller.
    pub payouts: VecCollection<'s, Millis, Payout, isize>,
    /// Monthly tax invoices per seller.
    pub invoices: VecCollection<'s, Millis, TaxInvoice, isize>,
    /// Known sellers.
    pub sellers: VecCollection<'s, Millis, u64, isize>,
}

/// Each SKU's current listing (seller, category): its latest `product.upserted`.
pub fn listings<'s>(
    products: VecCollection<'s, Millis, (u64, ProductEvent), isize>,
) -> VecCollection<'s, Millis, (u64, (u64, u64)), isize> {
    products.reduce_named("CurrentListing", |_sku, input, output| {
        // Sorted by (time, partition, offset): the last is the latest.
        let ((_, _, _, listing), _) = input[input.len() - 1];
        output.push((*listing, 1isize));
    })
}

/// Builds the settlement views from order states, the known sellers (each fed once, at
/// the earliest `product.upserted` naming it), the current listings (see [`listings`])
/// and the categories' upserts.
pub fn settlements<'s>(
    states: VecCollection<'s, Millis, (u64, OrderState), isize>,
    sellers: VecCollection<'s, Millis, u64, isize>,
    listing: VecCollection<'s, Millis, (u64, (u64, u64)), isize>,
    categories: VecCollection<'s, Millis, (u64, CategoryEvent), isize>,
) -> SettlementOutputs<'s> {
    let sellers = sellers.distinct();
    let rates = categories.reduce_named("CurrentRate", |_category, input, output| {
        let ((_, _, _, bp), _) = input[input.len() - 1];
        output.push((*bp, 1isize));
    });
    // sku → (seller, commission_bp), present once both the SKU and its category are known.
    let terms = listing
        .map(|(sku, (seller, category))| (category, (sku, seller)))
        .join_map(rates, |_category, (sku, seller), bp| (*sku, (*seller, *bp)));

    // One query per confirmed line with units left at confirmation.
    let queries = states.clone().flat_map(|(order_id, s)| {
        let mut lines = Vec::new();
        if s.confirmed_applied.is_some() {
            for (i, l) in s.lines.iter().enumerate() {
                if s.settled_qty(i) > 0 {
                    lines.push((l.line.sku, (order_id, l.line.line_no)));
                }
            }
        }
        lines
    });
    let frozen = lookup_when_known(queries, terms, "SettlementTerms")
        .map(|((order_id, line_no), (seller, bp), at)| (order_id, (line_no, seller, bp, at)));
    let entries = states
        .join_map(frozen, |_, state, terms| line_entries(state, *terms))
        .flat_map(|e| e);

    let payouts = entries
        .clone()
        .inner
        .map(|(e, t, d)| {
            let d = d as i128;
            (
                (e.seller_id, kst_week_start(e.ts)),
                t,
                (e.payout as i128 * d, d),
            )
        })
        .as_collection()
        .count_total()
        .map(|((seller_id, week_start), (amount, n))| Payout {
            seller_id,
            week_start,
            amount,
            entries: n as u64,
        });
    let invoices = entries
        .clone()
        .inner
        .map(|(e, t, d)| {
            let d = d as i128;
            let fees = e.commission as i128 + e.payment_fee as i128;
            ((e.seller_id, kst_month_start(e.ts)), t, (fees * d, d))
        })
        .as_collection()
        .count_total()
        .map(|((seller_id, month_start), (supply, n))| {
            TaxInvoice::new(seller_id, month_start, supply, n as u64)
        });

    SettlementOutputs {
        entries,
        payouts,
        invoices,
        sellers,
    }
}

/// The settlement entries of one confirmed line on its frozen terms: the confirmation
/// entry on the units left at confirmation, dated when the terms were read, and one
/// negated entry per later refund of the line, dated max(refund time, that date).
pub fn line_entries(
    state: &OrderState,
    (line_no, seller, bp, dated): LineTerms,
) -> Vec<SettlementEntry> {
    let Some(i) = state.lines.iter().position(|l| l.line.line_no == line_no) else {
        return Vec::new();
    };
    let line = state.lines[i].line;
    let entry = |cause, refund: u32, ts, qty: u64, sign: i64| {
        let (gross, commission, payment_fee, payout) =
            SettlementEntry::amounts(qty, line.unit_price, bp);
        SettlementEntry {
            id: SettlementEntry::entry_id(state.order_id, line_no, cause, refund),
            seller_id: seller,
            order_id: state.order_id,
            line_no,
            sku: line.sku,
            cause,
            ts,
            qty: sign * qty as i64,
            unit_price: line.unit_price as i64,
            commission_bp: bp,
            gross: sign * gross,
            commission: sign * commission,
            payment_fee: sign * payment_fee,
            payout: sign * payout,
        }
    };
    let mut entries = vec![entry(
        EntryCause::Confirmed,
        0,
        dated,
        state.settled_qty(i),
        1,
    )];
    for (n, refund) in state
        .refunds
        .iter()
        .enumerate()
        .skip(state.confirmed_refunds)
    {
        for &(li, qty) in &refund.lines {
            if li == i {
                let ts = refund.applied.max(dated);
                entries.push(entry(EntryCause::Refund, n as u32 + 1, ts, qty, -1));
            }
        }
    }
    entries
}

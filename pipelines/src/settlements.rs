//! Per-seller views (SPEC §5.3, §5.5, §8): weekly payouts, monthly tax invoices, the
//! per-minute sales rollups, and the sellers known.

use std::collections::HashSet;

use shopflow_model::sales::MINUTE_MS;
use shopflow_model::time::{kst_month_start, kst_week_start};
use shopflow_model::{
    Millis, Payout, SalesEffect, SalesFact, SalesMinute, SettlementEntry, TaxInvoice,
};
use shopflow_state::LazyMap;
use timely::dataflow::channels::pact::Exchange;

use crate::ordered::{ordered, Ctx, Timed};
use crate::output::Row;

type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// One record for the per-seller views, keyed by seller.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SellerMsg {
    /// A `product.upserted` named the seller.
    Named,
    /// A settlement entry of the seller.
    Entry(SettlementEntry),
    /// A sales fact of the seller, and whether its order had been paid.
    Fact(SalesFact, bool),
}

/// Builds the per-seller rows: a seller is known from the first `product.upserted` naming
/// it; payouts sum each week's (KST) entries, tax invoices each month's fees; minute
/// rollups count paid orders, paid units and gross, and refunds (cancellations after
/// payment and refunded units), per line. Entries and facts pass through as rows.
pub fn sellers<'s>(records: Timed<'s, (u64, SellerMsg)>, ctx: &Ctx) -> Timed<'s, Row> {
    let by_seller = Exchange::new(|((s, _), _): &((u64, SellerMsg), Millis)| *s);
    // The sellers known; the sums per (seller, week) and (seller, month); the minute
    // rollups; and (seller, minute, order) of every paid order counted in a minute. The
    // last four grow with time and are read back lazily after a restart.
    type State = (
        FastSet<u64>,
        LazyMap<(u64, Millis), (i128, u64)>,
        LazyMap<(u64, Millis), (i128, u64)>,
        LazyMap<(u64, Millis), SalesMinute>,
        LazyMap<(u64, Millis, u64), ()>,
    );
    ordered(
        records,
        by_seller,
        "Sellers",
        ctx,
        move |(known, payouts, invoices, minutes, paid_orders): &mut State, time, records, out| {
            let mut weeks: Vec<(u64, Millis)> = Vec::new();
            let mut months: Vec<(u64, Millis)> = Vec::new();
            let mut mins: Vec<(u64, Millis)> = Vec::new();
            for (seller, msg) in records.drain(..) {
                match msg {
                    SellerMsg::Named => {
                        if known.insert(seller) {
                            out.push((Row::Seller(seller), time));
                        }
                    }
                    SellerMsg::Entry(e) => {
                        let week = (seller, kst_week_start(e.ts));
                        let p = payouts.get_or_default(week);
                        p.0 += e.payout as i128;
                        p.1 += 1;
                        weeks.push(week);
                        let month = (seller, kst_month_start(e.ts));
                        let i = invoices.get_or_default(month);
                        i.0 += e.commission as i128 + e.payment_fee as i128;
                        i.1 += 1;
                        months.push(month);
                        out.push((Row::Settlement(e), time));
                    }
                    SellerMsg::Fact(f, paid) => {
                        let counts = match f.effect {
                            SalesEffect::Paid | SalesEffect::Refunded => true,
                            SalesEffect::Cancelled => paid,
                            _ => false,
                        };
                        if counts {
                            let minute = f.ts - f.ts % MINUTE_MS;
                            let row =
                                minutes.get_or_insert_with((seller, minute), || SalesMinute {
                                    seller_id: seller,
                                    minute,
                                    orders: 0,
                                    units: 0,
                                    gross: 0,
                                    refunds: 0,
                                    net: 0,
                                });
                            if f.effect == SalesEffect::Paid {
                                if paid_orders.add((seller, minute, f.order_id)) {
                                    row.orders += 1;
                                }
                                row.units = row.units.saturating_add(f.qty);
                                row.gross = row.gross.saturating_add(f.amount);
                            } else {
                                row.refunds = row.refunds.saturating_add(f.amount.saturating_abs());
                            }
                            row.net = row.gross.saturating_sub(row.refunds);
                            mins.push((seller, minute));
                        }
                        out.push((Row::SalesFact(f), time));
                    }
                }
            }
            for keys in [&mut weeks, &mut months, &mut mins] {
                keys.sort_unstable();
                keys.dedup();
            }
            for (seller_id, week_start) in weeks {
                let (amount, entries) = *payouts
                    .get(&(seller_id, week_start))
                    .expect("a week just summed");
                out.push((
                    Row::Payout(Payout {
                        seller_id,
                        week_start,
                        amount,
                        entries,
                    }),
                    time,
                ));
            }
            for (seller_id, month_start) in months {
                let (supply, entries) = *invoices
                    .get(&(seller_id, month_start))
                    .expect("a month just summed");
                let invoice = TaxInvoice::new(seller_id, month_start, supply, entries);
                out.push((Row::Invoice(invoice), time));
            }
            for key in mins {
                let row = *minutes.get(&key).expect("a minute just counted");
                out.push((Row::SalesMinute(row), time));
            }
        },
    )
}

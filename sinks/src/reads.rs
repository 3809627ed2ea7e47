//! The stores as the query API reads them: every answer comes with the `as_of` of the
//! data it was read from.

use shopflow_model::{
    AlsoBought, MemberView, Millis, OrderView, Payout, PointsEntry, RatingView, SettlementEntry,
    StockLevel, TaxInvoice,
};

use crate::memory::MemoryStore;
use crate::mysql::MysqlLedger;
use crate::redis::RedisViews;
use crate::SinkError;

/// The serving views as the query API reads them.
#[derive(Clone, Debug)]
pub enum ServingViews {
    /// The in-process store.
    Memory(MemoryStore),
    /// Redis.
    Redis(RedisViews),
}

impl ServingViews {
    /// A stock row and the `as_of` of the answer.
    pub async fn stock(&self, sku: u64) -> Result<Option<(StockLevel, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.stock
                    .get(&sku)
                    .map(|(row, _)| (*row, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.stock(sku).await,
        }
    }

    /// An order row and the `as_of` of the answer.
    pub async fn order(&self, order_id: u64) -> Result<Option<(OrderView, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.orders
                    .get(&order_id)
                    .map(|row| (row.into_owned().0, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.order(order_id).await,
        }
    }

    /// A SKU's ratings: `None` if the SKU is unknown, zeros if it has no review.
    pub async fn rating(&self, sku: u64) -> Result<Option<(RatingView, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                let known = s.stock.contains_key(&sku);
                let row = s.ratings.get(&sku).copied();
                (known || row.is_some()).then(|| {
                    (
                        row.unwrap_or(RatingView {
                            sku,
                            ..RatingView::default()
                        }),
                        s.as_of.unwrap_or(0),
                    )
                })
            })),
            ServingViews::Redis(r) => r.rating(sku).await,
        }
    }

    /// A SKU's recommendations: `None` if the SKU is unknown, empty if it has none.
    pub async fn also_bought(&self, sku: u64) -> Result<Option<(AlsoBought, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                let known = s.stock.contains_key(&sku);
                let row = s.also_bought.get(&sku).cloned();
                (known || row.is_some()).then(|| {
                    (
                        row.unwrap_or(AlsoBought {
                            sku,
                            items: Vec::new(),
                        }),
                        s.as_of.unwrap_or(0),
                    )
                })
            })),
            ServingViews::Redis(r) => r.also_bought(sku).await,
        }
    }

    /// A member row and the `as_of` of the answer.
    pub async fn member(&self, member_id: u64) -> Result<Option<(MemberView, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.members
                    .get(&member_id)
                    .map(|row| (*row, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.member(member_id).await,
        }
    }

    /// A member's most recent orders, newest first: `None` if the member is unknown.
    pub async fn member_orders(
        &self,
        member_id: u64,
    ) -> Result<Option<(Vec<OrderView>, Millis)>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| {
                s.members.get(&member_id)?;
                let ids = s
                    .member_orders
                    .get(&member_id)
                    .map(|m| m.order_ids.clone())
                    .unwrap_or_default();
                let orders = ids
                    .iter()
                    .filter_map(|id| s.orders.get(id).map(|row| row.into_owned().0))
                    .collect();
                Some((orders, s.as_of.unwrap_or(0)))
            })),
            ServingViews::Redis(r) => r.member_orders(member_id).await,
        }
    }

    /// The `as_of` of the views, if any batch was written.
    pub async fn as_of(&self) -> Result<Option<Millis>, SinkError> {
        match self {
            ServingViews::Memory(m) => Ok(m.read(|s| s.as_of)),
            ServingViews::Redis(r) => r.as_of().await,
        }
    }
}

/// The ledgers as the query API reads them. Every answer comes with the ledger's `as_of`.
#[derive(Clone, Debug)]
pub enum LedgerViews {
    /// The in-process store.
    Memory(MemoryStore),
    /// MySQL or MariaDB.
    Mysql(MysqlLedger),
}

/// A seller's payouts or tax invoices with their `final` flags.
pub type Periods<T> = Vec<(T, bool)>;

impl LedgerViews {
    /// The ledger's `as_of` (0 before the first batch).
    pub async fn as_of(&self) -> Result<Millis, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| s.as_of.unwrap_or(0))),
            LedgerViews::Mysql(l) => Ok(l.as_of().await?.unwrap_or(0)),
        }
    }

    /// A member's points entries by time: `None` if the member is unknown.
    pub async fn points(
        &self,
        member_id: u64,
    ) -> Result<Option<(Vec<PointsEntry>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.members.get(&member_id)?;
                // In (ts, id) order: the key's order within the member.
                let entries = crate::memory::ledger_range(&s.points, member_id, 0, Millis::MAX);
                Some((entries, s.as_of.unwrap_or(0)))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.member_known(member_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.points(member_id).await?, as_of)))
            }
        }
    }

    /// Whether any accepted `product.upserted` named the seller.
    pub async fn seller_known(&self, seller_id: u64) -> Result<bool, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| s.sellers.contains(&seller_id))),
            LedgerViews::Mysql(l) => l.seller_known(seller_id).await,
        }
    }

    /// A seller's settlement entries dated in [from, to): `None` if the seller is unknown.
    pub async fn settlements(
        &self,
        seller_id: u64,
        from: Millis,
        to: Millis,
    ) -> Result<Option<(Vec<SettlementEntry>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.sellers.get(&seller_id)?;
                // In (ts, id) order: the key's order within the seller.
                let entries = crate::memory::ledger_range(&s.settlements, seller_id, from, to);
                Some((entries, s.as_of.unwrap_or(0)))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.seller_known(seller_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.settlements(seller_id, from, to).await?, as_of)))
            }
        }
    }

    /// A seller's weekly payouts with `final` flags: `None` if the seller is unknown.
    pub async fn payouts(
        &self,
        seller_id: u64,
    ) -> Result<Option<(Periods<Payout>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.sellers.get(&seller_id)?;
                let as_of = s.as_of.unwrap_or(0);
                let rows = s
                    .payouts
                    .range((seller_id, 0)..=(seller_id, Millis::MAX))
                    .map(|(_, p)| {
                        let fin = as_of >= shopflow_model::time::kst_next_week_start(p.week_start);
                        (*p, fin)
                    })
                    .collect();
                Some((rows, as_of))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.seller_known(seller_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.payouts(seller_id).await?, as_of)))
            }
        }
    }

    /// A seller's monthly tax invoices with `final` flags: `None` if the seller is unknown.
    pub async fn invoices(
        &self,
        seller_id: u64,
    ) -> Result<Option<(Periods<TaxInvoice>, Millis)>, SinkError> {
        match self {
            LedgerViews::Memory(m) => Ok(m.read(|s| {
                s.sellers.get(&seller_id)?;
                let as_of = s.as_of.unwrap_or(0);
                let rows = s
                    .invoices
                    .range((seller_id, 0)..=(seller_id, Millis::MAX))
                    .map(|(_, i)| {
                        let fin =
                            as_of >= shopflow_model::time::kst_next_month_start(i.month_start);
                        (*i, fin)
                    })
                    .collect();
                Some((rows, as_of))
            })),
            LedgerViews::Mysql(l) => {
                let as_of = self.as_of().await?;
                if !l.seller_known(seller_id).await? {
                    return Ok(None);
                }
                Ok(Some((l.invoices(seller_id).await?, as_of)))
            }
        }
    }
}

//! The embedded default store: every view, alert and dead letter in process memory.

use std::collections::{BTreeMap, BTreeSet};

/// The store's keyed rows: foldhash (fast for integer keys; the keys are ids the pipeline
/// produced, not attacker-chosen input).
pub type RowMap<K, V> = foldhash::HashMap<K, V>;
use std::sync::{Arc, RwLock};

use shopflow_model::{
    Alert, AlsoBought, DeadLetter, MemberOrders, MemberView, Millis, OrderView, Output, Payout,
    PointsEntry, RatingView, SalesFact, SalesMinute, SettlementEntry, StockLevel, TaxInvoice,
    ViewBatch,
};

use crate::SinkError;

/// What the store holds.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryState {
    /// `as_of` of the last batch applied.
    pub as_of: Option<Millis>,
    /// The input was bounded and is fully processed.
    pub complete: bool,
    /// Stock rows with the `as_of` they were written at.
    pub stock: RowMap<u64, (StockLevel, Millis)>,
    /// Order rows with the `as_of` they were written at.
    pub orders: RowMap<u64, (OrderView, Millis)>,
    /// Rating rows.
    pub ratings: RowMap<u64, RatingView>,
    /// Recommendation rows.
    pub also_bought: RowMap<u64, AlsoBought>,
    /// Member rows.
    pub members: RowMap<u64, MemberView>,
    /// Recent orders per member.
    pub member_orders: RowMap<u64, MemberOrders>,
    /// The points ledger by (member, ts, entry id): a member's entries in time order are
    /// one range. An entry never changes once written, so writing it again (a replay)
    /// finds the same key.
    pub points: BTreeMap<(u64, Millis, String), PointsEntry>,
    /// The settlement ledger by (seller, ts, entry id): a seller's entries in a time range
    /// are one range.
    pub settlements: BTreeMap<(u64, Millis, String), SettlementEntry>,
    /// Weekly payouts by (seller, week start).
    pub payouts: BTreeMap<(u64, Millis), Payout>,
    /// Monthly tax invoices by (seller, month start).
    pub invoices: BTreeMap<(u64, Millis), TaxInvoice>,
    /// Known sellers.
    pub sellers: BTreeSet<u64>,
    /// Sales facts by id.
    pub sales_facts: BTreeMap<String, SalesFact>,
    /// Minute rollups by (seller, minute).
    pub sales_minutes: BTreeMap<(u64, Millis), SalesMinute>,
    /// Alerts in the order written.
    pub alerts: Vec<Alert>,
    /// Dead letters in the order written.
    pub dead_letters: Vec<DeadLetter>,
}

/// A cheaply cloneable handle to an in-process store.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<MemoryState>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one pipeline output. A view batch older than the store is skipped.
    pub fn apply(&self, output: Output) {
        let mut s = self.inner.write().expect("memory store lock");
        match output {
            Output::Views(batch) => apply_views(&mut s, batch),
            Output::DeadLetters(d) => s.dead_letters.extend(d),
            Output::Checkpoint(c) => {
                let image = bincode::serialize(&*s);
                let as_of = s.as_of;
                drop(s);
                let result = match image {
                    Ok(image) => c.commit(shopflow_model::StoreImages {
                        memory: vec![image],
                        files: Vec::new(),
                        as_of,
                    }),
                    Err(e) => Some(Err(e.to_string())),
                };
                if let Some(Err(e)) = result {
                    tracing::warn!(error = %e, "checkpoint not written");
                }
            }
        }
    }

    /// The whole store, serialized: what a checkpoint keeps of it.
    pub fn image(&self) -> Result<Vec<u8>, SinkError> {
        let s = self.inner.read().expect("memory store lock");
        bincode::serialize(&*s).map_err(|e| SinkError::Checkpoint(e.to_string()))
    }

    /// Replaces the store's contents with an [`MemoryStore::image`] (a restart from a
    /// checkpoint).
    pub fn restore(&self, image: &[u8]) -> Result<(), SinkError> {
        let state: MemoryState =
            bincode::deserialize(image).map_err(|e| SinkError::Checkpoint(e.to_string()))?;
        *self.inner.write().expect("memory store lock") = state;
        Ok(())
    }

    /// Appends alerts.
    pub fn push_alerts(&self, alerts: &[Alert]) {
        let mut s = self.inner.write().expect("memory store lock");
        s.alerts.extend_from_slice(alerts);
    }

    /// Appends dead letters.
    pub fn push_dead_letters(&self, dead: &[DeadLetter]) {
        let mut s = self.inner.write().expect("memory store lock");
        s.dead_letters.extend_from_slice(dead);
    }

    /// Applies the rows of a batch (not its alerts).
    pub fn write_views(&self, batch: &ViewBatch) {
        let rows_only = ViewBatch {
            alerts: Vec::new(),
            ..batch.clone()
        };
        self.write_views_owned(rows_only);
    }

    /// Applies the rows of a batch (not its alerts), taking it: no copy of its rows.
    pub fn write_views_owned(&self, mut batch: ViewBatch) {
        batch.alerts.clear();
        let mut s = self.inner.write().expect("memory store lock");
        apply_views(&mut s, batch);
    }

    /// Whether `other` is a handle to this same store.
    pub fn same_store(&self, other: &MemoryStore) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Reads the store.
    pub fn read<R>(&self, f: impl FnOnce(&MemoryState) -> R) -> R {
        f(&self.inner.read().expect("memory store lock"))
    }
}

fn apply_views(s: &mut MemoryState, batch: ViewBatch) {
    if s.as_of.is_some_and(|a| a > batch.as_of) {
        return;
    }
    for row in batch.stock {
        s.stock.insert(row.sku, (row, batch.as_of));
    }
    for row in batch.orders {
        s.orders.insert(row.order_id, (row, batch.as_of));
    }
    for row in batch.ratings {
        s.ratings.insert(row.sku, row);
    }
    for sku in batch.ratings_removed {
        s.ratings.remove(&sku);
    }
    for row in batch.also_bought {
        s.also_bought.insert(row.sku, row);
    }
    for sku in batch.also_bought_removed {
        s.also_bought.remove(&sku);
    }
    for row in batch.members {
        s.members.insert(row.member_id, row);
    }
    for row in batch.member_orders {
        s.member_orders.insert(row.member_id, row);
    }
    for e in batch.points {
        s.points.insert((e.member_id, e.ts, e.id.clone()), e);
    }
    for e in batch.settlements {
        s.settlements.insert((e.seller_id, e.ts, e.id.clone()), e);
    }
    for p in batch.payouts {
        s.payouts.insert((p.seller_id, p.week_start), p);
    }
    for i in batch.invoices {
        s.invoices.insert((i.seller_id, i.month_start), i);
    }
    s.sellers.extend(batch.sellers);
    for f in batch.sales_facts {
        s.sales_facts.insert(f.id.clone(), f);
    }
    for m in batch.sales_minutes {
        s.sales_minutes.insert((m.seller_id, m.minute), m);
    }
    s.alerts.extend(batch.alerts);
    s.as_of = Some(batch.as_of);
    s.complete |= batch.complete;
}

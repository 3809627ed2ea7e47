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
use shopflow_state::{PagedMap, Part};

use crate::SinkError;

/// What the store holds.
///
/// The tables that grow with the log (orders, ledgers, sales facts and minute rollups) are
/// [`PagedMap`]s: written by upserts, read by key or key range, and after a restart from a
/// checkpoint left in the checkpoint's sorted pages until read. The tables that grow with
/// the catalog and the members are ordinary maps, restored whole.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryState {
    /// `as_of` of the last batch applied.
    pub as_of: Option<Millis>,
    /// The input was bounded and is fully processed.
    pub complete: bool,
    /// Stock rows with the `as_of` they were written at.
    pub stock: RowMap<u64, (StockLevel, Millis)>,
    /// Order rows with the `as_of` they were written at.
    pub orders: PagedMap<u64, (OrderView, Millis)>,
    /// Rating rows.
    pub ratings: RowMap<u64, RatingView>,
    /// Recommendation rows.
    pub also_bought: RowMap<u64, AlsoBought>,
    /// Member rows.
    pub members: RowMap<u64, MemberView>,
    /// Recent orders per member.
    pub member_orders: RowMap<u64, MemberOrders>,
    /// The points ledger in (member, ts, entry id) order: a member's entries in time order
    /// are one range. An entry never changes once written, so writing it again (a replay)
    /// finds the same place.
    pub points: PagedMap<Dated<PointsEntry>, ()>,
    /// The settlement ledger in (seller, ts, entry id) order: a seller's entries in a time
    /// range are one range.
    pub settlements: PagedMap<Dated<SettlementEntry>, ()>,
    /// Weekly payouts by (seller, week start).
    pub payouts: BTreeMap<(u64, Millis), Payout>,
    /// Monthly tax invoices by (seller, month start).
    pub invoices: BTreeMap<(u64, Millis), TaxInvoice>,
    /// Known sellers.
    pub sellers: BTreeSet<u64>,
    /// Sales facts in (order, fact id) order: the store's largest table, about 11 facts
    /// per order (8M at 5M events). Order ids grow with time, so the facts a restart goes
    /// on writing land on the last pages; see [`MemoryState::fact`].
    pub sales_facts: PagedMap<ByOrder, ()>,
    /// Minute rollups by (seller, minute).
    pub sales_minutes: PagedMap<(u64, Millis), SalesMinute>,
    /// Alerts in the order written.
    pub alerts: Vec<Alert>,
    /// Dead letters in the order written.
    pub dead_letters: Vec<DeadLetter>,
}

/// A ledger entry: it belongs to one owner (a member, a seller) and has a time and an id.
pub trait LedgerEntry {
    /// The member or seller the entry belongs to.
    fn owner(&self) -> u64;
    /// The entry's time.
    fn ts(&self) -> Millis;
    /// The entry's unique id (the tie order at one time).
    fn id(&self) -> &str;
}

impl LedgerEntry for PointsEntry {
    fn owner(&self) -> u64 {
        self.member_id
    }
    fn ts(&self) -> Millis {
        self.ts
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl LedgerEntry for SettlementEntry {
    fn owner(&self) -> u64 {
        self.seller_id
    }
    fn ts(&self) -> Millis {
        self.ts
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// A ledger entry in an ordered set, ordered by (owner, ts, id) without a copy of that key
/// beside it; or a probe, which sorts before every entry of its owner and time and so marks
/// where a range starts or ends. Only entries are stored.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Dated<E> {
    /// A stored entry.
    Entry(E),
    /// A position: before the entries of `.0` at time `.1`.
    Probe(u64, Millis),
}

impl<E: LedgerEntry> Dated<E> {
    fn key(&self) -> (u64, Millis, Option<&str>) {
        match self {
            Dated::Entry(e) => (e.owner(), e.ts(), Some(e.id())),
            Dated::Probe(owner, ts) => (*owner, *ts, None),
        }
    }

    /// The entry, `None` for a probe.
    pub fn entry(&self) -> Option<&E> {
        match self {
            Dated::Entry(e) => Some(e),
            Dated::Probe(..) => None,
        }
    }
}

impl<E: LedgerEntry> PartialEq for Dated<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<E: LedgerEntry> Eq for Dated<E> {}

impl<E: LedgerEntry> PartialOrd for Dated<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<E: LedgerEntry> Ord for Dated<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The entries of `owner` dated in [from, to), in (ts, id) order.
pub fn ledger_range<E>(set: &PagedMap<Dated<E>, ()>, owner: u64, from: Millis, to: Millis) -> Vec<E>
where
    E: LedgerEntry + Clone + serde::Serialize + serde::de::DeserializeOwned,
{
    set.range(Dated::Probe(owner, from)..Dated::Probe(owner, to))
        .into_iter()
        .filter_map(|(d, ())| match d {
            Dated::Entry(e) => Some(e),
            Dated::Probe(..) => None,
        })
        .collect()
}

/// A sales fact in a set ordered by (order, fact id); or a probe, which sorts before
/// every fact of its order. Only facts are stored.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum ByOrder {
    /// A stored fact.
    Fact(SalesFact),
    /// A position: before the facts of order `.0`.
    Probe(u64),
}

impl ByOrder {
    fn key(&self) -> (u64, Option<&str>) {
        match self {
            ByOrder::Fact(f) => (f.order_id, Some(&f.id)),
            ByOrder::Probe(order) => (*order, None),
        }
    }
}

impl PartialEq for ByOrder {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByOrder {}

impl PartialOrd for ByOrder {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByOrder {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl MemoryState {
    /// The sales fact with id `id` of order `order_id`.
    pub fn fact(&self, order_id: u64, id: &str) -> Option<SalesFact> {
        self.sales_facts
            .range(ByOrder::Probe(order_id)..ByOrder::Probe(order_id.saturating_add(1)))
            .into_iter()
            .find_map(|(f, ())| match f {
                ByOrder::Fact(f) if f.id == id => Some(f),
                _ => None,
            })
    }

    /// Every sales fact, in (order, id) order (decodes every saved page).
    pub fn facts(&self) -> Vec<SalesFact> {
        self.sales_facts
            .entries()
            .into_iter()
            .filter_map(|(f, ())| match f {
                ByOrder::Fact(f) => Some(f),
                ByOrder::Probe(_) => None,
            })
            .collect()
    }
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
                let image = Part::save(&*s);
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
                match result {
                    // Continue from the image in the file (see the sink writer's commit).
                    Some(Ok(committed)) => {
                        if let Some(Err(e)) = committed.memory.first().map(|m| self.restore(m)) {
                            tracing::warn!(error = %e, "in-process store not moved onto the checkpoint: {e}");
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "checkpoint not written"),
                    None => {}
                }
            }
        }
    }

    /// The whole store, serialized: what a checkpoint keeps of it (its paged tables as
    /// sorted pages in the part's side data).
    pub fn image(&self) -> Result<Part, SinkError> {
        let s = self.inner.read().expect("memory store lock");
        Part::save(&*s).map_err(|e| SinkError::Checkpoint(e.to_string()))
    }

    /// Replaces the store's contents with an [`MemoryStore::image`] (a restart from a
    /// checkpoint). The paged tables stay in the image's side data until read.
    pub fn restore(&self, image: &Part) -> Result<(), SinkError> {
        let state: MemoryState = image
            .restore()
            .map_err(|e| SinkError::Checkpoint(e.to_string()))?;
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
        s.points.replace(Dated::Entry(e), ());
    }
    for e in batch.settlements {
        s.settlements.replace(Dated::Entry(e), ());
    }
    for p in batch.payouts {
        s.payouts.insert((p.seller_id, p.week_start), p);
    }
    for i in batch.invoices {
        s.invoices.insert((i.seller_id, i.month_start), i);
    }
    s.sellers.extend(batch.sellers);
    for f in batch.sales_facts {
        // A fact written again (a replay) replaces the one of its id.
        s.sales_facts.replace(ByOrder::Fact(f), ());
    }
    for m in batch.sales_minutes {
        s.sales_minutes.insert((m.seller_id, m.minute), m);
    }
    s.alerts.extend(batch.alerts);
    s.as_of = Some(batch.as_of);
    s.complete |= batch.complete;
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopflow_model::EntryCause;

    fn points(member_id: u64, ts: Millis, id: &str, amount: i64) -> PointsEntry {
        PointsEntry {
            id: id.to_string(),
            member_id,
            order_id: 1,
            cause: EntryCause::Confirmed,
            ts,
            rate_bp: 100,
            amount,
            points: amount / 100,
        }
    }

    fn ids(entries: Vec<PointsEntry>) -> Vec<String> {
        entries.into_iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_ledger_range_is_one_owners_entries_in_time_then_id_order() {
        let mut set = PagedMap::new();
        for e in [
            points(2, 20, "b", 1),
            points(1, 5, "x", 1),
            points(2, 10, "z", 1),
            points(2, 20, "a", 1),
            points(3, 0, "c", 1),
            points(2, 30, "y", 1),
        ] {
            set.insert(Dated::Entry(e), ());
        }
        // In memory, and from the sorted pages of a checkpoint image.
        let saved = Part::save(&set).expect("saves");
        let paged: PagedMap<Dated<PointsEntry>, ()> = saved.restore().expect("restores");
        for set in [&set, &paged] {
            assert_eq!(
                ids(ledger_range(set, 2, 0, Millis::MAX)),
                ["z", "a", "b", "y"]
            );
            // [from, to): an entry at `to` is out, one at `from` in.
            assert_eq!(ids(ledger_range(set, 2, 10, 30)), ["z", "a", "b"]);
            assert_eq!(ids(ledger_range(set, 2, 11, 20)), Vec::<String>::new());
            assert_eq!(ids(ledger_range(set, 2, 30, 10)), Vec::<String>::new());
            assert_eq!(ids(ledger_range(set, 1, 0, Millis::MAX)), ["x"]);
            assert_eq!(
                ids(ledger_range(set, 4, 0, Millis::MAX)),
                Vec::<String>::new()
            );
        }
        // Written again (a replay): the same place, still one entry.
        let mut paged = paged;
        for set in [&mut set, &mut paged] {
            set.replace(Dated::Entry(points(2, 20, "a", 7)), ());
            assert_eq!(set.len(), 6);
            let again: Vec<i64> = ledger_range(set, 2, 20, 21)
                .iter()
                .map(|e| e.amount)
                .collect();
            assert_eq!(again, [7, 1]);
        }
    }

    #[test]
    fn facts_are_found_and_replaced_by_their_id() {
        let store = MemoryStore::new();
        let fact = |id: &str, qty: i64| SalesFact {
            id: id.to_string(),
            order_id: 1,
            line_no: 0,
            sku: 3,
            seller_id: 4,
            category_id: 5,
            member_id: 6,
            effect: shopflow_model::SalesEffect::Placed,
            qty,
            amount: qty * 10,
            ts: 7,
        };
        for (as_of, facts) in [
            (1, vec![fact("1:0:placed", 2)]),
            (2, vec![fact("1:0:placed", 2), fact("1:0:paid", 2)]),
        ] {
            store.write_views_owned(ViewBatch {
                as_of,
                sales_facts: facts,
                ..ViewBatch::default()
            });
        }
        store.read(|s| {
            assert_eq!(s.facts().len(), 2);
            assert_eq!(s.fact(1, "1:0:paid").map(|f| f.qty), Some(2));
            assert!(s.fact(1, "1:0:refunded:1").is_none());
        });
        // A checkpoint image round-trips the sets.
        let copy = MemoryStore::new();
        copy.restore(&store.image().expect("image"))
            .expect("restore");
        copy.read(|s| {
            assert_eq!(s.facts().len(), 2);
            assert_eq!(s.fact(1, "1:0:placed").map(|f| f.qty), Some(2));
        });
    }
}

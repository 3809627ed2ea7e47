//! Serving views in Redis.
//!
//! Layout (all keys under a configurable prefix, default `shopflow:`):
//! - `{prefix}stock:{sku}` → JSON `{sku, on_hand, reserved, available, as_of}`
//! - `{prefix}order:{order_id}` → JSON `{order_id, member_id, status, location, history, as_of}`
//! - `{prefix}rating:{sku}` → JSON `{sku, count, sum, histogram, as_of}`
//! - `{prefix}also:{sku}` → JSON `{sku, items: [[sku, weight], …], as_of}` (top 20)
//! - `{prefix}member:{member_id}` → JSON `{member_id, grade, spend_6m, accrual_bp, wow, as_of}`
//! - `{prefix}morders:{member_id}` → JSON `{member_id, order_ids: [newest, …], as_of}` (20)
//! - `{prefix}meta:as_of` → the time every row is at least as new as.
//!
//! One read is one `MGET` of the row and `{prefix}meta:as_of` (one round trip). A batch
//! is written by one Lua script: it is skipped if Redis already holds a newer `as_of` (a
//! replay after a restart), otherwise every row and then `as_of` are set atomically.
//! Batches over [`MAX_ROWS_PER_SCRIPT`] rows are written in several scripts; `as_of`
//! moves only with the last, so readers never see an `as_of` ahead of its rows.

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use shopflow_model::{
    AlsoBought, MemberOrders, MemberView, Millis, OrderView, RatingView, StockLevel, ViewBatch,
    Writers,
};

use crate::SinkError;

/// Most rows written by one script.
pub const MAX_ROWS_PER_SCRIPT: usize = 20_000;

const WRITE_BATCH: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
for i = 2, #KEYS do
  if ARGV[i] == '' then redis.call('DEL', KEYS[i]) else redis.call('SET', KEYS[i], ARGV[i]) end
end
if ARGV[2 + (#KEYS - 1)] == '1' then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"#;

/// A row as stored: the view row and the `as_of` it was written at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored<T> {
    /// The row.
    #[serde(flatten)]
    pub row: T,
    /// The batch `as_of` the row was written with.
    pub as_of: Millis,
}

/// Reads and writes shopflow's serving views in one Redis database.
#[derive(Clone)]
pub struct RedisViews {
    url: String,
    prefix: String,
    conn: ConnectionManager,
    script: Script,
    writers: Writers,
}

impl std::fmt::Debug for RedisViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisViews")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisViews {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379/`), keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, SinkError> {
        let err = |source| SinkError::Redis {
            url: url.to_string(),
            source: Box::new(source),
        };
        let client = ::redis::Client::open(url).map_err(err)?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(30)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(err)?;
        Ok(RedisViews {
            url: url.to_string(),
            prefix: prefix.to_string(),
            conn,
            script: Script::new(WRITE_BATCH),
            writers: Writers::ONE,
        })
    }

    /// The same store as the writer `writers` among several (each keeps its own `as_of`;
    /// reads answer as of the smallest, see [`shopflow_model::writers`]).
    pub fn with_writers(mut self, writers: Writers) -> Self {
        self.writers = writers;
        self
    }

    fn err(&self, source: ::redis::RedisError) -> SinkError {
        SinkError::Redis {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    /// This writer's `as_of` key.
    fn meta_key(&self) -> String {
        self.writers.record(&format!("{}meta:as_of", self.prefix))
    }

    /// Every writer's `as_of` key.
    fn meta_keys(&self) -> Vec<String> {
        self.writers.records(&format!("{}meta:as_of", self.prefix))
    }

    /// `MGET` of `keys` and every writer's `as_of` in one round trip: the values of `keys`,
    /// and the `as_of` every row is at least as new as (the smallest of the writers', 0
    /// before each has written a batch).
    async fn mget_as_of(
        &self,
        keys: &[String],
    ) -> Result<(Vec<Option<String>>, Millis), SinkError> {
        let mut conn = self.conn.clone();
        let mut vals: Vec<Option<String>> = ::redis::cmd("MGET")
            .arg(keys)
            .arg(self.meta_keys())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let metas = vals.split_off(keys.len());
        let as_of = Writers::smallest(
            metas
                .iter()
                .map(|m| m.as_deref().and_then(|v| v.parse::<Millis>().ok())),
        );
        Ok((vals, as_of.unwrap_or(0)))
    }

    /// The key of a stock row.
    pub fn stock_key(&self, sku: u64) -> String {
        format!("{}stock:{sku}", self.prefix)
    }

    /// The key of an order row.
    pub fn order_key(&self, order_id: u64) -> String {
        format!("{}order:{order_id}", self.prefix)
    }

    /// The key of a rating row.
    pub fn rating_key(&self, sku: u64) -> String {
        format!("{}rating:{sku}", self.prefix)
    }

    /// The key of a recommendation row.
    pub fn also_key(&self, sku: u64) -> String {
        format!("{}also:{sku}", self.prefix)
    }

    /// The key of a member row.
    pub fn member_key(&self, member_id: u64) -> String {
        format!("{}member:{member_id}", self.prefix)
    }

    /// The key of a member's recent-order list.
    pub fn member_orders_key(&self, member_id: u64) -> String {
        format!("{}morders:{member_id}", self.prefix)
    }

    /// Writes a batch's rows and its `as_of`; returns false if Redis already held a newer
    /// `as_of` (the batch is a replay and was skipped). An empty value deletes the key.
    pub async fn write(&self, batch: &ViewBatch) -> Result<bool, SinkError> {
        let mut rows: Vec<(String, String)> =
            Vec::with_capacity(batch.stock.len() + batch.orders.len());
        for r in &batch.ratings {
            let v = Stored {
                row: *r,
                as_of: batch.as_of,
            };
            rows.push((
                self.rating_key(r.sku),
                serde_json::to_string(&v).expect("json"),
            ));
        }
        for r in &batch.also_bought {
            let v = Stored {
                row: r.clone(),
                as_of: batch.as_of,
            };
            rows.push((
                self.also_key(r.sku),
                serde_json::to_string(&v).expect("json"),
            ));
        }
        rows.extend(
            batch
                .ratings_removed
                .iter()
                .map(|&s| (self.rating_key(s), String::new())),
        );
        rows.extend(
            batch
                .also_bought_removed
                .iter()
                .map(|&s| (self.also_key(s), String::new())),
        );
        for s in &batch.stock {
            let v = Stored {
                row: *s,
                as_of: batch.as_of,
            };
            rows.push((
                self.stock_key(s.sku),
                serde_json::to_string(&v).expect("json"),
            ));
        }
        for o in &batch.orders {
            let v = Stored {
                row: o.clone(),
                as_of: batch.as_of,
            };
            rows.push((
                self.order_key(o.order_id),
                serde_json::to_string(&v).expect("json"),
            ));
        }
        for m in &batch.members {
            let v = Stored {
                row: *m,
                as_of: batch.as_of,
            };
            rows.push((
                self.member_key(m.member_id),
                serde_json::to_string(&v).expect("json"),
            ));
        }
        for m in &batch.member_orders {
            let v = Stored {
                row: m.clone(),
                as_of: batch.as_of,
            };
            rows.push((
                self.member_orders_key(m.member_id),
                serde_json::to_string(&v).expect("json"),
            ));
        }
        let chunks: Vec<&[(String, String)]> = if rows.is_empty() {
            vec![&[]]
        } else {
            rows.chunks(MAX_ROWS_PER_SCRIPT).collect()
        };
        let last = chunks.len() - 1;
        let mut conn = self.conn.clone();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut inv = self.script.prepare_invoke();
            inv.key(self.meta_key()).arg(batch.as_of);
            for (k, v) in chunk {
                inv.key(k).arg(v);
            }
            inv.arg(if i == last { "1" } else { "0" });
            let applied: i64 = inv.invoke_async(&mut conn).await.map_err(|e| self.err(e))?;
            if applied == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The `as_of` every row Redis holds is at least as new as: the smallest of the
    /// writers' (0 for one that has written nothing yet); `None` if no batch was written.
    pub async fn as_of(&self) -> Result<Option<Millis>, SinkError> {
        let mut conn = self.conn.clone();
        let metas: Vec<Option<Millis>> = ::redis::cmd("MGET")
            .arg(self.meta_keys())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Writers::smallest(metas))
    }

    /// The `as_of` of the last batch this writer wrote, if any.
    pub async fn written_as_of(&self) -> Result<Option<Millis>, SinkError> {
        let mut conn = self.conn.clone();
        conn.get(self.meta_key()).await.map_err(|e| self.err(e))
    }

    async fn get_row<T: for<'de> Deserialize<'de>>(
        &self,
        key: String,
    ) -> Result<Option<(T, Millis)>, SinkError> {
        let (mut vals, as_of) = self.mget_as_of(std::slice::from_ref(&key)).await?;
        let Some(text) = vals.pop().flatten() else {
            return Ok(None);
        };
        let stored: Stored<T> =
            serde_json::from_str(&text).map_err(|source| SinkError::Corrupt { key, source })?;
        Ok(Some((stored.row, stored.as_of.max(as_of))))
    }

    /// A stock row and the `as_of` of the answer.
    pub async fn stock(&self, sku: u64) -> Result<Option<(StockLevel, Millis)>, SinkError> {
        self.get_row(self.stock_key(sku)).await
    }

    /// An order row and the `as_of` of the answer.
    pub async fn order(&self, order_id: u64) -> Result<Option<(OrderView, Millis)>, SinkError> {
        self.get_row(self.order_key(order_id)).await
    }

    /// A member row and the `as_of` of the answer.
    pub async fn member(&self, member_id: u64) -> Result<Option<(MemberView, Millis)>, SinkError> {
        self.get_row(self.member_key(member_id)).await
    }

    /// A member's most recent orders, newest first, and the `as_of` of the answer:
    /// `None` if the member is unknown. Two round trips (the list, then the orders).
    pub async fn member_orders(
        &self,
        member_id: u64,
    ) -> Result<Option<(Vec<OrderView>, Millis)>, SinkError> {
        let mut conn = self.conn.clone();
        let key = self.member_orders_key(member_id);
        let (vals, as_of) = self
            .mget_as_of(&[key.clone(), self.member_key(member_id)])
            .await?;
        let [list, member]: [Option<String>; 2] = vals.try_into().expect("two values");
        let ids = match (list, member) {
            (Some(text), _) => {
                let stored: Stored<MemberOrders> = serde_json::from_str(&text)
                    .map_err(|source| SinkError::Corrupt { key, source })?;
                stored.row.order_ids
            }
            (None, Some(_)) => return Ok(Some((Vec::new(), as_of))),
            (None, None) => return Ok(None),
        };
        if ids.is_empty() {
            return Ok(Some((Vec::new(), as_of)));
        }
        let keys: Vec<String> = ids.iter().map(|&id| self.order_key(id)).collect();
        let vals: Vec<Option<String>> = ::redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let mut orders = Vec::with_capacity(ids.len());
        for (k, v) in keys.into_iter().zip(vals) {
            if let Some(text) = v {
                let s: Stored<OrderView> = serde_json::from_str(&text)
                    .map_err(|source| SinkError::Corrupt { key: k, source })?;
                orders.push(s.row);
            }
        }
        Ok(Some((orders, as_of)))
    }

    /// A SKU's row of some product view (rating or recommendations) with the `as_of` of the
    /// answer, in one round trip. `Ok(None)` when the SKU is unknown; `Some((None, as_of))`
    /// when it is known but has no such row.
    async fn product_row<T: for<'de> Deserialize<'de>>(
        &self,
        key: String,
        sku: u64,
    ) -> Result<Option<(Option<T>, Millis)>, SinkError> {
        let (vals, as_of) = self.mget_as_of(&[key.clone(), self.stock_key(sku)]).await?;
        let [row, stock]: [Option<String>; 2] = vals.try_into().expect("two values");
        match (row, stock) {
            (Some(text), _) => {
                let stored: Stored<T> = serde_json::from_str(&text)
                    .map_err(|source| SinkError::Corrupt { key, source })?;
                Ok(Some((Some(stored.row), stored.as_of.max(as_of))))
            }
            (None, Some(_)) => Ok(Some((None, as_of))),
            (None, None) => Ok(None),
        }
    }

    /// A SKU's ratings: `None` if the SKU is unknown, zeros if it has no review.
    pub async fn rating(&self, sku: u64) -> Result<Option<(RatingView, Millis)>, SinkError> {
        Ok(self
            .product_row::<RatingView>(self.rating_key(sku), sku)
            .await?
            .map(|(r, a)| {
                (
                    r.unwrap_or(RatingView {
                        sku,
                        ..RatingView::default()
                    }),
                    a,
                )
            }))
    }

    /// A SKU's recommendations: `None` if the SKU is unknown, empty if it has none.
    pub async fn also_bought(&self, sku: u64) -> Result<Option<(AlsoBought, Millis)>, SinkError> {
        Ok(self
            .product_row::<AlsoBought>(self.also_key(sku), sku)
            .await?
            .map(|(r, a)| {
                (
                    r.unwrap_or(AlsoBought {
                        sku,
                        items: Vec::new(),
                    }),
                    a,
                )
            }))
    }

    /// SKUs this writer owns that have a rating row, and those that have a recommendation
    /// row (a SCAN; with one writer, every SKU).
    pub async fn product_skus(&self) -> Result<(Vec<u64>, Vec<u64>), SinkError> {
        let mut ratings = self.scan_ids(&format!("{}rating:", self.prefix)).await?;
        let mut also = self.scan_ids(&format!("{}also:", self.prefix)).await?;
        ratings.retain(|sku| self.writers.owns(*sku));
        also.retain(|sku| self.writers.owns(*sku));
        Ok((ratings, also))
    }

    async fn scan_ids(&self, key_prefix: &str) -> Result<Vec<u64>, SinkError> {
        let mut conn = self.conn.clone();
        let mut it: ::redis::AsyncIter<String> = conn
            .scan_match(format!("{key_prefix}*"))
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(k) = it.next_item().await {
            let k = k.map_err(|e| self.err(e))?;
            if let Some(id) = k.strip_prefix(key_prefix).and_then(|s| s.parse().ok()) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Every rating row (for tests and audits).
    pub async fn all_ratings(&self) -> Result<Vec<RatingView>, SinkError> {
        self.scan_rows(&format!("{}rating:*", self.prefix)).await
    }

    /// Every recommendation row (for tests and audits).
    pub async fn all_also_bought(&self) -> Result<Vec<AlsoBought>, SinkError> {
        self.scan_rows(&format!("{}also:*", self.prefix)).await
    }

    /// Every stock row (for tests and audits: a SCAN over the prefix).
    pub async fn all_stock(&self) -> Result<Vec<StockLevel>, SinkError> {
        self.scan_rows(&format!("{}stock:*", self.prefix)).await
    }

    /// Every member row (for tests and audits).
    pub async fn all_members(&self) -> Result<Vec<MemberView>, SinkError> {
        self.scan_rows(&format!("{}member:*", self.prefix)).await
    }

    /// Every recent-order list (for tests and audits).
    pub async fn all_member_orders(&self) -> Result<Vec<MemberOrders>, SinkError> {
        self.scan_rows(&format!("{}morders:*", self.prefix)).await
    }

    /// Every order row (for tests and audits).
    pub async fn all_orders(&self) -> Result<Vec<OrderView>, SinkError> {
        self.scan_rows(&format!("{}order:*", self.prefix)).await
    }

    async fn scan_rows<T: for<'de> Deserialize<'de>>(
        &self,
        pattern: &str,
    ) -> Result<Vec<T>, SinkError> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut it: ::redis::AsyncIter<String> =
                conn.scan_match(pattern).await.map_err(|e| self.err(e))?;
            while let Some(k) = it.next_item().await {
                keys.push(k.map_err(|e| self.err(e))?);
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let vals: Vec<Option<String>> = ::redis::cmd("MGET")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(e))?;
            for (k, v) in chunk.iter().zip(vals) {
                if let Some(text) = v {
                    let s: Stored<T> =
                        serde_json::from_str(&text).map_err(|source| SinkError::Corrupt {
                            key: k.clone(),
                            source,
                        })?;
                    out.push(s.row);
                }
            }
        }
        Ok(out)
    }
}

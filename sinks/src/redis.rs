//! Serving views in Redis.
//!
//! Layout (all keys under a configurable prefix, default `shopflow:`):
//! - `{prefix}stock:{sku}` → JSON `{sku, on_hand, reserved, available, as_of}`
//! - `{prefix}order:{order_id}` → JSON `{order_id, member_id, status, location, history, as_of}`
//! - `{prefix}meta` → hash with `as_of`, the time every row is at least as new as.
//!
//! One read is one `MGET` of the row and `{prefix}meta:as_of` (one round trip). A batch
//! is written by one Lua script: it is skipped if Redis already holds a newer `as_of` (a
//! replay after a restart), otherwise every row and then `as_of` are set atomically.
//! Batches over [`MAX_ROWS_PER_SCRIPT`] rows are written in several scripts; `as_of`
//! moves only with the last, so readers never see an `as_of` ahead of its rows.

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use shopflow_model::{Millis, OrderView, StockLevel, ViewBatch};

use crate::SinkError;

/// Most rows written by one script.
pub const MAX_ROWS_PER_SCRIPT: usize = 20_000;

const WRITE_BATCH: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i]) end
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
        })
    }

    fn err(&self, source: ::redis::RedisError) -> SinkError {
        SinkError::Redis {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    fn meta_key(&self) -> String {
        format!("{}meta:as_of", self.prefix)
    }

    /// The key of a stock row.
    pub fn stock_key(&self, sku: u64) -> String {
        format!("{}stock:{sku}", self.prefix)
    }

    /// The key of an order row.
    pub fn order_key(&self, order_id: u64) -> String {
        format!("{}order:{order_id}", self.prefix)
    }

    /// Writes a batch's rows and its `as_of`; returns false if Redis already held a newer
    /// `as_of` (the batch is a replay and was skipped).
    pub async fn write(&self, batch: &ViewBatch) -> Result<bool, SinkError> {
        let mut rows: Vec<(String, String)> =
            Vec::with_capacity(batch.stock.len() + batch.orders.len());
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

    /// The `as_of` Redis holds, if any batch was written.
    pub async fn as_of(&self) -> Result<Option<Millis>, SinkError> {
        let mut conn = self.conn.clone();
        conn.get(self.meta_key()).await.map_err(|e| self.err(e))
    }

    async fn get_row<T: for<'de> Deserialize<'de>>(
        &self,
        key: String,
    ) -> Result<Option<(T, Millis)>, SinkError> {
        let mut conn = self.conn.clone();
        let (row, as_of): (Option<String>, Option<Millis>) = ::redis::cmd("MGET")
            .arg(&key)
            .arg(self.meta_key())
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        let Some(text) = row else { return Ok(None) };
        let stored: Stored<T> =
            serde_json::from_str(&text).map_err(|source| SinkError::Corrupt { key, source })?;
        Ok(Some((stored.row, stored.as_of.max(as_of.unwrap_or(0)))))
    }

    /// A stock row and the `as_of` of the answer.
    pub async fn stock(&self, sku: u64) -> Result<Option<(StockLevel, Millis)>, SinkError> {
        self.get_row(self.stock_key(sku)).await
    }

    /// An order row and the `as_of` of the answer.
    pub async fn order(&self, order_id: u64) -> Result<Option<(OrderView, Millis)>, SinkError> {
        self.get_row(self.order_key(order_id)).await
    }

    /// Every stock row (for tests and audits: a SCAN over the prefix).
    pub async fn all_stock(&self) -> Result<Vec<StockLevel>, SinkError> {
        self.scan_rows(&format!("{}stock:*", self.prefix)).await
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

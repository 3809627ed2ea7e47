//! What keeps the API fast under a mixed load: answers of the slow stores cached by the
//! `as_of` they were read at, and a separate concurrency limit and deadline per store, so a
//! slow or failing store answers 503 quickly instead of holding every request behind it.
//!
//! **Cache.** A ledger (MySQL) or sales (ClickHouse) answer changes only when its store's
//! `as_of` moves. Each external store has an [`AsOfWatch`]: the store's `as_of`, read again
//! by the first request after [`AS_OF_TTL`] has passed (the others use the value they find).
//! An answer is kept with the watched `as_of` of the stores it read, taken before it was
//! computed; a later request for the same path and query is served from the cache while
//! those stores' watched `as_of` is unchanged. So an answer is at most [`AS_OF_TTL`] older
//! than the store, every answer still carries the `as_of` it was computed at, and a
//! dashboard refreshing the same page costs a lookup. The in-process store (the embedded
//! default) is read directly, uncached. The cache holds at most [`CACHE_BYTES`] of answers;
//! past that, answers of an older `as_of` go first, then all.
//!
//! **Limits.** Each store has its own semaphore ([`StoreLimits`]): at most a few requests
//! at a time read it (about its connection pool), a request waits at most
//! [`QUEUE_WAIT`] for its turn and [`STORE_DEADLINE`] for the answer; otherwise it gets
//! 503 with `Retry-After: 1`. Storefront reads (Redis) never wait behind ledger or sales
//! reads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use shopflow_model::Millis;
use shopflow_sinks::{LedgerViews, SalesStore};
use tokio::sync::Semaphore;

use crate::{ApiError, ApiState};

/// How long a watched `as_of` is used before the store is asked again.
pub const AS_OF_TTL: Duration = Duration::from_millis(20);

/// The most bytes of answers the cache keeps.
pub const CACHE_BYTES: usize = 64 << 20;

/// How long a request waits for its turn at a store.
pub const QUEUE_WAIT: Duration = Duration::from_millis(250);

/// How long a store may take to answer one request.
pub const STORE_DEADLINE: Duration = Duration::from_secs(2);

/// Requests reading one store at a time: Redis multiplexes one connection, MySQL has a pool
/// of 4, ClickHouse answers over HTTP with a small pool.
const REDIS_PERMITS: usize = 256;
const MYSQL_PERMITS: usize = 8;
const CLICKHOUSE_PERMITS: usize = 8;

/// The API's state: the stores ([`ApiState`]), the answer cache and the per-store limits.
#[derive(Debug)]
pub struct Shared {
    state: ApiState,
    ledger_as_of: Option<AsOfWatch>,
    sales_as_of: Option<AsOfWatch>,
    cache: Mutex<Cache>,
    limits: StoreLimits,
}

impl std::ops::Deref for Shared {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.state
    }
}

/// Which store a read goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// The serving views (Redis or in process).
    Views,
    /// The ledgers (MySQL or in process).
    Ledger,
    /// The sales analytics (ClickHouse or in process).
    Sales,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Views => "the view store",
            Store::Ledger => "the ledger store",
            Store::Sales => "the sales store",
        }
    }
}

impl Shared {
    /// The state of a router over `state`.
    pub fn new(state: ApiState) -> Self {
        let ledger_as_of = matches!(state.ledger, LedgerViews::Mysql(_)).then(AsOfWatch::default);
        let sales_as_of = matches!(state.sales, SalesStore::ClickHouse(_)).then(AsOfWatch::default);
        Shared {
            state,
            ledger_as_of,
            sales_as_of,
            cache: Mutex::new(Cache::default()),
            limits: StoreLimits::default(),
        }
    }

    /// Runs `read` against `store` within its limits: 503 (see the module docs) when its
    /// turn does not come in time or the store does not answer in time.
    pub async fn limited<T>(
        &self,
        store: Store,
        read: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let semaphore = match store {
            Store::Views => &self.limits.redis,
            Store::Ledger => &self.limits.mysql,
            Store::Sales => &self.limits.clickhouse,
        };
        let _permit = match tokio::time::timeout(QUEUE_WAIT, semaphore.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(ApiError::Busy(format!(
                    "{} is busy: try again in a second",
                    store.name()
                )))
            }
        };
        match tokio::time::timeout(STORE_DEADLINE, read).await {
            Ok(answer) => answer,
            Err(_) => Err(ApiError::Busy(format!(
                "{} did not answer within {} ms: try again in a second",
                store.name(),
                STORE_DEADLINE.as_millis()
            ))),
        }
    }

    /// The answer to the request for `uri` that reads `stores`: from the cache while those
    /// stores' `as_of` has not moved, else computed by `compute` (given the state, within
    /// the limits of the last of `stores`) and kept.
    pub async fn cached<Fut>(
        self: &Arc<Self>,
        uri: &Uri,
        stores: &[Store],
        compute: impl FnOnce(Arc<Shared>) -> Fut,
    ) -> Result<Response, ApiError>
    where
        Fut: Future<Output = Result<axum::Json<serde_json::Value>, ApiError>>,
    {
        let key = uri.path_and_query().map_or("", |p| p.as_str());
        let compute = || compute(self.clone());
        let limit_to = *stores.last().expect("a read names its stores");
        let mut stamp = Vec::with_capacity(stores.len());
        for store in stores {
            let watch = match store {
                Store::Ledger => self.ledger_as_of.as_ref(),
                Store::Sales => self.sales_as_of.as_ref(),
                Store::Views => None,
            };
            match watch {
                // An in-process store: read directly (it is as fast as the cache).
                None => {
                    let answer = self.limited(limit_to, compute()).await?;
                    return Ok(answer.into_response());
                }
                Some(w) => stamp.push(w.current(|| self.store_as_of(*store)).await?),
            }
        }
        if let Some(body) = self.cache.lock().expect("cache").get(key, &stamp) {
            return Ok(json_response(body));
        }
        let answer = self.limited(limit_to, compute()).await?;
        let body = Bytes::from(serde_json::to_vec(&answer.0).expect("JSON of a value"));
        self.cache
            .lock()
            .expect("cache")
            .put(key.to_string(), stamp, body.clone());
        Ok(json_response(body))
    }

    async fn store_as_of(&self, store: Store) -> Result<Millis, ApiError> {
        let read = async {
            let as_of = match store {
                Store::Ledger => self.ledger.as_of().await,
                Store::Sales => match &self.sales {
                    SalesStore::ClickHouse(c) => c.as_of().await.map(|a| a.unwrap_or(0)),
                    SalesStore::Memory(m) => Ok(m.read(|s| s.as_of.unwrap_or(0))),
                },
                Store::Views => Ok(0),
            };
            as_of.map_err(crate::unavailable)
        };
        self.limited(store, read).await
    }
}

fn json_response(body: Bytes) -> Response {
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}

/// A store's `as_of` as last read, and when (see the module docs).
#[derive(Debug, Default)]
pub struct AsOfWatch {
    /// `as_of` + 1; 0 before the first read.
    value: AtomicU64,
    /// When it was read, in ms since `epoch`.
    read_at_ms: AtomicU64,
    /// A request is reading it now.
    reading: AtomicBool,
    epoch: std::sync::OnceLock<Instant>,
}

impl AsOfWatch {
    /// The watched `as_of`: read again through `read` when older than [`AS_OF_TTL`] (by one
    /// request; the others meanwhile use the value there is, or read it themselves if there
    /// is none yet).
    pub async fn current<Fut>(&self, read: impl FnOnce() -> Fut) -> Result<Millis, ApiError>
    where
        Fut: Future<Output = Result<Millis, ApiError>>,
    {
        let epoch = *self.epoch.get_or_init(Instant::now);
        let now = epoch.elapsed().as_millis() as u64;
        let value = self.value.load(Ordering::Acquire);
        let fresh = now.saturating_sub(self.read_at_ms.load(Ordering::Acquire))
            < AS_OF_TTL.as_millis() as u64;
        if value > 0 && fresh {
            return Ok(value - 1);
        }
        let mine = !self.reading.swap(true, Ordering::AcqRel);
        if !mine && value > 0 {
            return Ok(value - 1);
        }
        let answer = read().await;
        if let Ok(as_of) = answer {
            self.value.fetch_max(as_of + 1, Ordering::AcqRel);
            self.read_at_ms.store(now, Ordering::Release);
        }
        if mine {
            self.reading.store(false, Ordering::Release);
        }
        answer.map(|_| self.value.load(Ordering::Acquire) - 1)
    }
}

/// One concurrency limit per store (see the module docs).
#[derive(Debug)]
struct StoreLimits {
    redis: Semaphore,
    mysql: Semaphore,
    clickhouse: Semaphore,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            redis: Semaphore::new(REDIS_PERMITS),
            mysql: Semaphore::new(MYSQL_PERMITS),
            clickhouse: Semaphore::new(CLICKHOUSE_PERMITS),
        }
    }
}

/// Answers by request, each with the `as_of` of the stores it read.
#[derive(Debug, Default)]
struct Cache {
    answers: HashMap<String, (Vec<Millis>, Bytes)>,
    bytes: usize,
}

impl Cache {
    fn get(&self, key: &str, stamp: &[Millis]) -> Option<Bytes> {
        match self.answers.get(key) {
            Some((s, body)) if s == stamp => Some(body.clone()),
            _ => None,
        }
    }

    fn put(&mut self, key: String, stamp: Vec<Millis>, body: Bytes) {
        if body.len() > CACHE_BYTES / 16 {
            return; // one answer may not take a large share of the cache
        }
        if self.bytes + body.len() + key.len() > CACHE_BYTES {
            // Answers read at an older `as_of` than this one's first; then all.
            let newest = stamp.clone();
            self.answers.retain(|_, (s, _)| *s >= newest);
            self.bytes = self
                .answers
                .iter()
                .map(|(k, (_, b))| k.len() + b.len())
                .sum();
            if self.bytes + body.len() + key.len() > CACHE_BYTES {
                self.answers.clear();
                self.bytes = 0;
            }
        }
        self.bytes += key.len() + body.len();
        if let Some((_, old)) = self.answers.insert(key.clone(), (stamp, body)) {
            self.bytes -= key.len() + old.len();
        }
    }
}

/// Tests of the pieces that do not need a store.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_served_while_the_as_of_it_was_read_at_holds() {
        let mut c = Cache::default();
        c.put("/a".into(), vec![5], Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(c.get("/a", &[5]).as_deref(), Some(&b"{\"x\":1}"[..]));
        assert_eq!(c.get("/a", &[6]), None, "the store moved on");
        assert_eq!(c.get("/b", &[5]), None);
        c.put("/a".into(), vec![6], Bytes::from_static(b"{\"x\":2}"));
        assert_eq!(c.get("/a", &[6]).as_deref(), Some(&b"{\"x\":2}"[..]));
        assert_eq!(c.bytes, 2 + 7, "a replaced answer is not counted twice");
    }

    #[test]
    fn a_full_cache_drops_older_answers_first() {
        let mut c = Cache::default();
        let big = Bytes::from(vec![b'x'; CACHE_BYTES / 20]);
        for i in 0..19 {
            c.put(format!("/old{i}"), vec![1], big.clone());
        }
        c.put("/new".into(), vec![2], big.clone());
        c.put("/newer".into(), vec![2], big.clone());
        assert!(c.bytes <= CACHE_BYTES, "{} bytes", c.bytes);
        assert!(c.get("/new", &[2]).is_some());
        assert!(c.get("/newer", &[2]).is_some());
        assert!(c.get("/old0", &[1]).is_none(), "older answers went first");
    }

    #[tokio::test]
    async fn a_watch_reads_the_store_once_per_ttl() {
        let w = AsOfWatch::default();
        let reads = AtomicU64::new(0);
        let read = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ApiError>(41)
        };
        assert_eq!(w.current(read).await.unwrap(), 41);
        assert_eq!(w.current(read).await.unwrap(), 41);
        assert_eq!(
            reads.load(Ordering::SeqCst),
            1,
            "the second is within the TTL"
        );
        tokio::time::sleep(AS_OF_TTL + Duration::from_millis(5)).await;
        let later = || async { Ok::<_, ApiError>(42) };
        assert_eq!(w.current(later).await.unwrap(), 42);
    }

    fn memory_state() -> ApiState {
        let store = shopflow_sinks::MemoryStore::new();
        ApiState {
            views: shopflow_sinks::ServingViews::Memory(store.clone()),
            ledger: LedgerViews::Memory(store.clone()),
            sales: SalesStore::Memory(store),
            auth: crate::AuthMode::Disabled,
            registry: crate::metrics::Registry::new(),
            health: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_busy_or_slow_store_is_a_503_and_the_others_go_on() {
        let shared = Shared::new(memory_state());
        let held: Vec<_> = (0..MYSQL_PERMITS)
            .map(|_| shared.limits.mysql.try_acquire().expect("a permit"))
            .collect();
        let started = Instant::now();
        let busy = shared.limited(Store::Ledger, async { Ok(1) }).await;
        assert!(matches!(busy, Err(ApiError::Busy(_))), "{busy:?}");
        assert!(started.elapsed() >= QUEUE_WAIT, "it waited its turn first");
        let views = shared.limited(Store::Views, async { Ok(2) }).await;
        assert_eq!(
            views.unwrap(),
            2,
            "storefront reads do not wait behind the ledger"
        );
        drop(held);
        let slow = shared
            .limited(Store::Sales, async {
                tokio::time::sleep(STORE_DEADLINE + Duration::from_millis(200)).await;
                Ok(3)
            })
            .await;
        assert!(matches!(slow, Err(ApiError::Busy(_))), "{slow:?}");
        let ok = shared.limited(Store::Ledger, async { Ok(4) }).await;
        assert_eq!(ok.unwrap(), 4, "the ledger's permits are back");
    }
}

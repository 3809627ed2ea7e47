//! Where each kind of output goes: the store of every sink of one pipeline ([`SinkSet`]),
//! each either the in-process store (the embedded default) or an external service.

use shopflow_model::sales::{series, Bucket, SalesPoint};
use shopflow_model::Millis;

use crate::clickhouse::ClickHouseSales;
use crate::file::JsonLinesWriter;
use crate::kafka::KafkaWriter;
use crate::memory::MemoryStore;
use crate::mysql::MysqlLedger;
use crate::redis::RedisViews;
use crate::SinkError;

/// Where the serving views go.
#[derive(Debug)]
pub enum ViewStore {
    /// The in-process store.
    Memory(MemoryStore),
    /// Redis.
    Redis(RedisViews),
}

/// Where the ledgers (points, settlements, payouts, tax invoices) go.
#[derive(Debug)]
pub enum LedgerStore {
    /// The in-process store (embedded mode, or a run without MySQL: not durable).
    Memory(MemoryStore),
    /// MySQL or MariaDB.
    Mysql(MysqlLedger),
}

/// Where the sales analytics go.
#[derive(Clone, Debug)]
pub enum SalesStore {
    /// The in-process store (embedded mode, or a run without ClickHouse).
    Memory(MemoryStore),
    /// ClickHouse (boxed: its client is large).
    ClickHouse(Box<ClickHouseSales>),
}

impl SalesStore {
    /// A seller's sales series in [from, to) and the `as_of` of the answer.
    pub async fn sales(
        &self,
        seller_id: u64,
        from: Millis,
        to: Millis,
        bucket: Bucket,
    ) -> Result<(Vec<SalesPoint>, Millis), SinkError> {
        match self {
            SalesStore::Memory(m) => Ok(m.read(|s| {
                let minutes = s
                    .sales_minutes
                    .range((seller_id, from)..(seller_id, to))
                    .into_iter()
                    .map(|(_, m)| m);
                (series(minutes, bucket), s.as_of.unwrap_or(0))
            })),
            SalesStore::ClickHouse(c) => {
                let as_of = c.as_of().await?.unwrap_or(0);
                Ok((c.sales(seller_id, from, to, bucket).await?, as_of))
            }
        }
    }
}

/// Where a stream of records (alerts, dead letters) goes.
#[derive(Debug)]
pub enum EventLog {
    /// The in-process store.
    Memory(MemoryStore),
    /// A JSON-lines file.
    File(JsonLinesWriter),
    /// A Kafka topic.
    Kafka(KafkaWriter),
}

/// The sinks of one pipeline.
#[derive(Debug)]
pub struct SinkSet {
    /// Serving views.
    pub views: ViewStore,
    /// Ledgers.
    pub ledger: LedgerStore,
    /// Sales analytics.
    pub sales: SalesStore,
    /// `shop.alerts`.
    pub alerts: EventLog,
    /// `shop.dlq`.
    pub dead_letters: EventLog,
}

impl SinkSet {
    /// The in-process stores of this set, each once, in a fixed order (views, ledgers,
    /// sales, alerts, dead letters): what a checkpoint keeps images of.
    pub fn memory_stores(&self) -> Vec<&MemoryStore> {
        let candidates = [
            match &self.views {
                ViewStore::Memory(m) => Some(m),
                ViewStore::Redis(_) => None,
            },
            match &self.ledger {
                LedgerStore::Memory(m) => Some(m),
                LedgerStore::Mysql(_) => None,
            },
            match &self.sales {
                SalesStore::Memory(m) => Some(m),
                SalesStore::ClickHouse(_) => None,
            },
            match &self.alerts {
                EventLog::Memory(m) => Some(m),
                _ => None,
            },
            match &self.dead_letters {
                EventLog::Memory(m) => Some(m),
                _ => None,
            },
        ];
        let mut stores: Vec<&MemoryStore> = Vec::new();
        for m in candidates.into_iter().flatten() {
            if !stores.iter().any(|s| s.same_store(m)) {
                stores.push(m);
            }
        }
        stores
    }

    /// The one in-process store that holds views, ledgers and sales, if this set writes
    /// only there (the embedded default).
    pub(crate) fn single_memory_store(&self) -> Option<&MemoryStore> {
        match (&self.views, &self.ledger, &self.sales) {
            (ViewStore::Memory(v), LedgerStore::Memory(l), SalesStore::Memory(s))
                if v.same_store(l) && v.same_store(s) =>
            {
                Some(v)
            }
            _ => None,
        }
    }

    /// The `sink` labels of the stores this set writes (see [`crate::metrics`]).
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["dead_letters", "alerts"];
        let mut memory = false;
        match &self.ledger {
            LedgerStore::Memory(_) => memory = true,
            LedgerStore::Mysql(_) => names.push("mysql"),
        }
        match &self.sales {
            SalesStore::Memory(_) => memory = true,
            SalesStore::ClickHouse(_) => names.push("clickhouse"),
        }
        match &self.views {
            ViewStore::Memory(_) => memory = true,
            ViewStore::Redis(_) => names.push("redis"),
        }
        if memory {
            names.push("memory");
        }
        names
    }
}

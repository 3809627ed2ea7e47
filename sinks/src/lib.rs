//! Sinks: where the pipeline's output goes, and how the query API reads it back.
//!
//! - [`memory`]: the embedded default, an in-process store behind the same interfaces.
//! - [`redis`]: serving views in Redis, written atomically per batch with their `as_of`,
//!   and idempotent under replay (a batch older than what Redis holds is skipped).
//! - [`mysql`]: the exact ledgers (points, settlements, payouts, tax invoices) in MySQL or
//!   MariaDB, one transaction per batch, each entry exactly once under replay.
//! - [`clickhouse`]: sales facts and per-minute rollups for the seller dashboards and
//!   analysts, exactly once by fact id and versioned rollups.
//! - [`kafka`]: derived events (`shop.alerts`) and dead letters (`shop.dlq`) written with
//!   the idempotent producer; on start the writer reads back what its topic already holds
//!   so a replay does not write anything twice.
//! - [`file`]: JSON-lines files for alerts and dead letters in embedded mode.
//! - [`stores`]: which store each sink of a pipeline is ([`SinkSet`]).
//! - [`reads`]: the stores as the query API reads them, each answer with its `as_of`.
//! - [`writer`]: the sink writer thread that drains the pipeline's output channel.
//! - [`retry`]: the writer's retries and outage reports (the policy shared with the source).
//! - [`metrics`]: the writer's Prometheus metrics (rows, durations, failures, `as_of`).
#![forbid(missing_docs)]
#![forbid(unsafe_code)]
// Libraries log through `tracing`; only the binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod clickhouse;
pub mod file;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod mysql;
pub mod reads;
pub mod redis;
pub mod retry;
pub mod stores;
pub mod writer;

pub use memory::MemoryStore;
pub use reads::{LedgerViews, Periods, ServingViews};
pub use stores::{EventLog, LedgerStore, SalesStore, SinkSet, ViewStore};
pub use writer::{io_runtime, spawn_writer};

/// A sink could not be written or read. The messages say what failed and why, once; advice
/// on starting a service or setting its address is the binary's (it knows the scripts and
/// the environment variables).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Redis refused or could not be reached.
    #[error("Redis at {url}: {source}")]
    Redis {
        /// Where.
        url: String,
        /// The client's error.
        #[source]
        source: Box<::redis::RedisError>,
    },
    /// MySQL (or MariaDB) refused, could not be reached, or held a row that does not decode.
    #[error("MySQL at {url}: {what}: {source}")]
    Mysql {
        /// Where (the URL without its password).
        url: String,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<sqlx::Error>,
        /// Whether the database could not be reached, or refused the login or the database
        /// name (the binary then says how to start one or point at another).
        unreachable: bool,
    },
    /// ClickHouse refused or could not be reached.
    #[error("ClickHouse at {url}: {what}: {source}")]
    ClickHouse {
        /// Where.
        url: String,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<::clickhouse::error::Error>,
    },
    /// A sink setting is invalid.
    #[error("{0}")]
    Config(String),
    /// An in-process store could not be saved to, or restored from, a checkpoint.
    #[error("checkpoint of the in-process store: {0}")]
    Checkpoint(String),
    /// Kafka refused or could not be reached.
    #[error("Kafka at {brokers}, topic {topic}: {what}: {source}")]
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Topic.
        topic: String,
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A write has waited for an acknowledgement longer than the writer reports as healthy
    /// (it keeps waiting: the client retries by itself).
    #[error("Kafka at {brokers}: no acknowledgement for {waited_s} s")]
    Unacknowledged {
        /// Bootstrap servers.
        brokers: String,
        /// Seconds waited so far.
        waited_s: u64,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stored row could not be decoded (written by another version?).
    #[error("corrupt row at {key}: {source}")]
    Corrupt {
        /// The key.
        key: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

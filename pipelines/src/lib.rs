//! The differential dataflows that maintain shopflow's views, and the worker loop that
//! feeds them.
//!
//! - [`dataflow`] builds the views from the validated input collections: order life cycle
//!   and tracking ([`orders`]), stock levels and low-stock alerts ([`stock`]), the
//!   co-purchase graph and ratings ([`products`]), member grades, WOW and the points
//!   ledger ([`members`]), seller settlements, payouts and tax invoices ([`settlements`]),
//!   sales facts and per-minute rollups ([`sales`]).
//!   Ledger entries read the grade or catalog *at* a time with [`lookup`], which freezes
//!   the answer.
//! - [`output`] turns the views' changes into consistent [`ViewBatch`]es as the frontier
//!   advances: each batch is the state of every changed row *as of* a time T.
//! - [`runtime`] runs timely workers: it polls the sources, validates each message
//!   (dead letters, duplicates, late events), assigns dataflow times and advances the
//!   frontier (SPEC §4).
//! - [`checkpoint`] and [`state`]: what a checkpoint holds (every operator's state, each
//!   stream's validator and next offset, the in-process stores' images), its file format,
//!   and where a restart puts it back.
//! - [`metrics`] exports those counts, the consumer lag and the frontier to Prometheus.
#![forbid(missing_docs)]
#![forbid(unsafe_code)]
// Libraries log through `tracing`; only the binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod catalog;
pub mod checkpoint;
pub mod cluster;
pub mod dataflow;
pub mod effects;
mod ends;
pub mod members;
pub mod metrics;
pub mod ordered;
pub mod orders;
pub mod output;
pub mod products;
pub mod runtime;
pub mod settlements;
pub mod state;
pub mod stock;

pub use metrics::PipelineMetrics;
pub use runtime::{run, PipelineConfig, PipelineError, RunSummary, Stats};
pub use shopflow_model::{Output, ViewBatch};

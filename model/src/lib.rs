//! Types shared by every shopflow crate: the input events of the contract (SPEC §1), the
//! rows of the materialized views, derived alert events and dead-letter records.
//!
//! This crate owns *shapes* only — no I/O, no validation, no dataflow. Decoding and
//! validation live in `shopflow-ingest`; the rules that compute views live in
//! `shopflow-pipelines` (and, independently, in `shopflow-reference`).
#![forbid(missing_docs)]
#![forbid(unsafe_code)]
// Libraries log through `tracing`; only the binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod event;
pub mod health;
pub mod id;
pub mod ledger;
pub mod retry;
pub mod sales;
pub mod time;
pub mod views;
pub mod writers;

pub use event::{Event, EventBody, OrderLine, RefundLine, Shipping};
pub use ledger::{
    EntryCause, Grade, MemberOrders, MemberView, Payout, PointsEntry, SettlementEntry, TaxInvoice,
};
pub use sales::{SalesEffect, SalesFact, SalesMinute};
pub use views::{
    Alert, AlertBody, AlsoBought, CheckpointCommit, Committed, DeadLetter, DeadLetterReason,
    OrderStatus, OrderView, Output, RatingView, StatusChange, StockLevel, StoreImages, ViewBatch,
};
pub use writers::Writers;

/// Largest id, amount of milliseconds or other integer the contract accepts: 2^53 − 1.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// Event time and dataflow time: milliseconds since the Unix epoch (UTC).
pub type Millis = u64;

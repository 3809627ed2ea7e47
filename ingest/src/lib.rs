//! Ingest: everything between an input message and the dataflow.
//!
//! This crate owns the sources ([`source`]: Kafka partitions, JSON-lines files, in-memory
//! logs), decoding and schema validation of the event contract ([`decode`]), the order life
//! cycle rules ([`lifecycle`]) and where orders are kept ([`orderbook`]), and dedup, effective time and per-stream frontiers
//! ([`validate`]). What it does not accept becomes a dead letter; nothing it rejects is
//! half-applied, and nothing a producer can send makes it panic.
#![forbid(missing_docs)]
#![forbid(unsafe_code)]
// Libraries log through `tracing`; only the binary prints.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod decode;
pub mod dedup;
pub mod lifecycle;
pub mod orderbook;
pub mod source;
pub mod topics;
pub mod validate;

pub use decode::{decode, Rejection};
pub use source::{Message, Source, SourceError, StreamId};
pub use topics::Topics;
pub use validate::{Accepted, Outcome, StreamValidator};

//! Lazily restored state: what lets a restart continue from a checkpoint without first
//! rebuilding every map the checkpoint holds.
//!
//! This crate owns the checkpoint's *side data* and the collections that live in it. A
//! large collection does not write its entries into its part's serialized bytes: it writes
//! them, grouped into buckets by a stable hash of the key, to the part's side data
//! ([`side`]), and puts only the buckets' layout in the part. A restart reads the layout,
//! keeps the checkpoint file open, and reads a bucket back the first time a key of that
//! bucket is touched ([`buckets`], [`LazyMap`]); a filter per bucket lets a new key (one
//! the bucket cannot hold) leave the bucket on disk. So what a restart decodes before the
//! first new event is the small state, whatever the number of keys; the rest follows as
//! the keys come up. An ordered store written by upserts ([`PagedMap`]) keeps its saved
//! entries in sorted pages instead: a write never reads them, a lookup or a key range
//! reads only the pages that can hold its keys. Records scheduled far ahead wait in
//! [`SortedRuns`]: sorted pages read one at a time as their time comes.
#![forbid(missing_docs)]
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod buckets;
pub mod lazy;
pub mod paged;
pub mod part;
pub mod runs;
pub mod side;

pub use buckets::BucketKey;
pub use lazy::LazyMap;
pub use paged::PagedMap;
pub use part::Part;
pub use runs::SortedRuns;
pub use side::Side;

//! Buckets: how a lazily restored collection lays its entries out in side data, and reads
//! them back one bucket at a time.
//!
//! A collection of n entries is written as about n / [`PER_BUCKET`] buckets; an entry goes
//! to the bucket its key's [`BucketKey::bucket_hash`] picks, so a restart finds the one
//! bucket that can hold a key without reading any other. The [`Layout`] (where each bucket
//! ends and how many entries it holds: 12 bytes a bucket) is part of the collection's
//! serialized form; the buckets are side data ([`crate::side`]).

use std::io;

use serde::{Deserialize, Serialize};

use crate::side::{self, Side};

/// Entries per bucket a collection aims for when it is written.
pub const PER_BUCKET: usize = 32;

/// Buckets are read back from the file in aligned pieces of this size, kept in memory until
/// every bucket within was read back (a bucket across two pieces is read on its own).
/// Small on purpose: a restart's first events touch buckets all over the file, and what it
/// reads should follow the buckets touched, not the size of the file. With 1 MiB pieces
/// the first write after 4.9M events came 0.25–0.27 s after the start, with 64 KiB
/// 0.20–0.24 s, with 4 KiB 0.17 s (0.10–0.12 s after 1M events with each).
const CHUNK: u64 = 1 << 12;

/// A hash of a key that is the same in every process and every build: it picks the
/// key's bucket in a checkpoint, so it must not depend on a per-process seed.
pub trait BucketKey {
    /// The key's stable hash.
    fn bucket_hash(&self) -> u64;
}

/// SplitMix64's finalizer: a stable, well-spread mix of one word.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl BucketKey for u64 {
    fn bucket_hash(&self) -> u64 {
        mix(*self)
    }
}

impl BucketKey for (u64, u64) {
    fn bucket_hash(&self) -> u64 {
        mix(mix(self.0).wrapping_add(self.1))
    }
}

impl BucketKey for (u64, u64, u64) {
    fn bucket_hash(&self) -> u64 {
        mix(mix(mix(self.0).wrapping_add(self.1)).wrapping_add(self.2))
    }
}

impl BucketKey for [u8] {
    /// FNV-1a over the bytes, then mixed.
    fn bucket_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in self {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        mix(h)
    }
}

/// Which of `n` buckets (n ≥ 1) a hash falls in.
pub fn bucket_of(hash: u64, n: usize) -> usize {
    ((hash as u128 * n as u128) >> 64) as usize
}

/// The number of buckets for `entries` entries.
pub fn buckets_for(entries: usize) -> usize {
    entries.div_ceil(PER_BUCKET).max(1)
}

/// A 256-bit Bloom filter of one bucket's key hashes (3 bits a key): with
/// [`PER_BUCKET`] keys about 3 % of absent keys pass. A key it rules out is not in the
/// bucket, so a new key (a new order, a new event id) does not make a restart read the
/// bucket back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter([u64; 4]);

impl Filter {
    /// The three bits of a hash: from its low 24 bits (the bucket is picked by its high
    /// bits).
    fn bits(hash: u64) -> [u32; 3] {
        [
            (hash & 0xff) as u32,
            ((hash >> 8) & 0xff) as u32,
            ((hash >> 16) & 0xff) as u32,
        ]
    }

    /// Adds a key's hash.
    pub fn add(&mut self, hash: u64) {
        for bit in Self::bits(hash) {
            self.0[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Whether a key of this hash may be in the bucket.
    pub fn may_contain(&self, hash: u64) -> bool {
        Self::bits(hash)
            .iter()
            .all(|bit| self.0[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// Where a collection's buckets are in its part's side data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Where the first bucket starts.
    at: u64,
    /// Where each bucket ends, from `at` (a bucket starts where the one before ends).
    ends: Vec<u64>,
    /// How many entries each bucket holds.
    counts: Vec<u32>,
    /// Each bucket's filter of its keys.
    filters: Vec<Filter>,
}

impl Layout {
    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.ends.len()
    }

    /// Number of entries in all buckets.
    pub fn entries(&self) -> u64 {
        self.counts.iter().map(|c| *c as u64).sum()
    }

    /// Bucket `b`'s start (in the side data) and length.
    fn range(&self, b: usize) -> (u64, u64) {
        let start = if b == 0 { 0 } else { self.ends[b - 1] };
        (self.at + start, self.ends[b] - start)
    }
}

/// Why a collection's saved buckets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The layout does not fit the side data (a checkpoint of another version).
    #[error("bucket layout: {0}")]
    Layout(&'static str),
    /// A bucket could not be read.
    #[error("reading a bucket back: {0}")]
    Io(#[from] io::Error),
    /// A bucket's entries do not decode.
    #[error("decoding a bucket: {0}")]
    Decode(#[from] bincode::Error),
}

/// The buckets of one saved collection, each read back at most once.
#[derive(Debug)]
pub struct Buckets {
    side: Side,
    layout: Layout,
    /// One bit per bucket: read back already.
    loaded: Vec<u64>,
    /// Buckets not read back.
    unloaded: usize,
    /// Entries in the buckets not read back.
    pending: u64,
    /// Pieces of the buckets' bytes read from the side data, by piece (see [`CHUNK`]).
    chunks: Vec<Option<Box<[u8]>>>,
    /// Per piece: buckets wholly within it not read back yet (the piece is dropped at 0).
    waiting: Vec<u32>,
}

impl Buckets {
    /// The buckets `layout` describes in `side`, none read back yet.
    pub fn new(side: Side, layout: Layout) -> Result<Self, BucketError> {
        let n = layout.buckets();
        if layout.counts.len() != n || layout.filters.len() != n {
            return Err(BucketError::Layout(
                "counts, filters and ends differ in length",
            ));
        }
        if layout.ends.windows(2).any(|w| w[0] > w[1]) {
            return Err(BucketError::Layout("bucket ends go backwards"));
        }
        let end = layout.ends.last().copied().unwrap_or(0);
        if layout.at.checked_add(end).is_none_or(|e| e > side.len()) {
            return Err(BucketError::Layout("buckets past the end of the side data"));
        }
        let pieces = end.div_ceil(CHUNK) as usize;
        let mut waiting = vec![0u32; pieces];
        for b in 0..n {
            if let Some(c) = Self::chunk_of(&layout, b) {
                waiting[c] += 1;
            }
        }
        Ok(Buckets {
            pending: layout.entries(),
            loaded: vec![0; n.div_ceil(64)],
            unloaded: n,
            chunks: vec![None; pieces],
            waiting,
            side,
            layout,
        })
    }

    /// Number of buckets.
    pub fn count(&self) -> usize {
        self.layout.buckets()
    }

    /// The piece bucket `b` lies wholly within, if it does (and is not empty).
    fn chunk_of(layout: &Layout, b: usize) -> Option<usize> {
        let start = if b == 0 { 0 } else { layout.ends[b - 1] };
        let end = layout.ends[b];
        (end > start && start / CHUNK == (end - 1) / CHUNK).then_some((start / CHUNK) as usize)
    }

    /// The bucket a key of this hash is in.
    pub fn bucket(&self, hash: u64) -> usize {
        bucket_of(hash, self.count())
    }

    /// Whether bucket `b` was read back.
    pub fn is_loaded(&self, b: usize) -> bool {
        self.loaded[b / 64] & (1 << (b % 64)) != 0
    }

    /// Whether every bucket was read back.
    pub fn all_loaded(&self) -> bool {
        self.unloaded == 0
    }

    /// Entries in the buckets not read back yet.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Whether a key of this hash may be in bucket `b` as saved (false: it is not).
    pub fn may_contain(&self, b: usize, hash: u64) -> bool {
        self.layout.filters[b].may_contain(hash)
    }

    /// Bucket `b`'s bytes (into `buf`) and entry count, without marking it read.
    pub fn read(&self, b: usize, buf: &mut Vec<u8>) -> Result<u32, BucketError> {
        let (at, len) = self.layout.range(b);
        self.side.read_into(at, len, buf)?;
        Ok(self.layout.counts[b])
    }

    /// Reads bucket `b` back (into `buf`) and marks it read: its entry count, or `None` if
    /// it was read before.
    pub fn take(&mut self, b: usize, buf: &mut Vec<u8>) -> Result<Option<u32>, BucketError> {
        if self.is_loaded(b) {
            return Ok(None);
        }
        let count = match Self::chunk_of(&self.layout, b) {
            Some(c) => {
                if self.chunks[c].is_none() {
                    let from = c as u64 * CHUNK;
                    let to = (from + CHUNK).min(self.layout.ends.last().copied().unwrap_or(0));
                    let piece = self.side.read(self.layout.at + from, to - from)?;
                    self.chunks[c] = Some(piece.into_boxed_slice());
                }
                let piece = self.chunks[c].as_deref().expect("just read");
                let start = if b == 0 { 0 } else { self.layout.ends[b - 1] };
                let at = (start - c as u64 * CHUNK) as usize;
                let len = (self.layout.ends[b] - start) as usize;
                buf.clear();
                buf.extend_from_slice(&piece[at..at + len]);
                self.waiting[c] -= 1;
                if self.waiting[c] == 0 {
                    self.chunks[c] = None;
                }
                self.layout.counts[b]
            }
            None => self.read(b, buf)?,
        };
        self.loaded[b / 64] |= 1 << (b % 64);
        self.unloaded -= 1;
        self.pending -= count as u64;
        Ok(Some(count))
    }
}

/// The first pass of [`write_planned`]: every entry's hash and size, in the order the
/// second pass will give them.
#[derive(Debug, Default)]
pub struct Plan {
    sizes: Vec<u32>,
    hashes: Vec<u64>,
}

impl Plan {
    /// An entry whose key has `hash` and whose bytes take `size`.
    pub fn add(&mut self, hash: u64, size: u64) {
        self.hashes.push(hash);
        self.sizes
            .push(u32::try_from(size).expect("an entry under 4 GiB"));
    }
}

/// The second pass of [`write_planned`]: each entry's bytes, written in place.
pub struct Fill<'a> {
    buf: &'a mut [u8],
    plan: &'a Plan,
    next: usize,
    cursors: Vec<u64>,
    n: usize,
}

impl Fill<'_> {
    /// Writes the next entry (the plan's next hash and size): `write` gets exactly its
    /// bytes' room.
    pub fn put<E>(&mut self, write: impl FnOnce(&mut [u8]) -> Result<(), E>) -> Result<(), E> {
        let (hash, size) = (
            self.plan.hashes[self.next],
            self.plan.sizes[self.next] as u64,
        );
        self.next += 1;
        let b = bucket_of(hash, self.n);
        let at = self.cursors[b] as usize;
        self.cursors[b] += size;
        write(&mut self.buf[at..at + size as usize])
    }
}

/// Writes `n` buckets to this thread's side buffer in two passes over the entries, in the
/// order a collection holds them (no grouping by bucket first: a sort, then a read of each
/// entry wherever its table keeps it, made a checkpoint's pause twice as long):
/// the plan gives every entry's hash and size, then `fill` writes each entry, in the same
/// order, straight to its place. A bucket of `copy` not read back is copied first, its
/// entries before the plan's of the same bucket. `None` outside a writing.
pub fn write_planned<E: From<BucketError>>(
    n: usize,
    copy: Option<&Buckets>,
    plan: &Plan,
    fill: impl FnOnce(&mut Fill<'_>) -> Result<(), E>,
) -> Option<Result<Layout, E>> {
    let mut counts = vec![0u32; n];
    let mut sizes = vec![0u64; n];
    let mut filters = vec![Filter::default(); n];
    let copied = |b: usize| copy.filter(|c| !c.is_loaded(b));
    for b in 0..n {
        if let Some(c) = copied(b) {
            let (_, len) = c.layout.range(b);
            sizes[b] = len;
            counts[b] = c.layout.counts[b];
            filters[b] = c.layout.filters[b];
        }
    }
    for (hash, size) in plan.hashes.iter().zip(&plan.sizes) {
        let b = bucket_of(*hash, n);
        counts[b] += 1;
        sizes[b] += *size as u64;
        filters[b].add(*hash);
    }
    let mut ends = Vec::with_capacity(n);
    let mut end = 0u64;
    for size in &sizes {
        end += size;
        ends.push(end);
    }
    let result = side::append(|buf| {
        let start = buf.len();
        buf.resize(start + end as usize, 0);
        let region = &mut buf[start..];
        let mut cursors = Vec::with_capacity(n);
        for b in 0..n {
            let from = if b == 0 { 0 } else { ends[b - 1] };
            let mut cursor = from;
            if let Some(c) = copied(b) {
                let (at, len) = c.layout.range(b);
                c.side
                    .read_exact_into(at, &mut region[from as usize..(from + len) as usize])
                    .map_err(BucketError::from)?;
                cursor += len;
            }
            cursors.push(cursor);
        }
        let mut filling = Fill {
            buf: region,
            plan,
            next: 0,
            cursors,
            n,
        };
        fill(&mut filling)?;
        debug_assert_eq!(
            filling.next,
            plan.sizes.len(),
            "every planned entry written"
        );
        Ok(())
    })?;
    Some(result.map(|at| Layout {
        at,
        ends,
        counts,
        filters,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_stable_hash_does_not_change() {
        // Checkpoints written by earlier builds find their keys only if these stay put
        // (the values are SplitMix64 and FNV-1a as published, computed independently).
        assert_eq!(7u64.bucket_hash(), 0x12ae_3023_7b17_df14);
        assert_eq!(b"ev-1"[..].bucket_hash(), 0xff3c_b54c_5d87_6d3c);
        assert_ne!((1u64, 2u64).bucket_hash(), (2u64, 1u64).bucket_hash());
    }

    #[test]
    fn a_filter_never_rules_out_a_key_it_holds() {
        let mut filter = Filter::default();
        let keys: Vec<u64> = (0..32u64).map(|k| (k * 7919).bucket_hash()).collect();
        for h in &keys {
            filter.add(*h);
        }
        assert!(keys.iter().all(|h| filter.may_contain(*h)));
        let passed = (1_000u64..11_000)
            .filter(|k| filter.may_contain(k.bucket_hash()))
            .count();
        assert!(passed < 1_000, "{passed} of 10,000 absent keys passed");
    }

    #[test]
    fn every_hash_falls_in_a_bucket() {
        for n in [1, 2, 3, 1000] {
            assert_eq!(bucket_of(0, n), 0);
            assert_eq!(bucket_of(u64::MAX, n), n - 1);
        }
    }

    #[test]
    fn buckets_are_read_back_once_each() {
        // Hashes that fall in buckets 2, 0, 1 and 2 of three; entries of 1, 2, 3 and 4 bytes.
        let hashes = [u64::MAX, 0, u64::MAX / 2, u64::MAX - 1];
        let mut plan = Plan::default();
        for (i, h) in hashes.iter().enumerate() {
            plan.add(*h, i as u64 + 1);
        }
        let (layout, bytes) = side::writing(|| {
            write_planned(3, None, &plan, |fill| {
                for i in 0..hashes.len() {
                    fill.put(|dest: &mut [u8]| {
                        dest.fill(i as u8);
                        Ok::<_, BucketError>(())
                    })?;
                }
                Ok::<_, BucketError>(())
            })
            .expect("inside a writing")
            .expect("written")
        });
        // Bucket 0: entry 1; bucket 1: entry 2; bucket 2: entries 0 then 3.
        assert_eq!(bytes, [1, 1, 2, 2, 2, 0, 3, 3, 3, 3]);
        assert_eq!(layout.entries(), 4);
        let side = Side::Bytes(Arc::new(bytes));
        let mut buckets = Buckets::new(side, layout).unwrap();
        assert_eq!(buckets.pending(), 4);
        let mut buf = Vec::new();
        assert_eq!(buckets.take(2, &mut buf).unwrap(), Some(2));
        assert_eq!(buf, [0, 3, 3, 3, 3]);
        assert_eq!(buckets.take(2, &mut buf).unwrap(), None);
        assert_eq!(buckets.pending(), 2);
        assert!(!buckets.all_loaded());
        assert!(buckets.may_contain(2, u64::MAX));
    }

    #[test]
    fn a_layout_past_its_side_data_is_refused() {
        let layout = Layout {
            at: 0,
            ends: vec![4],
            counts: vec![1],
            filters: vec![Filter::default()],
        };
        let side = Side::Bytes(Arc::new(b"abc".to_vec()));
        assert!(Buckets::new(side, layout).is_err());
    }
}

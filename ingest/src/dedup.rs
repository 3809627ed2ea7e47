//! The event ids a stream has seen, for dedup (SPEC §8), kept compactly.
//!
//! Every schema-valid event marks its `event_id`, and an id must be remembered for as long
//! as a duplicate of it may arrive (the dedup horizon, 7 days of event time by default):
//! this set holds about one entry per event of the last two horizons, so its size per
//! entry is a large part of the pipeline's memory. Ids are kept exactly (no hashes stand in
//! for them): their bytes are appended to one arena, and a hash table holds, per id, its
//! place in the arena and the time it was first seen — 16 bytes, against a `String` (24
//! bytes plus a heap block) and its time in a map.
//!
//! A checkpoint writes the ids in buckets by a stable hash of the id (side data, see
//! [`shopflow_state`]); a restart reads a bucket back the first time an id of it is looked
//! up, so it does not rebuild the table before the first new event.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shopflow_model::Millis;
use shopflow_state::buckets::{self, BucketError, BucketKey, Buckets, Layout, PER_BUCKET};
use shopflow_state::side;

/// One id: where its bytes start in the arena (a length byte or two, then the bytes) and
/// the event time at which it was last accepted as new.
#[derive(Clone, Copy, Debug)]
struct Slot {
    at: u64,
    ts: Millis,
}

/// Event ids with the time each was first seen.
pub struct SeenIds {
    table: HashTable<Slot>,
    /// Every id's length (LEB128) then its bytes, in the order they were first seen.
    arena: Vec<u8>,
    hasher: foldhash::fast::RandomState,
    /// The buckets of a checkpoint's ids not read back yet (after a restart).
    base: Option<Buckets>,
}

impl Default for SeenIds {
    fn default() -> Self {
        SeenIds {
            table: HashTable::new(),
            arena: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
            base: None,
        }
    }
}

impl std::fmt::Debug for SeenIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenIds")
            .field("ids", &self.table.len())
            .field("arena_bytes", &self.arena.len())
            .field("pending", &self.base.as_ref().map_or(0, |b| b.pending()))
            .finish()
    }
}

/// The id stored at `at` in `arena`.
fn id_at(arena: &[u8], at: u64) -> &[u8] {
    let at = at as usize;
    let (len, skip) = if arena[at] < 0x80 {
        (arena[at] as usize, 1)
    } else {
        (
            (arena[at] & 0x7f) as usize | (arena[at + 1] as usize) << 7,
            2,
        )
    };
    &arena[at + skip..at + skip + len]
}

/// Reads a bucket's ids: each as [`push_id`] writes it, then its time (8 bytes, LE).
fn bucket_ids(
    mut bytes: &[u8],
    count: u32,
    mut each: impl FnMut(&[u8], Millis),
) -> Result<(), BucketError> {
    let short = BucketError::Layout("a bucket of ids is cut short");
    for _ in 0..count {
        let (len, skip) = match bytes {
            [b, ..] if *b < 0x80 => (*b as usize, 1),
            [b, c, ..] => ((b & 0x7f) as usize | (*c as usize) << 7, 2),
            _ => return Err(short),
        };
        let Some(id) = bytes.get(skip..skip + len) else {
            return Err(short);
        };
        let Some(ts) = bytes.get(skip + len..skip + len + 8) else {
            return Err(short);
        };
        each(id, Millis::from_le_bytes(ts.try_into().expect("8 bytes")));
        bytes = &bytes[skip + len + 8..];
    }
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(BucketError::Layout("bytes left after a bucket of ids"))
    }
}

fn lost(e: BucketError) -> ! {
    panic!("a checkpoint's dedup ids could not be read back after the start ({e}): the state to continue with is not known")
}

impl SeenIds {
    /// Number of ids kept (read back from a checkpoint or not).
    pub fn len(&self) -> usize {
        self.table.len() + self.base.as_ref().map_or(0, |b| b.pending() as usize)
    }

    /// Whether no id is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads back the bucket `id` is in, if a checkpoint's ids are still pending.
    fn load(&mut self, id: &[u8]) {
        let Some(base) = self.base.as_mut() else {
            return;
        };
        let hash = id.bucket_hash();
        let b = base.bucket(hash);
        if base.is_loaded(b) || !base.may_contain(b, hash) {
            // Read back already, or the id is not in it (a new id): the table holds what
            // there is.
            return;
        }
        // No room reserved for every id still on disk: see `LazyMap::load`.
        let mut buf = Vec::new();
        match base.take(b, &mut buf) {
            Ok(None) => {}
            Ok(Some(count)) => {
                bucket_ids(&buf, count, |id, ts| self.push_new(id, ts)).unwrap_or_else(|e| lost(e))
            }
            Err(e) => lost(e),
        }
        if self.base.as_ref().is_some_and(|b| b.all_loaded()) {
            self.base = None;
        }
    }

    /// Reads back every pending bucket.
    fn load_all(&mut self) {
        let Some(base) = self.base.take() else {
            return;
        };
        self.table.reserve(base.pending() as usize, |s| {
            self.hasher.hash_one(id_at(&self.arena, s.at))
        });
        let mut buf = Vec::new();
        for b in (0..base.count()).filter(|b| !base.is_loaded(*b)) {
            let count = base.read(b, &mut buf).unwrap_or_else(|e| lost(e));
            bucket_ids(&buf, count, |id, ts| self.push_new(id, ts)).unwrap_or_else(|e| lost(e));
        }
    }

    /// When `id` was (last) accepted as new, if it is kept.
    pub fn get(&mut self, id: &str) -> Option<Millis> {
        self.load(id.as_bytes());
        let hash = self.hasher.hash_one(id.as_bytes());
        self.table
            .find(hash, |s| id_at(&self.arena, s.at) == id.as_bytes())
            .map(|s| s.ts)
    }

    /// Records that `id` was accepted as new at `ts` (replacing an older time).
    pub fn insert(&mut self, id: &str, ts: Millis) {
        let bytes = id.as_bytes();
        self.load(bytes);
        let hash = self.hasher.hash_one(bytes);
        let arena = &self.arena;
        if let Some(slot) = self.table.find_mut(hash, |s| id_at(arena, s.at) == bytes) {
            slot.ts = ts;
            return;
        }
        let at = push_id(&mut self.arena, bytes);
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.table.insert_unique(hash, Slot { at, ts }, |s| {
            hasher.hash_one(id_at(arena, s.at))
        });
    }

    /// Keeps only the ids whose time is at least `cutoff`, in a new arena (reads every
    /// pending bucket back first).
    pub fn retain_since(&mut self, cutoff: Millis) {
        self.load_all();
        let mut kept: Vec<Slot> = self
            .table
            .iter()
            .copied()
            .filter(|s| s.ts >= cutoff)
            .collect();
        kept.sort_unstable_by_key(|s| s.at);
        let old = std::mem::take(&mut self.arena);
        let mut fresh = SeenIds {
            table: HashTable::with_capacity(kept.len()),
            arena: Vec::with_capacity(old.len()),
            hasher: self.hasher.clone(),
            base: None,
        };
        for s in kept {
            fresh.push_new(id_at(&old, s.at), s.ts);
        }
        fresh.arena.shrink_to_fit();
        *self = fresh;
    }

    /// Adds an id known not to be kept yet.
    fn push_new(&mut self, bytes: &[u8], ts: Millis) {
        let hash = self.hasher.hash_one(bytes);
        let at = push_id(&mut self.arena, bytes);
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.table.insert_unique(hash, Slot { at, ts }, |s| {
            hasher.hash_one(id_at(arena, s.at))
        });
    }

    /// The ids of the pending buckets, decoded (when they are not copied as they are).
    fn pending_ids(&self) -> Result<Vec<(Vec<u8>, Millis)>, BucketError> {
        let mut out = Vec::new();
        if let Some(base) = &self.base {
            let mut buf = Vec::new();
            for b in (0..base.count()).filter(|b| !base.is_loaded(*b)) {
                let count = base.read(b, &mut buf)?;
                bucket_ids(&buf, count, |id, ts| out.push((id.to_vec(), ts)))?;
            }
        }
        Ok(out)
    }

    /// Writes the ids to side data in buckets (see [`shopflow_state::buckets`]).
    fn write_buckets(&self) -> Result<Layout, BucketError> {
        let len = self.len();
        let (n, copy, pending) = match &self.base {
            Some(base) if len <= base.count() * 4 * PER_BUCKET => {
                (base.count(), Some(base), Vec::new())
            }
            Some(_) => (buckets::buckets_for(len), None, self.pending_ids()?),
            None => (buckets::buckets_for(len), None, Vec::new()),
        };
        let ids = || {
            self.table
                .iter()
                .map(|s| (id_at(&self.arena, s.at), s.ts))
                .chain(pending.iter().map(|(id, ts)| (id.as_slice(), *ts)))
        };
        let mut plan = buckets::Plan::default();
        for (id, _) in ids() {
            let len_bytes = if id.len() < 0x80 { 1 } else { 2 };
            plan.add(id.bucket_hash(), (len_bytes + id.len() + 8) as u64);
        }
        buckets::write_planned(n, copy, &plan, |fill| {
            let mut one = Vec::with_capacity(600);
            for (id, ts) in ids() {
                one.clear();
                push_id(&mut one, id);
                one.extend_from_slice(&ts.to_le_bytes());
                fill.put(|dest| {
                    dest.copy_from_slice(&one);
                    Ok::<_, BucketError>(())
                })?;
            }
            Ok::<_, BucketError>(())
        })
        .expect("inside side::writing")
    }
}

/// Appends an id (1–512 bytes: 128 Unicode scalars) to the arena; returns where it starts.
fn push_id(arena: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    let at = arena.len() as u64;
    let len = bytes.len();
    debug_assert!(len < 1 << 14, "event ids are at most 512 bytes");
    if len < 0x80 {
        arena.push(len as u8);
    } else {
        arena.push((len & 0x7f) as u8 | 0x80);
        arena.push((len >> 7) as u8);
    }
    arena.extend_from_slice(bytes);
    at
}

/// Outside a checkpoint the ids are written as (arena, per id in arena order: its time);
/// the table is rebuilt on load (its hasher is seeded per process). In a checkpoint
/// ([`side::writing`]) they go to side data in buckets, read back lazily.
impl Serialize for SeenIds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if side::is_writing() {
            let layout = self.write_buckets().map_err(S::Error::custom)?;
            return s.serialize_newtype_variant("SeenIds", 1, "Buckets", &layout);
        }
        let mut slots: Vec<Slot> = self.table.iter().copied().collect();
        slots.sort_unstable_by_key(|s| s.at);
        let pending = self.pending_ids().map_err(S::Error::custom)?;
        let mut arena = Vec::with_capacity(self.arena.len());
        let mut times = Vec::with_capacity(slots.len() + pending.len());
        for slot in slots {
            push_id(&mut arena, id_at(&self.arena, slot.at));
            times.push(slot.ts);
        }
        for (id, ts) in &pending {
            push_id(&mut arena, id);
            times.push(*ts);
        }
        s.serialize_newtype_variant("SeenIds", 0, "Inline", &(Bytes(&arena), times))
    }
}

#[derive(Deserialize)]
enum SeenForm {
    Inline(SeenRaw),
    Buckets(Layout),
}

impl<'de> Deserialize<'de> for SeenIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match SeenForm::deserialize(d)? {
            SeenForm::Inline(raw) => raw.build().map_err(D::Error::custom),
            SeenForm::Buckets(layout) => {
                let side = side::current()
                    .ok_or_else(|| D::Error::custom("dedup buckets outside a checkpoint"))?;
                let base = Buckets::new(side, layout).map_err(D::Error::custom)?;
                Ok(SeenIds {
                    base: (!base.all_loaded()).then_some(base),
                    ..SeenIds::default()
                })
            }
        }
    }
}

/// Ids written inline, before their table is built ([`SeenRaw::build`]).
struct SeenRaw {
    arena: Vec<u8>,
    times: Vec<Millis>,
}

impl<'de> Deserialize<'de> for SeenRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (arena, times): (ByteBuf, Vec<Millis>) = Deserialize::deserialize(d)?;
        Ok(SeenRaw {
            arena: arena.0,
            times,
        })
    }
}

impl SeenRaw {
    /// The ids with their table. The arena is the one written (the same layout, in
    /// first-seen order), so it is kept as it is and only the table is built.
    fn build(self) -> Result<SeenIds, &'static str> {
        let SeenRaw { arena, times } = self;
        let mut seen = SeenIds {
            table: HashTable::with_capacity(times.len()),
            arena: Vec::new(),
            ..SeenIds::default()
        };
        let mut at = 0usize;
        for ts in times {
            let len = match arena.get(at) {
                Some(&b) if b < 0x80 => (b as usize, 1),
                Some(&b) => match arena.get(at + 1) {
                    Some(&c) => ((b & 0x7f) as usize | (c as usize) << 7, 2),
                    None => return Err("seen ids: truncated arena"),
                },
                None => return Err("seen ids: fewer ids than times"),
            };
            let start = at + len.1;
            let Some(bytes) = arena.get(start..start + len.0) else {
                return Err("seen ids: truncated arena");
            };
            let hash = seen.hasher.hash_one(bytes);
            let hasher = &seen.hasher;
            let slot = Slot { at: at as u64, ts };
            seen.table
                .insert_unique(hash, slot, |s| hasher.hash_one(id_at(&arena, s.at)));
            at = start + len.0;
        }
        if at != arena.len() {
            return Err("seen ids: more ids than times");
        }
        seen.arena = arena;
        Ok(seen)
    }
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ByteBuf, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shopflow_state::Part;
    use std::collections::HashMap;

    proptest! {
        /// The set answers like a map from id to time, through inserts, evictions and a
        /// checkpoint round trip.
        #[test]
        fn behaves_like_a_map(
            ops in prop::collection::vec(("[a-c]{1,3}|[a-z0-9가]{100,140}|[0-9]{4}", 0..1_000u64, 0..20u8), 1..400),
        ) {
            let mut seen = SeenIds::default();
            let mut model: HashMap<String, Millis> = HashMap::new();
            for (id, ts, op) in ops {
                prop_assert_eq!(seen.get(&id), model.get(&id).copied());
                match op {
                    0 => {
                        seen.retain_since(ts);
                        model.retain(|_, t| *t >= ts);
                    }
                    1 => {
                        let bytes = bincode::serialize(&seen).unwrap();
                        seen = bincode::deserialize(&bytes).unwrap();
                    }
                    2 | 3 => {
                        // A checkpoint: ids in buckets of side data, read back lazily.
                        seen = Part::save(&seen).unwrap().restore().unwrap();
                    }
                    _ => {
                        seen.insert(&id, ts);
                        model.insert(id, ts);
                    }
                }
                prop_assert_eq!(seen.len(), model.len());
            }
            for (id, ts) in &model {
                prop_assert_eq!(seen.get(id), Some(*ts));
            }
        }
    }

    #[test]
    fn a_restore_holds_only_the_ids_read_back() {
        let mut seen = SeenIds::default();
        for i in 0..20_000u64 {
            seen.insert(&format!("e{i}"), i);
        }
        let mut seen: SeenIds = Part::save(&seen).unwrap().restore().unwrap();
        assert_eq!(seen.get("e777"), Some(777));
        assert_eq!(seen.len(), 20_000);
        // One bucket read back: the table has room for about that, not for every id still
        // on disk (whose pages later reads would touch for the first time, one by one).
        assert!(
            seen.table.capacity() < 1_000,
            "room for {} ids after one bucket was read back",
            seen.table.capacity()
        );
        assert_eq!(seen.get("e19999"), Some(19_999));
        assert_eq!(seen.get("e20000"), None);
    }
}

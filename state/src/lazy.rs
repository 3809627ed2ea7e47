//! [`LazyMap`]: a hash map whose entries a restart reads back one bucket at a time, when
//! a key of the bucket is first touched.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::buckets::{self, BucketError, BucketKey, Buckets, Layout, PER_BUCKET};
use crate::side;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A hash map that a checkpoint saves in buckets and a restart reads back lazily.
///
/// Every access names a key; the first access to a key of a bucket not read back yet
/// reads that bucket (all its entries join the map), so the map answers exactly as if it
/// had been restored whole — unless the bucket's filter rules the key out (a new key):
/// then the bucket stays on disk and the key's entry, if one is inserted, is saved after
/// the bucket's bytes. Until then those entries cost nothing but their bytes on disk. Iterating ([`LazyMap::iter`], [`LazyMap::retain`]) reads every bucket first.
///
/// Saved inside [`side::writing`] (a checkpoint), the entries go to side data in buckets:
/// a bucket not read back since the restore is copied as it is. Saved elsewhere, the map
/// is an ordinary sequence of entries.
///
/// A bucket that cannot be read back (the checkpoint file became unreadable after it was
/// checked at the start) stops the worker with a panic naming the reason: the state it
/// would continue with is not known.
pub struct LazyMap<K, V> {
    live: FastMap<K, V>,
    base: Option<Buckets>,
    buf: Vec<u8>,
}

impl<K, V> Default for LazyMap<K, V> {
    fn default() -> Self {
        LazyMap {
            live: FastMap::default(),
            base: None,
            buf: Vec::new(),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for LazyMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyMap")
            .field("live", &self.live.len())
            .field("pending", &self.base.as_ref().map_or(0, |b| b.pending()))
            .finish()
    }
}

/// Reads `count` entries from `bytes` (as `bincode::serialize` wrote them, one after the
/// other; the layout's counts and the file's checksum say where they end).
pub(crate) fn decode_entries<K: DeserializeOwned, V: DeserializeOwned>(
    bytes: &[u8],
    count: u32,
    mut each: impl FnMut(K, V),
) -> Result<(), BucketError> {
    use bincode::Options;
    // `bincode::serialize`'s settings.
    let options = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes();
    let mut de = bincode::Deserializer::from_slice(bytes, options);
    for _ in 0..count {
        let (k, v) = <(K, V)>::deserialize(&mut de)?;
        each(k, v);
    }
    Ok(())
}

/// Reads bucket `b` back into `live`, if it was not yet.
fn file_bucket<K: DeserializeOwned + Eq + Hash, V: DeserializeOwned>(
    base: &mut Buckets,
    b: usize,
    buf: &mut Vec<u8>,
    live: &mut FastMap<K, V>,
) {
    match base.take(b, buf) {
        Ok(None) => {}
        Ok(Some(count)) => decode_entries(buf, count, |k, v| {
            live.insert(k, v);
        })
        .unwrap_or_else(|e| lost(e)),
        Err(e) => lost(e),
    }
}

pub(crate) fn lost(e: BucketError) -> ! {
    panic!("a checkpoint's saved state could not be read back after the start ({e}): the state to continue with is not known")
}

impl<K, V> LazyMap<K, V>
where
    K: BucketKey + Eq + Hash + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads back the bucket of `key` if it was not yet.
    fn load(&mut self, key: &K) {
        let Some(base) = self.base.as_mut() else {
            return;
        };
        let hash = key.bucket_hash();
        let b = base.bucket(hash);
        if base.is_loaded(b) || !base.may_contain(b, hash) {
            // Read back already, or the key is not in it: the map holds what there is.
            return;
        }
        // The table grows with what is read back, no room is reserved for every entry
        // still on disk: a table sized for all of them at the first read is written at
        // random places by the next reads, each on a page of its own touched for the first
        // time, so a restart's first events paid a page fault per entry read back, more
        // the larger the checkpoint (first write after 4.9M events 0.18 -> 0.13 s).
        file_bucket(base, b, &mut self.buf, &mut self.live);
        if base.all_loaded() {
            self.base = None;
            self.buf = Vec::new();
        }
    }

    /// Reads back every bucket not read yet.
    pub fn load_all(&mut self) {
        let Some(base) = self.base.as_mut() else {
            return;
        };
        self.live.reserve(base.pending() as usize);
        for b in 0..base.count() {
            file_bucket(base, b, &mut self.buf, &mut self.live);
        }
        self.base = None;
        self.buf = Vec::new();
    }

    /// Number of entries (read back or not).
    pub fn len(&self) -> usize {
        self.live.len() + self.base.as_ref().map_or(0, |b| b.pending() as usize)
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of entries still waiting in buckets not read back.
    pub fn pending(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.pending() as usize)
    }

    /// The value of `key`.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.load(key);
        self.live.get(key)
    }

    /// The value of `key`, to change.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.load(key);
        self.live.get_mut(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&mut self, key: &K) -> bool {
        self.load(key);
        self.live.contains_key(key)
    }

    /// Sets the value of `key`; returns the one it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.load(&key);
        self.live.insert(key, value)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.load(key);
        self.live.remove(key)
    }

    /// The value of `key`, inserted by `make` if it has none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.load(&key);
        self.live.entry(key).or_insert_with(make)
    }

    /// The value of `key`, the default inserted if it has none.
    pub fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        self.get_or_insert_with(key, V::default)
    }

    /// The value of `key` without reading its bucket into the map (a bucket not read back
    /// is read and searched, and stays on disk).
    pub fn peek(&self, key: &K) -> Option<Cow<'_, V>>
    where
        V: Clone,
    {
        if let Some(v) = self.live.get(key) {
            return Some(Cow::Borrowed(v));
        }
        let base = self.base.as_ref()?;
        let hash = key.bucket_hash();
        let b = base.bucket(hash);
        if base.is_loaded(b) || !base.may_contain(b, hash) {
            return None;
        }
        let mut buf = Vec::new();
        let count = base.read(b, &mut buf).unwrap_or_else(|e| lost(e));
        let mut found = None;
        decode_entries(&buf, count, |k: K, v: V| {
            if k == *key {
                found = Some(v);
            }
        })
        .unwrap_or_else(|e| lost(e));
        found.map(Cow::Owned)
    }

    /// Every entry (reads every bucket back first).
    pub fn iter(&mut self) -> impl Iterator<Item = (&K, &V)> {
        self.load_all();
        self.live.iter()
    }

    /// Keeps the entries for which `keep` says so (reads every bucket back first).
    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.load_all();
        self.live.retain(keep);
    }
}

impl<K> LazyMap<K, ()>
where
    K: BucketKey + Eq + Hash + Serialize + DeserializeOwned,
{
    /// As a set: adds `key`; whether it was not there.
    pub fn add(&mut self, key: K) -> bool {
        self.insert(key, ()).is_none()
    }
}

impl<K, V> Extend<(K, V)> for LazyMap<K, V>
where
    K: BucketKey + Eq + Hash + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

/// The serialized form: the entries themselves, or (in a checkpoint) their buckets'
/// layout in the side data.
#[derive(Deserialize)]
enum Form<E> {
    Inline(Vec<E>),
    Buckets(Layout),
}

/// Serializes a sequence of entries without collecting them.
struct Entries<'a, I>(std::cell::RefCell<Option<I>>, usize, PhantomData<&'a ()>);

impl<'a, K: Serialize + 'a, V: Serialize + 'a, I: Iterator<Item = (&'a K, &'a V)>> Serialize
    for Entries<'a, I>
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1))?;
        if let Some(iter) = self.0.borrow_mut().take() {
            for (k, v) in iter {
                seq.serialize_element(&(k, v))?;
            }
        }
        seq.end()
    }
}

impl<K, V> Serialize for LazyMap<K, V>
where
    K: BucketKey + Eq + Hash + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize_with(&[], s)
    }
}

impl<K, V> LazyMap<K, V>
where
    K: BucketKey + Eq + Hash + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Serializes the map with `extra` entries added, whose keys the map does not hold
    /// (entries kept elsewhere in another form, saved as if they were in the map).
    pub fn serialize_with<S: Serializer>(&self, extra: &[(K, V)], s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        // Entries of buckets not read back, decoded: needed when they are not copied as
        // they are (written inline, or into buckets of another number).
        let decode_pending = |base: &Buckets| -> Result<Vec<(K, V)>, BucketError> {
            let mut out = Vec::with_capacity(base.pending() as usize);
            let mut buf = Vec::new();
            for b in (0..base.count()).filter(|b| !base.is_loaded(*b)) {
                let count = base.read(b, &mut buf)?;
                decode_entries(&buf, count, |k, v| out.push((k, v)))?;
            }
            Ok(out)
        };
        if !side::is_writing() {
            let pending = match &self.base {
                Some(base) => decode_pending(base).map_err(S::Error::custom)?,
                None => Vec::new(),
            };
            let len = self.live.len() + pending.len() + extra.len();
            let iter = self
                .live
                .iter()
                .chain(pending.iter().chain(extra).map(|(k, v)| (k, v)));
            let entries = Entries(std::cell::RefCell::new(Some(iter)), len, PhantomData);
            return s.serialize_newtype_variant("Form", 0, "Inline", &entries);
        }
        // Buckets not read back are copied as they are while the map has not outgrown
        // their number; past that, every entry is spread over new buckets.
        let len = self.len() + extra.len();
        let (n, copy, pending) = match &self.base {
            Some(base) if len <= base.count() * 4 * PER_BUCKET => {
                (base.count(), Some(base), Vec::new())
            }
            Some(base) => (
                buckets::buckets_for(len),
                None,
                decode_pending(base).map_err(S::Error::custom)?,
            ),
            None => (buckets::buckets_for(len), None, Vec::new()),
        };
        let entries = || {
            self.live
                .iter()
                .chain(pending.iter().chain(extra).map(|(k, v)| (k, v)))
        };
        let mut plan = buckets::Plan::default();
        for (k, v) in entries() {
            let size = bincode::serialized_size(&(k, v)).map_err(S::Error::custom)?;
            plan.add(k.bucket_hash(), size);
        }
        let layout = buckets::write_planned(n, copy, &plan, |fill| {
            for (k, v) in entries() {
                fill.put(|dest| bincode::serialize_into(dest, &(k, v)))?;
            }
            Ok::<_, BucketError>(())
        })
        .expect("inside side::writing")
        .map_err(S::Error::custom)?;
        s.serialize_newtype_variant("Form", 1, "Buckets", &layout)
    }
}

impl<'de, K, V> Deserialize<'de> for LazyMap<K, V>
where
    K: BucketKey + Eq + Hash + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Form::<(K, V)>::deserialize(d)? {
            Form::Inline(entries) => {
                let mut live = FastMap::default();
                live.reserve(entries.len());
                live.extend(entries);
                Ok(LazyMap {
                    live,
                    ..LazyMap::default()
                })
            }
            Form::Buckets(layout) => {
                let side = side::current()
                    .ok_or_else(|| D::Error::custom("a lazy map's buckets outside a checkpoint"))?;
                let base = Buckets::new(side, layout).map_err(D::Error::custom)?;
                Ok(LazyMap {
                    live: FastMap::default(),
                    base: (!base.all_loaded()).then_some(base),
                    buf: Vec::new(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Part;
    use proptest::prelude::*;

    type Map = LazyMap<u64, String>;

    /// A checkpoint round trip: saved with side data, restored lazily from it.
    fn checkpoint(map: &Map) -> Map {
        Part::save(map).unwrap().restore().unwrap()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, String),
        Remove(u64),
        Get(u64),
        Peek(u64),
        Update(u64),
        Checkpoint,
        Inline,
        Retain(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0..400u64;
        prop_oneof![
            8 => (key.clone(), "[a-z]{0,6}").prop_map(|(k, v)| Op::Insert(k, v)),
            2 => key.clone().prop_map(Op::Remove),
            3 => key.clone().prop_map(Op::Get),
            2 => key.clone().prop_map(Op::Peek),
            2 => key.prop_map(Op::Update),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Inline),
            1 => (2..9u64).prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Through inserts, removals, updates and checkpoint round trips that leave most
        /// buckets on disk, the map answers as a `HashMap` does.
        #[test]
        fn answers_like_a_hash_map(ops in prop::collection::vec(op(), 1..600)) {
            let mut map = Map::new();
            let mut model: HashMap<u64, String> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(map.insert(k, v.clone()), model.insert(k, v));
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(&k), model.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(map.get(&k), model.get(&k)),
                    Op::Peek(k) => {
                        prop_assert_eq!(map.peek(&k).map(|v| v.into_owned()), model.get(&k).cloned());
                    }
                    Op::Update(k) => {
                        map.get_or_default(k).push('!');
                        model.entry(k).or_default().push('!');
                    }
                    Op::Checkpoint => map = checkpoint(&map),
                    Op::Inline => map = bincode::deserialize(&bincode::serialize(&map).unwrap()).unwrap(),
                    Op::Retain(m) => {
                        map.retain(|k, _| k % m != 0);
                        model.retain(|k, _| k % m != 0);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let all: HashMap<u64, String> = map.iter().map(|(k, v)| (*k, v.clone())).collect();
            prop_assert_eq!(all, model);
        }
    }

    #[test]
    fn a_restore_reads_only_the_buckets_it_touches() {
        let mut map = Map::new();
        for k in 0..10_000 {
            map.insert(k, k.to_string());
        }
        let mut restored = checkpoint(&map);
        assert_eq!(restored.len(), 10_000);
        assert_eq!(restored.pending(), 10_000);
        assert_eq!(restored.get(&1234).map(String::as_str), Some("1234"));
        assert!(
            restored.pending() >= 10_000 - 4 * PER_BUCKET,
            "one bucket read back, {} entries still pending",
            restored.pending()
        );
        // The table holds what was read back, no room for what is still on disk: a
        // table sized for all 10,000 would have its pages first touched by later reads.
        assert!(
            restored.live.capacity() < 1_000,
            "room for {} entries after one bucket was read back",
            restored.live.capacity()
        );
        // Saved again, the untouched buckets are copied and still read back right.
        let mut again = checkpoint(&restored);
        for k in (0..10_000).step_by(97) {
            assert_eq!(again.get(&k), Some(&k.to_string()), "key {k}");
        }
    }

    #[test]
    fn buckets_across_pieces_of_the_file_read_back_whole() {
        // About 4 MB of buckets: several 1 MiB pieces, buckets straddling their edges.
        let mut map = Map::new();
        let value = |k: u64| format!("{k:0>30}");
        for k in 0..100_000 {
            map.insert(k, value(k));
        }
        let mut restored = checkpoint(&map);
        for k in (0..100_000).step_by(7) {
            assert_eq!(restored.get(&k), Some(&value(k)), "key {k}");
        }
        let mut seen = 0;
        for (k, v) in restored.iter() {
            assert_eq!(*v, value(*k));
            seen += 1;
        }
        assert_eq!(seen, 100_000);
        assert_eq!(restored.pending(), 0);
    }

    #[test]
    fn extra_entries_are_saved_as_part_of_the_map() {
        let mut map = Map::new();
        for k in 0..100 {
            map.insert(k, "m".into());
        }
        let map = checkpoint(&map);
        let extra: Vec<(u64, String)> = (100..150).map(|k| (k, "x".to_string())).collect();
        let mut back: Map = Part::save(&Saved(&map, &extra)).unwrap().restore().unwrap();
        assert_eq!(back.len(), 150);
        assert_eq!(back.get(&7).map(String::as_str), Some("m"));
        assert_eq!(back.get(&120).map(String::as_str), Some("x"));
        // Inline too.
        let inline: Map =
            bincode::deserialize(&bincode::serialize(&Saved(&map, &extra)).unwrap()).unwrap();
        assert_eq!(inline.len(), 150);
    }

    struct Saved<'a>(&'a Map, &'a [(u64, String)]);

    impl Serialize for Saved<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.serialize_with(self.1, s)
        }
    }

    #[test]
    fn a_map_that_outgrew_its_buckets_is_spread_over_more() {
        let mut map = Map::new();
        for k in 0..10 {
            map.insert(k, String::new());
        }
        let mut restored = checkpoint(&map);
        for k in 10..1_000 {
            restored.insert(k, String::new());
        }
        let (bytes, side) = side::save(&restored).unwrap();
        let form: Form<(u64, String)> = bincode::deserialize(&bytes).unwrap();
        let Form::Buckets(layout) = form else {
            panic!("a checkpoint writes buckets")
        };
        assert_eq!(layout.buckets(), buckets::buckets_for(1_000));
        assert_eq!(layout.entries(), 1_000);
        // Each entry is written once: (8-byte key, 8-byte string length, no bytes).
        assert_eq!(side.len(), 1_000 * 16, "the buckets are written once");
    }
}

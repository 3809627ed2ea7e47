//! [`PagedMap`]: an ordered map whose saved entries stay in sorted pages of a checkpoint,
//! read page by page when asked for, while new entries go to memory without reading any.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Bound, RangeBounds};

use serde::de::DeserializeOwned;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use bincode::Options;

use crate::buckets::BucketError;
use crate::lazy::lost;
use crate::side::{self, Side};

/// How entries are encoded on a page: bincode with variable-length integers (ids, amounts
/// and times are mostly far below their types' range; about half the bytes of the fixed
/// encoding the rest of a checkpoint uses).
pub(crate) fn page_encoding() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .allow_trailing_bytes()
}

/// A page is cut once its entries take this many bytes (the last entry may cross it).
pub const PAGE_BYTES: usize = 16 * 1024;

/// Where a page of entries is in the side data, and the first key on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PageRef<K> {
    /// The page's smallest key.
    first: K,
    /// Where its bytes start in the part's side data.
    at: u64,
    /// Its length in bytes.
    len: u32,
    /// Entries on it.
    count: u32,
}

/// The pages of a restored map: sorted by key, each page's keys before the next page's.
struct Pages<K> {
    side: Side,
    index: Vec<PageRef<K>>,
}

impl<K: Ord + DeserializeOwned> Pages<K> {
    /// Decodes page `i`.
    fn page<V: DeserializeOwned>(&self, i: usize) -> Vec<(K, V)> {
        let p = &self.index[i];
        let mut out = Vec::with_capacity(p.count as usize);
        read_page(&self.side, p.at, p.len, p.count, |e| out.push(e));
        out
    }

    /// The page whose key range holds `key`, if any.
    fn page_of(&self, key: &K) -> Option<usize> {
        self.index
            .partition_point(|p| p.first <= *key)
            .checked_sub(1)
    }

    /// Entries held on pages.
    fn count(&self) -> usize {
        self.index.iter().map(|p| p.count as usize).sum()
    }
}

/// An ordered map that a checkpoint saves as sorted pages and a restart leaves on disk.
///
/// Made for stores written by upserts and read by key or key range (the in-process store's
/// order rows, ledgers, sales facts and minute rollups). An insert never reads the pages: it
/// goes to the entries in memory, which win over a page's entry of the same key. A lookup
/// or a range reads the pages that can hold its keys (and keeps nothing of them). So a
/// restart decodes only the pages' index before its first write, whatever the map's size.
///
/// Saved inside [`side::writing`] (a checkpoint), the map writes sorted pages to side data
/// and their index to its serialized form: a page none of the entries in memory falls into
/// is copied as it is, a page they fall into is merged with them. Saved elsewhere, the map
/// is an ordinary sorted sequence of entries.
///
/// A page that cannot be read back (the checkpoint file became unreadable after it was
/// checked at the start) panics with the reason, as [`crate::LazyMap`] does.
pub struct PagedMap<K, V> {
    live: BTreeMap<K, V>,
    base: Option<Pages<K>>,
}

impl<K, V> Default for PagedMap<K, V> {
    fn default() -> Self {
        PagedMap {
            live: BTreeMap::new(),
            base: None,
        }
    }
}

impl<K, V> fmt::Debug for PagedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagedMap")
            .field("live", &self.live.len())
            .field("pages", &self.base.as_ref().map_or(0, |b| b.index.len()))
            .finish()
    }
}

/// Whether `r` holds no key at all (`BTreeMap::range` panics on such a range).
fn is_void<K: Ord>(r: &impl RangeBounds<K>) -> bool {
    match (r.start_bound(), r.end_bound()) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
            a >= b
        }
        _ => false,
    }
}

impl<K, V> PagedMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the value of `key` (reads no page: the value wins over any saved one). A key
    /// already in memory is kept as it is: see [`PagedMap::replace`] for keys that carry
    /// more than their order.
    pub fn insert(&mut self, key: K, value: V) {
        self.live.insert(key, value);
    }

    /// Sets `key` and its value, replacing the key too if one equal to it is in memory
    /// (for keys that carry data beyond what orders them, such as a whole ledger entry).
    pub fn replace(&mut self, key: K, value: V) {
        self.live.remove(&key);
        self.live.insert(key, value);
    }

    /// The value of `key`: from memory, or decoded from the one page that can hold it.
    pub fn get(&self, key: &K) -> Option<Cow<'_, V>> {
        if let Some(v) = self.live.get(key) {
            return Some(Cow::Borrowed(v));
        }
        let base = self.base.as_ref()?;
        let i = base.page_of(key)?;
        base.page::<V>(i)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| Cow::Owned(v))
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The entries with keys in `range`, in key order.
    pub fn range(&self, range: impl RangeBounds<K>) -> Vec<(K, V)> {
        if is_void(&range) {
            return Vec::new();
        }
        let live = self.live.range((range.start_bound(), range.end_bound()));
        let Some(base) = &self.base else {
            return live.map(|(k, v)| (k.clone(), v.clone())).collect();
        };
        let first = match range.start_bound() {
            Bound::Included(k) | Bound::Excluded(k) => base.page_of(k).unwrap_or(0),
            Bound::Unbounded => 0,
        };
        let mut saved = Vec::new();
        for i in first..base.index.len() {
            let starts_inside = match range.end_bound() {
                Bound::Included(k) => base.index[i].first <= *k,
                Bound::Excluded(k) => base.index[i].first < *k,
                Bound::Unbounded => true,
            };
            if !starts_inside {
                break;
            }
            saved.extend(
                base.page::<V>(i)
                    .into_iter()
                    .filter(|(k, _)| range.contains(k)),
            );
        }
        merge(saved, live.map(|(k, v)| (k.clone(), v.clone())))
    }

    /// Every entry, in key order (decodes every page).
    pub fn entries(&self) -> Vec<(K, V)> {
        self.range(..)
    }

    /// Number of entries. Without saved pages this is the count in memory; with them every
    /// page is decoded (an entry in memory may replace a saved one).
    pub fn len(&self) -> usize {
        match &self.base {
            None => self.live.len(),
            Some(_) => self.entries().len(),
        }
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.base.as_ref().is_none_or(|b| b.index.is_empty())
    }

    /// Entries held in memory (inserted since the restore), not on saved pages.
    pub fn in_memory(&self) -> usize {
        self.live.len()
    }

    /// Entries on saved pages (some may be replaced by entries in memory).
    pub fn on_pages(&self) -> usize {
        self.base.as_ref().map_or(0, Pages::count)
    }
}

/// Two sorted runs as one; on equal keys the entry of `newer` wins.
fn merge<K: Ord, V>(older: Vec<(K, V)>, newer: impl Iterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut out = Vec::with_capacity(older.len());
    let mut older = older.into_iter().peekable();
    for (k, v) in newer {
        while let Some(o) = older.next_if(|(ok, _)| *ok < k) {
            out.push(o);
        }
        older.next_if(|(ok, _)| *ok == k);
        out.push((k, v));
    }
    out.extend(older);
    out
}

/// Cuts entries into pages appended to the running [`side::writing`].
struct PageWriter<K> {
    cur: Vec<u8>,
    first: Option<K>,
    count: u32,
    index: Vec<PageRef<K>>,
}

impl<K: Clone + Serialize> PageWriter<K> {
    fn new() -> Self {
        PageWriter {
            cur: Vec::with_capacity(PAGE_BYTES * 2),
            first: None,
            count: 0,
            index: Vec::new(),
        }
    }

    fn push<V: Serialize>(&mut self, k: &K, v: &V) -> Result<(), BucketError> {
        if self.first.is_none() {
            self.first = Some(k.clone());
        }
        page_encoding().serialize_into(&mut self.cur, &(k, v))?;
        self.count += 1;
        if self.cur.len() >= PAGE_BYTES {
            self.cut()?;
        }
        Ok(())
    }

    /// Ends the current page, if it has entries.
    fn cut(&mut self) -> Result<(), BucketError> {
        let Some(first) = self.first.take() else {
            return Ok(());
        };
        let (at, len) = write_page(&self.cur)?;
        self.index.push(PageRef {
            first,
            at,
            len,
            count: std::mem::take(&mut self.count),
        });
        self.cur.clear();
        Ok(())
    }

    /// Appends a saved page as it is (after ending the current one).
    fn copy(&mut self, page: &PageRef<K>, bytes: &[u8]) -> Result<(), BucketError> {
        self.cut()?;
        let at = append(bytes)?;
        self.index.push(PageRef { at, ..page.clone() });
        Ok(())
    }
}

/// Writes a page (`encoded`: its entries in [`page_encoding`]) to the running
/// [`side::writing`], compressed (LZ4 block, the uncompressed length first: sorted entries
/// of one table repeat a lot — ids, times, amounts of one order or seller — and the pages
/// take about half the bytes, so does checking the file at a restart). Returns where the
/// page starts and its length.
pub(crate) fn write_page(encoded: &[u8]) -> Result<(u64, u32), BucketError> {
    let page = lz4_flex::block::compress_prepend_size(encoded);
    let len = u32::try_from(page.len()).map_err(|_| BucketError::Layout("page too large"))?;
    Ok((append(&page)?, len))
}

/// Reads back the `count` entries of the page of `len` bytes at `at` of `side` (as
/// [`write_page`] wrote it), handing each to `each`. A page that cannot be read or decoded
/// after the start panics (see [`lost`]).
pub(crate) fn read_page<T: DeserializeOwned>(
    side: &Side,
    at: u64,
    len: u32,
    count: u32,
    mut each: impl FnMut(T),
) {
    let mut buf = Vec::new();
    side.read_into(at, u64::from(len), &mut buf)
        .unwrap_or_else(|e| lost(BucketError::Io(e)));
    let buf = lz4_flex::block::decompress_size_prepended(&buf)
        .unwrap_or_else(|_| lost(BucketError::Layout("a page does not decompress")));
    let mut de = bincode::Deserializer::from_slice(&buf, page_encoding());
    for _ in 0..count {
        match T::deserialize(&mut de) {
            Ok(e) => each(e),
            Err(e) => lost(BucketError::Decode(e)),
        }
    }
}

/// Appends `bytes` to the running [`side::writing`]; where they start.
pub(crate) fn append(bytes: &[u8]) -> Result<u64, BucketError> {
    side::append(|out| {
        out.extend_from_slice(bytes);
        Ok::<_, BucketError>(())
    })
    .ok_or(BucketError::Layout("pages written outside side::writing"))?
}

/// The serialized form: the entries themselves, or (in a checkpoint) their pages' index.
#[derive(Deserialize)]
enum Form<E, P> {
    Inline(Vec<E>),
    Pages(Vec<P>),
}

/// Serializes a sorted sequence of entries.
struct Entries<'a, K, V>(&'a [(K, V)]);

impl<K: Serialize, V: Serialize> Serialize for Entries<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            seq.serialize_element(e)?;
        }
        seq.end()
    }
}

impl<K, V> PagedMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    /// Writes the pages of a checkpoint: saved pages merged with the entries in memory.
    fn write_pages(&self) -> Result<Vec<PageRef<K>>, BucketError> {
        let mut w = PageWriter::new();
        let mut live = self.live.iter().peekable();
        if let Some(base) = &self.base {
            let mut buf = Vec::new();
            for (i, p) in base.index.iter().enumerate() {
                // The entries in memory that fall on this page: those before the next
                // page's first key (the first page also takes those before its own).
                let next = base.index.get(i + 1).map(|n| &n.first);
                let mut here = Vec::new();
                while let Some(e) = live.next_if(|(k, _)| next.is_none_or(|n| *k < n)) {
                    here.push(e);
                }
                if here.is_empty() {
                    base.side.read_into(p.at, u64::from(p.len), &mut buf)?;
                    w.copy(p, &buf)?;
                    continue;
                }
                let saved = base.page::<V>(i);
                let mut saved = saved.iter().peekable();
                for (k, v) in here {
                    while let Some((sk, sv)) = saved.next_if(|(sk, _)| sk < k) {
                        w.push(sk, sv)?;
                    }
                    saved.next_if(|(sk, _)| sk == k);
                    w.push(k, v)?;
                }
                for (sk, sv) in saved {
                    w.push(sk, sv)?;
                }
            }
        }
        for (k, v) in live {
            w.push(k, v)?;
        }
        w.cut()?;
        Ok(w.index)
    }
}

impl<K, V> Serialize for PagedMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if !side::is_writing() {
            let entries = self.entries();
            return s.serialize_newtype_variant("Form", 0, "Inline", &Entries(&entries));
        }
        let index = self.write_pages().map_err(S::Error::custom)?;
        s.serialize_newtype_variant("Form", 1, "Pages", &index)
    }
}

impl<'de, K, V> Deserialize<'de> for PagedMap<K, V>
where
    K: Ord + Clone + Serialize + DeserializeOwned,
    V: Clone + Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Form::<(K, V), PageRef<K>>::deserialize(d)? {
            Form::Inline(entries) => Ok(PagedMap {
                live: entries.into_iter().collect(),
                base: None,
            }),
            Form::Pages(index) => {
                let side = side::current()
                    .ok_or_else(|| D::Error::custom("a paged map's pages outside a checkpoint"))?;
                let fits = index
                    .iter()
                    .all(|p| p.at.saturating_add(u64::from(p.len)) <= side.len());
                let sorted = index.windows(2).all(|w| w[0].first < w[1].first);
                if !fits || !sorted {
                    return Err(D::Error::custom(BucketError::Layout(
                        "a paged map's index does not fit its side data",
                    )));
                }
                Ok(PagedMap {
                    live: BTreeMap::new(),
                    base: (!index.is_empty()).then_some(Pages { side, index }),
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
    use std::sync::Arc;

    type Map = PagedMap<(u64, u64), String>;

    /// A checkpoint round trip: saved with side data, restored with its pages on it.
    fn checkpoint(map: &Map) -> Map {
        Part::save(map).expect("saves").restore().expect("restores")
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert((u64, u64), String),
        Checkpoint,
        Inline,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => ((0u64..20, 0u64..400), "[a-z]{0,200}").prop_map(|(k, v)| Op::Insert(k, v)),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Inline),
        ]
    }

    proptest! {
        #[test]
        fn answers_like_a_btree_map(
            ops in prop::collection::vec(op(), 1..800),
            probes in prop::collection::vec((0u64..21, 0u64..401, 0u64..21, 0u64..401), 8),
        ) {
            let mut map = Map::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        map.insert(k, v.clone());
                        model.insert(k, v);
                    }
                    Op::Checkpoint => map = checkpoint(&map),
                    Op::Inline => {
                        let bytes = bincode::serialize(&map).expect("serializes");
                        map = bincode::deserialize(&bytes).expect("deserializes");
                    }
                }
            }
            let want: Vec<_> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
            prop_assert_eq!(map.entries(), want);
            prop_assert_eq!(map.len(), model.len());
            for (a, b, c, d) in probes {
                prop_assert_eq!(map.get(&(a, b)).map(Cow::into_owned), model.get(&(a, b)).cloned());
                let (lo, hi) = ((a, b), (c, d));
                let want: Vec<_> = if lo <= hi {
                    model.range(lo..hi).map(|(k, v)| (*k, v.clone())).collect()
                } else {
                    Vec::new()
                };
                prop_assert_eq!(map.range(lo..hi), want);
                let want: Vec<_> = if lo <= hi {
                    model.range(lo..=hi).map(|(k, v)| (*k, v.clone())).collect()
                } else {
                    Vec::new()
                };
                prop_assert_eq!(map.range(lo..=hi), want);
                let want: Vec<_> = model.range(lo..).map(|(k, v)| (*k, v.clone())).collect();
                prop_assert_eq!(map.range(lo..), want);
            }
        }
    }

    #[test]
    fn a_restore_keeps_the_entries_on_their_pages() {
        let mut map = Map::new();
        for i in 0..20_000u64 {
            map.insert((i % 7, i), format!("value {i}"));
        }
        let back = checkpoint(&map);
        assert_eq!(back.in_memory(), 0);
        assert_eq!(back.on_pages(), 20_000);
        let pages = back.base.as_ref().map_or(0, |b| b.index.len());
        assert!(pages > 10, "{pages} pages for 20,000 entries");
        assert_eq!(back.get(&(3, 10)).as_deref(), Some(&"value 10".to_string()));
        assert_eq!(back.get(&(3, 11)), None);
        assert_eq!(back.range((6, 0)..(6, 30)).len(), 4, "6, 13, 20 and 27");
    }

    #[test]
    fn a_checkpoint_copies_the_pages_nothing_was_written_into() {
        let mut map = Map::new();
        for i in 0..20_000u64 {
            map.insert((i % 7, i), format!("value {i}"));
        }
        let mut back = checkpoint(&map);
        let before = back.base.as_ref().map(|b| b.index.clone()).unwrap();
        // One new entry at the end of owner 2's range and one replacing an old value.
        back.insert((2, 30_000), "new".into());
        back.insert((5, 12), "changed".into());
        let again = checkpoint(&back);
        let after = again.base.as_ref().map(|b| b.index.clone()).unwrap();
        let same = after
            .iter()
            .filter(|p| {
                before
                    .iter()
                    .any(|q| q.first == p.first && q.count == p.count && q.len == p.len)
            })
            .count();
        assert!(
            same + 4 >= before.len(),
            "{same} of {} pages kept as they were",
            before.len()
        );
        assert_eq!(again.get(&(5, 12)).as_deref(), Some(&"changed".to_string()));
        assert_eq!(again.get(&(2, 30_000)).as_deref(), Some(&"new".to_string()));
        assert_eq!(again.len(), 20_001);
    }

    #[test]
    fn an_index_past_the_side_data_is_refused() {
        let mut map = Map::new();
        for i in 0..2_000u64 {
            map.insert((0, i), "x".repeat(40));
        }
        let (bytes, side) = side::save(&map).expect("saves");
        let cut = side[..side.len() / 2].to_vec();
        let back: Result<Map, _> =
            side::reading(Side::Bytes(Arc::new(cut)), || bincode::deserialize(&bytes));
        assert!(
            back.is_err(),
            "an index reaching past the side data must not restore"
        );
    }
}

//! Checkpoints (SPEC §7): the state a restart needs to continue exactly where a moment of
//! the run stood, so that it replays only the tail of each stream.
//!
//! A checkpoint is taken at a dataflow time T at which the pipeline is quiet: every worker
//! has stopped reading, every record dated before T has been applied and handed to the
//! sink writer, and no record is in flight between operators (see the runtime's
//! checkpoint protocol). It holds:
//! - per worker, its input frontier, and per stream the next offset to read and the stream
//!   validator (dedup ids, order life-cycle states, frontier);
//! - per worker, every operator's state as registered in [`crate::state::States`]:
//!   per-key state (stock levels, partners, members, catalog, seller sums) and the
//!   records waiting for the frontier (window ends, deferred entries);
//! - an image of each in-process store, taken by the sink writer once everything sent
//!   before the checkpoint is written (external stores are not copied: they hold the same
//!   moment or later, and their own `as_of` guards skip what a restart sends again).
//!
//! The file is written atomically: to a temporary file, `fsync`ed, renamed, and the
//! directory `fsync`ed. It starts with a magic line, the format version, the payload
//! length and a CRC-32C of the payload. A restart takes the newest file that reads back
//! whole and matches the run; any other is skipped with one log line naming it and the
//! reason. The last [`CheckpointConfig::keep`] files are kept.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shopflow_ingest::source::FilePosition;
use shopflow_ingest::StreamValidator;
use shopflow_model::{Millis, StoreImages};
pub use shopflow_state::Side;
use xxhash_rust::xxh3::Xxh3Default;

/// Version of the checkpoint format this build writes, and the only one it reads: a file
/// of another version is skipped with its version named (the run falls back to an older
/// checkpoint it reads, or replays from the start). Version 5 keeps large collections in
/// buckets of side data read back lazily (see [`shopflow_state`]); version 6 also keeps
/// the in-process store's large tables in sorted pages of side data. The builds before
/// wrote them inline, in a form this one does not read.
pub const FORMAT_VERSION: u32 = 6;

/// The oldest format version this build reads.
pub const OLDEST_READ_VERSION: u32 = 6;

/// The first bytes of every checkpoint file.
pub const MAGIC: &[u8] = b"shopflow checkpoint\n";

/// Header: magic, version (u32), payload length (u64), checksum (u64, see [`Checksum`]),
/// little-endian. The payload is the manifest's length (u64), the manifest
/// ([`Snapshot`] with every blob replaced by its length, bincode) and the blobs, raw, in the
/// manifest's order: each worker's validators then operator states (each its serialized
/// form, then its side data), then the store images.
const HEADER: usize = MAGIC.len() + 4 + 8 + 8;

/// A stream in the manifest: topic, partition, next offset, validator lengths (serialized,
/// side data), and where the next offset starts in a file.
type StreamManifest = (String, i32, i64, (u64, u64), Option<FilePosition>);

/// A worker's part in the manifest: its cap, its streams and its operators (name, state
/// lengths: serialized, side data).
type WorkerManifest = (Millis, Vec<StreamManifest>, Vec<(String, (u64, u64))>);

/// [`Snapshot`] with its blobs replaced by their lengths.
#[derive(Serialize, Deserialize)]
struct Manifest {
    seq: u64,
    created_ms: Millis,
    time: Millis,
    as_of: Option<Millis>,
    workers: Vec<WorkerManifest>,
    memory: Vec<(u64, u64)>,
    files: Vec<(String, u64)>,
    stores_as_of: Option<Millis>,
}

pub use shopflow_state::Part;

/// A blob of the file: in memory, or side data to copy from where it is.
enum Blob<'a> {
    Bytes(&'a [u8]),
    Side(&'a Side),
}

impl Blob<'_> {
    fn len(&self) -> u64 {
        match self {
            Blob::Bytes(b) => b.len() as u64,
            Blob::Side(s) => s.len(),
        }
    }

    /// Feeds the blob to `each` in pieces.
    fn pieces(&self, mut each: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        match self {
            Blob::Bytes(b) => each(b),
            Blob::Side(Side::Bytes(b)) => each(b),
            Blob::Side(side) => {
                let mut buf = Vec::new();
                let mut at = 0;
                while at < side.len() {
                    let n = (side.len() - at).min(PIECE as u64);
                    side.read_into(at, n, &mut buf)?;
                    each(&buf)?;
                    at += n;
                }
                Ok(())
            }
        }
    }
}

/// Size of the pieces a file is read and checked in.
const PIECE: usize = 1 << 20;

/// The checksum covers the payload in segments of this size.
const SEGMENT: u64 = 32 << 20;

/// The payload's checksum: XXH3-64 of each segment of [`SEGMENT`] bytes (the last may be
/// shorter), then XXH3-64 of those hashes (little-endian, in order). The segments of a
/// file can so be checked on several threads at once.
#[derive(Clone)]
struct Checksum {
    /// [`SEGMENT`] (smaller in tests).
    len: u64,
    segment: Xxh3Default,
    in_segment: u64,
    sums: Xxh3Default,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum::with_segments_of(SEGMENT)
    }
}

impl Checksum {
    fn with_segments_of(len: u64) -> Self {
        Checksum {
            len,
            segment: Xxh3Default::new(),
            in_segment: 0,
            sums: Xxh3Default::new(),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = usize::try_from(self.len - self.in_segment).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.segment.update(now);
            self.in_segment += now.len() as u64;
            bytes = rest;
            if self.in_segment == self.len {
                self.end_segment();
            }
        }
    }

    fn end_segment(&mut self) {
        self.sums.update(&self.segment.digest().to_le_bytes());
        self.segment.reset();
        self.in_segment = 0;
    }

    fn digest(&self) -> u64 {
        let mut done = self.clone();
        if done.in_segment > 0 {
            done.end_segment();
        }
        done.sums.digest()
    }
}

/// The segments of a file's payload being checked: each is hashed by whichever thread
/// takes it next, so threads that get less of the processors (the one reading the parts
/// meanwhile, which joins in once it is done) do not hold the others up.
struct FileCheck {
    side: Side,
    len: u64,
    segment: u64,
    segments: u64,
    /// The next segment not taken.
    next: std::sync::atomic::AtomicU64,
    /// (segment, hash) of those hashed.
    sums: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl FileCheck {
    /// The `len` bytes at `start` of `file`, in segments of `segment` bytes.
    fn new(file: std::sync::Arc<File>, start: u64, len: u64, segment: u64) -> Self {
        FileCheck {
            side: Side::File { file, start, len },
            len,
            segment,
            segments: len.div_ceil(segment),
            next: std::sync::atomic::AtomicU64::new(0),
            sums: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Threads to check on besides the caller: as many as there are processors (at most
    /// 4), not more than segments.
    fn threads(&self) -> u64 {
        let cpus = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 4) as u64;
        cpus.min(self.segments)
    }

    /// Hashes segments until none is left to take.
    fn help(&self) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let mut buf = vec![0u8; PIECE];
        let mut mine = Vec::new();
        loop {
            let seg = self.next.fetch_add(1, Ordering::Relaxed);
            if seg >= self.segments {
                break;
            }
            let (from, to) = (seg * self.segment, ((seg + 1) * self.segment).min(self.len));
            let mut h = Xxh3Default::new();
            let mut at = from;
            while at < to {
                let n = (to - at).min(PIECE as u64) as usize;
                if let Err(e) = self.side.read_exact_into(at, &mut buf[..n]) {
                    // No one takes another segment: the check has failed.
                    self.next.store(self.segments, Ordering::Relaxed);
                    return Err(e);
                }
                h.update(&buf[..n]);
                at += n as u64;
            }
            mine.push((seg, h.digest()));
        }
        self.sums
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(mine);
        Ok(())
    }

    /// The [`Checksum`], once every segment was hashed.
    fn digest(self) -> u64 {
        let hashed = self
            .sums
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        debug_assert_eq!(hashed.len() as u64, self.segments, "every segment hashed");
        let mut sums = vec![0u64; self.segments as usize];
        for (seg, h) in hashed {
            sums[seg as usize] = h;
        }
        let mut all = Xxh3Default::new();
        for h in sums {
            all.update(&h.to_le_bytes());
        }
        all.digest()
    }

    /// Checks on [`FileCheck::threads`] threads while `meanwhile` runs on the caller's,
    /// which then helps with what is left: `meanwhile`'s result and the checksum.
    fn run_with<T>(self, meanwhile: impl FnOnce() -> T) -> (T, std::io::Result<u64>) {
        let (out, done) = std::thread::scope(|scope| {
            let helpers: Vec<_> = (0..self.threads())
                .map(|_| scope.spawn(|| self.help()))
                .collect();
            let out = meanwhile();
            let mut done = self.help();
            for h in helpers {
                let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                done = done.and(r);
            }
            (out, done)
        });
        (out, done.map(|()| self.digest()))
    }
}

/// [`Checksum`] of the `len` bytes at `start` of `file` (see [`FileCheck`]).
#[cfg(test)]
fn file_checksum_in(
    file: std::sync::Arc<File>,
    start: u64,
    len: u64,
    segment: u64,
) -> std::io::Result<u64> {
    FileCheck::new(file, start, len, segment).run_with(|| ()).1
}

impl Snapshot {
    /// The manifest and the blobs it describes, in order.
    fn manifest(&self) -> (Manifest, Vec<Blob<'_>>) {
        let mut blobs: Vec<Blob<'_>> = Vec::new();
        let workers = self
            .workers
            .iter()
            .map(|w| {
                let streams = w
                    .streams
                    .iter()
                    .map(|s| {
                        blobs.push(Blob::Bytes(&s.validator.bytes));
                        blobs.push(Blob::Side(&s.validator.side));
                        (
                            s.topic.clone(),
                            s.partition,
                            s.next_offset,
                            (s.validator.bytes.len() as u64, s.validator.side.len()),
                            s.position.clone(),
                        )
                    })
                    .collect();
                let operators = w
                    .operators
                    .iter()
                    .map(|(name, p)| {
                        blobs.push(Blob::Bytes(&p.bytes));
                        blobs.push(Blob::Side(&p.side));
                        (name.clone(), (p.bytes.len() as u64, p.side.len()))
                    })
                    .collect();
                (w.cap, streams, operators)
            })
            .collect();
        let memory = self
            .stores
            .memory
            .iter()
            .map(|m| {
                blobs.push(Blob::Bytes(&m.bytes));
                blobs.push(Blob::Side(&m.side));
                (m.bytes.len() as u64, m.side.len())
            })
            .collect();
        let manifest = Manifest {
            seq: self.seq,
            created_ms: self.created_ms,
            time: self.time,
            as_of: self.as_of,
            workers,
            memory,
            files: self.stores.files.clone(),
            stores_as_of: self.stores.as_of,
        };
        (manifest, blobs)
    }
}

/// When and where checkpoints are taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// The state directory (a mounted volume in production).
    pub dir: PathBuf,
    /// A checkpoint is taken when this long has passed since the last one…
    pub interval: Duration,
    /// …or this many messages have been read since the last one (0 = no limit).
    pub every_messages: u64,
    /// Checkpoint files kept (at least 1).
    pub keep: usize,
}

/// The default [`CheckpointConfig::interval`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The default [`CheckpointConfig::every_messages`].
pub const DEFAULT_EVERY_MESSAGES: u64 = 5_000_000;
/// The default [`CheckpointConfig::keep`].
pub const DEFAULT_KEEP: usize = 3;

impl CheckpointConfig {
    /// Checkpoints in `dir` with the default schedule.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CheckpointConfig {
            dir: dir.into(),
            interval: DEFAULT_INTERVAL,
            every_messages: DEFAULT_EVERY_MESSAGES,
            keep: DEFAULT_KEEP,
        }
    }
}

/// Everything one checkpoint holds.
#[derive(Debug)]
pub struct Snapshot {
    /// Sequence number (the file name's).
    pub seq: u64,
    /// Wall-clock time it was taken (ms since the epoch).
    pub created_ms: Millis,
    /// The dataflow time T it describes: every record dated before T is applied; the
    /// records waiting in the operators are dated T or later.
    pub time: Millis,
    /// T − 1, the views' time the checkpoint describes (the writer may have written up to
    /// an earlier `as_of`: see [`StoreImages::as_of`]).
    pub as_of: Option<Millis>,
    /// One part per timely worker, by worker index.
    pub workers: Vec<WorkerPart>,
    /// What the sink writer adds: an image of each in-process store, in the writer's
    /// order (views, ledgers, sales, alerts, dead letters, each store once), and the
    /// length of each JSON-lines file.
    pub stores: StoreImages,
}

/// One worker's part of a checkpoint.
#[derive(Debug)]
pub struct WorkerPart {
    /// The worker's input frontier (no later event is applied before it).
    pub cap: Millis,
    /// Its streams, in its source's order.
    pub streams: Vec<StreamPart>,
    /// Its operators' states, by operator name.
    pub operators: BTreeMap<String, Part>,
}

/// One stream's part of a checkpoint.
#[derive(Debug)]
pub struct StreamPart {
    /// Topic (`file` for a file source: a longer file continues a shorter one).
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The first offset not yet read (a file's line number).
    pub next_offset: i64,
    /// Where `next_offset` starts, for a file the source knew it for: a restart seeks
    /// there instead of reading every line before.
    pub position: Option<FilePosition>,
    /// The stream's validator (see [`StreamValidator`]).
    pub validator: Part,
}

impl StreamPart {
    /// The stream's validator, read back.
    pub fn validator(&self) -> Result<StreamValidator, CheckpointError> {
        self.validator.restore().map_err(|e| CheckpointError::Part {
            part: format!("validator of {}/{}", self.topic, self.partition),
            reason: e.to_string(),
        })
    }
}

/// A checkpoint being restored: each worker takes its part once.
#[derive(Debug)]
pub struct Restore {
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// Its dataflow time (see [`Snapshot::time`]).
    pub time: Millis,
    /// Each worker's input frontier.
    pub caps: Vec<Millis>,
    parts: std::sync::Mutex<Vec<Option<WorkerPart>>>,
}

impl Restore {
    /// The workers' parts of `snapshot` (its store images are restored by the caller).
    pub fn new(snapshot: Snapshot) -> Self {
        Restore {
            seq: snapshot.seq,
            time: snapshot.time,
            caps: snapshot.workers.iter().map(|w| w.cap).collect(),
            parts: std::sync::Mutex::new(snapshot.workers.into_iter().map(Some).collect()),
        }
    }

    /// Worker `worker`'s part (once).
    pub fn take(&self, worker: usize) -> Option<WorkerPart> {
        self.parts.lock().ok()?.get_mut(worker)?.take()
    }
}

impl Snapshot {
    /// The offset to resume each stream at, by (topic, partition).
    pub fn offsets(&self) -> BTreeMap<(String, i32), i64> {
        self.workers
            .iter()
            .flat_map(|w| &w.streams)
            .map(|s| ((s.topic.clone(), s.partition), s.next_offset))
            .collect()
    }

    /// Where each stream's next offset starts in its file, for the streams that have one
    /// (a file source), by (topic, partition).
    pub fn positions(&self) -> BTreeMap<(String, i32), FilePosition> {
        self.workers
            .iter()
            .flat_map(|w| &w.streams)
            .filter_map(|s| Some(((s.topic.clone(), s.partition), s.position.clone()?)))
            .collect()
    }

    /// Messages read before the checkpoint, over every stream.
    pub fn messages(&self) -> u64 {
        self.workers
            .iter()
            .flat_map(|w| &w.streams)
            .map(|s| s.next_offset.max(0) as u64)
            .sum()
    }
}

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The state directory or a file in it could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An operator's saved state could not be read back, or saved.
    #[error("operator state {part}: {reason}")]
    Part {
        /// The operator's name.
        part: String,
        /// What went wrong.
        reason: String,
    },
    /// The checkpoint does not fit this run's input.
    #[error("{0}")]
    Mismatch(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of checkpoint `seq`.
pub fn file_name(seq: u64) -> String {
    format!("checkpoint-{seq:012}.bin")
}

fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-")?
        .strip_suffix(".bin")?
        .parse()
        .ok()
}

/// The checkpoint files in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(seq_of) {
            files.push((seq, entry.path()));
        }
    }
    files.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
    Ok(files)
}

/// Writes the file for `snapshot` (header and payload) to `out`; returns its length.
pub fn encode_to(snapshot: &Snapshot, out: &mut impl Write) -> Result<u64, std::io::Error> {
    encode_placed(snapshot, out).map(|(len, _)| len)
}

/// [`encode_to`], also returning where each blob starts in the file (in the manifest's
/// order: the store images' serialized forms and side data come last, in pairs).
fn encode_placed(
    snapshot: &Snapshot,
    out: &mut impl Write,
) -> Result<(u64, Vec<u64>), std::io::Error> {
    let (manifest, blobs) = snapshot.manifest();
    write_file(FORMAT_VERSION, &manifest, blobs, out)
}

/// Writes a file of format `version` with `manifest` and its blobs to `out` (the blobs are
/// read twice: for the checksum, then to write them); returns the file's length and where
/// each blob starts in it.
fn write_file(
    version: u32,
    manifest: &impl Serialize,
    blobs: Vec<Blob<'_>>,
    out: &mut impl Write,
) -> Result<(u64, Vec<u64>), std::io::Error> {
    let manifest = bincode::serialize(manifest).map_err(std::io::Error::other)?;
    let mut digest = Checksum::default();
    let mut len: u64 = 8 + manifest.len() as u64;
    digest.update(&(manifest.len() as u64).to_le_bytes());
    digest.update(&manifest);
    for b in &blobs {
        b.pieces(|piece| {
            digest.update(piece);
            Ok(())
        })?;
        len += b.len();
    }
    out.write_all(MAGIC)?;
    out.write_all(&version.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&digest.digest().to_le_bytes())?;
    out.write_all(&(manifest.len() as u64).to_le_bytes())?;
    out.write_all(&manifest)?;
    let mut at = (HEADER + 8 + manifest.len()) as u64;
    let mut starts = Vec::with_capacity(blobs.len());
    for b in blobs {
        starts.push(at);
        at += b.len();
        b.pieces(|piece| out.write_all(piece))?;
    }
    Ok((HEADER as u64 + len, starts))
}

/// The whole file for `snapshot`: header and payload.
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_to(snapshot, &mut bytes).expect("writing to memory");
    bytes
}

/// Reads a whole checkpoint file back from memory, or says why it cannot be used.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    decode_from(&mut std::io::Cursor::new(bytes), None)
}

/// Reads the checkpoint file at `path` back, or says why it cannot be used. The side data
/// stays in the file (kept open): lazily restored collections read it from there.
pub fn decode_file(path: &Path) -> Result<Snapshot, String> {
    let file = File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let file = std::sync::Arc::new(file);
    let mut reader = std::io::BufReader::with_capacity(1 << 16, &*file);
    decode_from(&mut reader, Some(&file))
}

/// [`decode`] from a file or any seekable reader, in one pass: the manifest and each
/// part's serialized form are read into memory, the side data only checked (and, with
/// `file`, left there: each part's side is then its range of `file`); the parts are
/// returned only if the checksum over the whole payload matches.
pub fn decode_from<R: Read + Seek>(
    r: &mut R,
    file: Option<&std::sync::Arc<File>>,
) -> Result<Snapshot, String> {
    let failed = |e: std::io::Error| format!("cannot read it: {e}");
    let total = r.seek(SeekFrom::End(0)).map_err(failed)?;
    r.seek(SeekFrom::Start(0)).map_err(failed)?;
    let mut header = [0u8; HEADER];
    if total < HEADER as u64 {
        return Err("not a checkpoint file (no header)".into());
    }
    r.read_exact(&mut header).map_err(failed)?;
    if !header.starts_with(MAGIC) {
        return Err("not a checkpoint file (no header)".into());
    }
    let word = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&header[at..at + n]);
        u64::from_le_bytes(b)
    };
    let version = word(MAGIC.len(), 4) as u32;
    if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "format version {version}, this build reads version {FORMAT_VERSION} only (its \
             state layout changed: the run falls back to an older checkpoint or replays)"
        ));
    }
    let len = word(MAGIC.len() + 4, 8);
    let sum = word(MAGIC.len() + 12, 8);
    let have = total - HEADER as u64;
    if have != len {
        return Err(format!(
            "truncated or padded: the header says {len} bytes of state, the file has {have}"
        ));
    }
    // One pass over the payload: the manifest and each part's serialized form are read
    // into buffers of their own, side data through one reused piece, and all of it goes
    // to the checksum. Nothing is returned unless the checksum over the whole payload
    // matches, and a layout that does not parse is reported as corruption when it does
    // not match.
    //
    // From a file, the checksum's segments are read and hashed on threads of their own
    // (all of the payload, in parallel) while this thread reads the parts and passes over
    // the side data without reading it, then hashes segments with them (`FileCheck`).
    let mut read = |check_here: bool| {
        let mut payload = Payload {
            r,
            file,
            rest: len,
            total,
            digest: check_here.then(Checksum::default),
            piece: vec![0u8; PIECE],
        };
        let parsed = payload.parts();
        // What the parts did not cover (after the last one, or after a damaged length)
        // still counts in the checksum.
        let extra = payload.rest;
        let skipped = payload.skip(extra);
        let digest = skipped.map(|()| payload.digest.as_ref().map_or(0, Checksum::digest));
        (parsed, extra, digest)
    };
    let (parsed, extra, digest) = match file {
        Some(f) => {
            let check = FileCheck::new(f.clone(), HEADER as u64, len, SEGMENT);
            let ((parsed, extra, skipped), digest) = check.run_with(|| read(false));
            (parsed, extra, skipped.and(digest))
        }
        None => read(true),
    };
    if digest.map_err(failed)? != sum {
        return Err("checksum mismatch (the file is corrupt)".into());
    }
    let snapshot = parsed?;
    if extra != 0 {
        return Err(unreadable(&"bytes after the last part"));
    }
    Ok(snapshot)
}

fn unreadable(e: &dyn std::fmt::Display) -> String {
    format!("unreadable state: {e}")
}

/// A checkpoint file's payload being read: what is left of it, and its checksum so far.
struct Payload<'a, R> {
    r: &'a mut R,
    /// With a file, side data stays there.
    file: Option<&'a std::sync::Arc<File>>,
    /// Bytes of the payload not read yet: no length in the manifest may reach past them.
    rest: u64,
    /// Length of the whole file.
    total: u64,
    /// The checksum so far; `None` when a file is checked on threads of its own.
    digest: Option<Checksum>,
    piece: Vec<u8>,
}

impl<R: Read + Seek> Payload<'_, R> {
    /// The next `n` bytes, into a buffer of their own.
    fn take(&mut self, n: u64) -> Result<Vec<u8>, String> {
        if n > self.rest {
            return Err(unreadable(&"a part is cut short"));
        }
        let mut part = Vec::with_capacity(usize::try_from(n).map_err(|e| unreadable(&e))?);
        self.r
            .by_ref()
            .take(n)
            .read_to_end(&mut part)
            .map_err(|e| unreadable(&e))?;
        self.rest -= part.len() as u64;
        if let Some(d) = &mut self.digest {
            d.update(&part);
        }
        if part.len() as u64 != n {
            return Err(unreadable(&"a part is cut short"));
        }
        Ok(part)
    }

    /// Passes over the next `n` bytes: into the checksum, or (checked on threads of their
    /// own) not read at all.
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        if self.digest.is_some() {
            return self.pass(n, |_| {});
        }
        let n = n.min(self.rest);
        let step = i64::try_from(n).map_err(std::io::Error::other)?;
        self.r.seek(SeekFrom::Current(step))?;
        self.rest -= n;
        Ok(())
    }

    /// The next `n` bytes through the checksum, in pieces given to `each`.
    fn pass(&mut self, n: u64, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
        let mut left = n.min(self.rest);
        while left > 0 {
            let k = left.min(self.piece.len() as u64) as usize;
            self.r.read_exact(&mut self.piece[..k])?;
            if let Some(d) = &mut self.digest {
                d.update(&self.piece[..k]);
            }
            each(&self.piece[..k]);
            left -= k as u64;
            self.rest -= k as u64;
        }
        Ok(())
    }

    /// The next `n` bytes as a part's side data: kept in memory, or (with a file) left in
    /// the file as its range.
    fn side(&mut self, n: u64) -> Result<Side, String> {
        if n > self.rest {
            return Err(unreadable(&"a part's side data is cut short"));
        }
        let start = self.total - self.rest;
        if let Some(file) = self.file {
            let file = file.clone();
            self.skip(n).map_err(|e| unreadable(&e))?;
            return Ok(Side::File {
                file,
                start,
                len: n,
            });
        }
        let mut kept = Vec::with_capacity(usize::try_from(n).map_err(|e| unreadable(&e))?);
        self.pass(n, |piece| kept.extend_from_slice(piece))
            .map_err(|e| unreadable(&e))?;
        Ok(Side::Bytes(std::sync::Arc::new(kept)))
    }

    /// A part: its serialized form and its side data.
    fn part(&mut self, (n, side): (u64, u64)) -> Result<Part, String> {
        let bytes = self.take(n)?;
        let side = self.side(side)?;
        Ok(Part { bytes, side })
    }

    /// The manifest and every part it lists.
    fn parts(&mut self) -> Result<Snapshot, String> {
        let m_len = self.take(8).map_err(|_| unreadable(&"no manifest"))?;
        let m_len = u64::from_le_bytes(m_len.try_into().expect("8 bytes"));
        let manifest = self
            .take(m_len)
            .map_err(|_| unreadable(&"short manifest"))?;
        let manifest: Manifest = bincode::deserialize(&manifest).map_err(|e| unreadable(&e))?;
        let mut workers = Vec::with_capacity(manifest.workers.len());
        for (cap, streams, operators) in manifest.workers {
            let mut streams_read = Vec::with_capacity(streams.len());
            for (topic, partition, next_offset, lens, position) in streams {
                streams_read.push(StreamPart {
                    topic,
                    partition,
                    next_offset,
                    position,
                    validator: self.part(lens)?,
                });
            }
            let mut operators_read = BTreeMap::new();
            for (name, lens) in operators {
                let part = self.part(lens)?;
                operators_read.insert(name, part);
            }
            workers.push(WorkerPart {
                cap,
                streams: streams_read,
                operators: operators_read,
            });
        }
        let memory = manifest
            .memory
            .into_iter()
            .map(|lens| self.part(lens))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Snapshot {
            seq: manifest.seq,
            created_ms: manifest.created_ms,
            time: manifest.time,
            as_of: manifest.as_of,
            workers,
            stores: StoreImages {
                memory,
                files: manifest.files,
                as_of: manifest.stores_as_of,
            },
        })
    }
}

/// A checkpoint written by [`write`].
#[derive(Debug)]
pub struct Written {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
    /// The snapshot's store images as the file now holds them: their side data is the
    /// file's (kept open), so an in-process store can continue from its image there and
    /// leave its paged tables on disk (see `MemoryStore::restore`).
    pub memory: Vec<Part>,
}

/// Writes `snapshot` to `dir` atomically (temporary file, fsync, rename, fsync of the
/// directory), then removes all but the newest `keep` checkpoints.
pub fn write(dir: &Path, snapshot: Snapshot, keep: usize) -> Result<Written, CheckpointError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(file_name(snapshot.seq));
    let tmp = dir.join(format!(".{}.tmp", file_name(snapshot.seq)));
    let (len, starts) = {
        let f = File::create(&tmp).map_err(io(&tmp))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        let placed = encode_placed(&snapshot, &mut out).map_err(io(&tmp))?;
        let f = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        f.sync_all().map_err(io(&tmp))?;
        placed
    };
    fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    // The store images' side data, now in the file: (serialized form, side data) pairs
    // are the last blobs.
    let file = std::sync::Arc::new(File::open(&path).map_err(io(&path))?);
    let images = snapshot.stores.memory;
    let first = starts.len() - 2 * images.len();
    let memory = images
        .into_iter()
        .enumerate()
        .map(|(i, image)| {
            let side = Side::File {
                file: file.clone(),
                start: starts[first + 2 * i + 1],
                len: image.side.len(),
            };
            Part {
                bytes: image.bytes,
                side,
            }
        })
        .collect();
    // The checkpoint is written; failing to delete old ones is worth a line, not a retry.
    if let Err(e) = prune(dir, keep) {
        tracing::warn!(error = %e, "old checkpoints not removed: {e}");
    }
    Ok(Written { path, len, memory })
}

/// Removes all but the newest `keep` (at least 1) checkpoint files, and temporary files
/// left by a crash while one was written.
pub fn prune(dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    for (_, path) in list(dir)?.into_iter().skip(keep.max(1)) {
        fs::remove_file(&path).map_err(io(&path))?;
    }
    for entry in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".checkpoint-") && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The sequence number the next checkpoint in `dir` takes: one past every file there
/// (valid or not), so that no file is ever overwritten.
pub fn next_seq(dir: &Path) -> Result<u64, CheckpointError> {
    Ok(list(dir)?.first().map_or(1, |(seq, _)| seq + 1))
}

/// Reads and checks the checkpoint at `path` for a run of `workers` workers (per process);
/// why it cannot be used, if it cannot.
fn read_usable(path: &Path, workers: usize) -> Result<Snapshot, String> {
    let s = decode_file(path)?;
    if s.workers.len() != workers {
        return Err(format!(
            "taken with {} workers, this run has {workers} (operator state is partitioned by \
             worker; run with --workers {} to use it)",
            s.workers.len(),
            s.workers.len()
        ));
    }
    Ok(s)
}

/// The newest usable checkpoint in `dir` for a run of `workers` workers. Each newer file
/// that cannot be used is skipped with one `warn` line naming it and the reason. `None`
/// when there is none (the run replays every stream from its start).
pub fn load_newest(
    dir: &Path,
    workers: usize,
) -> Result<Option<(PathBuf, Snapshot)>, CheckpointError> {
    for (_, path) in list(dir)? {
        match read_usable(&path, workers) {
            Ok(s) => return Ok(Some((path, s))),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "checkpoint skipped: {reason}")
            }
        }
    }
    Ok(None)
}

/// The sequence numbers of the usable checkpoints in `dir` for `workers` workers, newest
/// first (every file is read and checked; one that cannot be used is skipped with one
/// `warn` line). In a cluster each process offers these to agree on one.
pub fn usable_seqs(dir: &Path, workers: usize) -> Result<Vec<u64>, CheckpointError> {
    let mut out = Vec::new();
    for (seq, path) in list(dir)? {
        match read_usable(&path, workers) {
            Ok(_) => out.push(seq),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "checkpoint skipped: {reason}")
            }
        }
    }
    Ok(out)
}

/// Checkpoint `seq` of `dir`, read and checked.
pub fn load_seq(
    dir: &Path,
    seq: u64,
    workers: usize,
) -> Result<(PathBuf, Snapshot), CheckpointError> {
    let path = dir.join(file_name(seq));
    let s = read_usable(&path, workers)
        .map_err(|reason| CheckpointError::Mismatch(format!("{}: {reason}", path.display())))?;
    Ok((path, s))
}

/// Deletes the checkpoint files of `dir` newer than `keep` (every one if `None`): in a
/// cluster, those some other process does not hold; a later checkpoint of the same number
/// must not find them. Returns the files deleted.
pub fn remove_newer(dir: &Path, keep: Option<u64>) -> Result<Vec<PathBuf>, CheckpointError> {
    let mut removed = Vec::new();
    for (seq, path) in list(dir)? {
        if keep.is_none_or(|k| seq > k) {
            fs::remove_file(&path).map_err(io(&path))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(position: Option<FilePosition>) -> Snapshot {
        Snapshot {
            seq: 7,
            created_ms: 1,
            time: 1_000,
            as_of: Some(999),
            workers: vec![WorkerPart {
                cap: 1_000,
                streams: vec![StreamPart {
                    topic: "file".into(),
                    partition: 0,
                    next_offset: 42,
                    position,
                    validator: Part {
                        bytes: vec![1, 2, 3],
                        side: Side::Bytes(std::sync::Arc::new(vec![4, 5])),
                    },
                }],
                operators: BTreeMap::from([(
                    "Stock".to_string(),
                    Part {
                        bytes: vec![9; 10],
                        side: Side::default(),
                    },
                )]),
            }],
            stores: StoreImages {
                memory: vec![Part {
                    bytes: vec![5; 4],
                    side: Side::Bytes(std::sync::Arc::new(vec![6, 7, 8])),
                }],
                files: vec![("alerts.jsonl".into(), 12)],
                as_of: Some(998),
            },
        }
    }

    #[test]
    fn a_file_position_round_trips() {
        let position = FilePosition {
            line: 42,
            byte: 4_200,
            before: b"...}\n".to_vec(),
        };
        let back = decode(&encode(&snapshot(Some(position.clone())))).expect("decodes");
        assert_eq!(
            back.positions(),
            BTreeMap::from([(("file".to_string(), 0), position)])
        );
        assert_eq!(
            back.offsets(),
            BTreeMap::from([(("file".to_string(), 0), 42)])
        );
    }

    /// The side data of a part, read back.
    fn side_of(p: &Part) -> Vec<u8> {
        p.side.read(0, p.side.len()).expect("side data reads back")
    }

    #[test]
    fn parts_and_their_side_data_round_trip_in_memory_and_from_a_file() {
        let s = snapshot(None);
        let bytes = encode(&s);
        let dir = std::env::temp_dir().join(format!("shopflow-ckpt-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(file_name(7));
        fs::write(&path, &bytes).expect("write");
        for (how, back) in [
            ("memory", decode(&bytes).expect("decodes")),
            ("file", decode_file(&path).expect("decodes")),
        ] {
            let v = &back.workers[0].streams[0].validator;
            assert_eq!(
                (v.bytes.as_slice(), side_of(v)),
                (&[1u8, 2, 3][..], vec![4, 5]),
                "{how}"
            );
            let op = &back.workers[0].operators["Stock"];
            assert_eq!((op.bytes.len(), op.side.len()), (10, 0), "{how}");
            let m = &back.stores.memory[0];
            assert_eq!(
                (m.bytes.as_slice(), side_of(m)),
                (&[5u8; 4][..], vec![6, 7, 8]),
                "{how}"
            );
        }
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn files_of_older_versions_are_refused_with_the_versions_named() {
        let bytes = encode(&snapshot(None));
        for version in [3u32, 4, 5] {
            let mut older = bytes.clone();
            older[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&version.to_le_bytes());
            let reason = decode(&older).expect_err("an older version is refused");
            assert!(
                reason.contains(&format!("format version {version}"))
                    && reason.contains("version 6 only"),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_file_checked_on_threads_has_the_checksum_of_one_pass() {
        let dir = std::env::temp_dir().join(format!("shopflow-sum-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("payload");
        let bytes: Vec<u8> = (0..200_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        fs::write(&path, &bytes).expect("write");
        let file = std::sync::Arc::new(File::open(&path).expect("open"));
        // Segment boundaries inside, at and past the end; pieces of every size.
        for (segment, start) in [(1_000u64, 0u64), (65_536, 3), (200_000, 3), (1 << 20, 0)] {
            let len = bytes.len() as u64 - start;
            let mut one_pass = Checksum::with_segments_of(segment);
            for piece in bytes[start as usize..].chunks(7_777) {
                one_pass.update(piece);
            }
            let threads = file_checksum_in(file.clone(), start, len, segment).expect("reads");
            assert_eq!(
                threads,
                one_pass.digest(),
                "segments of {segment} from {start}"
            );
        }
        let mut other = bytes.clone();
        other[150_000] ^= 1;
        let mut changed = Checksum::with_segments_of(1_000);
        changed.update(&other);
        let mut same = Checksum::with_segments_of(1_000);
        same.update(&bytes);
        assert_ne!(changed.digest(), same.digest());
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn any_flipped_byte_of_the_payload_is_corruption() {
        let bytes = encode(&snapshot(None));
        // Lengths (the manifest's, a part's), the manifest, the parts, the last byte.
        for at in [
            HEADER,
            HEADER + 3,
            HEADER + 8,
            HEADER + 20,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x5a;
            let reason = decode(&damaged).expect_err("a flipped byte is detected");
            assert!(reason.contains("checksum"), "byte {at}: {reason}");
        }
        decode(&bytes).expect("the undamaged file reads back");
    }
}

//! Side data: the bytes of a checkpoint part that lazily restored collections write and
//! read outside the part's serialized form.
//!
//! Serialization goes through serde, which has no place for "write these bytes elsewhere
//! and keep a reference". So the checkpoint code runs each part's serialization inside
//! [`writing`], and a lazy collection appends its buckets to the side buffer of the
//! current thread ([`append`]) and serializes only where they are; a restore runs each
//! part's deserialization inside [`reading`], and the collection keeps a handle on the
//! side data ([`current`]) to read buckets from later.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::sync::Arc;

/// Where a restored part's side data is: a range of a checkpoint file (kept open: a
/// checkpoint pruned meanwhile stays readable) or bytes in memory.
#[derive(Clone, Debug)]
pub enum Side {
    /// `len` bytes at `start` of `file`.
    File {
        /// The checkpoint file.
        file: Arc<File>,
        /// Where the side data starts in it.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// Side data held in memory (a checkpoint decoded from bytes).
    Bytes(Arc<Vec<u8>>),
}

impl Default for Side {
    fn default() -> Self {
        Side::Bytes(Arc::new(Vec::new()))
    }
}

impl Side {
    /// Length of the side data.
    pub fn len(&self) -> u64 {
        match self {
            Side::File { len, .. } => *len,
            Side::Bytes(b) => b.len() as u64,
        }
    }

    /// Whether there is no side data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `len` bytes at `at` into `buf` (replacing its contents).
    pub fn read_into(&self, at: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        self.read_exact_into(at, buf)
    }

    /// Fills `dest` with the bytes at `at`.
    pub fn read_exact_into(&self, at: u64, dest: &mut [u8]) -> io::Result<()> {
        let len = dest.len() as u64;
        if at.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "side data: {len} bytes at {at} are past its end ({})",
                    self.len()
                ),
            ));
        }
        match self {
            Side::File { file, start, .. } => read_exact_at(file, dest, start + at),
            Side::Bytes(b) => {
                dest.copy_from_slice(&b[at as usize..(at + len) as usize]);
                Ok(())
            }
        }
    }

    /// Reads `len` bytes at `at`.
    pub fn read(&self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(at, len, &mut buf)?;
        Ok(buf)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, at) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

thread_local! {
    /// The side buffer of the serialization running on this thread, if any.
    static WRITING: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    /// The side data of the deserialization running on this thread, if any.
    static READING: RefCell<Option<Side>> = const { RefCell::new(None) };
}

/// Runs `f` (a part's serialization) with a side buffer on this thread; returns what `f`
/// returned and the side data lazy collections appended meanwhile.
///
/// # Panics
/// If called within another `writing` on the same thread.
pub fn writing<T>(f: impl FnOnce() -> T) -> (T, Vec<u8>) {
    WRITING.with(|w| {
        let mut w = w.borrow_mut();
        assert!(w.is_none(), "side::writing is not reentrant");
        *w = Some(Vec::new());
    });
    // The buffer is taken back even if `f` panics, so that the thread can write again.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            WRITING.with(|w| w.borrow_mut().take());
        }
    }
    let reset = Reset;
    let out = f();
    let side = WRITING.with(|w| w.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    (out, side)
}

/// Serializes `value` (bincode) inside a [`writing`]: its serialized form and its side
/// data. (`bincode::serialize` would not do: it serializes twice, once to measure, and the
/// lazy collections would write their buckets twice.)
pub fn save<T: serde::Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<u8>), bincode::Error> {
    let (bytes, side) = writing(|| {
        let mut bytes = Vec::new();
        bincode::serialize_into(&mut bytes, value).map(|()| bytes)
    });
    Ok((bytes?, side))
}

/// Whether a [`writing`] is running on this thread.
pub fn is_writing() -> bool {
    WRITING.with(|w| w.borrow().is_some())
}

/// Appends to the side buffer of this thread's [`writing`]: `fill` gets the buffer and
/// appends; returns where its bytes start. `None` outside a `writing`.
///
/// `fill` must not call into this module.
pub fn append<E>(fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Option<Result<u64, E>> {
    WRITING.with(|w| {
        let mut w = w.borrow_mut();
        let buf = w.as_mut()?;
        let at = buf.len() as u64;
        Some(fill(buf).map(|()| at))
    })
}

/// Runs `f` (a part's deserialization) with `side` as this thread's side data.
pub fn reading<T>(side: Side, f: impl FnOnce() -> T) -> T {
    let before = READING.with(|r| r.borrow_mut().replace(side));
    struct Reset(Option<Side>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let before = self.0.take();
            READING.with(|r| *r.borrow_mut() = before);
        }
    }
    let _reset = Reset(before);
    f()
}

/// The side data of this thread's [`reading`], if any.
pub fn current() -> Option<Side> {
    READING.with(|r| r.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_land_in_the_running_writing_only() {
        assert!(append(|b| {
            b.push(1);
            Ok::<_, ()>(())
        })
        .is_none());
        let ((), side) = writing(|| {
            let a = append(|b| {
                b.extend_from_slice(b"ab");
                Ok::<_, ()>(())
            });
            let c = append(|b| {
                b.push(b'c');
                Ok::<_, ()>(())
            });
            assert_eq!((a, c), (Some(Ok(0)), Some(Ok(2))));
        });
        assert_eq!(side, b"abc");
        assert!(!is_writing());
    }

    #[test]
    fn reads_are_bounded_by_the_side_data() {
        let side = Side::Bytes(Arc::new(b"hello".to_vec()));
        assert_eq!(side.read(1, 3).unwrap(), b"ell");
        assert!(side.read(3, 3).is_err());
        assert!(side.read(u64::MAX, 2).is_err());
        let seen = reading(side.clone(), || current().map(|s| s.len()));
        assert_eq!(seen, Some(5));
        assert!(current().is_none());
    }

    #[test]
    fn a_file_side_reads_its_own_range() {
        let dir = std::env::temp_dir().join(format!("shopflow-side-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let side = Side::File {
            file: Arc::new(File::open(&path).unwrap()),
            start: 2,
            len: 5,
        };
        assert_eq!(side.read(0, 5).unwrap(), b"23456");
        assert!(side.read(1, 5).is_err(), "past the range, inside the file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

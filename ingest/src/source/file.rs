//! A JSON-lines file: one message per line, read as partition 0 of a topic named after the
//! file. Offsets are line indexes (from 0).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use super::{FilePosition, Message, Source, SourceError, StreamId};

/// The topic a checkpoint knows a file stream by (see [`Source::stream_key`]).
pub const FILE_TOPIC: &str = "file";

/// A bounded source reading one JSON-lines file.
#[derive(Debug)]
pub struct FileSource {
    path: String,
    streams: Vec<StreamId>,
    reader: Option<BufReader<File>>,
    next_offset: i64,
    /// The byte `next_offset` starts at.
    byte: u64,
    /// (line, byte it starts at) at the start of the last few polls: a checkpoint's offset
    /// is one of them (a worker validates whole polls), or the current one.
    marks: VecDeque<(i64, u64)>,
    line: Vec<u8>,
}

/// How many poll starts a file source remembers.
const MARKS: usize = 16;

impl FileSource {
    /// Opens `path` and skips its first `lines` lines (a restart from a checkpoint: the
    /// next message read is line `lines`, with that offset). A file with fewer lines is
    /// an error: it cannot continue the checkpointed input.
    pub fn open_from(path: &str, lines: i64) -> Result<Self, SourceError> {
        let mut me = Self::open(path)?;
        let Some(reader) = me.reader.as_mut() else {
            return Ok(me);
        };
        let mut left = lines.max(0) as u64;
        // Whether bytes after the last newline were skipped (a last line without one).
        let mut partial = false;
        while left > 0 {
            let buf = reader.fill_buf().map_err(|source| SourceError::Io {
                path: path.to_string(),
                source,
            })?;
            if buf.is_empty() {
                if left == 1 && partial {
                    break;
                }
                return Err(SourceError::Io {
                    path: path.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the checkpoint resumes at line {lines}, the file has fewer lines \
                             (not the same input: move the state directory away to start over)"
                        ),
                    ),
                });
            }
            partial = buf.last() != Some(&b'\n');
            // A whole buffer short of the line is counted in one pass the compiler
            // vectorizes; only the buffer holding it is searched for its end.
            let newlines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
            let used = if newlines < left {
                left -= newlines;
                buf.len()
            } else {
                let end = buf
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .nth((left - 1) as usize)
                    .map(|(i, _)| i + 1)
                    .expect("the buffer holds that many newlines");
                left = 0;
                end
            };
            reader.consume(used);
        }
        me.next_offset = lines.max(0);
        me.byte = reader.stream_position().map_err(|source| SourceError::Io {
            path: path.to_string(),
            source,
        })?;
        Ok(me)
    }

    /// Opens `path` at `position` (from a checkpoint of an earlier read of the same input):
    /// seeks to its byte and checks that the bytes before it are the ones the checkpoint
    /// saw, instead of reading every line before it. A file that is shorter or differs
    /// there is an error, as in [`FileSource::open_from`].
    pub fn open_at(path: &str, position: &FilePosition) -> Result<Self, SourceError> {
        let mut me = Self::open(path)?;
        let io = |source| SourceError::Io {
            path: path.to_string(),
            source,
        };
        let not_same = |what: &str| SourceError::Io {
            path: path.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the checkpoint resumes at line {} (byte {}), {what} (not the same input: \
                     move the state directory away to start over)",
                    position.line, position.byte
                ),
            ),
        };
        let Some(reader) = me.reader.as_mut() else {
            return Ok(me);
        };
        let file = reader.get_mut();
        let len = file.metadata().map_err(io)?.len();
        let before = position.before.len() as u64;
        if position.byte > len || before > position.byte {
            return Err(not_same("the file is shorter"));
        }
        file.seek(SeekFrom::Start(position.byte - before))
            .map_err(io)?;
        let mut seen = vec![0u8; position.before.len()];
        file.read_exact(&mut seen).map_err(io)?;
        let starts_a_line = position.byte == 0 || position.before.last() == Some(&b'\n');
        if seen != position.before || !starts_a_line {
            return Err(not_same("the file has other bytes before it"));
        }
        // The reader's buffer is empty (nothing was read through it): it reads on from here.
        me.next_offset = position.line.max(0);
        me.byte = position.byte;
        Ok(me)
    }

    /// Opens `path`.
    pub fn open(path: &str) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io {
            path: path.to_string(),
            source,
        })?;
        Ok(FileSource {
            path: path.to_string(),
            streams: vec![StreamId {
                topic: path.to_string(),
                partition: 0,
            }],
            reader: Some(BufReader::with_capacity(1 << 20, file)),
            next_offset: 0,
            byte: 0,
            marks: VecDeque::new(),
            line: Vec::new(),
        })
    }
}

impl Source for FileSource {
    fn streams(&self) -> &[StreamId] {
        &self.streams
    }

    fn poll(&mut self, out: &mut Vec<Message>, max: usize) -> Result<(), SourceError> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        if self.marks.len() == MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((self.next_offset, self.byte));
        for _ in 0..max {
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .map_err(|source| SourceError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                self.reader = None;
                break;
            }
            self.byte += n as u64;
            if self.line.last() == Some(&b'\n') {
                self.line.pop();
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
            }
            out.push(Message {
                stream: 0,
                offset: self.next_offset,
                key: None,
                payload: std::mem::take(&mut self.line),
            });
            self.next_offset += 1;
        }
        Ok(())
    }

    fn caught_up(&self, _stream: usize) -> bool {
        self.reader.is_none()
    }

    fn finished(&self) -> bool {
        self.reader.is_none()
    }

    /// 0 at the end of the file; unknown before (the lines left are not counted).
    fn lag(&self, _stream: usize) -> Option<u64> {
        self.reader.is_none().then_some(0)
    }

    fn stream_key(&self, _stream: usize) -> (String, i32) {
        (FILE_TOPIC.to_string(), 0)
    }

    fn position(&self, _stream: usize, offset: i64) -> Option<FilePosition> {
        let byte = if offset == self.next_offset {
            self.byte
        } else {
            self.marks.iter().find(|(line, _)| *line == offset)?.1
        };
        // The bytes before it, read through a handle of its own (the reader's position and
        // buffer stay as they are).
        let take = byte.min(FilePosition::BEFORE as u64);
        let mut before = vec![0u8; take as usize];
        let mut file = File::open(&self.path).ok()?;
        file.seek(SeekFrom::Start(byte - take)).ok()?;
        file.read_exact(&mut before).ok()?;
        // After a last line without a newline the next line does not start there (a longer
        // file puts the newline first): counting lines handles that case.
        if byte > 0 && before.last() != Some(&b'\n') {
            return None;
        }
        Some(FilePosition {
            line: offset,
            byte,
            before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test's input file, removed (and its directory, once empty) when dropped.
    struct TestFile(String);

    impl std::ops::Deref for TestFile {
        type Target = str;
        fn deref(&self) -> &str {
            &self.0
        }
    }

    impl Drop for TestFile {
        fn drop(&mut self) {
            let path = std::path::Path::new(&self.0);
            let _ = std::fs::remove_file(path);
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    fn file(name: &str, text: &str) -> TestFile {
        let dir = std::env::temp_dir().join(format!("shopflow-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        TestFile(path.to_string_lossy().into_owned())
    }

    fn read_all(mut s: FileSource) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        while !s.finished() {
            s.poll(&mut out, 2).expect("poll");
        }
        out.into_iter()
            .map(|m| (m.offset, String::from_utf8(m.payload).expect("utf-8")))
            .collect()
    }

    #[test]
    fn open_from_skips_lines_and_keeps_offsets() {
        let path = file("skip.jsonl", "a\nb\r\nc\nd\n");
        let got = read_all(FileSource::open_from(&path, 2).expect("open"));
        assert_eq!(got, vec![(2, "c".into()), (3, "d".into())]);
        assert_eq!(
            read_all(FileSource::open_from(&path, 4).expect("open")),
            vec![]
        );
        assert_eq!(
            read_all(FileSource::open_from(&path, 0).expect("open")).len(),
            4
        );
    }

    #[test]
    fn open_from_accepts_a_last_line_without_newline_and_refuses_a_short_file() {
        let path = file("last.jsonl", "a\nb");
        assert_eq!(
            read_all(FileSource::open_from(&path, 2).expect("open")),
            vec![]
        );
        assert_eq!(
            read_all(FileSource::open_from(&path, 1).expect("open")),
            vec![(1, "b".into())]
        );
        let e = FileSource::open_from(&path, 3).expect_err("fewer lines than the checkpoint");
        assert!(e.to_string().contains("resumes at line 3"), "{e}");
    }

    #[test]
    fn a_position_reopens_the_file_where_counting_lines_would() {
        let text = "l0\nline one\r\nl2\n\nl4 has more bytes\nl5\nl6";
        let path = file("pos.jsonl", text);
        let mut s = FileSource::open(&path).expect("open");
        let mut out = Vec::new();
        // Polls of 2 lines: their starts (0, 2, 4, 6) and the current offset are known,
        // except the end, after a last line without a newline.
        let mut positions = vec![s.position(0, 0).expect("the start")];
        while !s.finished() {
            s.poll(&mut out, 2).expect("poll");
            positions.extend(s.position(0, out.len() as i64));
        }
        assert!(s.position(0, 3).is_none(), "line 3 started no poll");
        assert!(s.position(0, 7).is_none(), "no newline after line 6");
        assert_eq!(
            positions.iter().map(|p| p.line).collect::<Vec<_>>(),
            [0, 2, 4, 6]
        );
        assert_eq!(positions[0].byte, 0);
        assert!(positions[0].before.is_empty());
        for p in &positions {
            let at = FileSource::open_at(&path, p).expect("the same file");
            let counted = FileSource::open_from(&path, p.line).expect("open");
            assert_eq!(read_all(at), read_all(counted), "from line {}", p.line);
            assert_eq!(
                p.byte as usize,
                text.split_inclusive('\n')
                    .take(p.line as usize)
                    .map(str::len)
                    .sum::<usize>()
            );
        }
        // A longer file with the same start continues at the same place.
        let longer = file("pos-longer.jsonl", &format!("{text}\nl7\n"));
        let p = positions.iter().find(|p| p.line == 4).expect("line 4");
        let got = read_all(FileSource::open_at(&longer, p).expect("same start"));
        assert_eq!(got.first(), Some(&(4, "l4 has more bytes".to_string())));
        assert_eq!(got.last(), Some(&(7, "l7".to_string())));
    }

    #[test]
    fn a_position_in_another_or_a_shorter_file_is_refused() {
        let path = file("pos-a.jsonl", "first\nsecond\nthird\n");
        let mut s = FileSource::open(&path).expect("open");
        let mut out = Vec::new();
        s.poll(&mut out, 2).expect("poll");
        let p = s.position(0, 2).expect("after two lines");
        assert_eq!(p.before, b"first\nsecond\n");
        let other = file("pos-b.jsonl", "first\nsecund\nthird\n");
        let e = FileSource::open_at(&other, &p).expect_err("other bytes before the line");
        assert!(e.to_string().contains("other bytes before it"), "{e}");
        let short = file("pos-c.jsonl", "first\n");
        let e = FileSource::open_at(&short, &p).expect_err("shorter");
        assert!(e.to_string().contains("shorter"), "{e}");
        // Same bytes, but the position would not start a line: refused too.
        let mid = FilePosition {
            line: 1,
            byte: 3,
            before: b"fir".to_vec(),
        };
        assert!(FileSource::open_at(&path, &mid).is_err());
    }
}

//! A JSON-lines file: one message per line, read as partition 0 of a topic named after the
//! file. Offsets are line indexes (from 0).

use std::fs::File;
use std::io::{BufRead, BufReader};

use super::{Message, Source, SourceError, StreamId};

/// The topic a checkpoint knows a file stream by (see [`Source::stream_key`]).
pub const FILE_TOPIC: &str = "file";

/// A bounded source reading one JSON-lines file.
#[derive(Debug)]
pub struct FileSource {
    path: String,
    streams: Vec<StreamId>,
    reader: Option<BufReader<File>>,
    next_offset: i64,
    line: Vec<u8>,
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("shopflow-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
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
}

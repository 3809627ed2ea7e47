//! A JSON-lines file: one message per line, read as partition 0 of a topic named after the
//! file. Offsets are line indexes (from 0).

use std::fs::File;
use std::io::{BufRead, BufReader};

use super::{Message, Source, SourceError, StreamId};

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
}

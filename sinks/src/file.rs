//! JSON-lines files for alerts and dead letters in embedded mode.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

use crate::SinkError;

/// Appends one JSON document per line to a file.
#[derive(Debug)]
pub struct JsonLinesWriter {
    path: String,
    out: BufWriter<File>,
}

impl JsonLinesWriter {
    /// Creates (truncates) `path`, creating its directory.
    pub fn create(path: &str) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            path: path.to_string(),
            source,
        };
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .map_err(io)?;
        Ok(JsonLinesWriter {
            path: path.to_string(),
            out: BufWriter::new(file),
        })
    }

    /// Opens `path` to continue a checkpoint: cuts it back to `len` bytes (what it held at
    /// the checkpoint) and appends from there. A shorter file cannot continue it.
    pub fn resume(path: &str, len: u64) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            path: path.to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        let have = file.metadata().map_err(io)?.len();
        if have < len {
            return Err(SinkError::Config(format!(
                "{path} has {have} bytes, the checkpoint knows {len}: it is not the file the \
                 checkpoint was taken with (move the state directory away to start over)"
            )));
        }
        file.set_len(len).map_err(io)?;
        let mut out = BufWriter::new(file);
        std::io::Seek::seek(&mut out, std::io::SeekFrom::End(0)).map_err(io)?;
        Ok(JsonLinesWriter {
            path: path.to_string(),
            out,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Flushes and syncs the file; its length (what a checkpoint records).
    pub fn sync(&mut self) -> Result<u64, SinkError> {
        let io = |source| SinkError::Io {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(io)?;
        let file = self.out.get_ref();
        file.sync_data().map_err(io)?;
        Ok(file.metadata().map_err(io)?.len())
    }

    /// Writes `docs`, one per line, and flushes.
    pub fn write_all(&mut self, docs: &[serde_json::Value]) -> Result<(), SinkError> {
        let io = |source| SinkError::Io {
            path: self.path.clone(),
            source,
        };
        for d in docs {
            serde_json::to_writer(&mut self.out, d).map_err(|e| io(e.into()))?;
            self.out.write_all(b"\n").map_err(io)?;
        }
        self.out.flush().map_err(io)
    }
}

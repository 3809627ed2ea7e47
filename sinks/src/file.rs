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

//! [`Part`]: one saved state of a checkpoint, its serialized form and its side data.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::side::{self, Side};

/// One saved state (an operator's, a validator's): its serialized form, and the side data
/// its lazily restored collections wrote (see [`crate::side`]).
#[derive(Clone, Debug, Default)]
pub struct Part {
    /// The serialized state (bincode).
    pub bytes: Vec<u8>,
    /// Its side data: in memory when just taken, a range of the file when read back.
    pub side: Side,
}

impl Part {
    /// Serializes `state`, its lazy collections writing their buckets to side data.
    pub fn save<T: Serialize>(state: &T) -> Result<Part, bincode::Error> {
        let (bytes, side) = side::save(state)?;
        Ok(Part {
            bytes,
            side: Side::Bytes(Arc::new(side)),
        })
    }

    /// Deserializes the state, its lazy collections keeping a handle on the side data.
    pub fn restore<T: DeserializeOwned>(&self) -> Result<T, bincode::Error> {
        side::reading(self.side.clone(), || bincode::deserialize(&self.bytes))
    }

    /// Bytes the part takes in the file.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64 + self.side.len()
    }

    /// Whether the part is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

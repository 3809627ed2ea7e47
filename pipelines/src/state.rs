//! The registry of operator states of one worker: what a checkpoint saves of the dataflow,
//! and where a restart puts it back.
//!
//! Every stateful operator registers its whole state (its maps and the records waiting for
//! the frontier) under its name when the dataflow is built. A restart builds the dataflow
//! with the saved parts: each operator starts from its part instead of empty. A checkpoint
//! serializes every registered part while the worker is paused (see
//! [`crate::checkpoint`]), so the parts of all workers describe one moment.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::checkpoint::{CheckpointError, Part};

type Saver = Box<dyn Fn() -> Result<Part, bincode::Error>>;

/// The operator states of one worker (cheap to clone: one shared registry).
#[derive(Clone, Default)]
pub struct States {
    inner: Rc<RefCell<Registry>>,
}

#[derive(Default)]
struct Registry {
    /// Each registered operator's name and how to serialize its state.
    savers: Vec<(String, Saver)>,
    /// Saved parts not yet claimed by an operator (a restart).
    restored: BTreeMap<String, Part>,
    /// The first part that could not be read back.
    error: Option<CheckpointError>,
}

impl States {
    /// A registry whose operators start from `parts` (operator name → saved state).
    pub fn restoring(parts: BTreeMap<String, Part>) -> Self {
        States {
            inner: Rc::new(RefCell::new(Registry {
                restored: parts,
                ..Registry::default()
            })),
        }
    }

    /// Registers the state of operator `name`: the saved part if there is one, else the
    /// default. A part that does not decode leaves the default and an error that
    /// [`States::finish_restore`] reports.
    ///
    /// # Panics
    /// If `name` is registered twice (operator names are the keys of the saved parts).
    pub fn register<S>(&self, name: &str) -> Rc<RefCell<S>>
    where
        S: Default + Serialize + DeserializeOwned + 'static,
    {
        let mut inner = self.inner.borrow_mut();
        assert!(
            inner.savers.iter().all(|(n, _)| n != name),
            "operator state {name} registered twice"
        );
        let restored = inner.restored.remove(name).map(|part| {
            let started = std::time::Instant::now();
            let state = part.restore::<S>();
            tracing::debug!(
                part = name,
                bytes = part.bytes.len(),
                side = part.side.len(),
                "operator state {name} read back in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
            state
        });
        let state = match restored {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                inner.error.get_or_insert(CheckpointError::Part {
                    part: name.to_string(),
                    reason: e.to_string(),
                });
                S::default()
            }
            None => S::default(),
        };
        let state = Rc::new(RefCell::new(state));
        let saved = state.clone();
        inner.savers.push((
            name.to_string(),
            Box::new(move || Part::save(&*saved.borrow())),
        ));
        state
    }

    /// After the dataflow is built from saved parts: an error if a part did not decode or
    /// belongs to no operator (a checkpoint of another version of the dataflow).
    pub fn finish_restore(&self) -> Result<(), CheckpointError> {
        let mut inner = self.inner.borrow_mut();
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        if let Some(name) = inner.restored.keys().next() {
            return Err(CheckpointError::Part {
                part: name.clone(),
                reason: "no operator of this version has that name".into(),
            });
        }
        Ok(())
    }

    /// Every registered operator's state, serialized, by name.
    pub fn save(&self) -> Result<BTreeMap<String, Part>, CheckpointError> {
        let inner = self.inner.borrow();
        inner
            .savers
            .iter()
            .map(|(name, save)| {
                save()
                    .map(|bytes| (name.clone(), bytes))
                    .map_err(|e| CheckpointError::Part {
                        part: name.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }
}

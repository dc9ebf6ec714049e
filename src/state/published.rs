//! The published snapshot: what readers (`results`, `output`, `state list/show/history`,
//! `plan --lock=false`) read, so they never wait for a writer. sled holds an exclusive lock on
//! an open database, so only the lock holder can open it; after every write (and on open)
//! the holder publishes a consistent copy of the state here:
//!
//! - `snapshot/runs/ID.json`: one file per load-test run, written once (runs are immutable),
//!   before any `current.json` that lists it;
//! - `snapshot/current.json`: the meta, every resource, intent, history entry and output, and
//!   the ids of the runs, replaced atomically (temporary file, fsync, rename, fsync of the
//!   directory).
//!
//! A reader takes no lock: it reads `current.json`, then the run files it lists. Files are
//! 0600 and directories 0700, like the database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{IntentRecord, ResourceRecord};
use super::{HistoryEntry, Intent, ResourceState, RunRecord, Snapshot, StateError, private};
use crate::vocab::resources::Address;

pub const SNAPSHOT_DIR: &str = "snapshot";
const CURRENT: &str = "current.json";
const RUNS: &str = "runs";

/// `snapshot/current.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub schema_version: u32,
    pub lineage: String,
    pub serial: u64,
    pub resources: Vec<ResourceRecord>,
    pub intents: Vec<IntentRecord>,
    pub history: Vec<HistoryEntry>,
    pub outputs: BTreeMap<String, serde_json::Value>,
    /// The runs in `snapshot/runs/`, oldest first.
    pub runs: Vec<u64>,
    /// Pinned baselines (`results baseline`); absent in states written before them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<super::records::BaselineRecord>,
}

pub fn snapshot_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(SNAPSHOT_DIR)
}

fn run_path(state_dir: &Path, id: u64) -> PathBuf {
    snapshot_dir(state_dir)
        .join(RUNS)
        .join(format!("{id}.json"))
}

fn io_error(path: &Path, e: std::io::Error) -> StateError {
    StateError::Publish {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes the run files not yet published, then `current.json` (called by the lock holder).
pub(super) fn publish(
    state_dir: &Path,
    published: &Published,
    runs: &[RunRecord],
) -> Result<(), StateError> {
    let dir = snapshot_dir(state_dir);
    let runs_dir = dir.join(RUNS);
    private::ensure_private_dir(&dir).map_err(|e| io_error(&dir, e))?;
    private::ensure_private_dir(&runs_dir).map_err(|e| io_error(&runs_dir, e))?;
    for run in runs {
        let path = run_path(state_dir, run.id);
        if !path.exists() {
            private::write_atomic(&path, &super::encode(run)).map_err(|e| io_error(&path, e))?;
        }
    }
    let path = dir.join(CURRENT);
    private::write_atomic(&path, &super::encode(published)).map_err(|e| io_error(&path, e))
}

/// True when the published snapshot is of this schema, lineage and serial (nothing to do).
pub(super) fn is_current(
    state_dir: &Path,
    schema_version: u32,
    lineage: &str,
    serial: u64,
) -> bool {
    let path = snapshot_dir(state_dir).join(CURRENT);
    let Ok(bytes) = std::fs::read(&path) else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return false;
    };
    v["schema_version"].as_u64() == Some(u64::from(schema_version))
        && v["lineage"].as_str() == Some(lineage)
        && v["serial"].as_u64() == Some(serial)
}

/// A consistent view of the state as last published, read without the lock.
#[derive(Debug, Clone)]
pub struct View {
    dir: PathBuf,
    published: Published,
    /// Set when the state is on GCS: runs are read from there.
    remote: Option<std::sync::Arc<super::gcs::Gcs>>,
}

impl View {
    /// Reads the published snapshot of the state in `dir` (on GCS: at `storage`); None when nothing was ever
    /// written there. A database without a snapshot (written by a benchstack before
    /// snapshots existed) is opened once, under the lock, to publish one.
    pub fn open(dir: &Path, storage: &super::gcs::Endpoint) -> Result<Option<View>, StateError> {
        if let Some(g) = super::gcs::connect_bound(dir, storage) {
            // On GCS the state object is the published snapshot: read it without the lock.
            let g = g?;
            let Some((state, _)) = super::read_remote_state(&g)? else {
                return Ok(None);
            };
            if state.published.schema_version > super::SCHEMA_VERSION {
                return Err(StateError::NewerSchema {
                    dir: dir.to_path_buf(),
                    found: state.published.schema_version,
                    supported: super::SCHEMA_VERSION,
                });
            }
            return Ok(Some(View {
                dir: dir.to_path_buf(),
                published: state.published,
                remote: Some(std::sync::Arc::new(g)),
            }));
        }
        if !super::Store::exists(dir, storage) {
            return Ok(None);
        }
        let path = snapshot_dir(dir).join(CURRENT);
        let version = |p: &Path| -> Result<Option<(u32, serde_json::Value)>, StateError> {
            if !p.exists() {
                return Ok(None);
            }
            let bytes = std::fs::read(p).map_err(|e| io_error(p, e))?;
            let v: serde_json::Value = super::decode(&p.display().to_string(), &bytes)?;
            let n = v["schema_version"].as_u64().unwrap_or(0) as u32;
            Ok(Some((n, v)))
        };
        let mut found = version(&path)?;
        if found
            .as_ref()
            .is_none_or(|(n, _)| *n < super::SCHEMA_VERSION)
        {
            // No snapshot yet, or one of an older schema: the store publishes (and migrates)
            // when it is opened, which needs the lock.
            match super::Store::open(dir, "publish a snapshot", storage) {
                Ok(store) => drop(store),
                Err(StateError::Lock(super::LockError::Held { holder, .. })) => {
                    return Err(StateError::NotPublished {
                        dir: dir.to_path_buf(),
                        holder: holder.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
            found = version(&path)?;
        }
        let Some((n, v)) = found else {
            return Err(io_error(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not published"),
            ));
        };
        if n != super::SCHEMA_VERSION {
            return Err(StateError::NewerSchema {
                dir: dir.to_path_buf(),
                found: n,
                supported: super::SCHEMA_VERSION,
            });
        }
        let published: Published = serde_json::from_value(v).map_err(|e| StateError::Corrupt {
            key: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Some(View {
            dir: dir.to_path_buf(),
            published,
            remote: None,
        }))
    }

    /// The snapshot as read (`state pull`).
    pub fn published(&self) -> &Published {
        &self.published
    }

    pub fn serial(&self) -> u64 {
        self.published.serial
    }

    pub fn lineage(&self) -> &str {
        &self.published.lineage
    }

    pub fn resources(&self) -> Result<Vec<ResourceState>, StateError> {
        self.published
            .resources
            .iter()
            .map(|r| r.clone().into_state())
            .collect()
    }

    pub fn resource(&self, address: &Address) -> Result<Option<ResourceState>, StateError> {
        self.published
            .resources
            .iter()
            .find(|r| &r.address == address)
            .map(|r| r.clone().into_state())
            .transpose()
    }

    pub fn intents(&self) -> Result<Vec<Intent>, StateError> {
        self.published
            .intents
            .iter()
            .map(|i| i.clone().into_state())
            .collect()
    }

    pub fn history(&self) -> Vec<HistoryEntry> {
        self.published.history.clone()
    }

    pub fn outputs(&self) -> BTreeMap<String, serde_json::Value> {
        self.published.outputs.clone()
    }

    /// Every run listed in the snapshot, oldest first.
    pub fn baselines(&self) -> &[super::records::BaselineRecord] {
        &self.published.baselines
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>, StateError> {
        self.published
            .runs
            .iter()
            .map(|&id| {
                if let Some(g) = &self.remote {
                    return super::cached_remote_run(g, &self.dir, &self.published.lineage, id);
                }
                let path = run_path(&self.dir, id);
                let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
                super::decode(&path.display().to_string(), &bytes)
            })
            .collect()
    }

    /// What plan needs, as published.
    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        Ok(Snapshot::keyed(
            self.published.lineage.clone(),
            self.published.serial,
            self.resources()?,
            self.intents()?,
        ))
    }
}

//! The state store: one sled database per state directory (`DIR/db`) holding the lineage and
//! serial, every resource with the configuration it was applied with and what its provider
//! observed, the intents of provider calls in flight, the history of operations, every
//! load-test run, and the outputs. Every write is one sled transaction that also bumps the
//! serial, and is flushed before the call returns.
//!
//! Keys: `meta`, `res/ADDR`, `intent/ADDR`, `hist/ID`, `run/ID`, `output/NAME` (IDs big-endian,
//! so scans come back in order). Values are JSON of the records in `schema` (docs/state.md);
//! the store converts them to and from the library's types at this boundary. After every
//! write the store publishes a snapshot for lock-free readers (`published`).
//!
//! The persistence seam is that publish step. A directory bound to `gs://BUCKET/PREFIX`
//! (`gcs::bind`) is a working copy: `Store::open` takes the GCS lock, rebuilds the database
//! from `state.json`, and every publish then writes the new run objects and `state.json` on
//! the generation last read or written (`Store::remote`); `View` reads `state.json` instead of
//! the local snapshot. A plain directory (the default) is unchanged.

pub mod gcs;
pub mod lock;
mod migrate;
pub mod observed;
pub mod private;
pub mod procinfo;
pub mod published;
pub mod records;
pub mod workdir;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::vocab::resources::{Address, ResourceConfig};
use records::{IntentRecord, ResourceRecord};

pub use lock::{Lock, LockError, LockInfo};
pub use published::View;
pub use records::{
    BaselineRecord, EnvironmentRecord, Fingerprint, HistoryEntry, Meta, RunRecord, TuneProbe,
};

/// The layout this build writes (`records::VERSION`). A store with a higher number was written
/// by a newer benchstack and is refused rather than misread; a lower one is migrated on open.
pub const SCHEMA_VERSION: u32 = records::VERSION;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Gcs(#[from] gcs::GcsError),
    #[error("cannot open the state database in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("state database error: {0}")]
    Db(#[from] sled::Error),
    #[error("cannot make {dir} private to its owner (0700): {source}")]
    Private {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state in {dir} was written by a newer benchstack (schema {found}; this build reads up to {supported}): upgrade benchstack"
    )]
    NewerSchema {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the state record `{key}` is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(
        "{target} holds a different state (lineage {target_lineage}, serial {target_serial}) than this one (lineage {source_lineage}): refusing to replace it"
    )]
    OtherLineage {
        target: String,
        target_lineage: String,
        target_serial: u64,
        source_lineage: String,
    },
    #[error(
        "{target} holds a newer serial ({target_serial}) of this state than the source ({source_serial}): refusing to go back"
    )]
    TargetNewer {
        target: String,
        target_serial: u64,
        source_serial: u64,
    },
    #[error("no resource `{0}` in the state")]
    NoSuchResource(String),
    #[error("no load-test run #{0} in the state")]
    NoSuchRun(u64),
    #[error("cannot publish the state snapshot {path}: {source}")]
    Publish {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state in {dir} has no published snapshot yet and is locked by {holder}; try again when it has written its first change"
    )]
    NotPublished { dir: PathBuf, holder: String },
    #[error("cannot migrate the state in {dir} from schema {from} to {to}: {reason}")]
    Migrate {
        dir: PathBuf,
        from: u32,
        to: u32,
        reason: String,
    },
}

/// A resource as applied (the library's view; persisted as `records::ResourceRecord`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceState {
    pub address: Address,
    /// `local`, `gke`, … (chosen by the resource's cluster).
    pub provider: String,
    /// The configuration it was applied with.
    pub config: ResourceConfig,
    pub depends_on: Vec<Address>,
    /// What the provider observed (pids, ports, endpoints, start times, …).
    pub observed: serde_json::Value,
    /// The rendered files and flags it was applied with (serving), for plan diffs.
    pub rendered: BTreeMap<String, String>,
    /// Fingerprints of the upstream resources this one ran against (load tests), so a change
    /// upstream that landed without a re-run is still noticed.
    pub upstream: BTreeMap<String, String>,
    /// Fingerprint of config + rendered (see `fingerprint`).
    pub fingerprint: String,
    pub applied_at: u64,
    /// The last load-test run (load tests only).
    pub last_run: Option<u64>,
}

/// Written before a provider call, settled (removed) after: an apply killed in between leaves
/// it behind, and the next plan and apply continue from it. Persisted as
/// `records::IntentRecord`.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub address: Address,
    /// create, update, replace, delete or run.
    pub operation: String,
    pub provider: String,
    pub config: Option<ResourceConfig>,
    pub depends_on: Vec<Address>,
    pub rendered: BTreeMap<String, String>,
    pub upstream: BTreeMap<String, String>,
    /// What the provider decided before acting (ports, directories), so it can find what it
    /// started even if the pids never got recorded.
    pub data: serde_json::Value,
    pub pid: u32,
    pub started: u64,
}

/// Everything plan needs, read at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub lineage: String,
    pub serial: u64,
    pub resources: BTreeMap<Address, ResourceState>,
    pub intents: BTreeMap<Address, Intent>,
}

impl Snapshot {
    /// A snapshot of these records, keyed by address (what the store and the published view share).
    pub fn keyed(
        lineage: String,
        serial: u64,
        resources: Vec<ResourceState>,
        intents: Vec<Intent>,
    ) -> Snapshot {
        Snapshot {
            lineage,
            serial,
            resources: resources
                .into_iter()
                .map(|r| (r.address.clone(), r))
                .collect(),
            intents: intents
                .into_iter()
                .map(|i| (i.address.clone(), i))
                .collect(),
        }
    }
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    lock: Lock,
    /// Apply writes from several threads: one publishes at a time, each reading the database
    /// as it is then, so the last snapshot written is never older than the last write.
    publishing: std::sync::Mutex<()>,
    /// Set when the state lives on GCS (the directory is then a working copy: `gcs`).
    remote: Option<Remote>,
}

/// The remote side of a store whose directory is bound to GCS: the lock held there, and the
/// generation of `state.json` this writer last read or wrote (its next write's precondition).
struct Remote {
    gcs: std::sync::Arc<gcs::Gcs>,
    lock: gcs::RemoteLock,
    /// (generation of state.json, the serial it holds, the runs it lists).
    written: std::sync::Mutex<(i64, Option<u64>, std::collections::BTreeSet<u64>)>,
}

/// `state.json` on GCS: the published state and the store's counters.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RemoteState {
    #[serde(flatten)]
    pub published: published::Published,
    pub meta: Meta,
}

/// Reads `state.json` with its generation.
pub fn read_remote_state(g: &gcs::Gcs) -> Result<Option<(RemoteState, i64)>, StateError> {
    let Some(read) = g.read(gcs::STATE_OBJECT)? else {
        return Ok(None);
    };
    let key = format!(
        "gs://{}/{}",
        g.address.bucket,
        g.address.object(gcs::STATE_OBJECT)
    );
    let state: RemoteState = decode(&key, &read.bytes)?;
    Ok(Some((state, read.generation)))
}

fn remote_run_object(id: u64) -> String {
    format!("runs/{id}.json")
}

/// Reads one run, from the working directory's cache when it holds it: runs are immutable,
/// so a run of this lineage fetched once is never fetched again (a tune's hundreds of probes
/// would otherwise be downloaded by every command). The cache is `run-cache/LINEAGE/ID.json`.
pub fn cached_remote_run(
    g: &gcs::Gcs,
    dir: &Path,
    lineage: &str,
    id: u64,
) -> Result<RunRecord, StateError> {
    let safe = !lineage.is_empty()
        && lineage
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !safe {
        return read_remote_run(g, id);
    }
    let cache = dir.join("run-cache").join(lineage);
    let path = cache.join(format!("{id}.json"));
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(run) = serde_json::from_slice::<RunRecord>(&bytes)
        && run.id == id
    {
        return Ok(run);
    }
    let run = read_remote_run(g, id)?;
    // A cache that cannot be written only costs a later download.
    if private::ensure_private_dir(&dir.join("run-cache")).is_ok()
        && private::ensure_private_dir(&cache).is_ok()
    {
        let _ = private::write_atomic(&path, &encode(&run));
    }
    Ok(run)
}

/// Reads one run object.
pub fn read_remote_run(g: &gcs::Gcs, id: u64) -> Result<RunRecord, StateError> {
    let name = remote_run_object(id);
    let key = format!("gs://{}/{}", g.address.bucket, g.address.object(&name));
    let read = g.read(&name)?.ok_or_else(|| StateError::Corrupt {
        key: key.clone(),
        reason: "listed in state.json but missing".into(),
    })?;
    decode(&key, &read.bytes)
}

/// The state directory a `--state` value names: a directory as given, or for
/// `gs://BUCKET/PREFIX` the local working directory bound to it (`gcs::bind`).
pub fn resolve(arg: &Path) -> Result<PathBuf, StateError> {
    match arg.to_str() {
        Some(s) if s.starts_with("gs://") => Ok(gcs::bind(&gcs::Address::parse(s)?, None)?),
        _ => Ok(arg.to_path_buf()),
    }
}

/// Where the state lives, for messages: `gs://…` or the directory.
pub fn describe(dir: &Path) -> String {
    match gcs::binding(dir) {
        Some(a) => a.to_string(),
        None => dir.display().to_string(),
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StateError>>;

impl Store {
    /// Takes the lock for `operation`, then opens (or creates) the store in `dir`; a state
    /// bound to GCS is reached at `storage`.
    pub fn open(dir: &Path, operation: &str, storage: &gcs::Endpoint) -> Result<Store, StateError> {
        let lock = Lock::acquire(dir, operation)?;
        let db_dir = dir.join("db");
        // A GCS state: take the remote lock, then read the state under it and rebuild the
        // working copy from it (the remote is the truth; the copy may be from another run).
        let mut remote = None;
        let mut imported = None;
        if let Some(g) = gcs::connect_bound(dir, storage) {
            let g = std::sync::Arc::new(g?);
            let lineage = read_remote_state(&g)?
                .map(|(s, _)| s.meta.lineage)
                .unwrap_or_default();
            let rlock = gcs::RemoteLock::acquire(g.clone(), operation, &lineage)?;
            let found = read_remote_state(&g)?;
            for sub in ["db", published::SNAPSHOT_DIR] {
                let path = dir.join(sub);
                if path.exists() {
                    std::fs::remove_dir_all(&path).map_err(|source| StateError::Private {
                        dir: path.clone(),
                        source,
                    })?;
                }
            }
            let (generation, serial, runs) = match &found {
                Some((s, generation)) => (
                    *generation,
                    Some(s.meta.serial),
                    s.published.runs.iter().copied().collect(),
                ),
                None => (0, None, Default::default()),
            };
            if let Some((s, _)) = found {
                let runs = s
                    .published
                    .runs
                    .iter()
                    .map(|&id| cached_remote_run(&g, dir, &s.meta.lineage, id))
                    .collect::<Result<Vec<_>, _>>()?;
                imported = Some((s, runs));
            }
            remote = Some(Remote {
                gcs: g,
                lock: rlock,
                written: std::sync::Mutex::new((generation, serial, runs)),
            });
        }
        let private = |source: std::io::Error| StateError::Private {
            dir: db_dir.clone(),
            source,
        };
        private::ensure_private_dir(&db_dir).map_err(private)?;
        let db = sled::Config::new()
            .path(&db_dir)
            .open()
            .map_err(|source| StateError::Open {
                dir: dir.to_path_buf(),
                source,
            })?;
        // sled creates its files with the process umask.
        private::restrict_tree(&db_dir).map_err(private)?;
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            lock,
            publishing: std::sync::Mutex::new(()),
            remote,
        };
        if let Some((state, runs)) = imported {
            store.import(state, runs)?;
        }
        match store.get::<Meta>(b"meta")? {
            Some(meta) if meta.schema_version > SCHEMA_VERSION => {
                return Err(StateError::NewerSchema {
                    dir: dir.to_path_buf(),
                    found: meta.schema_version,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(meta) if meta.schema_version < SCHEMA_VERSION => {
                migrate::migrate(&store.db, dir, meta)?;
            }
            Some(_) => {}
            None => {
                let meta = Meta {
                    lineage: new_lineage(),
                    serial: 0,
                    schema_version: SCHEMA_VERSION,
                    created: procinfo::now_unix(),
                    next_run_id: 1,
                    next_history_id: 1,
                };
                store.db.insert(b"meta", encode(&meta))?;
                store.db.flush()?;
            }
        }
        // Republish only when the snapshot is missing or behind: a plan that fails leaves the
        // state directory byte for byte as it was.
        let meta = store.meta()?;
        if let Some(remote) = &store.remote {
            remote.lock.set_lineage(&meta.lineage);
        }
        if !published::is_current(&store.dir, meta.schema_version, &meta.lineage, meta.serial) {
            store.publish()?;
        }
        Ok(store)
    }

    /// Publishes the state as it is now for lock-free readers (`published`).
    fn publish(&self) -> Result<(), StateError> {
        // A panic elsewhere while publishing leaves nothing half-done: the files are atomic.
        let _one_at_a_time = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let meta = self.meta()?;
        let meta_copy = meta.clone();
        let runs_dir = published::snapshot_dir(&self.dir).join("runs");
        let mut runs = Vec::new();
        let mut new_runs = Vec::new();
        for k in self.db.scan_prefix(b"run/").keys() {
            let k = k?;
            let id = k
                .get(4..12)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StateError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "not a run key".into(),
                })?;
            runs.push(id);
            if !runs_dir.join(format!("{id}.json")).exists() {
                new_runs.push(self.run(id)?);
            }
        }
        let p = published::Published {
            schema_version: meta.schema_version,
            lineage: meta.lineage,
            serial: meta.serial,
            resources: self.scan("res/")?,
            intents: self.scan("intent/")?,
            history: self.scan("hist/")?,
            outputs: self.outputs()?,
            runs,
            baselines: self.baselines()?,
        };
        published::publish(&self.dir, &p, &new_runs)?;
        if let Some(remote) = &self.remote {
            self.publish_remote(remote, p, meta_copy)?;
        }
        Ok(())
    }

    /// Writes the new runs (create-only), then `state.json` on the generation last read or
    /// written: refused, with the object unchanged, if anyone else wrote it since.
    fn publish_remote(
        &self,
        remote: &Remote,
        published: published::Published,
        meta: Meta,
    ) -> Result<(), StateError> {
        let mut written = remote
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if written.1 == Some(meta.serial) {
            return Ok(());
        }
        if !remote.lock.verify()? {
            return Err(gcs::GcsError::LockLost {
                bucket: remote.gcs.address.bucket.clone(),
                prefix: remote.gcs.address.prefix.clone(),
            }
            .into());
        }
        for &id in &published.runs {
            if written.2.contains(&id) {
                continue;
            }
            let body = encode(&self.run(id)?);
            let name = remote_run_object(id);
            match remote.gcs.write_if(&name, body.clone(), 0) {
                Ok(_) => {}
                // Already there: fine if it is this very run (a retried write), else another
                // writer's run took the id and our state is stale.
                Err(gcs::GcsError::Conflict { .. })
                    if remote.gcs.read(&name)?.is_some_and(|r| r.bytes == body) => {}
                Err(e) => return Err(e.into()),
            }
            written.2.insert(id);
        }
        let serial = meta.serial;
        let body = encode(&RemoteState { published, meta });
        let generation = remote.gcs.write_if(gcs::STATE_OBJECT, body, written.0)?;
        written.0 = generation;
        written.1 = Some(serial);
        Ok(())
    }

    /// Fills a fresh working copy with a state read from GCS.
    fn import(&self, state: RemoteState, runs: Vec<RunRecord>) -> Result<(), StateError> {
        let p = state.published;
        self.db.insert(b"meta", encode(&state.meta))?;
        for r in &p.resources {
            self.db.insert(res_key(&r.address).as_bytes(), encode(r))?;
        }
        for i in &p.intents {
            self.db
                .insert(intent_key(&i.address).as_bytes(), encode(i))?;
        }
        for h in &p.history {
            self.db.insert(hist_key(h.id).as_slice(), encode(h))?;
        }
        for (name, value) in &p.outputs {
            self.db
                .insert(format!("output/{name}").as_bytes(), encode(value))?;
        }
        for run in &runs {
            self.db.insert(run_key(run.id).as_slice(), encode(run))?;
        }
        for b in &p.baselines {
            self.db.insert(
                baseline_key(&b.address, &b.fingerprint).as_bytes(),
                encode(b),
            )?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// True when nothing was ever written here beyond the fresh meta.
    fn is_fresh(&self) -> Result<bool, StateError> {
        Ok(self.meta()?.serial == 0
            && ["res/", "intent/", "hist/", "run/", "output/", "baseline/"]
                .iter()
                .all(|p| self.db.scan_prefix(p.as_bytes()).next().is_none()))
    }

    /// `state migrate`: makes this store a copy of `source` (lineage, serial, counters,
    /// resources, intents, history, outputs, every run), then publishes it (on GCS: the runs,
    /// then `state.json`, conditionally). Refuses a store that holds another lineage, or a
    /// later serial of the same one.
    pub fn copy_from(&self, source: &Store) -> Result<(), StateError> {
        let src = source.meta()?;
        let mine = self.meta()?;
        let target = describe(&self.dir);
        if mine.lineage != src.lineage && !self.is_fresh()? {
            return Err(StateError::OtherLineage {
                target,
                target_lineage: mine.lineage,
                target_serial: mine.serial,
                source_lineage: src.lineage,
            });
        }
        if mine.lineage == src.lineage && mine.serial > src.serial {
            return Err(StateError::TargetNewer {
                target,
                target_serial: mine.serial,
                source_serial: src.serial,
            });
        }
        let runs = source.runs()?;
        let state = RemoteState {
            published: published::Published {
                schema_version: src.schema_version,
                lineage: src.lineage.clone(),
                serial: src.serial,
                resources: source.scan("res/")?,
                intents: source.scan("intent/")?,
                history: source.scan("hist/")?,
                outputs: source.outputs()?,
                runs: runs.iter().map(|r| r.id).collect(),
                baselines: source.baselines()?,
            },
            meta: src,
        };
        self.db.clear()?;
        self.import(state, runs)?;
        self.publish()
    }

    /// The remote lock's record and id, when the state is on GCS.
    pub fn remote_lock(&self) -> Option<(gcs::LockRecord, i64)> {
        self.remote.as_ref().map(|r| (r.lock.record(), r.lock.id()))
    }

    /// True if `dir` holds no state database yet (nothing to read).
    pub fn exists(dir: &Path, storage: &gcs::Endpoint) -> bool {
        if let Some(g) = gcs::connect_bound(dir, storage) {
            // An unreachable remote counts as existing: opening it then reports why.
            return g
                .and_then(|g| g.read(gcs::STATE_OBJECT))
                .map_or(true, |r| r.is_some());
        }
        dir.join("db").exists()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lock we hold; `took_over` says whether it was taken from a dead holder.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    pub fn meta(&self) -> Result<Meta, StateError> {
        self.get(b"meta")?.ok_or_else(|| StateError::Corrupt {
            key: "meta".into(),
            reason: "missing".into(),
        })
    }

    pub fn snapshot(&self) -> Result<Snapshot, StateError> {
        let meta = self.meta()?;
        Ok(Snapshot::keyed(
            meta.lineage,
            meta.serial,
            self.resources()?,
            self.intents()?,
        ))
    }

    pub fn resources(&self) -> Result<Vec<ResourceState>, StateError> {
        self.scan::<ResourceRecord>("res/")?
            .into_iter()
            .map(ResourceRecord::into_state)
            .collect()
    }

    pub fn resource(&self, address: &Address) -> Result<Option<ResourceState>, StateError> {
        self.get::<ResourceRecord>(res_key(address).as_bytes())?
            .map(ResourceRecord::into_state)
            .transpose()
    }

    pub fn intents(&self) -> Result<Vec<Intent>, StateError> {
        self.scan::<IntentRecord>("intent/")?
            .into_iter()
            .map(IntentRecord::into_state)
            .collect()
    }

    pub fn put_intent(&self, intent: &Intent) -> Result<u64, StateError> {
        let key = intent_key(&intent.address);
        let value = encode(&IntentRecord::from_state(intent));
        self.write(|tx, _| {
            tx.insert(key.as_bytes(), value.clone())?;
            Ok(())
        })
    }

    pub fn clear_intent(&self, address: &Address) -> Result<u64, StateError> {
        let key = intent_key(address);
        self.write(|tx, _| {
            tx.remove(key.as_bytes())?;
            Ok(())
        })
    }

    /// Records a resource as applied and settles its intent, in one write.
    pub fn put_resource(&self, r: &ResourceState) -> Result<u64, StateError> {
        let key = res_key(&r.address);
        let ikey = intent_key(&r.address);
        let value = encode(&ResourceRecord::from_state(r)?);
        self.write(|tx, _| {
            tx.insert(key.as_bytes(), value.clone())?;
            tx.remove(ikey.as_bytes())?;
            Ok(())
        })
    }

    /// Forgets a resource (after delete, or `state rm`) and settles its intent.
    pub fn remove_resource(&self, address: &Address) -> Result<u64, StateError> {
        let key = res_key(address);
        let ikey = intent_key(address);
        self.write(|tx, _| {
            tx.remove(key.as_bytes())?;
            tx.remove(ikey.as_bytes())?;
            Ok(())
        })
    }

    /// Stores a load-test run and the load test's resource record together; returns the run id.
    pub fn put_run(&self, run: RunRecord, resource: ResourceState) -> Result<u64, StateError> {
        let key = res_key(&resource.address);
        let ikey = intent_key(&resource.address);
        let resource = ResourceRecord::from_state(&resource)?;
        let (_, id) = self.write_with(|tx, meta| {
            let id = meta.next_run_id;
            meta.next_run_id += 1;
            let run = RunRecord { id, ..run.clone() };
            let resource = ResourceRecord {
                last_run: Some(id),
                ..resource.clone()
            };
            tx.insert(run_key(id).as_slice(), encode(&run))?;
            tx.insert(key.as_bytes(), encode(&resource))?;
            tx.remove(ikey.as_bytes())?;
            Ok(id)
        })?;
        Ok(id)
    }

    pub fn runs(&self) -> Result<Vec<RunRecord>, StateError> {
        self.scan("run/")
    }

    pub fn run(&self, id: u64) -> Result<RunRecord, StateError> {
        self.get(run_key(id).as_slice())?
            .ok_or(StateError::NoSuchRun(id))
    }

    /// Pins `runs` as the baseline of `address` in the environment `fingerprint`, replacing
    /// that environment's earlier baseline.
    pub fn set_baseline(&self, baseline: &BaselineRecord) -> Result<u64, StateError> {
        let key = baseline_key(&baseline.address, &baseline.fingerprint);
        self.write(|tx, _| {
            tx.insert(key.as_bytes(), encode(baseline))?;
            Ok(())
        })
    }

    /// Unpins the baselines of `address` (every environment's); returns how many there were.
    pub fn unset_baseline(&self, address: &Address) -> Result<usize, StateError> {
        let keys: Vec<String> = self
            .baselines()?
            .iter()
            .filter(|b| &b.address == address)
            .map(|b| baseline_key(&b.address, &b.fingerprint))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.write(|tx, _| {
            for k in &keys {
                tx.remove(k.as_bytes())?;
            }
            Ok(())
        })?;
        Ok(keys.len())
    }

    pub fn baselines(&self) -> Result<Vec<BaselineRecord>, StateError> {
        self.scan("baseline/")
    }

    pub fn record_history(&self, entry: HistoryEntry) -> Result<u64, StateError> {
        let (_, id) = self.write_with(|tx, meta| {
            let id = meta.next_history_id;
            meta.next_history_id += 1;
            let entry = HistoryEntry {
                id,
                ..entry.clone()
            };
            tx.insert(hist_key(id).as_slice(), encode(&entry))?;
            Ok(id)
        })?;
        Ok(id)
    }

    pub fn history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        self.scan("hist/")
    }

    /// Replaces the stored outputs (no write, and no new serial, when they are unchanged).
    pub fn set_outputs(
        &self,
        outputs: &BTreeMap<String, serde_json::Value>,
    ) -> Result<u64, StateError> {
        if &self.outputs()? == outputs {
            return Ok(self.meta()?.serial);
        }
        let old: Vec<sled::IVec> = self
            .db
            .scan_prefix(b"output/")
            .keys()
            .collect::<Result<_, _>>()?;
        self.write(|tx, _| {
            for k in &old {
                tx.remove(k.clone())?;
            }
            for (name, value) in outputs {
                tx.insert(format!("output/{name}").as_bytes(), encode(value))?;
            }
            Ok(())
        })
    }

    pub fn outputs(&self) -> Result<BTreeMap<String, serde_json::Value>, StateError> {
        let mut out = BTreeMap::new();
        for kv in self.db.scan_prefix(b"output/") {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = decode(&key, &v)?;
            out.insert(key["output/".len()..].to_string(), value);
        }
        Ok(out)
    }

    /// One transaction: `f` edits the tree and the meta; the serial grows by one. Flushed.
    fn write<F>(&self, f: F) -> Result<u64, StateError>
    where
        F: Fn(&TransactionalTree, &mut Meta) -> TxResult<()>,
    {
        self.write_with(|tx, meta| f(tx, meta).map(|()| 0))
            .map(|(serial, _)| serial)
    }

    /// Like `write`, also returning what `f` returns (an id it allocated).
    fn write_with<F>(&self, f: F) -> Result<(u64, u64), StateError>
    where
        F: Fn(&TransactionalTree, &mut Meta) -> TxResult<u64>,
    {
        let (serial, value) = self
            .db
            .transaction(|tx| {
                let raw = tx.get(b"meta")?.ok_or_else(|| {
                    ConflictableTransactionError::Abort(StateError::Corrupt {
                        key: "meta".into(),
                        reason: "missing".into(),
                    })
                })?;
                let mut meta: Meta =
                    decode("meta", &raw).map_err(ConflictableTransactionError::Abort)?;
                let value = f(tx, &mut meta)?;
                meta.serial += 1;
                tx.insert(b"meta", encode(&meta))?;
                Ok((meta.serial, value))
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StateError::Db(e),
            })?;
        self.db.flush()?;
        self.publish()?;
        Ok((serial, value))
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        match self.db.get(key)? {
            Some(v) => Ok(Some(decode(&String::from_utf8_lossy(key), &v)?)),
            None => Ok(None),
        }
    }

    fn scan<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, StateError> {
        self.db
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                decode(&String::from_utf8_lossy(&k), &v)
            })
            .collect()
    }
}

fn res_key(a: &Address) -> String {
    format!("res/{a}")
}

fn baseline_key(a: &Address, f: &Fingerprint) -> String {
    format!("baseline/{a}/{}", f.key())
}

fn intent_key(a: &Address) -> String {
    format!("intent/{a}")
}

pub(crate) fn run_key(id: u64) -> Vec<u8> {
    let mut k = b"run/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn hist_key(id: u64) -> Vec<u8> {
    let mut k = b"hist/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain data types cannot fail (string keys, no non-finite floats
    // are produced by benchstack itself; serde_json writes them as null).
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn new_lineage() -> String {
    let a: u128 = rand::random();
    let s = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

/// A history entry for this process, to be completed with the result.
pub fn history_entry(
    operation: &str,
    address: Option<&Address>,
    action: Option<&str>,
) -> HistoryEntry {
    let now = procinfo::now_unix();
    HistoryEntry {
        id: 0,
        user: procinfo::user_name(),
        host: procinfo::host_name(),
        pid: std::process::id(),
        operation: operation.to_string(),
        address: address.map(|a| a.to_string()),
        action: action.map(str::to_string),
        started: now,
        finished: now,
        result: String::new(),
    }
}

pub use crate::vocab::resources::AddressError;

/// Parses `serving.tf`, `serving.tf["small"]` (as printed) or `serving.tf[small]`.
pub fn parse_address(s: &str) -> Result<Address, AddressError> {
    Address::parse(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::ModelConfig;

    #[test]
    fn a_published_state_from_before_baselines_reads_with_none_and_a_pin_survives_reopening() {
        // state.json / current.json as written before baselines existed.
        let old = serde_json::json!({
            "schema_version": SCHEMA_VERSION, "lineage": "l", "serial": 3,
            "resources": [], "intents": [], "history": [], "outputs": {}, "runs": []
        });
        let p: published::Published = serde_json::from_value(old).unwrap();
        assert!(p.baselines.is_empty());

        let dir = tempfile::tempdir().unwrap();
        let pin = BaselineRecord {
            address: parse_address("loadtest.x").unwrap(),
            fingerprint: Fingerprint {
                machine_type: None,
                cpu_model: "cpu".into(),
                cpus: 2,
                images: BTreeMap::new(),
            },
            runs: vec![4, 5],
            pinned_at: 1,
        };
        {
            let store = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
            store.set_baseline(&pin).unwrap();
            // Pinning again in the same environment replaces, never duplicates.
            store.set_baseline(&pin).unwrap();
        }
        let store = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
        assert_eq!(store.baselines().unwrap(), vec![pin.clone()]);
        let view = View::open(dir.path(), &gcs::Endpoint::Google)
            .unwrap()
            .unwrap();
        assert_eq!(view.baselines(), std::slice::from_ref(&pin));
        assert_eq!(store.unset_baseline(&pin.address).unwrap(), 1);
        assert!(store.baselines().unwrap().is_empty());
    }

    fn model_state(name: &str) -> ResourceState {
        ResourceState {
            address: parse_address(&format!("model.{name}")).unwrap(),
            provider: "local".into(),
            config: ResourceConfig::Model(ModelConfig {
                name: name.into(),
                base_path: "/models/x".into(),
                serving_path: None,
            }),
            depends_on: vec![],
            observed: serde_json::json!({"versions": [1]}),
            rendered: BTreeMap::new(),
            upstream: BTreeMap::new(),
            fingerprint: "f".into(),
            applied_at: 0,
            last_run: None,
        }
    }

    #[test]
    fn writes_from_several_threads_all_reach_the_published_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "apply", &gcs::Endpoint::Google).unwrap();
        std::thread::scope(|scope| {
            for name in ["a", "b", "c", "d"] {
                let s = &s;
                scope.spawn(move || s.put_resource(&model_state(name)).unwrap());
            }
        });
        let view = View::open(dir.path(), &gcs::Endpoint::Google)
            .unwrap()
            .expect("published");
        assert_eq!(view.resources().unwrap().len(), 4);
        assert_eq!(view.serial(), s.meta().unwrap().serial);
    }

    #[test]
    fn every_write_grows_the_serial_and_the_lineage_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (lineage, serial) = {
            let s = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
            let m0 = s.meta().unwrap();
            let s1 = s.put_resource(&model_state("a")).unwrap();
            let s2 = s.remove_resource(&model_state("a").address).unwrap();
            assert_eq!((s1, s2), (m0.serial + 1, m0.serial + 2));
            (m0.lineage, s2)
        };
        let s = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
        let m = s.meta().unwrap();
        assert_eq!((m.lineage, m.serial), (lineage, serial));
    }

    #[test]
    fn a_resource_write_settles_its_intent() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
        let r = model_state("a");
        s.put_intent(&Intent {
            address: r.address.clone(),
            operation: "create".into(),
            provider: "local".into(),
            config: Some(r.config.clone()),
            depends_on: vec![],
            rendered: BTreeMap::new(),
            upstream: BTreeMap::new(),
            data: serde_json::json!({"ports": [1, 2]}),
            pid: 1,
            started: 0,
        })
        .unwrap();
        assert_eq!(s.snapshot().unwrap().intents.len(), 1);
        s.put_resource(&r).unwrap();
        let snap = s.snapshot().unwrap();
        assert!(snap.intents.is_empty());
        assert_eq!(snap.resources[&r.address], r);
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
            let mut m = s.meta().unwrap();
            m.schema_version = SCHEMA_VERSION + 1;
            s.db.insert(b"meta", encode(&m)).unwrap();
            s.db.flush().unwrap();
        }
        let err = Store::open(dir.path(), "test", &gcs::Endpoint::Google)
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("schema {}", SCHEMA_VERSION + 1)),
            "{msg}"
        );
        assert!(msg.contains("upgrade benchstack"), "{msg}");
        assert!(
            msg.contains(&format!("reads up to {SCHEMA_VERSION}")),
            "{msg}"
        );
    }

    #[test]
    fn an_observed_state_its_provider_type_does_not_describe_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
        let mut r = model_state("a");
        r.observed = serde_json::json!({"versions": "one"});
        let err = s.put_resource(&r).unwrap_err().to_string();
        assert!(err.contains("local model"), "{err}");
        assert!(s.resources().unwrap().is_empty());
    }

    #[test]
    fn readers_see_every_write_without_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "apply", &gcs::Endpoint::Google).unwrap();
        let r = model_state("a");
        s.put_resource(&r).unwrap();
        // The writer still holds the lock (and sled its database).
        let view = View::open(dir.path(), &gcs::Endpoint::Google)
            .unwrap()
            .expect("published");
        assert_eq!(view.resources().unwrap(), std::slice::from_ref(&r));
        assert_eq!(view.serial(), s.meta().unwrap().serial);
        let run = RunRecord {
            id: 0,
            address: r.address.clone(),
            started: 1,
            finished: 2,
            config_hash: "h".into(),
            upstream: BTreeMap::new(),
            environment: (&crate::environment::Environment::detect()).into(),
            slos_met: true,
            report: serde_json::json!({"stages": []}),
            tune: None,
        };
        let id = s.put_run(run, r.clone()).unwrap();
        let view = View::open(dir.path(), &gcs::Endpoint::Google)
            .unwrap()
            .expect("published");
        assert_eq!(
            view.runs()
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [id]
        );
        assert_eq!(
            view.resource(&r.address).unwrap().unwrap().last_run,
            Some(id)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let snap = published::snapshot_dir(dir.path());
        assert_eq!(mode(&snap), 0o700);
        assert_eq!(mode(&snap.join("current.json")), 0o600);
        assert_eq!(mode(&snap.join(format!("runs/{id}.json"))), 0o600);
    }

    #[test]
    fn a_newer_published_snapshot_is_refused_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap());
        let path = published::snapshot_dir(dir.path()).join("current.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        v["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let err = View::open(dir.path(), &gcs::Endpoint::Google)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("schema {}", SCHEMA_VERSION + 1)),
            "{err}"
        );
    }

    #[test]
    fn run_and_history_ids_count_up_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test", &gcs::Endpoint::Google).unwrap();
        let r = model_state("a");
        let run = RunRecord {
            id: 0,
            address: r.address.clone(),
            started: 1,
            finished: 2,
            config_hash: "h".into(),
            upstream: BTreeMap::new(),
            environment: (&crate::environment::Environment::detect()).into(),
            slos_met: true,
            report: serde_json::json!({"stages": []}),
            tune: None,
        };
        assert_eq!(s.put_run(run.clone(), r.clone()).unwrap(), 1);
        assert_eq!(s.put_run(run, r.clone()).unwrap(), 2);
        assert_eq!(
            s.runs().unwrap().iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(s.resource(&r.address).unwrap().unwrap().last_run, Some(2));
        assert_eq!(
            s.record_history(history_entry("apply", None, None))
                .unwrap(),
            1
        );
    }

    #[test]
    fn addresses_parse_back_from_their_display_form() {
        for s in ["serving.tf", "loadtest.sweep[\"small\"]", "cluster.a-b_c"] {
            assert_eq!(parse_address(s).unwrap().to_string(), s);
        }
        assert_eq!(
            parse_address("serving.tf[small]").unwrap().to_string(),
            "serving.tf[\"small\"]"
        );
        let a = parse_address("serving.tf[\"small\"]").unwrap();
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json, serde_json::json!("serving.tf[\"small\"]"));
        assert_eq!(serde_json::from_value::<Address>(json).unwrap(), a);
        assert!(serde_json::from_value::<Address>(serde_json::json!("nope")).is_err());
        assert!(parse_address("server.tf").is_err());
        assert!(parse_address("serving").is_err());
        assert!(parse_address("serving.").is_err());
    }
}

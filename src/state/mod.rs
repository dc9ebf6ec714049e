//! The state store: one sled database per state directory (`DIR/db`) holding the lineage and
//! serial, every resource with the configuration it was applied with and what its provider
//! observed, the intents of provider calls in flight, the history of operations, every
//! load-test run, and the outputs. Every write is one sled transaction that also bumps the
//! serial, and is flushed before the call returns.
//!
//! Keys: `meta`, `res/ADDR`, `intent/ADDR`, `hist/ID`, `run/ID`, `output/NAME` (IDs big-endian,
//! so scans come back in order).

pub mod lock;
pub mod private;
pub mod procinfo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::environment::Environment;
use crate::stack::types::{Address, Kind, ResourceConfig};

pub use lock::{Lock, LockError, LockInfo};

/// The layout this build writes. A store with a higher number was written by a newer
/// benchstack and is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Lock(#[from] LockError),
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
    #[error("no resource `{0}` in the state")]
    NoSuchResource(String),
    #[error("no load-test run #{0} in the state")]
    NoSuchRun(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Random id of this state's line of history; a plan made against another lineage is refused.
    pub lineage: String,
    /// Grows by one with every write.
    pub serial: u64,
    pub schema_version: u32,
    pub created: u64,
    next_run_id: u64,
    next_history_id: u64,
}

/// A resource as applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub rendered: BTreeMap<String, String>,
    /// Fingerprints of the upstream resources this one ran against (load tests), so a change
    /// upstream that landed without a re-run is still noticed.
    #[serde(default)]
    pub upstream: BTreeMap<String, String>,
    /// Fingerprint of config + rendered (see `fingerprint`).
    pub fingerprint: String,
    pub applied_at: u64,
    /// The last load-test run (load tests only).
    #[serde(default)]
    pub last_run: Option<u64>,
}

/// Written before a provider call, settled (removed) after: an apply killed in between leaves
/// it behind, and the next plan and apply continue from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub address: Address,
    /// create, update, replace, delete or run.
    pub operation: String,
    pub provider: String,
    pub config: Option<ResourceConfig>,
    pub depends_on: Vec<Address>,
    #[serde(default)]
    pub rendered: BTreeMap<String, String>,
    #[serde(default)]
    pub upstream: BTreeMap<String, String>,
    /// What the provider decided before acting (ports, directories), so it can find what it
    /// started even if the pids never got recorded.
    pub data: serde_json::Value,
    pub pid: u32,
    pub started: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: u64,
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// apply, destroy, state rm, state unlock, recover.
    pub operation: String,
    pub address: Option<String>,
    pub action: Option<String>,
    pub started: u64,
    pub finished: u64,
    /// `ok`, `failed: …`, `interrupted`, …
    pub result: String,
}

/// One load-test run, kept with everything needed to compare it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: u64,
    pub address: Address,
    pub started: u64,
    pub finished: u64,
    /// Fingerprint of the load test's configuration.
    pub config_hash: String,
    /// Fingerprints of everything upstream (serving configuration, model, cluster).
    pub upstream: BTreeMap<String, String>,
    pub environment: Environment,
    pub slos_met: bool,
    /// The RunReport (loadgen's `--json` object, histograms included).
    pub report: serde_json::Value,
    /// Set on the probes of `benchstack tune`: which tune, trial and measurement it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<TuneProbe>,
}

/// What a `benchstack tune` probe measured (a run's tag), so `results` lists it and an
/// interrupted tune resumes where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneProbe {
    /// `tune.NAME`.
    pub tune: String,
    /// The trial's settings, dotted serving attributes to values (null: the server's default).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// A fingerprint of everything the measurement depends on (the trial's serving
    /// configuration, the load test, the search parameters): runs are reused only when it
    /// matches.
    pub basis: String,
    /// Which measurement of the trial (0 first; the best trials are measured again).
    pub measurement: u32,
    /// The probe's place in that measurement's search (0 first).
    pub probe: u32,
    /// The offered rate, requests/s.
    pub rate: f64,
    pub passed: bool,
    /// Why it failed, or empty.
    #[serde(default)]
    pub reason: String,
    /// Set when the probe says nothing about the server (the load generator was the
    /// bottleneck): the trial is invalid for this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// Everything plan needs, read at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub lineage: String,
    pub serial: u64,
    pub resources: BTreeMap<Address, ResourceState>,
    pub intents: BTreeMap<Address, Intent>,
}

pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    lock: Lock,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StateError>>;

impl Store {
    /// Takes the lock for `operation`, then opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, operation: &str) -> Result<Store, StateError> {
        let lock = Lock::acquire(dir, operation)?;
        let db_dir = dir.join("db");
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
        };
        match store.get::<Meta>(b"meta")? {
            Some(meta) if meta.schema_version > SCHEMA_VERSION => {
                return Err(StateError::NewerSchema {
                    dir: dir.to_path_buf(),
                    found: meta.schema_version,
                    supported: SCHEMA_VERSION,
                });
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
        Ok(store)
    }

    /// True if `dir` holds no state database yet (nothing to read).
    pub fn exists(dir: &Path) -> bool {
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
        Ok(Snapshot {
            lineage: meta.lineage,
            serial: meta.serial,
            resources: self
                .scan::<ResourceState>("res/")?
                .into_iter()
                .map(|r| (r.address.clone(), r))
                .collect(),
            intents: self
                .scan::<Intent>("intent/")?
                .into_iter()
                .map(|i| (i.address.clone(), i))
                .collect(),
        })
    }

    pub fn resources(&self) -> Result<Vec<ResourceState>, StateError> {
        self.scan("res/")
    }

    pub fn resource(&self, address: &Address) -> Result<Option<ResourceState>, StateError> {
        self.get(res_key(address).as_bytes())
    }

    pub fn intents(&self) -> Result<Vec<Intent>, StateError> {
        self.scan("intent/")
    }

    pub fn put_intent(&self, intent: &Intent) -> Result<u64, StateError> {
        let key = intent_key(&intent.address);
        let value = encode(intent);
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
        let value = encode(r);
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
        let (_, id) = self.write_with(|tx, meta| {
            let id = meta.next_run_id;
            meta.next_run_id += 1;
            let run = RunRecord { id, ..run.clone() };
            let resource = ResourceState {
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

fn intent_key(a: &Address) -> String {
    format!("intent/{a}")
}

fn run_key(id: u64) -> Vec<u8> {
    let mut k = b"run/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn hist_key(id: u64) -> Vec<u8> {
    let mut k = b"hist/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain data types cannot fail (string keys, no non-finite floats
    // are produced by benchstack itself; serde_json writes them as null).
    serde_json::to_vec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn new_lineage() -> String {
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

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "`{input}` is not a resource address: expected KIND.NAME or KIND.NAME[\"KEY\"], with KIND one of cluster, model, serving, loadtest"
)]
pub struct AddressError {
    pub input: String,
}

/// Parses `serving.tf`, `serving.tf["small"]` (as printed) or `serving.tf[small]`.
pub fn parse_address(s: &str) -> Result<Address, AddressError> {
    let err = || AddressError {
        input: s.to_string(),
    };
    let (kind, rest) = s.split_once('.').ok_or_else(err)?;
    let kind = match kind {
        "cluster" => Kind::Cluster,
        "model" => Kind::Model,
        "serving" => Kind::Serving,
        "loadtest" => Kind::Loadtest,
        _ => return Err(err()),
    };
    let (name, key) = match rest.split_once('[') {
        Some((name, k)) => {
            let k = k.strip_suffix(']').ok_or_else(err)?;
            let k = match k.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                Some(quoted) => {
                    serde_json::from_str::<String>(&format!("\"{quoted}\"")).map_err(|_| err())?
                }
                None => k.to_string(),
            };
            (name, Some(k))
        }
        None => (rest, None),
    };
    let valid = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !valid(name) {
        return Err(err());
    }
    Ok(Address {
        kind,
        name: name.to_string(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::types::ModelConfig;

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
            observed: serde_json::json!({}),
            rendered: BTreeMap::new(),
            upstream: BTreeMap::new(),
            fingerprint: "f".into(),
            applied_at: 0,
            last_run: None,
        }
    }

    #[test]
    fn every_write_grows_the_serial_and_the_lineage_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (lineage, serial) = {
            let s = Store::open(dir.path(), "test").unwrap();
            let m0 = s.meta().unwrap();
            let s1 = s.put_resource(&model_state("a")).unwrap();
            let s2 = s.remove_resource(&model_state("a").address).unwrap();
            assert_eq!((s1, s2), (m0.serial + 1, m0.serial + 2));
            (m0.lineage, s2)
        };
        let s = Store::open(dir.path(), "test").unwrap();
        let m = s.meta().unwrap();
        assert_eq!((m.lineage, m.serial), (lineage, serial));
    }

    #[test]
    fn a_resource_write_settles_its_intent() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
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
            let s = Store::open(dir.path(), "test").unwrap();
            let mut m = s.meta().unwrap();
            m.schema_version = SCHEMA_VERSION + 1;
            s.db.insert(b"meta", encode(&m)).unwrap();
            s.db.flush().unwrap();
        }
        let err = Store::open(dir.path(), "test").err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("schema {}", SCHEMA_VERSION + 1)),
            "{msg}"
        );
        assert!(msg.contains("upgrade benchstack"), "{msg}");
    }

    #[test]
    fn run_and_history_ids_count_up_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        let r = model_state("a");
        let run = RunRecord {
            id: 0,
            address: r.address.clone(),
            started: 1,
            finished: 2,
            config_hash: "h".into(),
            upstream: BTreeMap::new(),
            environment: Environment::detect(),
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
        assert!(parse_address("server.tf").is_err());
        assert!(parse_address("serving").is_err());
        assert!(parse_address("serving.").is_err());
    }
}

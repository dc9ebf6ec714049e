//! The state on Google Cloud Storage (`--state gs://BUCKET/PREFIX`), with the official
//! `google-cloud-storage` client over the JSON API. Layout under `PREFIX/`:
//!
//! - `state.json`: the published state (`published::Published`) plus the store's `Meta`,
//!   written only with `ifGenerationMatch` = the generation it was read at (0 when absent),
//!   so a writer whose view is stale (its lock was broken, or it never held it) is refused
//!   instead of overwriting;
//! - `runs/ID.json`: one object per load-test run, created with `ifGenerationMatch=0` before
//!   any `state.json` that lists it (immutable);
//! - `lock.json`: the lock record (`RemoteLock`), created with `ifGenerationMatch=0`, renewed
//!   and released by conditional overwrites (a "free" record, never a delete). The lock's id
//!   is the object's generation.
//!
//! Every conditional write is a multipart upload (objects far under the 16 MiB resumable
//! threshold): GCS honours preconditions on every upload kind, fake-gcs-server only on
//! multipart ones. Nothing here lists or deletes objects (those calls go over gRPC in this
//! client, which the emulator does not speak).
//!
//! The client is async; the store is not. Each `Gcs` owns a small runtime and runs every call
//! on it from a scoped thread, so it works whether or not the caller is inside a runtime.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use serde::{Deserialize, Serialize};

use super::procinfo;

/// The file in a working state directory that binds it to a remote state.
pub const BINDING_FILE: &str = "remote.json";
pub const STATE_OBJECT: &str = "state.json";
pub const LOCK_OBJECT: &str = "lock.json";

/// How long a lock stays valid without renewal (`BENCHSTACK_LOCK_LEASE`, seconds).
const DEFAULT_LEASE_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    #[error("`{0}` is not a gs://BUCKET/PREFIX address")]
    BadAddress(String),
    #[error("cannot reach Cloud Storage for gs://{bucket}/{object}: {reason}")]
    Client {
        bucket: String,
        object: String,
        reason: String,
    },
    #[error(
        "the state changed since it was read (generation {generation}): another writer wrote gs://{bucket}/{object}; nothing was overwritten, run the command again"
    )]
    Conflict {
        bucket: String,
        object: String,
        generation: i64,
    },
    #[error("the object gs://{bucket}/{object} is corrupt: {reason}")]
    Corrupt {
        bucket: String,
        object: String,
        reason: String,
    },
    #[error(
        "the state at gs://{bucket}/{prefix} is locked by {holder} (lock id {id}){stale}\n  wait for it to finish, or if it is gone run `benchstack state unlock {id}`"
    )]
    Held {
        bucket: String,
        prefix: String,
        holder: String,
        id: i64,
        stale: String,
    },
    #[error("cannot bind the state directory {dir}: {source}")]
    Binding {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the lock at gs://{bucket}/{object} is now generation {now}, not {asked}: its holder renewed it (it is still working), or it was released or taken again since; nothing was changed"
    )]
    LockMoved {
        bucket: String,
        object: String,
        asked: i64,
        now: i64,
    },
    #[error(
        "the lock on gs://{bucket}/{prefix} was broken or taken while this command held it: nothing more was written"
    )]
    LockLost { bucket: String, prefix: String },
    #[error(
        "the KMS key `{0}` (BENCHSTACK_GCS_KMS_KEY or the backend's kms_key_name) is not a Cloud KMS key name (projects/P/locations/L/keyRings/R/cryptoKeys/K)"
    )]
    BadKmsKey(String),
    #[error(
        "the lock gs://{bucket}/{object} (lock id {generation}) is unreadable: {reason}\n  if no benchstack works on this state, break it with `benchstack state unlock {generation}`"
    )]
    CorruptLock {
        bucket: String,
        object: String,
        generation: i64,
        reason: String,
    },
    #[error("the state at gs://{bucket}/{prefix} is not locked")]
    NotLocked { bucket: String, prefix: String },
}

/// Where a remote state lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub bucket: String,
    /// Without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, GcsError> {
        let rest = s
            .strip_prefix("gs://")
            .ok_or_else(|| GcsError::BadAddress(s.to_string()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // The same checks as the stack's backend block (vocab::backend).
        if crate::vocab::backend::bucket_problem(bucket).is_some() {
            return Err(GcsError::BadAddress(s.to_string()));
        }
        let prefix = crate::vocab::backend::normalize_prefix(prefix)
            .map_err(|_| GcsError::BadAddress(s.to_string()))?;
        Ok(Address {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    pub fn object(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.prefix)
    }
}

/// The working directory for a remote state (`.benchstack/gs/BUCKET/PREFIX` under the current
/// directory): the lock holder's local working copy and the local provider's files. It is
/// bound to the remote by `remote.json`; the remote is the truth, the copy is rebuilt from it
/// each time the lock is taken.
/// `kms_key_name` is the customer-managed key the objects are written with (the backend
/// block's; `BENCHSTACK_GCS_KMS_KEY` overrides it), kept beside the binding so every command
/// on this working directory writes with it.
pub fn bind(address: &Address, kms_key_name: Option<&str>) -> Result<PathBuf, GcsError> {
    let cwd = std::env::current_dir().map_err(|source| GcsError::Binding {
        dir: PathBuf::from("."),
        source,
    })?;
    bind_in(&cwd, address, kms_key_name)
}

/// `bind` under `base` (absolute, so the local provider's processes name it unambiguously).
pub fn bind_in(
    base: &Path,
    address: &Address,
    kms_key_name: Option<&str>,
) -> Result<PathBuf, GcsError> {
    let mut dir = base.join(".benchstack").join("gs").join(&address.bucket);
    for part in address.prefix.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    let err = |source| GcsError::Binding {
        dir: dir.clone(),
        source,
    };
    super::private::ensure_state_dir(&dir).map_err(err)?;
    let path = dir.join(BINDING_FILE);
    let body = serde_json::to_vec_pretty(&match kms_key_name {
        Some(k) => serde_json::json!({ "gcs": address, "kms_key_name": k }),
        None => serde_json::json!({ "gcs": address }),
    })
    .unwrap_or_default();
    if std::fs::read(&path).ok().as_deref() != Some(body.as_slice()) {
        super::private::write_atomic(&path, &body).map_err(err)?;
    }
    Ok(dir)
}

#[derive(Deserialize)]
struct Binding {
    gcs: Address,
    #[serde(default)]
    kms_key_name: Option<String>,
}

fn read_binding(dir: &Path) -> Option<Binding> {
    let bytes = std::fs::read(dir.join(BINDING_FILE)).ok()?;
    serde_json::from_slice::<Binding>(&bytes).ok()
}

/// The remote a state directory is bound to, if any.
pub fn binding(dir: &Path) -> Option<Address> {
    read_binding(dir).map(|b| b.gcs)
}

/// Where Cloud Storage is: Google's endpoint with Application Default Credentials, or an
/// emulator at a base URL, anonymously. The caller decides (`provider::gcp::Apis`, from
/// `STORAGE_EMULATOR_HOST`, through `ops::storage`); nothing here reads the environment for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Endpoint {
    #[default]
    Google,
    Emulator(String),
}

/// Connects to the remote `dir` is bound to (None: a local state), with the key it was bound
/// with, at `endpoint`.
pub fn connect_bound(dir: &Path, endpoint: &Endpoint) -> Option<Result<Gcs, GcsError>> {
    let b = read_binding(dir)?;
    Some(Gcs::connect(b.gcs, b.kms_key_name, endpoint))
}

/// A connected client for one remote state.
pub struct Gcs {
    pub address: Address,
    client: Storage,
    /// The customer-managed key every object is encrypted with (`BENCHSTACK_GCS_KMS_KEY`).
    kms_key: Option<String>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Gcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gcs({})", self.address)
    }
}

impl Drop for Gcs {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's context panics; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// An object as read: its bytes and generation.
pub struct Read {
    pub bytes: Vec<u8>,
    pub generation: i64,
}

impl Gcs {
    /// Connects with Application Default Credentials, or anonymously to an emulator, as
    /// `endpoint` says. Objects are written with `kms_key` (the backend block's), or the key
    /// `BENCHSTACK_GCS_KMS_KEY` names, which overrides it.
    pub fn connect(
        address: Address,
        kms_key: Option<String>,
        endpoint: &Endpoint,
    ) -> Result<Gcs, GcsError> {
        let client_err = |reason: String| GcsError::Client {
            bucket: address.bucket.clone(),
            object: address.object(STATE_OBJECT),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| client_err(e.to_string()))?;
        let kms_key = std::env::var("BENCHSTACK_GCS_KMS_KEY")
            .ok()
            .filter(|k| !k.is_empty())
            .or(kms_key);
        if let Some(k) = &kms_key
            && !crate::vocab::backend::is_kms_key_name(k)
        {
            return Err(GcsError::BadKmsKey(k.clone()));
        }
        let emulator = match endpoint {
            Endpoint::Google => None,
            Endpoint::Emulator(url) => Some(url.clone()),
        };
        let client = run_on(&runtime, async move {
            // Transient errors (408, 429, 5xx, resets) are retried with exponential back-off;
            // conditional writes count as idempotent. One minute, not the client's default
            // five: a command should fail, naming the object, while its user still waits.
            let mut builder = Storage::builder().with_retry_policy(
                google_cloud_storage::retry_policy::RetryableErrors
                    .with_time_limit(Duration::from_secs(retry_budget_secs())),
            );
            if let Some(url) = emulator {
                builder = builder.with_endpoint(url).with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
            }
            builder.build().await
        })
        .map_err(|e| client_err(e.to_string()))?;
        Ok(Gcs {
            address,
            client,
            kms_key,
            runtime: Some(runtime),
        })
    }

    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.address.bucket)
    }

    fn client_error(&self, object: &str, e: impl std::fmt::Display) -> GcsError {
        GcsError::Client {
            bucket: self.address.bucket.clone(),
            object: object.to_string(),
            reason: e.to_string(),
        }
    }

    fn block<F: Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        // Always Some until drop.
        match &self.runtime {
            Some(rt) => run_on(rt, f),
            None => unreachable!("the runtime lives as long as the client"),
        }
    }

    /// Reads `name` under the prefix; None when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Read>, GcsError> {
        let object = self.address.object(name);
        let bucket = self.bucket_path();
        let client = self.client.clone();
        let obj = object.clone();
        let result = self.block(async move {
            let mut resp = client.read_object(bucket, obj).send().await?;
            let generation = resp.object().generation;
            let mut bytes = Vec::new();
            while let Some(chunk) = resp.next().await.transpose()? {
                bytes.extend_from_slice(&chunk);
            }
            Ok::<_, google_cloud_storage::Error>(Read { bytes, generation })
        });
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.http_status_code() == Some(404) => Ok(None),
            Err(e) => Err(self.client_error(&object, e)),
        }
    }

    /// Writes `name` if its generation is still `generation` (0: only if it does not exist);
    /// returns the new generation. A failed precondition is `GcsError::Conflict`.
    pub fn write_if(&self, name: &str, bytes: Vec<u8>, generation: i64) -> Result<i64, GcsError> {
        let object = self.address.object(name);
        let bucket = self.bucket_path();
        let client = self.client.clone();
        let obj = object.clone();
        // The checksum goes in the metadata part, which GCS verifies before it commits the
        // object. Without it the client streams it in a third, trailing part, which
        // fake-gcs-server (v1.54) stores as part of the object's content.
        let crc = crc32c::crc32c(&bytes);
        let body_copy = bytes.clone();
        let kms_key = self.kms_key.clone();
        let result = self.block(async move {
            let mut write = client
                .write_object(bucket, obj, bytes::Bytes::from(bytes))
                .with_known_crc32c(crc)
                .set_if_generation_match(generation)
                .set_content_type("application/json");
            if let Some(key) = kms_key {
                write = write.set_kms_key(key);
            }
            write.send_unbuffered().await
        });
        match result {
            Ok(o) => Ok(o.generation),
            Err(e) if e.http_status_code() == Some(412) => {
                // The client retries transient failures; if an earlier attempt landed and
                // only its answer was lost, the retry meets our own write. That is success.
                if let Some(now) = self.read(name)?
                    && now.bytes == body_copy
                {
                    return Ok(now.generation);
                }
                Err(GcsError::Conflict {
                    bucket: self.address.bucket.clone(),
                    object,
                    generation,
                })
            }
            Err(e) => Err(self.client_error(&object, e)),
        }
    }
}

fn run_on<F: Future + Send>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    // A scoped thread: `block_on` may not be called from inside a runtime (apply's workers).
    std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// `lock.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRecord {
    /// `held` or `free`.
    pub state: String,
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub operation: String,
    /// Unix seconds: when the lock was taken.
    pub since: u64,
    pub lineage: String,
    /// Unix seconds: the holder renews this while it works; past it the lock is stale.
    pub lease_until: u64,
}

impl LockRecord {
    pub fn is_held(&self) -> bool {
        self.state == "held"
    }

    pub fn is_stale(&self, now: u64) -> bool {
        self.is_held() && self.lease_until < now
    }

    pub fn holder(&self) -> String {
        format!(
            "{}@{} (pid {}) running `{}` since {}",
            self.user,
            self.host,
            self.pid,
            self.operation,
            procinfo::rfc3339(self.since)
        )
    }

    fn stale_note(&self, now: u64) -> String {
        if self.is_stale(now) {
            format!(
                "; its lease expired at {}: the lock is stale (the holder stopped renewing it)",
                procinfo::rfc3339(self.lease_until)
            )
        } else {
            String::new()
        }
    }
}

/// How long transient errors are retried (`BENCHSTACK_GCS_RETRY_BUDGET`, seconds).
fn retry_budget_secs() -> u64 {
    std::env::var("BENCHSTACK_GCS_RETRY_BUDGET")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60)
}

pub fn lease_secs() -> u64 {
    std::env::var("BENCHSTACK_LOCK_LEASE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_LEASE_SECS)
}

/// The lock as it is now: the record and its generation (the lock id).
pub fn read_lock(gcs: &Gcs) -> Result<Option<(LockRecord, i64)>, GcsError> {
    let Some(read) = gcs.read(LOCK_OBJECT)? else {
        return Ok(None);
    };
    let record: LockRecord =
        serde_json::from_slice(&read.bytes).map_err(|e| GcsError::CorruptLock {
            bucket: gcs.address.bucket.clone(),
            object: gcs.address.object(LOCK_OBJECT),
            generation: read.generation,
            reason: e.to_string(),
        })?;
    Ok(Some((record, read.generation)))
}

/// A held remote lock, renewed by a thread while it lives and released (a conditional
/// overwrite with a free record) on drop.
pub struct RemoteLock {
    gcs: Arc<Gcs>,
    shared: Arc<LockShared>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

struct LockShared {
    record: std::sync::Mutex<(LockRecord, i64)>,
    stop: AtomicBool,
    /// Set when a renewal found the lock taken from us.
    lost: AtomicBool,
}

impl RemoteLock {
    pub fn acquire(gcs: Arc<Gcs>, operation: &str, lineage: &str) -> Result<RemoteLock, GcsError> {
        let lease = lease_secs();
        let pid = std::process::id();
        // Three rounds: a 412 means someone else wrote the lock between our read and write
        // (the read after it says who; tofu#1341's lesson: a lock gone by then is retried).
        for _ in 0..3 {
            let now = procinfo::now_unix();
            let record = LockRecord {
                state: "held".into(),
                user: procinfo::user_name(),
                host: procinfo::host_name(),
                pid,
                operation: operation.to_string(),
                since: now,
                lineage: lineage.to_string(),
                lease_until: now + lease,
            };
            let current = read_lock(&gcs)?;
            let expect = match &current {
                None => 0,
                Some((r, generation)) if !r.is_held() => *generation,
                Some((r, id)) => {
                    return Err(GcsError::Held {
                        bucket: gcs.address.bucket.clone(),
                        prefix: gcs.address.prefix.clone(),
                        holder: r.holder(),
                        id: *id,
                        stale: r.stale_note(now),
                    });
                }
            };
            match gcs.write_if(LOCK_OBJECT, super::encode(&record), expect) {
                Ok(generation) => {
                    let shared = Arc::new(LockShared {
                        record: std::sync::Mutex::new((record, generation)),
                        stop: AtomicBool::new(false),
                        lost: AtomicBool::new(false),
                    });
                    let renewer = {
                        let gcs = gcs.clone();
                        let shared = shared.clone();
                        std::thread::spawn(move || renew_loop(&gcs, &shared, lease))
                    };
                    return Ok(RemoteLock {
                        gcs,
                        shared,
                        renewer: Some(renewer),
                    });
                }
                Err(GcsError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        match read_lock(&gcs)? {
            Some((r, id)) => Err(GcsError::Held {
                bucket: gcs.address.bucket.clone(),
                prefix: gcs.address.prefix.clone(),
                holder: r.holder(),
                id,
                stale: r.stale_note(procinfo::now_unix()),
            }),
            None => Err(gcs.client_error(
                &gcs.address.object(LOCK_OBJECT),
                "the lock kept changing while it was being taken",
            )),
        }
    }

    /// The lock id (its generation now).
    pub fn id(&self) -> i64 {
        self.lock_state().1
    }

    pub fn record(&self) -> LockRecord {
        self.lock_state().0
    }

    /// True when a renewal found that the lock was broken or taken by someone else.
    pub fn lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst)
    }

    fn lock_state(&self) -> (LockRecord, i64) {
        self.shared
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the lock object and checks it is still ours (the generation we last wrote);
    /// called before every state write, so a holder whose lock was broken stops at its next
    /// write, not at its next renewal. Held across the read so a renewal cannot interleave.
    pub fn verify(&self) -> Result<bool, GcsError> {
        if self.lost() {
            return Ok(false);
        }
        let g = self
            .shared
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ours = match self.gcs.read(LOCK_OBJECT)? {
            Some(read) => read.generation == g.1,
            None => false,
        };
        if !ours {
            self.shared.lost.store(true, Ordering::SeqCst);
        }
        Ok(ours)
    }

    /// Records the lineage once the state is known (it is in every renewal after).
    pub fn set_lineage(&self, lineage: &str) {
        let mut g = self
            .shared
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0.lineage = lineage.to_string();
    }
}

fn renew_loop(gcs: &Gcs, shared: &LockShared, lease: u64) {
    let step = Duration::from_millis((lease * 1000 / 3).max(200));
    let tick = Duration::from_millis(100);
    loop {
        let mut waited = Duration::ZERO;
        while waited < step {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(tick);
            waited += tick;
        }
        let mut g = shared
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut record = g.0.clone();
        record.lease_until = procinfo::now_unix() + lease;
        match gcs.write_if(LOCK_OBJECT, super::encode(&record), g.1) {
            Ok(generation) => *g = (record, generation),
            Err(GcsError::Conflict { .. }) => {
                // Broken by `state unlock` or taken by another: our state writes will be
                // refused by their own precondition; stop renewing someone else's lock.
                shared.lost.store(true, Ordering::SeqCst);
                return;
            }
            // A transient error: the next round tries again before the lease runs out.
            Err(_) => {}
        }
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
        if self.lost() {
            return;
        }
        let (mut record, generation) = self.lock_state();
        record.state = "free".into();
        record.lease_until = procinfo::now_unix();
        // Conditional: if the lock was broken and taken meanwhile, the new holder keeps it.
        let _ = self
            .gcs
            .write_if(LOCK_OBJECT, super::encode(&record), generation);
    }
}

/// `state unlock ID`: frees the lock if its generation is still `id`. Returns the record it
/// freed (None: the lock was unreadable, and is replaced only because its id was named).
pub fn break_lock(gcs: &Gcs, id: i64) -> Result<Option<LockRecord>, GcsError> {
    let object = gcs.address.object(LOCK_OBJECT);
    let lock = match read_lock(gcs) {
        Err(GcsError::CorruptLock { generation, .. }) if generation == id => {
            let now = procinfo::now_unix();
            let free = LockRecord {
                state: "free".into(),
                user: procinfo::user_name(),
                host: procinfo::host_name(),
                pid: std::process::id(),
                operation: "state unlock".into(),
                since: now,
                lineage: String::new(),
                lease_until: now,
            };
            return match gcs.write_if(LOCK_OBJECT, super::encode(&free), id) {
                Ok(_) => Ok(None),
                Err(GcsError::Conflict { .. }) => Err(GcsError::LockMoved {
                    bucket: gcs.address.bucket.clone(),
                    object,
                    asked: id,
                    now: gcs.read(LOCK_OBJECT)?.map_or(0, |r| r.generation),
                }),
                Err(e) => Err(e),
            };
        }
        other => other?,
    };
    let Some((record, now_id)) = lock else {
        return Err(GcsError::NotLocked {
            bucket: gcs.address.bucket.clone(),
            prefix: gcs.address.prefix.clone(),
        });
    };
    if !record.is_held() {
        return Err(GcsError::NotLocked {
            bucket: gcs.address.bucket.clone(),
            prefix: gcs.address.prefix.clone(),
        });
    }
    if now_id != id {
        return Err(GcsError::LockMoved {
            bucket: gcs.address.bucket.clone(),
            object,
            asked: id,
            now: now_id,
        });
    }
    let mut free = record.clone();
    free.state = "free".into();
    free.lease_until = procinfo::now_unix();
    match gcs.write_if(LOCK_OBJECT, super::encode(&free), id) {
        Ok(_) => Ok(Some(record)),
        Err(GcsError::Conflict { .. }) => {
            let now = read_lock(gcs)?.map_or(0, |(_, g)| g);
            Err(GcsError::LockMoved {
                bucket: gcs.address.bucket.clone(),
                object,
                asked: id,
                now,
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_to_bucket_and_trimmed_prefix() {
        let a = Address::parse("gs://team/bench/").unwrap();
        assert_eq!((a.bucket.as_str(), a.prefix.as_str()), ("team", "bench"));
        assert_eq!(a.object("state.json"), "bench/state.json");
        let a = Address::parse("gs://team").unwrap();
        assert_eq!(a.prefix, "");
        assert_eq!(a.object("lock.json"), "lock.json");
    }

    #[test]
    fn bad_addresses_are_refused_not_guessed() {
        for bad in [
            "gs://",
            "gs:///x",
            "s3://team/x",
            "gs://Team/x",
            "gs://team/../x",
            "gs://te am",
            "gs://../x",
            "gs://./x",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lock_is_stale_only_when_held_past_its_lease() {
        let mut r = LockRecord {
            state: "held".into(),
            user: "u".into(),
            host: "h".into(),
            pid: 1,
            operation: "apply".into(),
            since: 100,
            lineage: String::new(),
            lease_until: 160,
        };
        assert!(!r.is_stale(160));
        assert!(r.is_stale(161));
        r.state = "free".into();
        assert!(!r.is_stale(1000));
    }
}

//! The persisted state format (docs/state.md), version `VERSION`. These are the state's own
//! types: plan, apply and the providers work with `vocab::resources` and `vocab::load`, and
//! the store converts at its boundary (`ResourceRecord::from_state` / `into_state`), so a
//! rename inside the library does not change what is on disk. A change to anything here is a
//! new `VERSION` with a migration in `migrate`.
//!
//! Addresses are strings (`serving.tf["small"]`), durations are seconds (f64), enum values are
//! their HCL strings (`"rest"`, `"poisson"`, `"gke"`), a stage's `rate` is a number or `"max"`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StateError;
pub use super::observed::Observed;
use crate::environment::Environment;
use crate::vocab::load::{Arrival, Protocol, Rate, RequestSource, Slo, Stage};
use crate::vocab::resources::{
    Address, BatchingConfig, ClusterConfig, FlagValue, ImageConfig, LoadtestConfig, ModelConfig,
    ProviderKind, ResourceConfig, ServingConfig,
};

/// The schema this build writes and reads. 1: the first (records were the library's types);
/// 2: its own types, addresses as strings, `observed` tagged by provider.
pub const VERSION: u32 = 2;

/// `meta`: the state's identity and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Random id of this state's line of history; a plan made against another lineage is refused.
    pub lineage: String,
    /// Grows by one with every write.
    pub serial: u64,
    pub schema_version: u32,
    pub created: u64,
    pub next_run_id: u64,
    pub next_history_id: u64,
}

/// `res/ADDR`: a resource as applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub address: Address,
    pub provider: String,
    pub config: ConfigRecord,
    pub depends_on: Vec<Address>,
    /// What the provider observed, tagged by provider and kind (`state::observed`).
    pub observed: Observed,
    #[serde(default)]
    pub rendered: BTreeMap<String, String>,
    #[serde(default)]
    pub upstream: BTreeMap<String, String>,
    pub fingerprint: String,
    pub applied_at: u64,
    #[serde(default)]
    pub last_run: Option<u64>,
}

/// `intent/ADDR`: a provider call in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentRecord {
    pub address: Address,
    pub operation: String,
    pub provider: String,
    pub config: Option<ConfigRecord>,
    pub depends_on: Vec<Address>,
    #[serde(default)]
    pub rendered: BTreeMap<String, String>,
    #[serde(default)]
    pub upstream: BTreeMap<String, String>,
    /// What the provider decided before acting (its own JSON: ports, directories, job names).
    pub data: serde_json::Value,
    pub pid: u32,
    pub started: u64,
}

/// `hist/ID`: one operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: u64,
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// apply, destroy, state rm, state unlock, migrate, recover.
    pub operation: String,
    pub address: Option<String>,
    pub action: Option<String>,
    pub started: u64,
    pub finished: u64,
    /// `ok`, `failed: …`, `interrupted`, …
    pub result: String,
}

/// `run/ID`: one load-test run, kept with everything needed to compare it later. New fields
/// are added with `#[serde(default)]` (older records read as the default) and need no new
/// `VERSION`.
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
    pub environment: EnvironmentRecord,
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

/// `baseline/ADDR/KEY`: runs of a load test pinned as its baseline for one environment
/// (`benchstack results baseline set`), which `apply --gate` compares new runs with. Kept
/// until unset. New in schema 0 states: a state without any reads as having none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineRecord {
    /// The load test.
    pub address: Address,
    /// The environment the runs were measured in.
    pub fingerprint: Fingerprint,
    /// The pinned runs, oldest first.
    pub runs: Vec<u64>,
    pub pinned_at: u64,
}

/// What must match for two runs to be compared: the machine type of the serving cluster
/// (None on a local cluster), the CPU model and count the run saw, and the images it ran
/// (`serving`, `loadgen` digests, where known).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fingerprint {
    #[serde(default)]
    pub machine_type: Option<String>,
    pub cpu_model: String,
    pub cpus: usize,
    #[serde(default)]
    pub images: BTreeMap<String, String>,
}

impl Fingerprint {
    /// A short stable key (hex of SHA-256 over the JSON form) for the state's key.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&json);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// What differs from `other`, one phrase per field (empty when they match).
    pub fn differences(&self, other: &Fingerprint) -> Vec<String> {
        let mut d = Vec::new();
        let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none (local)".into());
        if self.machine_type != other.machine_type {
            d.push(format!(
                "machine type {} vs {}",
                show(&self.machine_type),
                show(&other.machine_type)
            ));
        }
        if self.cpu_model != other.cpu_model {
            d.push(format!(
                "CPU model `{}` vs `{}`",
                self.cpu_model, other.cpu_model
            ));
        }
        if self.cpus != other.cpus {
            d.push(format!("{} CPUs vs {}", self.cpus, other.cpus));
        }
        for role in self.images.keys().chain(other.images.keys()) {
            let (a, b) = (self.images.get(role), other.images.get(role));
            if a != b && !d.iter().any(|x| x.starts_with(&format!("{role} image"))) {
                d.push(format!(
                    "{role} image {} vs {}",
                    a.map(String::as_str).unwrap_or("unknown"),
                    b.map(String::as_str).unwrap_or("unknown")
                ));
            }
        }
        d
    }
}

/// The machine a run ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub host: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_bytes: u64,
    /// The benchstack version.
    pub version: String,
    /// The images the run measured, by role (`serving`, `loadgen`): what the Deployment and
    /// the Job ran (`REPOSITORY/NAME@sha256:…` for an `image` block). Empty for local runs and
    /// runs recorded before images were.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
}

impl From<&Environment> for EnvironmentRecord {
    fn from(e: &Environment) -> Self {
        EnvironmentRecord {
            host: e.host.clone(),
            cpus: e.cpus,
            cpu_model: e.cpu_model.clone(),
            memory_bytes: e.memory_bytes,
            version: e.version.clone(),
            images: BTreeMap::new(),
        }
    }
}

/// A resource's configuration, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ConfigRecord {
    Cluster(ClusterRecord),
    Model(ModelRecord),
    Serving(ServingRecord),
    Loadtest(LoadtestRecord),
    Image(ImageRecord),
}

/// An `image` block: where it is pushed, what it is built from, and the content hash of the
/// context the last build saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub repository: String,
    pub name: String,
    /// Absolute path on the machine that applied it.
    pub context: PathBuf,
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub content_hash: String,
    /// `preset = "serving"`: what the generated context is made of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<crate::vocab::resources::ServingPreset>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// `local` or `gke`.
    pub provider: String,
    pub project: Option<String>,
    pub location: Option<String>,
    pub machine_type: Option<String>,
    pub node_count: u32,
    pub disk_size_gb: Option<u32>,
    pub spot: bool,
    pub private_nodes: bool,
    pub labels: BTreeMap<String, String>,
    /// Absent in states written before these attributes existed (and when unset, so that
    /// the record, and its fingerprint, of a cluster without them is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnetwork: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    /// Absolute path on the machine that applied it.
    pub base_path: PathBuf,
    pub serving_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingRecord {
    pub cluster: Address,
    pub image: Option<String>,
    /// `image = image.NAME`; absent otherwise (so older records and fingerprints are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_from: Option<Address>,
    pub replicas: u32,
    pub models: Vec<Address>,
    /// Scalars as JSON booleans, integers, floats or strings.
    pub flags: BTreeMap<String, serde_json::Value>,
    pub batching: Option<BatchingRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchingRecord {
    pub max_batch_size: Option<u64>,
    pub batch_timeout_micros: Option<u64>,
    pub max_enqueued_batches: Option<u64>,
    pub num_batch_threads: Option<u64>,
    pub allowed_batch_sizes: Vec<u64>,
    pub pad_variable_length_inputs: Option<bool>,
    pub enable_large_batch_splitting: Option<bool>,
    pub max_execution_batch_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadtestRecord {
    pub cluster: Address,
    pub target: Address,
    pub model: String,
    pub signature: Option<String>,
    /// `rest` or `grpc`.
    pub protocol: String,
    pub request: RequestRecord,
    pub workers: u32,
    #[serde(
        default = "crate::vocab::resources::default_start_tolerance_ms",
        skip_serializing_if = "is_default_start_tolerance"
    )]
    pub start_tolerance_ms: u64,
    pub loadgen_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_image_from: Option<Address>,
    pub connections: u32,
    /// `constant` or `poisson`.
    pub arrival: String,
    pub seed: u64,
    /// Seconds.
    pub warmup: f64,
    /// Seconds.
    pub timeout: f64,
    pub stages: Vec<StageRecord>,
    pub slos: Vec<SloRecord>,
}

fn is_default_start_tolerance(ms: &u64) -> bool {
    *ms == crate::vocab::resources::DEFAULT_START_TOLERANCE_MS
}

/// `{"body": "…"}` (a predict body) or `{"data": {"path": …, "batch_size": …}}` (CSV rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestRecord {
    Body(String),
    Data { path: PathBuf, batch_size: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    /// Requests per second, or `"max"`.
    pub rate: RateRecord,
    /// Seconds.
    pub duration: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RateRecord {
    PerSecond(f64),
    /// Always `"max"`.
    Max(String),
}

/// `{"percentile": 99.0, "limit": 0.05}` (limit in seconds) or `{"errors": 0.001}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SloRecord {
    Latency { percentile: f64, limit: f64 },
    ErrorRate { errors: f64 },
}

/// Fingerprint of what a resource is applied with: its configuration in this schema's form
/// and its rendered files. Stable across library changes, since it hashes the record.
pub fn fingerprint(config: &ResourceConfig, rendered: &BTreeMap<String, String>) -> String {
    fingerprint_record(&ConfigRecord::from(config), rendered)
}

pub fn fingerprint_record(config: &ConfigRecord, rendered: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(config).unwrap_or_default());
    for (k, v) in rendered {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..16].to_string()
}

// ---- conversions at the boundary ----

fn bad(what: &str, value: impl std::fmt::Display) -> String {
    format!("unknown {what} `{value}`")
}

fn seconds(what: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("{what} {s}: {e}"))
}

impl From<&ResourceConfig> for ConfigRecord {
    fn from(c: &ResourceConfig) -> Self {
        match c {
            ResourceConfig::Cluster(c) => ConfigRecord::Cluster(ClusterRecord {
                provider: match c.provider {
                    ProviderKind::Local => "local",
                    ProviderKind::Gke => "gke",
                }
                .to_string(),
                project: c.project.clone(),
                location: c.location.clone(),
                machine_type: c.machine_type.clone(),
                node_count: c.node_count,
                disk_size_gb: c.disk_size_gb,
                spot: c.spot,
                private_nodes: c.private_nodes,
                labels: c.labels.clone(),
                service_account: c.service_account.clone(),
                network: c.network.clone(),
                subnetwork: c.subnetwork.clone(),
            }),
            ResourceConfig::Model(m) => ConfigRecord::Model(ModelRecord {
                name: m.name.clone(),
                base_path: m.base_path.clone(),
                serving_path: m.serving_path.clone(),
            }),
            ResourceConfig::Serving(s) => ConfigRecord::Serving(ServingRecord {
                cluster: s.cluster.clone(),
                image: s.image.clone(),
                image_from: s.image_from.clone(),
                replicas: s.replicas,
                models: s.models.clone(),
                flags: s
                    .flags
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            FlagValue::Bool(b) => serde_json::Value::from(*b),
                            FlagValue::Int(i) => serde_json::Value::from(*i),
                            FlagValue::Float(x) => serde_json::Value::from(*x),
                            FlagValue::String(s) => serde_json::Value::from(s.clone()),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
                batching: s.batching.as_ref().map(|b| BatchingRecord {
                    max_batch_size: b.max_batch_size,
                    batch_timeout_micros: b.batch_timeout_micros,
                    max_enqueued_batches: b.max_enqueued_batches,
                    num_batch_threads: b.num_batch_threads,
                    allowed_batch_sizes: b.allowed_batch_sizes.clone(),
                    pad_variable_length_inputs: b.pad_variable_length_inputs,
                    enable_large_batch_splitting: b.enable_large_batch_splitting,
                    max_execution_batch_size: b.max_execution_batch_size,
                }),
                cpu: s.cpu.clone(),
                memory: s.memory.clone(),
            }),
            ResourceConfig::Loadtest(l) => ConfigRecord::Loadtest(LoadtestRecord {
                cluster: l.cluster.clone(),
                target: l.target.clone(),
                model: l.model.clone(),
                signature: l.signature.clone(),
                protocol: l.protocol.to_string(),
                request: match &l.request {
                    RequestSource::Body(b) => RequestRecord::Body(b.clone()),
                    RequestSource::Data { path, batch_size } => RequestRecord::Data {
                        path: path.clone(),
                        batch_size: *batch_size,
                    },
                },
                workers: l.workers,
                start_tolerance_ms: l.start_tolerance_ms,
                loadgen_image: l.loadgen_image.clone(),
                loadgen_image_from: l.loadgen_image_from.clone(),
                connections: l.connections,
                arrival: match l.arrival {
                    Arrival::Constant => "constant",
                    Arrival::Poisson => "poisson",
                }
                .to_string(),
                seed: l.seed,
                warmup: l.warmup.as_secs_f64(),
                timeout: l.timeout.as_secs_f64(),
                stages: l
                    .stages
                    .iter()
                    .map(|s| StageRecord {
                        name: s.name.clone(),
                        rate: match s.rate {
                            Rate::PerSecond(r) => RateRecord::PerSecond(r),
                            Rate::Max => RateRecord::Max("max".into()),
                        },
                        duration: s.duration.as_secs_f64(),
                    })
                    .collect(),
                slos: l
                    .slos
                    .iter()
                    .map(|s| match s {
                        Slo::Latency { percentile, limit } => SloRecord::Latency {
                            percentile: *percentile,
                            limit: limit.as_secs_f64(),
                        },
                        Slo::ErrorRate { errors } => SloRecord::ErrorRate { errors: *errors },
                    })
                    .collect(),
            }),
            ResourceConfig::Image(i) => ConfigRecord::Image(ImageRecord {
                repository: i.repository.clone(),
                name: i.name.clone(),
                context: i.context.clone(),
                dockerfile: i.dockerfile.clone(),
                args: i.args.clone(),
                content_hash: i.content_hash.clone(),
                preset: i.preset.clone(),
            }),
        }
    }
}

impl ConfigRecord {
    /// The library's configuration; an error names what this build does not know.
    pub fn into_config(self) -> Result<ResourceConfig, String> {
        Ok(match self {
            ConfigRecord::Cluster(c) => ResourceConfig::Cluster(ClusterConfig {
                provider: match c.provider.as_str() {
                    "local" => ProviderKind::Local,
                    "gke" => ProviderKind::Gke,
                    other => return Err(bad("cluster provider", other)),
                },
                project: c.project,
                location: c.location,
                machine_type: c.machine_type,
                node_count: c.node_count,
                disk_size_gb: c.disk_size_gb,
                spot: c.spot,
                private_nodes: c.private_nodes,
                labels: c.labels,
                service_account: c.service_account,
                network: c.network,
                subnetwork: c.subnetwork,
                // Not recorded: what apply does first, not part of the cluster.
                enable_apis: false,
            }),
            ConfigRecord::Model(m) => ResourceConfig::Model(ModelConfig {
                name: m.name,
                base_path: m.base_path,
                serving_path: m.serving_path,
            }),
            ConfigRecord::Serving(s) => ResourceConfig::Serving(ServingConfig {
                cluster: s.cluster,
                image: s.image,
                image_from: s.image_from,
                replicas: s.replicas,
                models: s.models,
                flags: s
                    .flags
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::Bool(b) => FlagValue::Bool(b),
                            serde_json::Value::Number(n) => match n.as_i64() {
                                Some(i) => FlagValue::Int(i),
                                None => FlagValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                            },
                            serde_json::Value::String(s) => FlagValue::String(s),
                            other => return Err(bad(&format!("value of flag {k}"), other)),
                        };
                        Ok((k, v))
                    })
                    .collect::<Result<_, String>>()?,
                batching: s.batching.map(|b| BatchingConfig {
                    max_batch_size: b.max_batch_size,
                    batch_timeout_micros: b.batch_timeout_micros,
                    max_enqueued_batches: b.max_enqueued_batches,
                    num_batch_threads: b.num_batch_threads,
                    allowed_batch_sizes: b.allowed_batch_sizes,
                    pad_variable_length_inputs: b.pad_variable_length_inputs,
                    enable_large_batch_splitting: b.enable_large_batch_splitting,
                    max_execution_batch_size: b.max_execution_batch_size,
                }),
                cpu: s.cpu,
                memory: s.memory,
            }),
            ConfigRecord::Loadtest(l) => ResourceConfig::Loadtest(LoadtestConfig {
                cluster: l.cluster,
                target: l.target,
                model: l.model,
                signature: l.signature,
                protocol: match l.protocol.as_str() {
                    "rest" => Protocol::Rest,
                    "grpc" => Protocol::Grpc,
                    other => return Err(bad("protocol", other)),
                },
                request: match l.request {
                    RequestRecord::Body(b) => RequestSource::Body(b),
                    RequestRecord::Data { path, batch_size } => {
                        RequestSource::Data { path, batch_size }
                    }
                },
                workers: l.workers,
                start_tolerance_ms: l.start_tolerance_ms,
                loadgen_image: l.loadgen_image,
                loadgen_image_from: l.loadgen_image_from,
                connections: l.connections,
                arrival: match l.arrival.as_str() {
                    "constant" => Arrival::Constant,
                    "poisson" => Arrival::Poisson,
                    other => return Err(bad("arrival", other)),
                },
                seed: l.seed,
                warmup: seconds("warmup", l.warmup)?,
                timeout: seconds("timeout", l.timeout)?,
                stages: l
                    .stages
                    .into_iter()
                    .map(|s| {
                        Ok(Stage {
                            name: s.name,
                            rate: match s.rate {
                                RateRecord::PerSecond(r) => Rate::PerSecond(r),
                                RateRecord::Max(m) if m == "max" => Rate::Max,
                                RateRecord::Max(other) => return Err(bad("rate", other)),
                            },
                            duration: seconds("stage duration", s.duration)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
                slos: l
                    .slos
                    .into_iter()
                    .map(|s| {
                        Ok(match s {
                            SloRecord::Latency { percentile, limit } => Slo::Latency {
                                percentile,
                                limit: seconds("slo limit", limit)?,
                            },
                            SloRecord::ErrorRate { errors } => Slo::ErrorRate { errors },
                        })
                    })
                    .collect::<Result<_, String>>()?,
            }),
            ConfigRecord::Image(i) => ResourceConfig::Image(ImageConfig {
                repository: i.repository,
                name: i.name,
                context: i.context,
                dockerfile: i.dockerfile,
                args: i.args,
                content_hash: i.content_hash,
                preset: i.preset,
            }),
        })
    }
}

fn corrupt(address: &Address, what: &str, reason: String) -> StateError {
    StateError::Corrupt {
        key: format!("{what}/{address}"),
        reason,
    }
}

impl ResourceRecord {
    /// Fails when what the provider observed is not what its type says (a provider bug).
    pub fn from_state(r: &super::ResourceState) -> Result<Self, StateError> {
        let observed = Observed::from_json(&r.provider, r.address.kind, &r.observed)
            .map_err(|e| corrupt(&r.address, "res", e))?;
        Ok(ResourceRecord {
            address: r.address.clone(),
            provider: r.provider.clone(),
            config: ConfigRecord::from(&r.config),
            depends_on: r.depends_on.clone(),
            observed,
            rendered: r.rendered.clone(),
            upstream: r.upstream.clone(),
            fingerprint: r.fingerprint.clone(),
            applied_at: r.applied_at,
            last_run: r.last_run,
        })
    }

    pub fn into_state(self) -> Result<super::ResourceState, StateError> {
        let config = self
            .config
            .into_config()
            .map_err(|e| corrupt(&self.address, "res", e))?;
        Ok(super::ResourceState {
            address: self.address,
            provider: self.provider,
            config,
            depends_on: self.depends_on,
            observed: self.observed.to_json(),
            rendered: self.rendered,
            upstream: self.upstream,
            fingerprint: self.fingerprint,
            applied_at: self.applied_at,
            last_run: self.last_run,
        })
    }
}

impl IntentRecord {
    pub fn from_state(i: &super::Intent) -> Self {
        IntentRecord {
            address: i.address.clone(),
            operation: i.operation.clone(),
            provider: i.provider.clone(),
            config: i.config.as_ref().map(ConfigRecord::from),
            depends_on: i.depends_on.clone(),
            rendered: i.rendered.clone(),
            upstream: i.upstream.clone(),
            data: i.data.clone(),
            pid: i.pid,
            started: i.started,
        }
    }

    pub fn into_state(self) -> Result<super::Intent, StateError> {
        let config = match self.config {
            Some(c) => Some(
                c.into_config()
                    .map_err(|e| corrupt(&self.address, "intent", e))?,
            ),
            None => None,
        };
        Ok(super::Intent {
            address: self.address,
            operation: self.operation,
            provider: self.provider,
            config,
            depends_on: self.depends_on,
            rendered: self.rendered,
            upstream: self.upstream,
            data: self.data,
            pid: self.pid,
            started: self.started,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_record_without_the_network_attributes_reads_and_keeps_its_fingerprint() {
        // As a state written before `service_account`, `network` and `subnetwork` existed.
        let old = serde_json::json!({
            "kind": "cluster", "provider": "gke", "project": "p", "location": "us-central1-a",
            "machine_type": "e2-highcpu-8", "node_count": 3, "disk_size_gb": null,
            "spot": false, "private_nodes": false, "labels": {}
        });
        let record: ConfigRecord = serde_json::from_value(old.clone()).unwrap();
        let config = record.clone().into_config().unwrap();
        let ResourceConfig::Cluster(c) = &config else {
            panic!("not a cluster")
        };
        assert_eq!(
            (&c.service_account, &c.network, &c.subnetwork),
            (&None, &None, &None)
        );
        // Written back unchanged, so its fingerprint is the one recorded.
        assert_eq!(
            serde_json::to_value(ConfigRecord::from(&config)).unwrap(),
            old
        );
        assert_eq!(
            fingerprint(&config, &BTreeMap::new()),
            fingerprint_record(&record, &BTreeMap::new())
        );
        // Set, they are recorded.
        let mut with = c.clone();
        with.network = Some("bench-vpc".into());
        let v = serde_json::to_value(ConfigRecord::from(&ResourceConfig::Cluster(with))).unwrap();
        assert_eq!(v["network"], "bench-vpc");
    }
}

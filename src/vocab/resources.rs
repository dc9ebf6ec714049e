//! The typed stack: what `stack::load` produces and what plan, apply, state and the providers
//! consume.
//! Every resource carries the span of its block so later errors can point at the source.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::vocab::load::{Arrival, Protocol, RequestSource, Slo, Stage};

/// A location in a stack file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Span {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cluster,
    Model,
    Serving,
    Loadtest,
    Image,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Model => "model",
            Kind::Serving => "serving",
            Kind::Loadtest => "loadtest",
            Kind::Image => "image",
        }
    }
}

/// `KIND.NAME` or, for a `for_each` instance, `KIND.NAME["KEY"]`. In every JSON form (plan,
/// results, state, outputs) an address is that string, parsed back with `Address::parse`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub kind: Kind,
    pub name: String,
    pub key: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "`{input}` is not a resource address: expected KIND.NAME or KIND.NAME[\"KEY\"], with KIND one of cluster, model, serving, loadtest, image"
)]
pub struct AddressError {
    pub input: String,
}

impl Address {
    /// Parses `serving.tf`, `serving.tf["small"]` (as printed) or `serving.tf[small]`.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let err = || AddressError {
            input: s.to_string(),
        };
        let (kind, rest) = s.split_once('.').ok_or_else(err)?;
        let kind = match kind {
            "cluster" => Kind::Cluster,
            "model" => Kind::Model,
            "serving" => Kind::Serving,
            "loadtest" => Kind::Loadtest,
            "image" => Kind::Image,
            _ => return Err(err()),
        };
        let (name, key) = match rest.split_once('[') {
            Some((name, k)) => {
                let k = k.strip_suffix(']').ok_or_else(err)?;
                let k = match k.strip_prefix('"').and_then(|k| k.strip_suffix('"')) {
                    Some(quoted) => serde_json::from_str::<String>(&format!("\"{quoted}\""))
                        .map_err(|_| err())?,
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
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.as_str(), self.name)?;
        if let Some(k) = &self.key {
            write!(f, "[{k:?}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// The files the stack was read from, in load order.
    pub files: Vec<PathBuf>,
    /// Resource instances in a stable order (file order, then for_each key order).
    pub resources: Vec<Resource>,
    pub outputs: Vec<Output>,
    /// The `backend "gcs"` block: where the state lives (None: the local default).
    #[serde(default)]
    pub backend: Option<super::backend::Backend>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub address: Address,
    pub span: Span,
    /// Resources this one references (graph edges).
    pub depends_on: Vec<Address>,
    pub config: ResourceConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ResourceConfig {
    Cluster(ClusterConfig),
    Model(ModelConfig),
    Serving(ServingConfig),
    Loadtest(LoadtestConfig),
    Image(ImageConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Local,
    Gke,
}

/// The providers a resource can be managed by. The state records the name as a string
/// (`ResourceState::provider`); [`ProviderName::parse`] reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderName {
    Local,
    Gke,
    Kubernetes,
    /// Container images built by Cloud Build and pushed to Artifact Registry.
    CloudBuild,
}

impl ProviderName {
    pub const ALL: [ProviderName; 4] = [
        ProviderName::Local,
        ProviderName::Gke,
        ProviderName::Kubernetes,
        ProviderName::CloudBuild,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Local => "local",
            ProviderName::Gke => "gke",
            ProviderName::Kubernetes => "kubernetes",
            ProviderName::CloudBuild => "cloudbuild",
        }
    }

    pub fn parse(name: &str) -> Option<ProviderName> {
        ProviderName::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub provider: ProviderKind,
    pub project: Option<String>,
    pub location: Option<String>,
    pub machine_type: Option<String>,
    pub node_count: u32,
    pub disk_size_gb: Option<u32>,
    pub spot: bool,
    pub private_nodes: bool,
    pub labels: BTreeMap<String, String>,
    /// The nodes' service account (an e-mail); None: the Compute Engine default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The VPC network and subnetwork; None: `default` (and GKE's choice of subnetwork).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnetwork: Option<String>,
    /// `enable_apis = true`: apply enables the APIs the stack needs in the cluster's project
    /// (Service Usage) before it creates anything. Not part of the cluster: a change plans
    /// nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_apis: bool,
}

/// The label benchstack puts on every GKE cluster it creates (`managed-by=benchstack`), so
/// that its clusters can be found without a state.
pub const MANAGED_BY_LABEL: &str = "managed-by";
pub const MANAGED_BY_VALUE: &str = "benchstack";
/// The label that names the lineage of the state that created a cluster.
pub const LINEAGE_LABEL: &str = "benchstack-lineage";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The model's serving name (the block label).
    pub name: String,
    /// Absolute path of the versioned base path on this machine.
    pub base_path: PathBuf,
    /// Where the serving image finds it on Kubernetes (`/models/NAME` by default, or `gs://…`).
    pub serving_path: Option<String>,
}

/// A scalar TF Serving flag value, rendered `--name=value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl fmt::Display for FlagValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagValue::Bool(b) => write!(f, "{b}"),
            FlagValue::Int(i) => write!(f, "{i}"),
            FlagValue::Float(x) => write!(f, "{x}"),
            FlagValue::String(s) => f.write_str(s),
        }
    }
}

/// TF Serving flags benchstack sets itself from the rest of a serving configuration (ports,
/// `models`, `batching`): a stack may not set them through `flags` or a tune's `space`.
pub const MANAGED_FLAGS: &[&str] = &[
    "port",
    "rest_api_port",
    "model_name",
    "model_base_path",
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingConfig {
    pub cluster: Address,
    /// Required on gke (this or `image_from`); optional (and ignored) on a local cluster.
    pub image: Option<String>,
    /// `image = image.NAME`: the image an `image` block builds, deployed by its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_from: Option<Address>,
    pub replicas: u32,
    pub models: Vec<Address>,
    pub flags: BTreeMap<String, FlagValue>,
    pub batching: Option<BatchingConfig>,
    /// The CPU each replica requests on Kubernetes (a quantity such as `"7"` or `"7500m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// The memory each replica requests on Kubernetes (a quantity such as `"4Gi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// TF Serving's BatchingParameters (batching_parameters.txt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BatchingConfig {
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
pub struct LoadtestConfig {
    pub cluster: Address,
    pub target: Address,
    pub model: String,
    pub signature: Option<String>,
    pub protocol: Protocol,
    pub request: RequestSource,
    pub workers: u32,
    /// How late (ms) a distributed worker may start, and how far off its clock may be,
    /// before the run is invalid. Serialized only when not the default, so older configs
    /// and states read and hash the same.
    #[serde(
        default = "default_start_tolerance_ms",
        skip_serializing_if = "is_default_start_tolerance_ms"
    )]
    pub start_tolerance_ms: u64,
    pub loadgen_image: Option<String>,
    /// `loadgen_image = image.NAME`: the worker image an `image` block builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen_image_from: Option<Address>,
    pub connections: u32,
    pub arrival: Arrival,
    pub seed: u64,
    #[serde(with = "crate::vocab::load::duration_secs")]
    pub warmup: Duration,
    #[serde(with = "crate::vocab::load::duration_secs")]
    pub timeout: Duration,
    pub stages: Vec<Stage>,
    pub slos: Vec<Slo>,
}

/// `start_tolerance` when a loadtest block does not set it.
pub const DEFAULT_START_TOLERANCE_MS: u64 = 50;

pub fn default_start_tolerance_ms() -> u64 {
    DEFAULT_START_TOLERANCE_MS
}

fn is_default_start_tolerance_ms(ms: &u64) -> bool {
    *ms == DEFAULT_START_TOLERANCE_MS
}

/// A container image built from a directory on this machine (`image` block): Cloud Build
/// builds it from the uploaded context and pushes it to `repository/name`; what is deployed is
/// the pushed digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// An Artifact Registry repository: `LOCATION-docker.pkg.dev/PROJECT/REPOSITORY`.
    pub repository: String,
    /// The image's name in the repository.
    pub name: String,
    /// The build context: an absolute directory on this machine.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (`/`-separated).
    pub dockerfile: String,
    /// `--build-arg NAME=VALUE`.
    pub args: BTreeMap<String, String>,
    /// SHA-256 of what a build would see: the context's files after `.dockerignore` (paths,
    /// modes and contents), the Dockerfile's path and the build args. A change plans a build.
    /// For a `preset` image the plan computes it from the generated context.
    pub content_hash: String,
    /// `preset = "serving"`: the Dockerfile and context are generated from the serving
    /// resource that uses the image (no `context`, `dockerfile` or `args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<ServingPreset>,
}

/// What a `preset = "serving"` image is generated from: TF Serving's image, the models of
/// the serving resource that uses it (filled in when the stack is loaded) and, by the plan,
/// that serving's rendered models.config and batching_parameters.txt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingPreset {
    /// The `FROM` image (`tensorflow/serving:2.19.0`).
    pub base_image: String,
    /// The serving resource it is generated for (the one whose `image` names it).
    pub serving: Option<Address>,
    /// The models it carries: version folders copied from `base_path` to `serving_path`.
    pub models: Vec<BakedModel>,
}

/// A model copied into a serving-preset image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BakedModel {
    pub name: String,
    /// The model's directory on this machine (its numbered version folders are copied).
    pub base_path: PathBuf,
    /// Where the image holds it (the model's `serving_path`).
    pub serving_path: String,
}

impl ImageConfig {
    /// A serving-preset image's model directories copied into its context, by model name
    /// (models TF Serving reads from `gs://` are not copied).
    pub fn baked_dirs(&self) -> Vec<(String, PathBuf)> {
        self.preset
            .iter()
            .flat_map(|p| &p.models)
            .filter(|m| !m.serving_path.starts_with("gs://"))
            .map(|m| (m.name.clone(), m.base_path.clone()))
            .collect()
    }

    /// `repository/name`, without a tag or digest.
    pub fn image_name(&self) -> String {
        format!("{}/{}", self.repository.trim_end_matches('/'), self.name)
    }

    /// The Artifact Registry coordinates in `repository`: (location, project, repository id),
    /// from `LOCATION-docker.pkg.dev/PROJECT/REPOSITORY`; None for any other registry.
    pub fn artifact_registry(&self) -> Option<(String, String, String)> {
        let mut parts = self.repository.trim_end_matches('/').split('/');
        let host = parts.next()?;
        let project = parts.next()?;
        let repo = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let location = host.strip_suffix("-docker.pkg.dev")?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || c == ':'
                })
        };
        (ok(location) && ok(project) && ok(repo))
            .then(|| (location.to_string(), project.to_string(), repo.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub name: String,
    pub span: Span,
    pub value: OutputValue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OutputValue {
    /// A value known when the stack is loaded.
    Known(serde_json::Value),
    /// An attribute a provider reports after apply (`serving.tf.rest_endpoint`).
    Attribute { address: Address, attribute: String },
}

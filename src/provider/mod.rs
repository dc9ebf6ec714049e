//! Providers: one trait (`read` = refresh, `create`, `update`, `delete`, plus `recover` for an
//! intent an interrupted apply left behind), one file per provider. A resource's provider is
//! chosen by its cluster; models are plain files and always use the local provider.
//! Providers never print: they return what they observed, and report progress through the
//! context for the CLI to show.

pub mod gcp;
pub mod gke;
pub mod kubernetes;
pub mod local;
mod local_loadtest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::environment::Environment;
use crate::stack::types::{Address, ProviderKind, ResourceConfig};
use crate::state::{Intent, ResourceState};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Failed(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not record the intent: {0}")]
    State(String),
    #[error("interrupted")]
    Interrupted,
}

impl ProviderError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
        let what = what.into();
        move |source| ProviderError::Io { what, source }
    }
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Running as recorded (with what was observed now).
    Present(serde_json::Value),
    /// Gone entirely: plan re-creates it.
    Gone(String),
    /// Partly broken or replaced: plan replaces it.
    Drifted(String),
    /// Alive, but changed outside benchstack (a cluster resized by hand, a Deployment
    /// scaled): `config` is what is live, and the plan diffs the stack against it, so the
    /// change shows as an update or a replacement with `what` in its reason (e.g.
    /// `node_count changed from 3 to 5`).
    Modified {
        observed: serde_json::Value,
        config: Box<ResourceConfig>,
        what: String,
    },
}

/// The outcome of create/update.
#[derive(Debug, Clone)]
pub struct Applied {
    pub observed: serde_json::Value,
    /// Set by load tests: the run to store.
    pub run: Option<RunOutcome>,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub report: serde_json::Value,
    pub slos_met: bool,
    pub environment: Environment,
    pub started: u64,
    pub finished: u64,
}

/// What a provider call gets besides the resource itself.
pub struct Context<'a> {
    pub state_dir: &'a Path,
    /// Records what the provider chose before acting (ports, directories) in the intent.
    pub note: &'a (dyn Fn(serde_json::Value) -> Result<(), ProviderError> + Sync),
    /// Progress text for the CLI (e.g. a load test's current stage).
    pub progress: &'a (dyn Fn(String) + Sync),
    pub cancel: &'a AtomicBool,
}

/// The configuration and observed state of a resource's direct dependencies.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub configs: BTreeMap<Address, ResourceConfig>,
    pub observed: BTreeMap<Address, serde_json::Value>,
}

pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Refresh: is the resource still there as recorded?
    fn read(&self, ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError>;
    fn create(
        &self,
        ctx: &Context,
        address: &Address,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError>;
    fn update(
        &self,
        ctx: &Context,
        prior: &ResourceState,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError>;
    fn delete(&self, ctx: &Context, prior: &ResourceState) -> Result<(), ProviderError>;
    /// An intent was left unsettled. Returns what the interrupted call completed (to adopt
    /// as the resource's observed state), or None. With `clean_up`, anything it half-made
    /// that is not adopted is removed (apply); without, nothing is touched (plan).
    fn recover(
        &self,
        ctx: &Context,
        intent: &Intent,
        prior: Option<&ResourceState>,
        clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError>;
}

/// The providers of this build.
pub struct Providers {
    pub local: local::LocalProvider,
    pub gke: gke::GkeProvider,
    pub kubernetes: kubernetes::KubernetesProvider,
}

impl Providers {
    pub fn new(state_dir: &Path) -> Self {
        Providers {
            local: local::LocalProvider::new(state_dir),
            gke: gke::GkeProvider::new(),
            kubernetes: kubernetes::KubernetesProvider::new(),
        }
    }

    pub fn get(&self, name: &str) -> Result<&dyn Provider, ProviderError> {
        match name {
            "local" => Ok(&self.local),
            "gke" => Ok(&self.gke),
            "kubernetes" => Ok(&self.kubernetes),
            _ => Err(ProviderError::Failed(format!("unknown provider `{name}`"))),
        }
    }
}

pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Local => "local",
        ProviderKind::Gke => "gke",
    }
}

/// The provider of a resource: a cluster's own (`local` or `gke`); for serving and load tests
/// on a gke cluster, `kubernetes` (the workloads on it), else `local`; `local` for models.
/// `clusters` maps cluster addresses to their provider kind.
pub fn provider_for(
    config: &ResourceConfig,
    clusters: &BTreeMap<Address, ProviderKind>,
) -> &'static str {
    let workload = |cluster: &Address| match clusters.get(cluster) {
        Some(ProviderKind::Gke) => "kubernetes",
        _ => "local",
    };
    match config {
        ResourceConfig::Cluster(c) => provider_name(c.provider),
        ResourceConfig::Model(_) => "local",
        ResourceConfig::Serving(s) => workload(&s.cluster),
        ResourceConfig::Loadtest(l) => workload(&l.cluster),
    }
}

/// The model configurations a serving resource lists, from its inputs.
pub fn serving_models(
    s: &crate::stack::types::ServingConfig,
    inputs: &Inputs,
) -> Result<Vec<crate::stack::types::ModelConfig>, ProviderError> {
    s.models
        .iter()
        .map(|a| match inputs.configs.get(a) {
            Some(ResourceConfig::Model(m)) => Ok(m.clone()),
            _ => Err(ProviderError::Failed(format!("model {a} is not available"))),
        })
        .collect()
}

/// What every serving provider records about where it listens (local processes, or a
/// Kubernetes Service): REST base URLs and gRPC host:port pairs.
#[derive(serde::Deserialize)]
struct ServingEndpoints {
    rest_endpoints: Vec<String>,
    grpc_endpoints: Vec<String>,
}

/// The base URLs a load test sends to: the target's REST endpoints (`http://…`) or its gRPC
/// ones (`grpc://HOST:PORT`), from the target's observed state.
pub fn load_test_targets(
    l: &crate::stack::types::LoadtestConfig,
    inputs: &Inputs,
) -> Result<Vec<String>, ProviderError> {
    let observed = inputs.observed.get(&l.target).ok_or_else(|| {
        ProviderError::Failed(format!("{} is not running (not in the state)", l.target))
    })?;
    let serving: ServingEndpoints = serde_json::from_value(observed.clone()).map_err(|e| {
        ProviderError::Failed(format!(
            "{} has no usable endpoints recorded: {e}",
            l.target
        ))
    })?;
    let targets: Vec<String> = match l.protocol {
        crate::loadgen::spec::Protocol::Rest => serving.rest_endpoints,
        crate::loadgen::spec::Protocol::Grpc => serving
            .grpc_endpoints
            .iter()
            .map(|e| format!("grpc://{e}"))
            .collect(),
    };
    if targets.is_empty() {
        return Err(ProviderError::Failed(format!(
            "{} records no {} endpoint",
            l.target, l.protocol
        )));
    }
    Ok(targets)
}

/// A directory name for an address (`serving.tf["small"]` → `serving.tf-small`).
pub fn slug(a: &Address) -> PathBuf {
    let mut s = format!("{}.{}", a.kind.as_str(), a.name);
    if let Some(k) = &a.key {
        s.push('-');
        s.extend(k.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        }));
    }
    PathBuf::from(s)
}

/// Refresh and recovery for the planner, through the providers (read-only).
pub struct Observer<'a> {
    pub providers: &'a Providers,
    pub state_dir: &'a Path,
}

impl Observer<'_> {
    fn with_ctx<T>(&self, f: impl FnOnce(&Context) -> T) -> T {
        let cancel = AtomicBool::new(false);
        let note = |_v: serde_json::Value| Ok(());
        let progress = |_m: String| {};
        f(&Context {
            state_dir: self.state_dir,
            note: &note,
            progress: &progress,
            cancel: &cancel,
        })
    }
}

impl crate::plan::Observe for Observer<'_> {
    fn read(&self, prior: &ResourceState) -> Result<Observation, String> {
        let p = self
            .providers
            .get(&prior.provider)
            .map_err(|e| e.to_string())?;
        self.with_ctx(|ctx| p.read(ctx, prior))
            .map_err(|e| e.to_string())
    }

    fn recover(&self, intent: &Intent, prior: Option<&ResourceState>) -> Option<serde_json::Value> {
        let p = self.providers.get(&intent.provider).ok()?;
        self.with_ctx(|ctx| p.recover(ctx, intent, prior, false))
            .ok()
            .flatten()
    }
}

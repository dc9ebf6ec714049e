//! Providers: one trait (`read` = refresh, `create`, `update`, `delete`, plus `recover` for an
//! intent an interrupted apply left behind), one file per provider. A resource's provider is
//! chosen by its cluster; models are plain files and always use the local provider.
//! Providers never print: they return what they observed, and report progress through the
//! context for the CLI to show.

pub mod cloudbuild;
pub mod gcp;
pub mod gke;
pub mod kubernetes;
pub mod local;
mod local_loadtest;
pub mod retry;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::state::{Intent, ResourceState};
use crate::vocab::resources::{Address, ProviderKind, ResourceConfig};

/// What kind of failure a provider call met, for policies to act on: only `NotFound` may make
/// a plan create something; `Unavailable` and `Throttled` are retried (see [`retry`]); the rest
/// are reported as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    /// HTTP 500/502/503/504, gRPC UNAVAILABLE, a refused or reset connection, a timeout.
    Unavailable,
    /// HTTP 429 or a rate limit (not a resource quota).
    Throttled,
    Permission,
    Quota,
    /// Already exists, a failed precondition, a concurrent change.
    Conflict,
    /// The request (or the configuration behind it) is wrong.
    Invalid,
    Other,
}

impl ErrorKind {
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Throttled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Permission => "permission denied",
            ErrorKind::Quota => "quota exceeded",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Other => "failed",
        }
    }
}

/// One failure: what was being done to which resource, and the message as the API gave it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What was being done, naming the resource (`reading cluster serving (project p, …)`);
    /// empty when the message says it all.
    pub what: String,
    /// The API's message verbatim (or benchstack's own for local failures).
    pub message: String,
    /// The full text to show, when it is more than `what: message` (hints, causes).
    pub text: Option<String>,
    /// The request never reached the server (connection refused, DNS): retrying is safe even
    /// for a call that is not idempotent.
    pub unsent: bool,
    /// Set by the retry helper: how many attempts were made, over how long.
    pub attempts: Option<(u32, Duration)>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.text, self.what.is_empty()) {
            (Some(t), _) => write!(f, "{t}")?,
            (None, true) => write!(f, "{}", self.message)?,
            (None, false) => write!(f, "{}: {}", self.what, self.message)?,
        }
        if let Some((n, took)) = self.attempts
            && n > 1
        {
            write!(
                f,
                " (gave up after {n} attempts over {:.1}s)",
                took.as_secs_f64()
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    NotFound(Failure),
    #[error("{0}")]
    Unavailable(Failure),
    #[error("{0}")]
    Throttled(Failure),
    #[error("{0}")]
    Permission(Failure),
    #[error("{0}")]
    Quota(Failure),
    #[error("{0}")]
    Conflict(Failure),
    #[error("{0}")]
    Invalid(Failure),
    #[error("{0}")]
    Other(Failure),
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

    /// A failure of `kind` while doing `what` (may be empty), with the API's `message`.
    pub fn new(kind: ErrorKind, what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of(
            kind,
            Failure {
                what: what.into(),
                message: message.into(),
                text: None,
                unsent: false,
                attempts: None,
            },
        )
    }

    pub fn of(kind: ErrorKind, f: Failure) -> Self {
        match kind {
            ErrorKind::NotFound => ProviderError::NotFound(f),
            ErrorKind::Unavailable => ProviderError::Unavailable(f),
            ErrorKind::Throttled => ProviderError::Throttled(f),
            ErrorKind::Permission => ProviderError::Permission(f),
            ErrorKind::Quota => ProviderError::Quota(f),
            ErrorKind::Conflict => ProviderError::Conflict(f),
            ErrorKind::Invalid => ProviderError::Invalid(f),
            ErrorKind::Other => ProviderError::Other(f),
        }
    }

    /// A failure with nothing more to classify (benchstack's own message).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, "", message)
    }

    /// A configuration or recorded state that cannot be used as it is.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, "", message)
    }

    /// The kind; `Io` counts as unavailable only for the network errors a retry may cure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProviderError::NotFound(_) => ErrorKind::NotFound,
            ProviderError::Unavailable(_) => ErrorKind::Unavailable,
            ProviderError::Throttled(_) => ErrorKind::Throttled,
            ProviderError::Permission(_) => ErrorKind::Permission,
            ProviderError::Quota(_) => ErrorKind::Quota,
            ProviderError::Conflict(_) => ErrorKind::Conflict,
            ProviderError::Invalid(_) => ErrorKind::Invalid,
            ProviderError::Other(_)
            | ProviderError::Io { .. }
            | ProviderError::State(_)
            | ProviderError::Interrupted => ErrorKind::Other,
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            ProviderError::NotFound(f)
            | ProviderError::Unavailable(f)
            | ProviderError::Throttled(f)
            | ProviderError::Permission(f)
            | ProviderError::Quota(f)
            | ProviderError::Conflict(f)
            | ProviderError::Invalid(f)
            | ProviderError::Other(f) => Some(f),
            _ => None,
        }
    }

    fn failure_mut(&mut self) -> Option<&mut Failure> {
        match self {
            ProviderError::NotFound(f)
            | ProviderError::Unavailable(f)
            | ProviderError::Throttled(f)
            | ProviderError::Permission(f)
            | ProviderError::Quota(f)
            | ProviderError::Conflict(f)
            | ProviderError::Invalid(f)
            | ProviderError::Other(f) => Some(f),
            _ => None,
        }
    }

    /// The API's own message, where there is one.
    pub fn message(&self) -> Option<&str> {
        self.failure().map(|f| f.message.as_str())
    }

    /// True when the request never reached the server.
    pub fn unsent(&self) -> bool {
        self.failure().is_some_and(|f| f.unsent)
    }

    /// Replaces the text shown (keeping kind, message and what).
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        if let Some(f) = self.failure_mut() {
            f.text = Some(text.into());
        }
        self
    }

    /// Marks the request as never sent.
    pub fn unsent_request(mut self) -> Self {
        if let Some(f) = self.failure_mut() {
            f.unsent = true;
        }
        self
    }

    fn with_attempts(mut self, attempts: u32, took: Duration) -> Self {
        if let Some(f) = self.failure_mut() {
            f.attempts = Some((attempts, took));
        }
        self
    }
}

/// What a refresh found.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// Running as recorded (with what was observed now).
    Present(serde_json::Value),
    /// Gone entirely (the API said not found): plan re-creates it.
    Gone(String),
    /// Broken for good, as the API itself reports (a GKE cluster in ERROR, processes that
    /// exited): plan replaces it. Never for a failure to read: that is an error.
    Drifted(String),
    /// There and as recorded, but not settled or not healthy right now (a cluster DEGRADED,
    /// RECONCILING or PROVISIONING; a server slow to answer its status): nothing is planned
    /// for it, and the CLI shows `warning`.
    Unsettled {
        observed: serde_json::Value,
        warning: String,
    },
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
    /// Why no verdict may use the run (`RunReport::invalid`), or None.
    pub invalid: Option<String>,
    pub environment: Environment,
    /// The images the run measured, by role (`serving`, `loadgen`), recorded with the run.
    pub images: BTreeMap<String, String>,
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

impl<'a> Context<'a> {
    /// A context for calls nobody watches (refresh, recovery): notes are dropped and
    /// progress is silent.
    pub fn quiet(state_dir: &'a Path, cancel: &'a AtomicBool) -> Context<'a> {
        fn drop_note(_: serde_json::Value) -> Result<(), ProviderError> {
            Ok(())
        }
        fn no_progress(_: String) {}
        Context {
            state_dir,
            note: &drop_note,
            progress: &no_progress,
            cancel,
        }
    }
}

/// The configuration and observed state of a resource's direct dependencies.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub configs: BTreeMap<Address, ResourceConfig>,
    pub observed: BTreeMap<Address, serde_json::Value>,
    /// The files the plan rendered for this resource (models.config,
    /// batching_parameters.txt, …): the bytes the reviewer saw, which the provider writes
    /// as they are. Empty only for callers that did not plan (a provider driven directly).
    pub rendered: BTreeMap<String, String>,
    /// A load test run as a capacity probe (`benchstack tune`): the in-process generator stops
    /// sending once the probe can no longer pass (`LoadSpec::stop_when_hopeless`). Worker
    /// processes and pods run their share in full: one worker's misses do not prove the
    /// whole probe failed.
    pub probe: bool,
}

impl Inputs {
    /// The configuration (from `stack`, else as recorded) and observed state (from the
    /// store) of the resources in `depends_on`.
    pub fn gather(
        stack: Option<&crate::vocab::resources::Stack>,
        depends_on: &[Address],
        store: &crate::state::Store,
    ) -> Result<Inputs, crate::state::StateError> {
        let mut inputs = Inputs::default();
        for d in depends_on {
            if let Some(r) = stack.and_then(|s| s.resources.iter().find(|r| &r.address == d)) {
                inputs.configs.insert(d.clone(), r.config.clone());
            }
            if let Some(s) = store.resource(d)? {
                inputs.configs.entry(d.clone()).or_insert(s.config.clone());
                inputs.observed.insert(d.clone(), s.observed);
            }
        }
        Ok(inputs)
    }
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

pub use crate::vocab::resources::ProviderName;

/// The registry apply, destroy, refresh and tune call providers through. [`Providers::new`]
/// holds this build's real providers; tests register recording fakes with
/// [`Providers::register`].
pub struct Providers {
    registered: BTreeMap<ProviderName, Box<dyn Provider>>,
}

impl Providers {
    /// This build's providers: local processes, GKE clusters, Kubernetes workloads, images
    /// built by Cloud Build; the Google ones reach the APIs where `apis` says they are.
    pub fn new(state_dir: &Path, apis: &gcp::Apis) -> Self {
        Providers::empty()
            .register(
                ProviderName::Local,
                Box::new(local::LocalProvider::new(state_dir)),
            )
            .register(ProviderName::Gke, Box::new(gke::GkeProvider::new(apis)))
            .register(
                ProviderName::Kubernetes,
                Box::new(kubernetes::KubernetesProvider::new(apis)),
            )
            .register(
                ProviderName::CloudBuild,
                Box::new(cloudbuild::CloudBuildProvider::new(apis)),
            )
    }

    /// No provider at all: every call is refused as an unknown provider.
    pub fn empty() -> Self {
        Providers {
            registered: BTreeMap::new(),
        }
    }

    /// Registers (or replaces) the provider of `name`.
    pub fn register(mut self, name: ProviderName, provider: Box<dyn Provider>) -> Self {
        self.registered.insert(name, provider);
        self
    }

    pub fn provider(&self, name: ProviderName) -> Result<&dyn Provider, ProviderError> {
        self.registered
            .get(&name)
            .map(|p| p.as_ref())
            .ok_or_else(|| ProviderError::invalid(format!("no `{name}` provider in this build")))
    }

    /// The provider of a name as the state records it.
    pub fn get(&self, name: &str) -> Result<&dyn Provider, ProviderError> {
        match ProviderName::parse(name) {
            Some(p) => self.provider(p),
            None => Err(ProviderError::invalid(format!("unknown provider `{name}`"))),
        }
    }
}

pub fn provider_name(kind: ProviderKind) -> ProviderName {
    match kind {
        ProviderKind::Local => ProviderName::Local,
        ProviderKind::Gke => ProviderName::Gke,
    }
}

/// The provider of a resource: a cluster's own (`local` or `gke`); for serving and load tests
/// on a gke cluster, `kubernetes` (the workloads on it), else `local`; `local` for models;
/// `cloudbuild` for images.
/// `clusters` maps cluster addresses to their provider kind.
pub fn provider_for(
    config: &ResourceConfig,
    clusters: &BTreeMap<Address, ProviderKind>,
) -> ProviderName {
    let workload = |cluster: &Address| match clusters.get(cluster) {
        Some(ProviderKind::Gke) => ProviderName::Kubernetes,
        _ => ProviderName::Local,
    };
    match config {
        ResourceConfig::Cluster(c) => provider_name(c.provider),
        ResourceConfig::Model(_) => ProviderName::Local,
        ResourceConfig::Serving(s) => workload(&s.cluster),
        ResourceConfig::Loadtest(l) => workload(&l.cluster),
        ResourceConfig::Image(_) => ProviderName::CloudBuild,
    }
}

/// A serving or load test configuration with `image = image.NAME` resolved to the digest
/// reference (`REPOSITORY/NAME@sha256:…`) that image's build recorded, from its inputs.
/// Anything else is returned as it is.
pub fn resolve_images(
    config: &ResourceConfig,
    inputs: &Inputs,
) -> Result<ResourceConfig, ProviderError> {
    let digest_of = |a: &Address| {
        inputs
            .observed
            .get(a)
            .and_then(crate::state::observed::image_reference)
            .ok_or_else(|| {
                ProviderError::invalid(format!(
                    "{a} has no pushed digest recorded (its build has not succeeded): apply it first"
                ))
            })
    };
    let mut config = config.clone();
    match &mut config {
        ResourceConfig::Serving(s) => {
            if let Some(a) = &s.image_from {
                s.image = Some(digest_of(a)?);
            }
        }
        ResourceConfig::Loadtest(l) => {
            if let Some(a) = &l.loadgen_image_from {
                l.loadgen_image = Some(digest_of(a)?);
            }
        }
        _ => {}
    }
    Ok(config)
}

/// The cluster provider of every cluster in the stack.
pub fn cluster_providers(
    stack: &crate::vocab::resources::Stack,
) -> BTreeMap<Address, ProviderKind> {
    stack
        .resources
        .iter()
        .filter_map(|r| match &r.config {
            ResourceConfig::Cluster(c) => Some((r.address.clone(), c.provider)),
            _ => None,
        })
        .collect()
}

/// The provider of every resource in the stack (what `plan::make` is given).
pub fn providers_for(stack: &crate::vocab::resources::Stack) -> BTreeMap<Address, ProviderName> {
    let clusters = cluster_providers(stack);
    stack
        .resources
        .iter()
        .map(|r| (r.address.clone(), provider_for(&r.config, &clusters)))
        .collect()
}

/// The model configurations a serving resource lists, from its inputs.
pub fn serving_models(
    s: &crate::vocab::resources::ServingConfig,
    inputs: &Inputs,
) -> Result<Vec<crate::vocab::resources::ModelConfig>, ProviderError> {
    s.models
        .iter()
        .map(|a| match inputs.configs.get(a) {
            Some(ResourceConfig::Model(m)) => Ok(m.clone()),
            _ => Err(ProviderError::invalid(format!(
                "model {a} is not available"
            ))),
        })
        .collect()
}

/// The base URLs a load test sends to: the target's REST endpoints (`http://…`) or its gRPC
/// ones (`grpc://HOST:PORT`), from the target's observed state.
pub fn load_test_targets(
    l: &crate::vocab::resources::LoadtestConfig,
    inputs: &Inputs,
) -> Result<Vec<String>, ProviderError> {
    let observed = inputs.observed.get(&l.target).ok_or_else(|| {
        ProviderError::invalid(format!("{} is not running (not in the state)", l.target))
    })?;
    let (rest, grpc) = crate::state::observed::serving_endpoints(observed).map_err(|e| {
        ProviderError::invalid(format!(
            "{} has no usable endpoints recorded: {e}",
            l.target
        ))
    })?;
    let targets: Vec<String> = match l.protocol {
        crate::vocab::load::Protocol::Rest => rest,
        crate::vocab::load::Protocol::Grpc => grpc.iter().map(|e| format!("grpc://{e}")).collect(),
    };
    if targets.is_empty() {
        return Err(ProviderError::invalid(format!(
            "{} records no {} endpoint",
            l.target, l.protocol
        )));
    }
    Ok(targets)
}

/// Checks the target's answers under batching (`loadgen::answers`) against its first
/// endpoint of the load test's protocol (REST or gRPC: the same requests the run sends),
/// with the server idle (before a run). One endpoint suffices: a serving resource's replicas
/// all run the one rendered configuration. None, with the reason as progress, when the check
/// cannot be made (no endpoint, no request to send); requests that fail are noted in the
/// check, not errors.
pub fn answer_check(
    l: &crate::vocab::resources::LoadtestConfig,
    inputs: &Inputs,
    progress: &(dyn Fn(String) + Sync),
) -> Option<crate::loadgen::answers::AnswerCheck> {
    let target = match load_test_targets(l, inputs) {
        Ok(t) => t.into_iter().next()?,
        Err(e) => {
            progress(format!("answers not checked: {e}"));
            return None;
        }
    };
    let sample = crate::loadgen::answers::Sample {
        model: &l.model,
        signature: l.signature.as_deref(),
        source: &l.request,
        seed: l.seed,
        timeout: l.timeout,
    };
    match crate::loadgen::answers::check(&target, &sample) {
        Ok(check) => {
            progress(check.summary());
            Some(check)
        }
        Err(e) => {
            progress(format!("answers not checked: {e}"));
            None
        }
    }
}

/// A load test does not run against a configuration whose answers batching changes.
pub fn refuse_changed_answers(
    l: &crate::vocab::resources::LoadtestConfig,
    check: Option<&crate::loadgen::answers::AnswerCheck>,
) -> Result<(), ProviderError> {
    match check.and_then(|c| c.refusal(&l.target.to_string())) {
        Some(why) => Err(ProviderError::other(why)),
        None => Ok(()),
    }
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
pub struct ProviderReader<'a> {
    pub providers: &'a Providers,
    pub state_dir: &'a Path,
}

impl ProviderReader<'_> {
    fn with_ctx<T>(&self, f: impl FnOnce(&Context) -> T) -> T {
        let cancel = AtomicBool::new(false);
        f(&Context::quiet(self.state_dir, &cancel))
    }
}

/// What refresh and recovery need from the providers (read-only).
/// (Declared here, beside its implementation, so that `refresh` depends on `provider` and not
/// the other way round.)
pub trait LiveReader {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError>;
    /// What an unsettled intent completed, if anything (without cleaning anything up). An
    /// error means "could not tell", never "nothing".
    fn recover(
        &self,
        intent: &Intent,
        prior: Option<&ResourceState>,
    ) -> Result<Option<serde_json::Value>, ProviderError>;
}

impl LiveReader for ProviderReader<'_> {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError> {
        let p = self.providers.get(&prior.provider)?;
        self.with_ctx(|ctx| p.read(ctx, prior))
    }

    /// An error is returned as such: "could not look" is never "nothing to adopt".
    fn recover(
        &self,
        intent: &Intent,
        prior: Option<&ResourceState>,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let p = self.providers.get(&intent.provider)?;
        self.with_ctx(|ctx| p.recover(ctx, intent, prior, false))
    }
}

/// The longest duration an environment variable may set (poll intervals, timeouts, retry
/// budgets): a year. Larger values overflow `Instant` arithmetic; none is a real setting.
pub const MAX_ENV_DURATION: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Parses a duration from the environment variable `name` (humantime: `500ms`, `2m`),
/// bounded by `MAX_ENV_DURATION`; `Ok(None)` when unset.
pub fn env_duration(
    name: &str,
    example: &str,
) -> Result<Option<std::time::Duration>, ProviderError> {
    let Ok(text) = std::env::var(name) else {
        return Ok(None);
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d <= MAX_ENV_DURATION => Ok(Some(d)),
        Ok(_) => Err(ProviderError::invalid(format!(
            "{name}={text:?}: longer than a year; expected a duration such as {example}"
        ))),
        Err(e) => Err(ProviderError::invalid(format!(
            "{name}={text:?}: {e}; expected a duration such as {example}"
        ))),
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    #[test]
    fn durations_from_the_environment_are_bounded_not_overflowed() {
        let name = "BENCHSTACK_TEST_ENV_DURATION_BOUND";
        // SAFETY: a variable only this test reads; set before any thread reads it.
        unsafe { std::env::set_var(name, "300000000000y") };
        let e = env_duration(name, "30s").unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
        unsafe { std::env::set_var(name, "400days") };
        let e = env_duration(name, "30s").unwrap_err().to_string();
        assert!(e.contains("longer than a year"), "{e}");
        unsafe { std::env::set_var(name, "90s") };
        assert_eq!(
            env_duration(name, "30s").unwrap(),
            Some(std::time::Duration::from_secs(90))
        );
        unsafe { std::env::remove_var(name) };
        assert_eq!(env_duration(name, "30s").unwrap(), None);
    }
}
